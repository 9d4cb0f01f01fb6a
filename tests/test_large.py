"""Large planes at bounded cost (issue 19): bounded training steps, a fixed validation subset, weights
kept instead of outputs, tiled and block-wise prediction in every method, and refusal above a limit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from napari_noise2fast import compare, denoise, engine, iter_denoise, preview, tiling
from napari_noise2fast.engine import PART, PlaneRun, mse_to_psnr, seeded_module, to_end
from napari_noise2fast.methods import calibrated, get_method
from napari_noise2fast.methods import noise2fast as n2f
from napari_noise2fast.methods.noise2fast import Noise2Fast, chequerboard_pairs, pair_crops, validation_tiles
from napari_noise2fast.methods.noise2void import DEPTH, Noise2Void, UNet, pad_to_multiple
from napari_noise2fast.preview import calibrated_gaussian, invariant_loss, refined_preview


def method(shape, seed=0, **params) -> Noise2Fast:
    noisy = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(seed))
    return Noise2Fast(noisy, rng=np.random.default_rng(seed), level=1 / 255, precision="float32", **params)


@given(height=st.integers(4, 41), width=st.integers(4, 41), pair=st.integers(0, 3), data=st.data())
def test_crops_cut_from_the_plane_equal_crops_of_the_pairs(height, width, pair, data):
    image = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(height * 100 + width))
    source, target = chequerboard_pairs(image)[pair]
    h = data.draw(st.integers(1, source.shape[-2]))
    w = data.draw(st.integers(1, source.shape[-1]))
    if pair < 2:  # the crop's extent along the chequerboard's phase axis is even, as a pair's own is
        w = max(2, w - w % 2)
    else:
        h = max(2, h - h % 2)
    top = data.draw(st.integers(0, source.shape[-2] - h))
    left = data.draw(st.integers(0, source.shape[-1] - w))
    if pair < 2:
        left -= left % 2
    else:
        top -= top % 2
    sources, targets = pair_crops(image, pair, [(top, left)], (h, w))
    torch.testing.assert_close(sources[0, 0], source[0, 0, top:top + h, left:left + w], rtol=0, atol=0)
    torch.testing.assert_close(targets[0, 0], target[0, 0, top:top + h, left:left + w], rtol=0, atol=0)


def test_bounded_mode_switches_on_above_the_budget_and_steps_use_it():
    budget = 1024  # a half-plane above 1,024 pixels: bounded
    small = method((44, 46), budget=budget, crop=16)  # pairs 22x46 = 1,012 pixels
    assert not small.bounded and small.pairs is not None and small.tiles is None
    for context in (False, True):
        large = method((64, 70), budget=budget, crop=16, validation=512, context=context,
                       sampling="random" if context else "tiles")  # a grid this small has no inner 16x16 crop
        assert large.bounded and large.pairs is None
        for _ in range(8):
            groups = large.training_batch()
            assert sum(target.numel() for _, target, _ in groups) == budget  # the stated budget, every step
            for sources, targets, (rows, cols) in groups:
                assert targets.shape[-2:] == (16, 16) and sources[..., rows, cols].shape == targets.shape
                if not context:
                    assert sources.shape[-2:] == (16, 16)
                else:  # 8 pixels of real surroundings, or the pair's edge
                    assert rows.start in (0, 8) or rows.start < 8 and sources.shape[-2] < 32
        if context:
            assert any(sources.shape[-2:] == (32, 32) for _ in range(4) for sources, _, _ in large.training_batch())
    assert method((64, 70), crop=16).bounded is False  # the default budget (65,536) is far above this plane
    assert not method((600, 600), preset="reference").bounded  # the reference never crops
    assert Noise2Fast.check_params()["budget"] == n2f.BUDGET


def test_bounded_steps_cost_the_same_whatever_the_plane(monkeypatch):
    sizes = []
    for shape in [(64, 64), (96, 160)]:
        model = method(shape, budget=512, crop=16, validation=512, validate_every=2, context=False)
        calls = []
        def record(x, real=model.network.forward, calls=calls):
            calls.append(x.shape)
            return real(x)
        monkeypatch.setattr(model.network, "forward", record)
        model.step()
        sizes.append([tuple(s) for s in calls])
    assert sizes[0] == sizes[1] == [(2, 1, 16, 16)]


def test_validation_tiles_are_spread_over_the_plane_and_find_structure():
    plane = torch.full((1, 1, 256, 256), 0.2)
    plane[..., 150:170, 30:50] = 0.9  # one small bright square in the lower-left quarter
    tiles = validation_tiles(plane, pixels=4 * 64 * 64, tile=64)
    assert len(tiles) == 4
    assert all(0 <= t < b <= 256 and 0 <= s < r <= 256 and b - t == r - s == 64 for t, s, b, r in tiles)
    quarters = {(t // 128, s // 128) for t, s, _, _ in tiles}
    assert quarters == {(0, 0), (0, 1), (1, 0), (1, 1)}  # one in each quarter
    lower_left = next(tile for tile in tiles if (tile[0] // 128, tile[1] // 128) == (1, 0))
    top, left, bottom, right = lower_left
    assert top <= 150 and bottom >= 170 and left <= 30 and right >= 50  # on the square, not the background
    strip = validation_tiles(torch.rand(1, 1, 40, 900), pixels=10_000, tile=64)
    assert all(b - t == 40 and r - s == 64 for t, s, b, r in strip) and len(strip) >= 2


def test_the_subset_score_is_the_whole_plane_output_on_the_tiles():
    model = method((80, 90), budget=256, crop=16, validation=3 * 32 * 32)
    model.tiles = [(0, 0, 32, 32), (40, 50, 72, 82), (48, 58, 80, 90)]
    model.validation_set = [(0, tile) for tile in model.tiles]  # (plane, tile): one plane here
    whole = model.predict(model.network)
    expected = np.mean(np.concatenate([((whole - model.noisy[0, 0])[t:b, s:r] ** 2).numpy().ravel()
                                       for t, s, b, r in model.tiles]))
    assert to_end(model._subset_parts(model.network)) == pytest.approx(float(expected), rel=1e-5)


def test_bounded_runs_keep_weights_not_outputs_and_predict_the_best_at_the_end():
    model = method((64, 72), budget=512, crop=16, validation=1024, validate_every=2, window=5, raw_start=True)
    for _ in range(12):
        model.step()
    assert model.best_output is None and model.best_state is not None
    assert all(isinstance(value, torch.Tensor) and value.numel() < 64 * 64 * 64 for value in model.best_state.values())
    best = seeded_module(lambda: n2f.noise2fast_network(64), 0)
    best.load_state_dict(model._shown_state())  # the average's best, or the training network's while it leads
    torch.testing.assert_close(model.result(), model.predict(best))
    assert model.result() is model.result()  # predicted once, then cached
    assert model.result().shape == (64, 72)
    leading = model._leading()
    model.stop_reason = "patience"  # stopped by itself: the average's best, whatever led while racing
    best.load_state_dict(model.best_state)
    torch.testing.assert_close(model.result(), model.predict(best))
    assert leading  # the training network led until the stop: the result is no longer its output
    lead = seeded_module(lambda: n2f.noise2fast_network(64), 0)
    lead.load_state_dict(model.lead[1])
    assert not torch.allclose(model.result(), model.predict(lead))


def test_reference_window_of_snapshots_equals_the_window_of_outputs(monkeypatch):
    image = np.random.default_rng(3).normal(120, 25, (30, 34)).astype(np.float32)
    settings = {"preset": "reference", "window": 6, "seed": 1, "device": "cpu", "max_steps": 10, "preview": False}
    outputs_job = iter_denoise(image, **settings)
    for _ in outputs_job:
        pass
    assert outputs_job._results is not None
    monkeypatch.setattr(n2f, "OUTPUTS_MEMORY", 0)  # a window too large for memory: weight snapshots
    snapshots_job = iter_denoise(image, **settings)
    for _ in snapshots_job:
        model = snapshots_job.current.model
    assert not model.keeps_outputs and all(isinstance(item, dict) for item in model.outputs)
    np.testing.assert_allclose(snapshots_job.result(), outputs_job.result(), rtol=0, atol=1e-4 * float(np.ptp(image)))


@pytest.mark.parametrize("name", ["noise2self", "self2self", "zs-n2n"])
def test_whole_plane_methods_refuse_planes_above_their_limit_before_any_work(monkeypatch, name):
    cls = get_method(name)
    side = int(np.sqrt(cls.max_pixels)) + 1
    image = np.zeros((side, side), np.float32)
    image[0, 0] = 1
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=rf"{cls.display_name} trains on whole planes.*{side}x{side}"):
        denoise(image, method=name)
    with pytest.raises(ValueError, match="trains on whole planes"):
        compare(image, methods=["calibrated", name])
    with pytest.raises(ValueError, match="trains on whole planes"):
        PlaneRun(image, cls)
    stack = np.zeros((2, side - 1, side - 1), np.float32)  # at the limit, planes of a stack pass the check
    cls.check_plane(stack.shape[1:])


def test_noise2void_predicts_in_tiles_as_on_the_whole_plane(monkeypatch):
    network = seeded_module(lambda: UNet(8), 0).eval()
    image = torch.rand(1, 1, 75, 61, generator=torch.Generator().manual_seed(5))
    padded, _ = pad_to_multiple(image, 2**DEPTH)
    with torch.inference_mode():
        whole = network(padded)[0, 0, :75, :61]
    model = Noise2Void(image, rng=np.random.default_rng(0), level=1 / 255, base=8, precision="float32")
    model.network = network
    monkeypatch.setattr(tiling, "TILE_OVERRIDE", 22)  # rounded to 20: tiles at multiples of 4
    with torch.inference_mode():
        tiled = model.predict(padded)
    assert tiled.shape == (75, 61)
    assert (tiled - whole).abs().max() <= 1e-5 * float(whole.abs().max())


def test_calibrated_runs_block_wise_with_overlap(monkeypatch):
    image = np.random.default_rng(0).normal(0.5, 0.1, (70, 90)).astype(np.float32)
    whole = denoise(image, method="calibrated", families="nl_means", preview=False)
    monkeypatch.setattr(calibrated, "BLOCK", 32)
    steps = [event.step for event in iter_denoise(image, method="calibrated", families="nl_means", preview=False)]
    assert steps[-1] == 5 + tiling.count_blocks(image.shape, 32)  # five candidates, then one step per block
    blocks = denoise(image, method="calibrated", families="nl_means", preview=False)
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-5)  # non-local means reaches 8 px: exact


def test_bm3d_runs_block_wise(monkeypatch):
    pytest.importorskip("bm3d")
    from napari_noise2fast.methods import bm3d_vst

    image = np.random.default_rng(0).poisson(np.tile(np.linspace(5, 60, 80), (72, 1))).astype(np.float32)
    whole = denoise(image, method="bm3d", preview=False)
    monkeypatch.setattr(bm3d_vst, "BLOCK", 40)
    monkeypatch.setattr(bm3d_vst, "MARGIN", 16)
    steps = [event.step for event in iter_denoise(image, method="bm3d", preview=False)]
    assert steps[-1] == tiling.count_blocks(image.shape, 40)
    blocks = denoise(image, method="bm3d", preview=False)
    assert blocks.shape == image.shape
    assert np.mean(np.abs(blocks - whole)) < 0.05 * np.mean(np.abs(image - whole))  # close to one pass


MEMORY_SCRIPT = """
import json, resource, sys, time
import numpy as np, torch
def peak_mb():  # VmHWM, this process's own: ru_maxrss starts from the parent's (pytest's) peak after vfork-exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch.set_num_threads(2)
from napari_noise2fast import iter_denoise
side = int(sys.argv[1])
image = np.random.default_rng(0).integers(100, 4000, (side, side), dtype=np.uint16)
start = time.perf_counter()
job = iter_denoise(image, seed=0, device="cpu", max_steps=2, validate_every=1, preview=False)
bounded = []
for event in job:
    bounded.append(job.current.model.bounded)
out = job.result()  # the whole plane predicted from the best weights
print(json.dumps({"peak_mb": peak_mb(), "bounded": all(bounded),
                  "seconds": time.perf_counter() - start, "shape": out.shape, "dtype": str(out.dtype),
                  "changed": bool(np.abs(out - image).mean() > 1)}))
"""


def test_a_2048_plane_runs_in_bounded_memory():
    # measured here (AMD EPYC with AVX2, torch 2.13): 0.74 GB; a whole-plane step at this size needs several
    # GB (the activations of a 1024x2048 half-plane, 64 channels, 8 layers, and their gradients)
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "2048"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shape"] == [2048, 2048] and report["dtype"] == "float32"
    assert report["bounded"] and report["changed"], report  # bounded steps, and the network's output
    assert report["peak_mb"] < 1200, report


def test_events_carry_a_downsampled_view_filled_in_tile_by_tile(monkeypatch):
    from napari_noise2fast import engine

    monkeypatch.setattr(engine, "VIEW_SIDE", 32)
    monkeypatch.setattr(n2f, "VIEW_PIXELS", 32 * 32)
    image = np.random.default_rng(4).normal(100, 20, (96, 80)).astype(np.float32)
    run = PlaneRun(image, Noise2Fast, seed=0, view_every=2, max_steps=12, budget=512, crop=16, validation=1024,
                   validate_every=2, precision="float32")
    events = list(run)
    assert run.view_factor == 3
    views = [event for event in events if event.view is not None]
    assert events[0].stage == "preview" and events[0].view is not None
    previews = [event for event in views if event.step == 0]  # the Gaussian, then total variation if better
    assert [event.preview_filter for event in previews] in (["Gaussian"], ["Gaussian", "total variation"])
    assert [event.step for event in views[len(previews):]] == [2, 4, 6, 8, 10]  # not the final: it has the output
    assert all(event.view.shape == (32, 27) and event.view.dtype == np.float32 for event in views)
    np.testing.assert_allclose(previews[-1].view, engine.downsample(run._to_intensity(run._preview), 3), rtol=1e-6)
    model = run.model
    best = engine.downsample(model.predict(model._best_network()), 3)
    model._canvas = None  # the run's events have viewed already: start the canvas again
    first = model.view(3, lambda: np.zeros((32, 27), np.float32)).copy()  # one 30x30 tile a call
    np.testing.assert_allclose(first[:10, :10], best[:10, :10], rtol=0, atol=1e-5)
    assert not first[10:].any() and not first[:, 10:].any()
    for _ in range(11):  # 4 x 3 tiles in all
        canvas = model.view(3, lambda: pytest.fail("the canvas exists already"))
    np.testing.assert_allclose(canvas, best, rtol=0, atol=1e-5)


def test_iter_denoise_passes_view_every_and_checks_it():
    image = np.random.default_rng(5).normal(100, 20, (40, 48)).astype(np.float32)
    events = list(iter_denoise(image, view_every=2, max_steps=4, seed=0, device="cpu"))
    previews = sum(event.step == 0 for event in events)  # the Gaussian, and total variation where it scores better
    assert [event.view is not None for event in events] == [True] * previews + [False, True, False, False]
    assert events[0].view.shape == image.shape and events[0].view_factor == 1
    with pytest.raises(ValueError, match="view_every"):
        iter_denoise(image, view_every=0)


def test_budget_zero_trains_whole_pairs_at_any_size():
    assert method((64, 70), budget=512, crop=16).bounded
    assert not method((64, 70), budget=0, crop=16).bounded
    with pytest.raises(ValueError, match="budget"):
        method((64, 70), budget=-1)
    with pytest.raises(ValueError, match="budget"):
        method((64, 70), budget=100, crop=16)  # under one crop


@given(height=st.integers(2, 300), width=st.integers(2, 300), crop=st.sampled_from([2, 16, 64]),
       pair=st.integers(0, 3))
def test_the_crop_grid_covers_the_pair_with_even_corners_where_pairs_need_them(height, width, crop, pair):
    h, w = min(crop, height), min(crop, width)
    if pair < 2:
        w -= w % 2
        width += width % 2
    else:
        h -= h % 2
        height += height % 2
    corners = n2f.crop_grid((height, width), (h, w), pair)
    covered = np.zeros((height, width), dtype=int)
    for top, left in corners:
        assert 0 <= top <= height - h and 0 <= left <= width - w
        assert (left if pair < 2 else top) % 2 == 0
        covered[top:top + h, left:left + w] += 1
    assert covered.min() >= 1  # every pixel of the pair in some crop
    assert len(set(corners)) == len(corners)


def test_tiles_sampling_sees_every_crop_once_per_pass_in_shuffled_order():
    model = method((64, 64), budget=2 * 16 * 16, crop=16, validation=512, context=False)
    assert model.settings["sampling"] == "tiles" and model.bounded
    for _ in range(20):
        groups = model.training_batch()
        assert sum(sources.shape[0] for sources, _, _ in groups) == 2  # the budget: two 16x16 crops
    model = method((64, 64), budget=16 * 16, crop=16, validation=512, context=False)
    grid = n2f.crop_grid((32, 64), (16, 16), 0)
    first = model._next_crops(0, (32, 64), (16, 16), 8)
    assert {plane for plane, _, _ in first} == {0}  # (plane, top, left): one plane here
    assert sorted(corner for _, *corner in first) == sorted(map(list, grid))  # one pass: every crop once
    second = model._next_crops(0, (32, 64), (16, 16), 8)
    assert sorted(second) == sorted(first) and second != first  # the next pass, shuffled again
    straddle = model._next_crops(0, (32, 64), (16, 16), 5) + model._next_crops(0, (32, 64), (16, 16), 5)
    assert sorted(corner for _, *corner in straddle[:8]) == sorted(map(list, grid))  # on into the next pass
    assert len(model._passes[0]) == 6  # two of the third pass taken, six left


def test_random_sampling_is_still_there_and_bad_sampling_is_refused():
    model = method((64, 64), budget=16 * 16, crop=16, validation=512, sampling="random", context=False)
    assert model.training_batch()[0][0].shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="sampling"):
        method((64, 64), sampling="grid")


def test_the_preview_filters_large_planes_in_tiles_exactly(monkeypatch):
    from scipy import ndimage

    from napari_noise2fast import preview

    monkeypatch.setattr(preview, "CALIBRATION_SIDE", 64)
    monkeypatch.setattr(preview, "FILTER_TILE", 48)
    plane = np.random.default_rng(5).random((150, 131), dtype=np.float32)
    output, _, sigma = preview.calibrated_gaussian(plane)
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, ndimage.gaussian_filter(plane, sigma, mode="reflect"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sigma", preview.SIGMAS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 3), (33, 64)])
def test_the_separable_gaussian_is_scipys_to_float32_rounding(sigma, shape):
    from scipy import ndimage

    image = np.random.default_rng(shape[0]).random(shape, dtype=np.float32)  # kernels wider than the image too
    output = preview.separable_gaussian(image, sigma)
    assert output.dtype == np.float32 and output.shape == shape
    np.testing.assert_allclose(output, ndimage.gaussian_filter(image, sigma, mode="reflect"), rtol=0, atol=1e-6)


@given(dtype=st.sampled_from([np.uint8, np.uint16, np.int8, np.int16]), data=st.data())
def test_small_integer_planes_normalise_in_float32_as_in_float64(dtype, data):
    from napari_noise2fast.intensity import IntensityMap, cast

    info = np.iinfo(dtype)
    low = data.draw(st.integers(int(info.min), int(info.max) - 1))
    high = data.draw(st.integers(low + 1, int(info.max)))
    plane = np.random.default_rng(high - low).integers(low, high + 1, (9, 11)).astype(dtype)
    plane.flat[:2] = low, high
    mapping = IntensityMap(plane)
    exact = np.clip((plane.astype(np.int64) - low).astype(np.float64) / (high - low), 0, 1).astype(np.float32)
    np.testing.assert_array_equal(mapping.normalise(plane), exact)  # bit for bit
    values = np.random.default_rng(abs(high)).random((9, 11)).astype(np.float32)
    back = mapping.back(values, np.float32)
    slow = cast(mapping.to_float64(values), np.float32, low, high)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, slow, rtol=0, atol=2 * float(np.spacing(np.float32(max(abs(low), abs(high))))))


def test_in_bounded_mode_the_preview_is_scored_on_the_validation_tiles():
    # A dark, quiet centre (where a large plane's preview is calibrated) and bright, noisy structure around
    # it (where the validation tiles go): the preview's loss on the centre is far below the loss the network
    # is validated with, so compared as they were the preview would stay the result however well the network
    # did. The engine scores the preview again on the network's tiles.
    rng = np.random.default_rng(0)
    mean = np.full((640, 640), 5.0)
    ring = np.ones((640, 640), bool)
    ring[64:576, 64:576] = False
    mean[ring & (np.arange(640)[None, :] // 8 % 2 == 0)] = 200.0  # stripes on the ring
    image = rng.poisson(mean).astype(np.uint16)
    run = PlaneRun(image, Noise2Fast, seed=0, device="cpu", max_steps=1, budget=512, crop=16,
                   validation=4 * 128 * 128, validate_every=1, precision="float32")
    events = list(run)
    tiles = run.model.validation_regions()
    assert tiles == run.model.tiles and len(tiles) == 4
    _, centre_loss, sigma = calibrated_gaussian(run._normalised)
    assert events[0].val_psnr == pytest.approx(mse_to_psnr(centre_loss))  # the first event comes before any tile
    refined = refined_preview(run._normalised, sigma)  # total variation, where it beats the Gaussian: its gain
    gain = 0.0 if refined is None else refined[1]
    on_tiles = mse_to_psnr(invariant_loss(run._normalised, sigma, tiles)) + gain
    assert run._preview_psnr == pytest.approx(on_tiles)
    scored = events[1 if refined is None else 2]  # the preview scored on the tiles, an event before the first step
    assert (scored.step, scored.stage, scored.output) == (0, "preview", None)
    assert scored.val_psnr == pytest.approx(on_tiles) and events[events.index(scored) + 1].step == 1
    assert on_tiles < mse_to_psnr(centre_loss) - 3  # the mismatch this removes
    assert events[-1].best_val_psnr == pytest.approx(max(on_tiles, events[-1].val_psnr))


def test_the_invariant_loss_on_the_whole_plane_is_the_calibration_loss():
    from skimage.restoration import calibrate_denoiser

    plane = np.random.default_rng(1).random((96, 80))
    _, _, sigma = calibrated_gaussian(plane)
    # the calibration's loss on every pixel (its default estimates it on one mask in sixteen)
    _, (_, (exact,)) = calibrate_denoiser(plane, preview._smooth, {"sigma": [sigma]}, extra_output=True,
                                          approximate_loss=False)
    assert invariant_loss(plane, sigma, [(0, 0, 96, 80)]) == pytest.approx(exact, rel=1e-9)
    halves = [(0, 0, 48, 80), (48, 0, 96, 80)]  # boxes cut with real surroundings: the same pixels, the same loss
    assert invariant_loss(plane, sigma, halves) == pytest.approx(exact, rel=0.02)


def test_a_step_in_slices_computes_what_one_call_does():
    """A large step hands back between its parts (issue 19, item 5: events every 2 s on slow devices); where
    the parts fall does not change what is computed."""
    settings = dict(budget=1024, crop=16, validation=2 * 32 * 32, validate_every=2, sampling="random", context=False,
                    raw_start=True)
    whole, sliced = method((64, 70), **settings), method((64, 70), **settings)
    assert whole.bounded and len(whole.training_batch()[0][0]) == 4  # crops of a step: two parts of PART_CROPS
    whole, sliced = method((64, 70), **settings), method((64, 70), **settings)  # the draw above used the rng
    sliced.slice_seconds = 0.0  # hand back after every part
    parts = []
    for _ in range(6):
        expected = whole.step()
        handed_back = 0
        while (got := sliced.step()) is PART:
            handed_back += 1
        parts.append(handed_back)
        assert got == expected
    # 2 backward passes; at a validation (every 2nd step) the average's tiles and, while racing, the network's
    assert parts[0] == 2 and parts[1] > 2
    for mine, theirs in zip(whole.network.state_dict().values(), sliced.network.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)
    assert sliced.invariant_psnr() is PART  # 4 passes over the validation tiles, a part each
    assert sliced.invariant_psnr() is PART
    sliced.slice_seconds = None
    assert sliced.invariant_psnr() == whole.invariant_psnr()


def test_the_engine_stays_live_in_slices_and_computes_the_same(monkeypatch):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    noisy = (0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 0.3, (96, 96))).astype(np.float32)
    runs = {}
    for seconds in (None, 0.0):  # None: every step and check in one call; 0: an event after every part
        monkeypatch.setattr(engine, "SLICE_SECONDS", seconds)
        run = PlaneRun(noisy, Noise2Fast, seed=0, max_steps=160, validate_every=2)  # checks at 132, 152
        runs[seconds] = (list(run), run.result())
    (whole, whole_result), (sliced, sliced_result) = runs[None], runs[0.0]
    partial = [e for e in sliced if e.partial]
    assert not any(e.partial for e in whole) and len(partial) >= 160
    assert all(e.output is None and e.view is None and np.isnan(e.val_psnr) and not e.done for e in partial)
    finished = [e for e in sliced if not e.partial]
    assert [(e.step, e.stage, e.val_psnr, e.heldout_psnr) for e in finished] == \
        [(e.step, e.stage, e.val_psnr, e.heldout_psnr) for e in whole]
    assert sum(np.isfinite(e.heldout_psnr) for e in finished) >= 1  # a held-out check ran, in parts too
    steps = [e.step for e in sliced]
    assert steps == sorted(steps)  # a partial event carries the last finished step
    np.testing.assert_array_equal(sliced_result, whole_result)
