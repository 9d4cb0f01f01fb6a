"""The noise2fast command on real files: outputs, dtypes, summaries and errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_noise2fast.cli import main


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(1000, 100, (20, 24)).astype(np.uint16)
    b = rng.normal(0, 1, (2, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)
    tifffile.imwrite(tmp_path / "b.tif", b, metadata={"axes": "ZYX"})
    return tmp_path, a, b


def test_folder_is_denoised_beside_inputs(images, capsys):
    folder, a, b = images
    assert main([str(folder), "--max-steps", "2", "--seed", "0", "--device", "cpu", "-q", "--stack", "warm"]) == 0
    out_a, out_b = tifffile.imread(folder / "a_N2F.tif"), tifffile.imread(folder / "b_N2F.tif")
    assert out_a.dtype == np.float32 and out_a.shape == a.shape  # float32 unless --dtype asks
    assert out_b.dtype == np.float32 and out_b.shape == b.shape
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "2 steps, best validation PSNR" in lines[0] and "a_N2F.tif" in lines[0]
    assert "4 steps over 2 planes" in lines[1]
    # a second run takes no output as an input, and replaces none without --overwrite
    written = {name: (folder / name).read_bytes() for name in ("a_N2F.tif", "b_N2F.tif")}
    assert main([str(folder), "--max-steps", "1", "--device", "cpu", "-q"]) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "a_N2F.tif", "b.tif", "b_N2F.tif"]
    assert all((folder / name).read_bytes() == data for name, data in written.items())
    assert all("exists; pass --overwrite" in line for line in capsys.readouterr().err.strip().splitlines())
    assert main([str(folder), "--max-steps", "1", "--device", "cpu", "-q", "--overwrite", "--dtype", "uint16"]) == 0
    assert tifffile.imread(folder / "a_N2F.tif").dtype == np.uint16


def test_output_file_and_folder(images, tmp_path):
    folder, a, _ = images
    target = tmp_path / "out" / "custom.tif"
    assert main([str(folder / "a.tif"), "-o", str(target), "--max-steps", "1", "--device", "cpu", "-q"]) == 0
    assert tifffile.imread(target).shape == a.shape
    assert main([str(folder / "a.tif"), str(folder / "b.tif"), "-o", str(tmp_path / "many"),
                 "--max-steps", "1", "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["a_N2F.tif", "b_N2F.tif"]


def test_axes_option_overrides_file(images, capsys):
    folder, _, _ = images
    assert main([str(folder / "b.tif"), "--axes", "YXC", "--max-steps", "1", "--device", "cpu", "-q"]) == 1
    assert "at least 8x8 pixels, got 2x16" in capsys.readouterr().err
    assert not (folder / "b_N2F.tif").exists()


def test_missing_and_unreadable_files_fail_but_others_are_written(images, capsys):
    folder, a, _ = images
    (folder / "broken.tif").write_bytes(b"this is not a tiff")
    (folder / "header.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")  # an 8-byte header, no image
    (folder / "done.tif").write_bytes((folder / "broken.tif").read_bytes())
    previous = np.full((4, 4), 9, dtype=np.uint8)
    tifffile.imwrite(folder / "done_N2F.tif", previous)
    code = main([str(folder / name) for name in ("missing.tif", "broken.tif", "header.tif", "done.tif", "a.tif")]
                + ["--max-steps", "1", "--device", "cpu", "-q"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4
    assert any("no such file or folder" in line and "missing.tif" in line for line in err)
    assert any("cannot read" in line and "broken.tif" in line for line in err)
    assert any("cannot read" in line and "header.tif" in line and "holds no image" in line for line in err)
    assert any("done_N2F.tif exists" in line for line in err)
    assert tifffile.imread(folder / "a_N2F.tif").shape == a.shape
    np.testing.assert_array_equal(tifffile.imread(folder / "done_N2F.tif"), previous)


def test_no_arguments_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_sample_reports_psnr(tmp_path, capsys):
    target = tmp_path / "sample.tif"
    assert main(["--sample", "-o", str(target), "--max-steps", "3", "--seed", "0", "--device", "cpu", "-q"]) == 0
    line = capsys.readouterr().out
    assert "PSNR against clean" in line and tifffile.imread(target).dtype == np.float32


def test_tiff_output_keeps_the_pixel_size_and_records_the_run(tmp_path, capsys):
    image = np.random.default_rng(0).normal(1000, 100, (2, 20, 24)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", image, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    assert main([str(tmp_path / "cells.tif"), "--max-steps", "2", "--seed", "3", "--device", "cpu", "-q"]) == 0
    with tifffile.TiffFile(tmp_path / "cells_N2F.tif") as tif:
        page = tif.pages.first
        numerator, denominator = page.tags["XResolution"].value
        assert numerator / denominator == pytest.approx(1 / 0.65, rel=1e-5)  # pixels per unit, as the input
        metadata = tif.shaped_metadata[0]
    assert metadata["spacing"] == 2.5 and metadata["unit"] == "um"
    assert metadata["noise2fast"]["seed"] == 3 and metadata["noise2fast"]["method"] == "noise2fast"


def test_a_multi_series_tiff_is_refused_on_one_line(tmp_path, capsys):
    with tifffile.TiffWriter(tmp_path / "two.tif") as writer:
        writer.write(np.zeros((16, 16), np.uint8) + np.arange(16, dtype=np.uint8))
        writer.write(np.ones((20, 20), np.uint8))
    assert main([str(tmp_path / "two.tif"), "--max-steps", "1", "-q"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "2 image series" in error[0]
    assert not (tmp_path / "two_N2F.tif").exists()


def test_ome_zarr_in_ome_zarr_out_and_a_rerun_goes_on(tmp_path, capsys):
    import zarr
    from ome_zarr.writer import write_image

    image = np.random.default_rng(0).normal(500, 50, (3, 32, 32)).astype(np.uint16)
    write_image(image, zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="w"), axes="tyx",
                scale_factors=(2,), scale={"t": 1.0, "y": 0.5, "x": 0.5})  # 0.5 units a pixel
    target = tmp_path / "denoised.zarr"
    command = [str(tmp_path / "movie.ome.zarr"), "-o", str(target), "--max-steps", "3", "--seed", "0",
               "--device", "cpu", "-q"]
    assert main(command) == 0
    assert "3 steps over 3 planes" in capsys.readouterr().out
    group = zarr.open_group(str(target), mode="r")
    multiscales = dict(group.attrs)["ome"]["multiscales"][0]
    assert [axis["name"] for axis in multiscales["axes"]] == ["t", "y", "x"]
    assert len(multiscales["datasets"]) == 1
    assert multiscales["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.5]
    level = group[multiscales["datasets"][0]["path"]]
    source = zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="r")["s0"]
    assert level.shape == image.shape and level.chunks == source.chunks and level.dtype == np.float32
    first = np.asarray(level[:])
    assert main(command) == 0  # the finished output: nothing is done again, nothing changes
    assert "0 steps over 3 planes" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(group[multiscales["datasets"][0]["path"]][:]), first)
    assert main([str(tmp_path / "movie.ome.zarr"), "-o", str(tmp_path / "movie.ome.zarr"), "--overwrite", "-q"]) == 1
    np.testing.assert_array_equal(np.asarray(source[:]), image)  # the input store is never written


def test_the_step_bar_counts_steps_not_the_events_of_steps_in_slices(images, monkeypatch):
    from napari_noise2fast import cli, engine

    monkeypatch.setattr(engine, "SLICE_SECONDS", 0.0)  # an event after every part of a step
    bars = []

    class Bar(cli.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(cli, "tqdm", Bar)
    folder, _, _ = images
    assert main([str(folder / "a.tif"), "--max-steps", "4", "--seed", "0", "--device", "cpu"]) == 0
    assert [(bar.n, bar.total) for bar in bars] == [(4, 4)]
