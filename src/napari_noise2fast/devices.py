"""Choosing the compute device (``"auto"`` means CUDA, then Apple MPS, then the CPU) and, by a timed probe,
the precision and memory layout that run fastest on it (:func:`precision_report`)."""

from __future__ import annotations

import math
import time

import torch

from napari_noise2fast.activations import ReLU


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a device.

    Raises
    ------
    ValueError
        If the name is not a device, or names one this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'mps' or a torch.device, got {device!r}")
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            resolved = torch.device(name)
        except RuntimeError as error:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}"
            ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but Apple MPS is not available on this machine")
    if resolved.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    return resolved


PROBE_SIDE = 64  # the probe's input: (1, 64, PROBE_SIDE, PROBE_SIDE), one Noise2Fast block (two 3x3 convs, 64 wide)
PROBE_REPEATS = 3  # timed repeats after one warm-up; the minimum counts
BFLOAT16_GAIN = 1.15  # bfloat16 is chosen only where it is at least this much faster than float32
CONTIGUOUS_GAIN = 1.1  # and the contiguous layout only where that much faster than channels-last (see below)
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_REPORTS: dict[str, dict] = {}


def _probe_block(device: torch.device, dtype: torch.dtype, layout: torch.memory_format) -> float:
    """Seconds of one forward and backward pass of a Noise2Fast block in ``dtype`` and ``layout`` (the best of
    ``PROBE_REPEATS`` after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), ReLU(),
                                torch.nn.Conv2d(64, 64, 3, padding=1), ReLU())
    block = block.to(device, memory_format=layout)
    source = torch.rand(1, 64, PROBE_SIDE, PROBE_SIDE, generator=generator).to(device).contiguous(memory_format=layout)
    enabled = dtype != torch.float32
    times = []
    for _ in range(PROBE_REPEATS + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            output = block(source)
        output.float().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def precision_report(device: str | torch.device = "auto", *, measure=None) -> dict:
    """What ``precision="auto"`` and ``channels_last="auto"`` chose on ``device``, and why.

    The first call for a device times one Noise2Fast block (two 3x3 convolutions 64 wide, forward and
    backward, on a 64x64 input) in float32 and bfloat16, each contiguous and channels-last; later calls
    return the cached report. bfloat16 is chosen where it is at least ``BFLOAT16_GAIN`` times faster than
    float32 (emulated bfloat16, on CPUs without the instructions, is several times slower); then, at that
    precision, channels-last unless contiguous is at least ``CONTIGUOUS_GAIN`` times faster. The margin favours
    channels-last because the block alone understates its gain on the whole network where it pays (AMD EPYC
    with AVX512-BF16: equal on the block, 1.3x on a whole 256x256 step in bfloat16), while where it loses it
    loses clearly (AVX2 only: 2x slower in float32). On Apple MPS, and CUDA GPUs without bfloat16,
    nothing is timed: float32, contiguous.

    Parameters
    ----------
    device : str or torch.device
        As :func:`resolve_device`.
    measure : callable, optional
        ``measure(device, dtype, memory_format) -> seconds`` in place of the timed probe (for tests); such a
        report is not cached.

    Returns
    -------
    dict
        ``device`` (its name), ``seconds`` (``{"float32": {"contiguous": s, "channels_last": s},
        "bfloat16": {...}}``, empty where nothing was timed), ``precision`` (``"float32"`` or
        ``"bfloat16"``), ``channels_last`` (bool) and ``reason`` (one sentence).
    """
    resolved = resolve_device(device)
    key = str(resolved)
    if measure is None and key in _REPORTS:
        return _REPORTS[key]
    if resolved.type == "mps" or (resolved.type == "cuda" and not torch.cuda.is_bf16_supported()):
        report = {"device": key, "seconds": {}, "precision": "float32", "channels_last": False,
                  "reason": "no fast bfloat16 on this device: float32, contiguous, not timed"}
    else:
        timer = measure or _probe_block
        seconds = {name: {layout: float(timer(resolved, dtype, memory_format))
                          for layout, memory_format in LAYOUTS.items()}
                   for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
        best = {name: min(times.values()) for name, times in seconds.items()}
        ratio = best["float32"] / best["bfloat16"] if best["bfloat16"] > 0 else math.inf
        precision = "bfloat16" if ratio >= BFLOAT16_GAIN else "float32"
        times = seconds[precision]
        gain = times["channels_last"] / times["contiguous"] if times["contiguous"] > 0 else math.inf
        channels_last = gain < CONTIGUOUS_GAIN
        report = {"device": key, "seconds": seconds, "precision": precision, "channels_last": channels_last,
                  "reason": f"bfloat16 measured {ratio:.2f}x as fast as float32 (bfloat16 needs {BFLOAT16_GAIN}x); "
                            f"in {precision} contiguous {gain:.2f}x as fast as channels-last (contiguous needs "
                            f"{CONTIGUOUS_GAIN}x)"}
    if measure is None:
        _REPORTS[key] = report
    return report


def fast_dtype(device: torch.device) -> torch.dtype:
    """The precision ``"auto"`` means on ``device``: bfloat16 where :func:`precision_report` measured it
    faster, else float32."""
    return torch.bfloat16 if precision_report(device)["precision"] == "bfloat16" else torch.float32


def fast_layout(device: torch.device) -> torch.memory_format:
    """The memory layout ``channels_last="auto"`` means on ``device`` (see :func:`precision_report`)."""
    return torch.channels_last if precision_report(device)["channels_last"] else torch.contiguous_format
