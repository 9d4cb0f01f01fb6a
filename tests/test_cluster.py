"""A recording's planes predicted on a dask.distributed cluster (issue 23, items 2-3): the same result as
the local run to float tolerance, for NumPy and lazy (zarr) inputs, trained here or loaded from a file."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_noise2fast import denoise, iter_denoise  # noqa: E402


@pytest.fixture(scope="module")
def client():
    from napari_noise2fast.cluster import local_cluster

    with local_cluster(2) as cluster, distributed.Client(cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def recording():
    rng = np.random.default_rng(1)
    clean = 1000 + 400 * np.sin(np.mgrid[:48, :56][1] / 4)
    return np.clip(clean + rng.normal(0, 150, (5, 48, 56)), 0, 65535).astype(np.uint16)


SETTINGS = dict(axes="TYX", seed=0, device="cpu", max_steps=20, validate_every=5)


def test_a_recording_predicted_on_a_local_cluster_equals_the_local_run(client, recording):
    local = denoise(recording, **SETTINGS)
    job = iter_denoise(recording, client=client, **SETTINGS)
    events = list(job)
    done = [e for e in events if e.done]
    assert sorted(e.plane for e in done) == list(range(5)) and sum(e.step for e in done) == 20
    remote = job.result()
    assert remote.dtype == local.dtype and remote.shape == recording.shape
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-3 * np.ptp(local))
    assert not np.array_equal(remote, recording.astype(np.float32))


def test_a_lazy_recording_is_read_by_the_workers_and_a_saved_model_predicts_there(client, recording, tmp_path):
    import zarr

    store = zarr.open_array(str(tmp_path / "movie.zarr"), mode="w", shape=recording.shape, chunks=(1, 48, 56),
                            dtype=recording.dtype)
    store[:] = recording
    job = iter_denoise(recording, **SETTINGS)
    for _ in job:
        pass
    job.save_model(tmp_path / "model")
    local = denoise(store, axes="TYX", device="cpu", model=tmp_path / "model")
    remote = denoise(store, axes="TYX", device="cpu", model=tmp_path / "model", client=client,
                     out=str(tmp_path / "out.zarr"))
    np.testing.assert_allclose(np.asarray(remote), local, rtol=0, atol=1e-3 * np.ptp(local))
    np.testing.assert_allclose(local, job.result(), rtol=0, atol=1e-3 * np.ptp(local))


def test_the_workers_write_a_zarr_output_themselves(client, recording, tmp_path, monkeypatch):
    """With ``out`` a zarr path the workers write their planes into it and send back only the planes' ranges:
    no plane is written where the job runs, and the output equals the local run and is recorded finished (a
    run started again on it has nothing left to do). A zarr array with two planes per chunk is written by
    the job, as two tasks' planes must not share a chunk."""
    import zarr

    from napari_noise2fast.output import ATTRS_KEY, Output

    local = denoise(recording, **SETTINGS)
    writes = []
    original = Output.write
    monkeypatch.setattr(Output, "write", lambda self, index, values: writes.append(index) or
                        original(self, index, values))
    job = iter_denoise(recording, client=client, out=str(tmp_path / "out.zarr"), **SETTINGS)
    done = [e for e in job if e.done]
    assert sorted(e.plane for e in done) == list(range(5)) and all(e.output is None for e in done)
    assert writes == []  # every plane written by a worker
    written = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_allclose(written[:], local, rtol=0, atol=1e-3 * np.ptp(local))
    assert dict(written.attrs)[ATTRS_KEY]["finished"] == list(range(5))
    again = [e for e in iter_denoise(recording, client=client, out=str(tmp_path / "out.zarr"), **SETTINGS) if e.done]
    assert [e.stop_reason for e in again] == ["resumed"] * 5

    shared = zarr.open_array(str(tmp_path / "pairs.zarr"), mode="w", shape=recording.shape, chunks=(2, 48, 56),
                             dtype=np.float32)
    remote = denoise(recording, client=client, out=shared, dtype=np.float32, **SETTINGS)
    assert sorted(writes) == list(range(5))  # written here, a chunk once both its planes are done
    assert np.asarray(remote).dtype == np.float32
    np.testing.assert_allclose(np.asarray(remote), denoise(recording, dtype=np.float32, **SETTINGS), rtol=0,
                               atol=1e-3 * np.ptp(local))


def test_client_is_checked_and_needs_a_recording(client, recording):
    with pytest.raises(ValueError, match="client must be a dask.distributed Client"):
        iter_denoise(recording, axes="TYX", client="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="client= predicts a recording's planes on a cluster"):
        iter_denoise(recording, axes="TYX", stack="warm", client=client)


def test_the_cli_runs_files_as_tasks_on_workers_and_a_recording_on_a_scheduler(client, recording, tmp_path, capsys):
    import tifffile

    from napari_noise2fast.cli import main

    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", recording[:3], metadata={"axes": "TYX"}, photometric="minisblack")
    assert main([str(tmp_path), "--workers", "2", "--max-steps", "5", "--seed", "0", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    local = denoise(recording[:3], axes="TYX", max_steps=5, seed=0, device="cpu")
    for name in ("a", "b"):  # trained on a worker, the same as here (the same seed, one thread)
        np.testing.assert_allclose(tifffile.imread(tmp_path / f"{name}_N2F.tif"), local, rtol=0,
                                   atol=1e-3 * np.ptp(local))
    out = tmp_path / "out"
    assert main([str(tmp_path / "a.tif"), "-o", str(out), "--max-steps", "5", "--seed", "0", "--device", "cpu", "-q",
                 "--scheduler", client.scheduler.address]) == 0
    np.testing.assert_allclose(tifffile.imread(out / "a_N2F.tif"), local, rtol=0, atol=1e-3 * np.ptp(local))
    # planes trained one after another run where the command runs, the cluster given or not
    assert main([str(tmp_path / "a.tif"), "-o", str(out), "--stack", "warm", "--max-steps", "3", "--device", "cpu",
                 "-q", "--overwrite", "--scheduler", client.scheduler.address]) == 0
    assert main([str(tmp_path / "a.tif"), "--workers", "1", "--scheduler", "tcp://x:1", "-q", "--overwrite"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "noise2fast: error: give --scheduler or --workers, not both"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.tif"), "--workers", "0"])


def test_a_local_cluster_leaves_this_process_environment_as_it_was():
    import os

    from napari_noise2fast.cluster import local_cluster

    before = dict(os.environ)
    with local_cluster(1):
        assert dict(os.environ) == before  # the nannies set OMP_NUM_THREADS=1 here to spawn their workers
    assert dict(os.environ) == before
