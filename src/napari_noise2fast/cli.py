"""The ``noise2fast`` command: denoise TIFF files or folders of them, and zarr / OME-Zarr stores.

    noise2fast image.tif                 # writes image_N2F.tif beside it
    noise2fast folder/ --output results/ # every .tif/.tiff in folder
    noise2fast movie.zarr -o out.zarr    # zarr in, zarr out (chunks, OME axes and scale kept); run it
                                         # again after an interruption and it goes on where it stopped
    noise2fast --sample                  # the bundled sample, with PSNR against its clean version
    noise2fast compare image.tif --methods noise2fast,calibrated,zs-n2n --reference clean.tif
    noise2fast noise image.tif --method vst
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from napari_noise2fast.api import STACKS, iter_denoise, resolved_stack
from napari_noise2fast.lazy import ome_multiscales, open_zarr
from napari_noise2fast.models import MODEL_USES, load_model
from napari_noise2fast.output import ATTRS_KEY, new_plane_store

SUFFIX = "_N2F"
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"


class InputError(Exception):
    """A file that cannot be denoised; the message is one plain line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a usage error on one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ZARR_SUFFIX


def collect_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """TIFF files and zarr stores named, TIFF files inside the named folders, and one error line per missing
    path or empty folder."""
    files, errors = [], []
    for path in paths:
        if is_zarr(path) and path.is_dir():
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file()
                           and p.suffix.lower() in TIFF_SUFFIXES and not p.stem.endswith(SUFFIX))
            if not found:
                errors.append(f"no .tif or .tiff files to denoise in the folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"no such file or folder: {path}")
    return files, errors


def plan_outputs(sources: list[Path], targets: list[Path], overwrite: bool,
                 inputs: list[Path] | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The (source, target) pairs safe to write, and one error line for each refused one: a target that is
    an input (or an existing file, without ``overwrite``), or one that an earlier source already writes."""
    inputs = {p.resolve() for p in (inputs if inputs is not None else sources)}
    planned, errors, claimed = [], [], {}
    for source, target in zip(sources, targets, strict=True):
        key = target.resolve()
        if key in claimed:
            errors.append(f"{source}: its output {target} is also the output of {claimed[key]}; "
                          "rename one or use -o with another folder")
        elif key in inputs and is_zarr(target):
            errors.append(f"{source}: the output {target} is an input store; a store is never written while read")
        elif key in inputs and not overwrite:
            errors.append(f"{source}: the output {target} is an input file; pass --overwrite to replace it")
        elif target.exists() and not overwrite and not resumable(target):
            errors.append(f"{source}: {target} exists; pass --overwrite to replace it")
        else:
            claimed[key] = source
            planned.append((source, target))
    return planned, errors


def resumable(target: Path) -> bool:
    """A zarr output of an earlier run (interrupted or not): the run goes on in it."""
    if not is_zarr(target):
        return False
    try:
        array, _ = open_zarr(target)
    except ValueError:
        return False
    return ATTRS_KEY in dict(array.attrs)


def output_path(source: Path, output: Path | None, single: bool) -> Path:
    """Where the result of ``source`` goes: beside it, into a folder, or at a file path (a zarr source
    writes a zarr store, a TIFF one a TIFF file unless ``output`` names a .zarr store)."""
    name = f"{source.stem.removesuffix('.ome')}{SUFFIX}{ZARR_SUFFIX if is_zarr(source) else '.tif'}"
    if output is None:
        return source.with_name(name)
    if single and (output.suffix.lower() in TIFF_SUFFIXES or is_zarr(output)):
        return output
    return output / name


def zarr_output(target: Path, shape: tuple, dtype, like=None, overwrite: bool = False):
    """The zarr array a run writes into at ``target``: the one an earlier run made there (to go on), or a new
    one. With ``like`` (a zarr source path) it keeps the source's chunks and, for OME-Zarr, its metadata
    (axes, the full-resolution level's scale): a group with that one level."""
    import shutil

    import zarr

    if target.exists():
        if resumable(target) and not overwrite:
            return open_zarr(target, mode="r+")[0]
        shutil.rmtree(target)  # --overwrite
    if like is None:
        return new_plane_store(target, shape, dtype)
    source, _ = open_zarr(like)
    chunks = tuple(int(c) for c in np.broadcast_to(source.chunks, (len(shape),)))
    node = zarr.open(str(like), mode="r")
    if hasattr(node, "shape"):
        return zarr.open_array(str(target), mode="w", shape=shape, chunks=chunks, dtype=dtype)
    attrs = dict(node.attrs)
    multiscales = [dict(entry) for entry in ome_multiscales(attrs)]
    level = multiscales[0]["datasets"][0]
    multiscales[0]["datasets"] = [level]  # the denoised full resolution only
    if "ome" in attrs:
        attrs["ome"] = {**attrs["ome"], "multiscales": multiscales}
    else:
        attrs["multiscales"] = multiscales
    fmt = getattr(getattr(node, "metadata", None), "zarr_format", 2)
    group = zarr.open_group(str(target), mode="w", zarr_format=fmt)
    group.attrs.update(attrs)
    return zarr.open_array(str(target / level["path"]), mode="w", shape=shape, chunks=chunks, dtype=dtype,
                           zarr_format=fmt)


def tiff_info(tif: tifffile.TiffFile) -> dict:
    """What the output keeps of an input TIFF: the pixel size (resolution tags and unit) and the ImageJ
    spacing, unit and frame interval where there are any."""
    page, info = tif.pages.first, {}
    x, y = page.tags.get("XResolution"), page.tags.get("YResolution")
    if x is not None and y is not None:
        info["resolution"] = (tuple(x.value), tuple(y.value))
        unit = page.tags.get("ResolutionUnit")
        info["resolutionunit"] = int(unit.value) if unit is not None else 2
    imagej = tif.imagej_metadata or {}
    info["imagej"] = {key: imagej[key] for key in ("spacing", "unit", "finterval") if key in imagej}
    return info


def read_tiff(path: Path, axes: str | None) -> tuple[np.ndarray, str, dict]:
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"cannot read {path}: the file holds no image (empty or truncated TIFF)")
            if len(tif.series) > 1:
                raise InputError(f"cannot read {path}: it holds {len(tif.series)} image series; save each "
                                 "as its own file (only one series is denoised, so none is left out silently)")
            series = tif.series[0]
            return series.asarray(), axes or series.axes, tiff_info(tif)
    except InputError:
        raise
    except Exception as error:  # tifffile raises many kinds for a bad file
        raise InputError(f"cannot read {path}: {error}") from error


def write_tiff(path: Path, image: np.ndarray, axes: str, info: dict | None = None, record: dict | None = None) -> None:
    """Write atomically, so a failed run never leaves a half-written or clobbered output; with the input's
    pixel size and ImageJ spacing (``info``, from :func:`tiff_info`) and ``record`` (what made it) in the
    TIFF's JSON description.

    Raises InputError (one plain line) when the file cannot be written: a read-only or full disk, a
    folder that cannot be made."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(suffix=".tif", dir=path.parent)
        os.close(handle)
        info = info or {}
        metadata = {"axes": axes, **info.get("imagej", {}), **({"noise2fast": record} if record else {})}
        resolution = {"resolution": info["resolution"], "resolutionunit": info["resolutionunit"]} \
            if "resolution" in info else {}
        # grey planes unless the image has samples (S): 3 or 4 leading planes are not an RGB image
        photometric = {} if "S" in axes.upper() else {"photometric": "minisblack"}
        tifffile.imwrite(temporary, image, metadata=metadata, **resolution, **photometric)
        os.replace(temporary, path)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


def denoise_with_progress(image, label: str, args, axes: str | None, out=None, client=None) -> tuple:
    """Denoise with a tqdm bar; return the result, a summary of steps, validation PSNR and time, and the job."""
    params = {"preset": args.preset} if args.preset else {}
    job = iter_denoise(image, axes=axes, device=args.device, seed=args.seed, max_steps=args.max_steps,
                       dtype=getattr(args, "dtype", None), stack=getattr(args, "stack", None), out=out,
                       model=args.model, model_use=args.model_use, client=client, **params)
    # a stack's bar counts planes (its rate gives the time left); one plane's counts steps
    planes = job.n_planes > 1
    total = job.n_planes if planes else args.max_steps
    steps, best, start = 0, [], time.perf_counter()
    with tqdm(desc=label, unit="plane" if planes else "step", total=total, leave=False, file=sys.stderr,
              disable=args.quiet) as bar:
        for event in job:
            if planes:
                bar.update(1 if event.done else 0)
            else:  # steps finished (the preview's events, and those of a step under way, add none)
                bar.update(event.step - bar.n)
            bar.set_postfix(plane=f"{event.plane + 1}/{event.n_planes}", step=event.step,
                            val_psnr=f"{event.best_val_psnr:.2f}")
            if event.done:
                steps += event.step
                best.append(event.best_val_psnr)
    seconds = time.perf_counter() - start
    finite = [b for b in best if np.isfinite(b)]
    best_text = f"{np.median(finite):.2f} dB" if finite else "n/a"
    planes = f" over {job.n_planes} planes" if job.n_planes > 1 else ""
    summary = f"{steps} steps{planes}, best validation PSNR {best_text}, {seconds:.1f} s"
    if args.model is not None:
        summary += f", model {args.model} ({args.model_use})"
    return job.result(), summary, job


def save_trained(job, args) -> str:
    """``--save-model``, once the output is written: the summary's ending; InputError (one line) where the
    model cannot be saved (none trained, e.g. no validation within --max-steps; an unwritable path)."""
    if args.save_model is None:
        return ""
    try:
        job.save_model(args.save_model, overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        raise InputError(f"--save-model {args.save_model}: {getattr(error, 'strerror', None) or error}") from error
    return f", model saved to {args.save_model}"


def record(args) -> dict:
    """What made an output: the package version, the method and the settings given."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("napari-noise2fast")
    except PackageNotFoundError:
        package = "unknown"
    return {"version": package, "method": "noise2fast", "preset": args.preset or "fast", "seed": args.seed,
            "max_steps": args.max_steps, "stack": getattr(args, "stack", None) or "default",
            **({"model": str(args.model), "model_use": args.model_use} if args.model is not None else {})}


def denoise_to_zarr(source: Path, target: Path, args, client=None) -> str:
    """A zarr (or TIFF) source denoised into the zarr store ``target``, plane by plane, going on from an
    earlier run's finished planes there; the summary line."""
    if not is_zarr(target):
        raise InputError(f"{source}: a zarr input writes a zarr output; give -o a path ending in .zarr")
    if is_zarr(source):
        image, axes = open_zarr(source)
        axes = args.axes or axes
        like = source
    else:
        image, axes, _ = read_tiff(source, args.axes)
        like = None
    dtype = getattr(args, "dtype", None) or np.float32
    try:
        out = zarr_output(target, tuple(image.shape), dtype, like=like, overwrite=args.overwrite)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}") from error
    _, summary, job = denoise_with_progress(image, source.name, args, axes, out=out, client=client)
    return summary + save_trained(job, args)


def denoise_file(source: Path, target: Path, args, client=None) -> str:
    """One input denoised into ``target`` (a recording's planes predicted on the cluster of ``client``, if
    given; planes trained one after another, ``--stack warm`` or ``independent`` or the reference preset,
    run here); its summary line. Also a task of its own on a worker when there are several inputs."""
    recording = resolved_stack("noise2fast", args.stack, {"preset": args.preset} if args.preset else {})
    predicting = args.model is not None and args.model_use == "predict"
    client = client if recording == "recording" or predicting else None
    if is_zarr(source) or is_zarr(target):
        summary = denoise_to_zarr(source, target, args, client)
    else:
        image, axes, info = read_tiff(source, args.axes)
        result, summary, job = denoise_with_progress(image, source.name, args, axes, client=client)
        write_tiff(target, result, axes, info, record(args))
        summary += save_trained(job, args)
    return f"{source}: {summary} -> {target}"


def connect(args):
    """A dask.distributed client for ``--scheduler ADDRESS`` or ``--workers N`` (a local cluster of N
    one-thread worker processes); None without either."""
    if args.scheduler is None and args.workers is None:
        return None
    try:
        from distributed import Client

        from napari_noise2fast.cluster import local_cluster
    except ImportError as error:
        raise InputError("--scheduler and --workers need dask.distributed (pip install distributed)") from error
    if args.scheduler is not None:
        try:
            return Client(args.scheduler, timeout=30)
        except (OSError, TimeoutError, ValueError) as error:
            raise InputError(f"cannot reach the scheduler at {args.scheduler}: {error}") from error
    return Client(local_cluster(args.workers))


def run_sample(args) -> int:
    from skimage.metrics import peak_signal_noise_ratio

    from napari_noise2fast.samples import clean_cell, noisy_cell

    noisy, clean = noisy_cell(), clean_cell()
    result, summary, job = denoise_with_progress(noisy, "sample", args, "YX")
    data_range = clean.max() - clean.min()
    before = peak_signal_noise_ratio(clean, noisy.astype(np.float64), data_range=data_range)
    after = peak_signal_noise_ratio(clean, result.astype(np.float64), data_range=data_range)
    target = args.output or Path("sample_N2F.tif")
    if target.suffix.lower() not in TIFF_SUFFIXES:
        target = target / "sample_N2F.tif"
    try:
        write_tiff(target, result, "YX")
        summary += save_trained(job, args)
    except InputError as error:
        print(f"noise2fast: error: {error}", file=sys.stderr)
        return 1
    print(f"sample: {summary}; PSNR against clean {before:.2f} dB -> {after:.2f} dB; wrote {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="noise2fast", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path,
                        help="TIFF files, folders of TIFF files, or zarr / OME-Zarr stores (.zarr)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output folder (or output .tif for a single input); default: beside each input")
    parser.add_argument("--axes", default=None,
                        help="axes of every input, e.g. ZYX, TCYX, YXS (default: from the file)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on training steps per plane")
    parser.add_argument("--seed", type=int, default=None, help="seed for repeatable CPU runs")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, then CPU), cpu, cuda or mps")
    parser.add_argument("--preset", default=None,
                        help="Noise2Fast preset: fast (default) or reference (the published settings)")
    parser.add_argument("--stack", choices=STACKS, default=None,
                        help="a stack's planes: recording (one model for all, the default for the fast preset), "
                             "warm (plane after plane, each from the one before) or independent")
    parser.add_argument("--dtype", type=output_dtype, default=None,
                        help="output dtype, e.g. uint16 (rounded, inside the input's range); default float32")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (and an input given as its own output)")
    parser.add_argument("--save-model", type=Path, default=None, metavar="PATH",
                        help="save the trained model to PATH (one input only; the name as given)")
    parser.add_argument("--model", type=Path, default=None, metavar="PATH",
                        help="a saved model: denoise with it (no training), or start from it (--model-use warm)")
    parser.add_argument("--model-use", choices=MODEL_USES, default="predict",
                        help="with --model: predict (default) or warm (train, starting from the model)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a dask.distributed scheduler (e.g. tcp://host:8786): several inputs are denoised as "
                             "tasks on its workers, a recording's planes predicted there")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="as --scheduler, on a local cluster of N one-thread worker processes")
    parser.add_argument("--sample", action="store_true", help="denoise the bundled sample image")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def error_line(source: Path, error: Exception) -> str:
    """The line an input's error is reported on: an InputError names its input already."""
    return str(error) if isinstance(error, InputError) else f"{source}: {error}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def check_models(args, inputs: int) -> str | None:
    """What is wrong with --model or --save-model before any work (one line), or None."""
    if args.save_model is not None:
        if inputs > 1:
            return f"--save-model saves one model; there are {inputs} inputs: give one"
        if args.save_model.is_dir():
            return f"--save-model {args.save_model} is a folder; give a file name"
        if args.save_model.exists() and not args.overwrite:
            return f"--save-model {args.save_model} exists; pass --overwrite to replace it"
        if not args.save_model.absolute().parent.is_dir():
            return f"--save-model {args.save_model}: its folder does not exist"
    if args.model is not None:
        try:
            load_model(args.model, "noise2fast")
        except ValueError as error:
            return f"--model: {error}"
    return None


def output_dtype(name: str) -> np.dtype:
    """An integer or floating-point NumPy dtype by name (argparse type)."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif" or dtype.itemsize > 8:
        raise argparse.ArgumentTypeError(f"not an integer or floating-point dtype: {name!r}")
    return dtype


def build_compare_parser() -> argparse.ArgumentParser:
    from napari_noise2fast.comparison import DEFAULT_METHODS
    from napari_noise2fast.methods import METHODS

    parser = ArgumentParser(
        prog="noise2fast compare",
        description="Denoise each file with several methods in turn and print a table per file "
                    "(method, steps, seconds, validation PSNR, and PSNR/SSIM against --reference).")
    parser.add_argument("paths", nargs="+", type=Path, help="TIFF files or folders of TIFF files")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from: {', '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="clean reference: a file (one input) or a folder holding files of the same names")
    parser.add_argument("--time-budget", type=float, default=None, help="wall-clock seconds per method")
    parser.add_argument("--equal-time", action="store_true",
                        help="give every method the time noise2fast needed (noise2fast runs first)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for the outputs, <name>_<method>.tif (default: not written)")
    parser.add_argument("--csv", type=Path, default=None, help="append every row to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--axes", default=None, help="axes of every input (default: from the file)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def reference_for(source: Path, reference: Path | None, axes: str | None) -> np.ndarray | None:
    if reference is None:
        return None
    path = reference / source.name if reference.is_dir() else reference
    if not path.is_file():
        raise InputError(f"no reference for {source.name}: {path} does not exist")
    return read_tiff(path, axes)[0]


def compare_main(argv: list[str]) -> int:
    from napari_noise2fast.comparison import TABLE_COLUMNS, compare
    from napari_noise2fast.methods import get_method

    args = build_compare_parser().parse_args(argv)
    files, errors = collect_inputs(args.paths)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for source in files:
        targets = []
        if args.output:
            targets = [args.output / f"{source.stem}_{method}.tif" for method in methods]
            _, refused = plan_outputs([source] * len(targets), targets, args.overwrite, inputs=files)
            if refused:  # decided before the comparison runs, so no time is spent on what cannot be kept
                errors += refused
                continue
        try:
            image, axes, _ = read_tiff(source, args.axes)
            reference = reference_for(source, args.reference, axes)
            with tqdm(desc=source.name, unit="step", leave=False, file=sys.stderr, disable=args.quiet) as bar:
                def progress(method, event, bar=bar):
                    bar.update(0 if event.partial else 1)
                    bar.set_postfix(method=method, plane=f"{event.plane + 1}/{event.n_planes}")

                result = compare(image, methods, reference=reference, time_budget=args.time_budget,
                                 equal_time=args.equal_time, axes=axes, seed=args.seed, device=args.device,
                                 progress=progress)
        except (InputError, ValueError) as error:
            errors.append(error_line(source, error))
            continue
        print(f"\n{source}" + (" (equal time)" if args.equal_time else "") + "\n" + result.table(), flush=True)
        for method, target in zip(methods, targets, strict=False):
            try:
                write_tiff(target, result.outputs[get_method(method).name], axes)
            except InputError as error:
                errors.append(str(error))
        if args.csv:
            try:
                new = not args.csv.exists()
                with args.csv.open("a") as handle:
                    if new:
                        handle.write(",".join(("file",) + TABLE_COLUMNS) + "\n")
                    for line in result.csv().splitlines()[1:]:
                        handle.write(f"{source.name},{line}\n")
            except OSError as error:
                errors.append(f"cannot write {args.csv}: {error.strerror or error}")
    for error in errors:
        print(f"noise2fast compare: error: {error}", file=sys.stderr)
    return 1 if errors else 0


def noise_main(argv: list[str]) -> int:
    """``noise2fast noise``: each file's noise against its signal (see :func:`napari_noise2fast.estimate_noise`)."""
    from napari_noise2fast.noise import ESTIMATORS, estimate_noise

    parser = ArgumentParser(
        prog="noise2fast noise",
        description="Learn each file's noise from the file alone and print its standard deviation against the "
                    "signal, and the line variance = gain * signal + read through it (a detector's gain is its "
                    "slope).")
    parser.add_argument("paths", nargs="+", type=Path, help="TIFF files or folders of TIFF files")
    parser.add_argument("--method", choices=ESTIMATORS, default="pn2v",
                        help="pn2v: PN2V's bootstrap (Noise2Void, then a Gaussian mixture; minutes); noise-net: "
                             "the noise network trained with a denoiser (minutes); vst: the blind line through 7x7 "
                             "local statistics (seconds) (default: %(default)s)")
    parser.add_argument("--axes", default=None, help="axes of every input (default: from the file)")
    parser.add_argument("--points", type=int, default=8, help="signal levels to print (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    files, errors = collect_inputs(args.paths)
    for source in files:
        try:
            image, axes, _ = read_tiff(source, args.axes)
            if set(axes.upper()) & {"C", "S"}:
                raise InputError(f"{source.name}: one channel at a time (its axes are {axes})")
            model = estimate_noise(image, args.method, seed=args.seed, device=args.device)
        except (InputError, ValueError) as error:
            errors.append(error_line(source, error))
            continue
        signals, stds = model.curve(max(args.points, 2))
        print(f"\n{source} ({args.method}): variance = {model.gain:.6g} * signal + {model.read:.6g}")
        print("| signal | noise std |\n|---|---|")
        for signal, std in zip(signals, stds, strict=True):
            print(f"| {signal:.6g} | {std:.4g} |", flush=True)
    for error in errors:
        print(f"noise2fast noise: error: {error}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # a bad file is reported on one line, not logged too
    if argv and argv[0] == "compare":
        return compare_main(argv[1:])
    if argv and argv[0] == "noise":
        return noise_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.sample and not args.paths:
        parser.error("give TIFF files or folders to denoise, or --sample")
    files, errors = collect_inputs(args.paths) if not args.sample else ([], [])
    wrong = check_models(args, 1 if args.sample else len(files))
    if wrong is not None:
        print(f"noise2fast: error: {wrong}", file=sys.stderr)
        return 1
    if args.sample:
        return run_sample(args)
    if args.output is not None and args.output.suffix.lower() in TIFF_SUFFIXES and len(files) > 1:
        print(f"noise2fast: error: -o {args.output} names one .tif file but there are {len(files)} inputs; "
              "give a folder", file=sys.stderr)
        return 1
    single = len(args.paths) == 1 and len(files) == 1
    planned, refused = plan_outputs(files, [output_path(f, args.output, single) for f in files], args.overwrite)
    errors += refused
    if args.scheduler is not None and args.workers is not None:
        errors.append("give --scheduler or --workers, not both")
        planned = []
    try:
        client = connect(args) if planned else None
    except InputError as error:
        errors.append(str(error))
        planned, client = [], None
    try:
        if client is not None and len(planned) > 1:  # one task a file, on the workers
            from distributed import as_completed

            args.quiet = True  # no progress bars from the workers
            if args.model is not None:  # the workers' own working folders may differ from this one
                args.model = args.model.absolute()
            tasks = {client.submit(denoise_file, source.absolute(), target.absolute(), args, pure=False): source
                     for source, target in planned}
            for task in as_completed(tasks):
                try:
                    print(task.result(), flush=True)
                except (InputError, ValueError) as error:
                    errors.append(error_line(tasks[task], error))
        else:
            for source, target in planned:
                try:
                    print(denoise_file(source, target, args, client), flush=True)
                except (InputError, ValueError) as error:
                    errors.append(error_line(source, error))
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None and args.scheduler is None:
                cluster.close()
    for error in errors:
        print(f"noise2fast: error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
