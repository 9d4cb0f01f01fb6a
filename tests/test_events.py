"""What the engine's events tell a front end, headless: the throttle of shown outputs, the countdown to a
method's own stop and the time left, the names of methods without torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from napari_noise2fast import iter_denoise
from napari_noise2fast.engine import Countdown, Event, throttle
from napari_noise2fast.methods import METHODS
from napari_noise2fast.names import METHOD_NAMES, SHORT_NAMES, short_name

OUT = np.zeros((2, 2), dtype=np.float32)


def event(step, output=True, done=False):
    return Event(step=step, val_psnr=np.nan, best_val_psnr=np.nan, elapsed=0.0, stage="noise2fast",
                 output=OUT if output else None, done=done)


def drained(generator):
    """(items, return value) of a generator."""
    items = []
    while True:
        try:
            items.append(next(generator))
        except StopIteration as finished:
            return items, finished.value


def test_throttle_lets_an_output_through_at_most_once_an_interval_but_the_preview_and_the_last_always():
    times = iter([0.0, 0.1, 0.2, 0.6, 0.7, 0.75, 0.8])  # read once for each event with an output

    def source():
        yield event(0)  # the preview
        for step in range(1, 6):
            yield event(step)
        yield event(6, output=False)
        yield event(7, done=True)
        return "finished"

    items, value = drained(throttle(source(), 0.5, clock=lambda: next(times)))
    assert value == "finished" and [item.step for item, _ in items] == list(range(8))
    assert [item.step for item, show in items if show] == [0, 3, 7]  # 3 came 0.6 s after 0; 4, 5 too soon


def test_throttle_maps_items_to_events():
    reports = iter([("a", event(0)), ("b", event(1, done=True))])
    items, _ = drained(throttle(reports, 10.0, event_of=lambda item: item[1]))
    assert [(item[0], show) for item, show in items] == [("a", True), ("b", True)]


def test_noise2fast_counts_steps_without_a_gain_and_estimates_the_time_left():
    plane = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    events = list(iter_denoise(plane, device="cpu", seed=0, max_steps=25, patience=40))
    training = [e for e in events if e.step > 0 and not e.done]
    assert all(isinstance(e.countdown, Countdown) and e.countdown.resets for e in training)
    assert {e.countdown.unit for e in training} == {"steps without a gain"}
    # start_patience (200) holds while the first validation is still the best, then the patience asked for
    assert all(e.countdown.total in (40, 200) for e in training)
    assert all(0 <= e.countdown.done <= e.countdown.total for e in training)
    etas = [e.eta for e in training if e.eta is not None]
    assert etas and all(eta >= 0 for eta in etas)
    assert events[0].countdown is None and events[-1].done and events[-1].countdown is None


def test_a_step_budget_counts_down_and_the_time_left_shrinks():
    plane = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    events = list(iter_denoise(plane, "zs-n2n", device="cpu", seed=0, steps=30, report_every=10))
    counted = [e for e in events if e.countdown is not None]
    assert [e.countdown.done for e in counted] == list(range(1, len(counted) + 1))
    assert {e.countdown.total for e in counted} == {30} and not counted[0].countdown.resets
    etas = [e.eta for e in counted if e.eta is not None]
    assert len(etas) > 10 and etas[-1] < etas[0]


def test_a_stack_before_two_planes_finish_estimates_from_the_plane_running():
    stack = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
    events = list(iter_denoise(stack, "zs-n2n", device="cpu", seed=0, steps=12, report_every=4,
                               stack="independent"))
    first = [e for e in events if e.plane == 0 and e.eta is not None and not e.done]
    # the estimate covers the two planes after this one too, each taking this one's time
    assert first and all(e.eta >= 2 * e.elapsed for e in first)
    last = [e for e in events if e.plane == 2 and e.eta is not None and not e.done]
    assert last and max(e.eta for e in last) < min(e.eta for e in first)


def test_method_names_without_torch_agree_with_the_methods():
    assert {key: cls.display_name for key, cls in METHODS.items()} == METHOD_NAMES
    assert set(SHORT_NAMES) == set(METHOD_NAMES) and short_name("Calibrated") == "Calibrated"
    assert all(len(name) <= 12 for name in SHORT_NAMES.values())  # "<input> [short]" fits the layer list
    with pytest.raises(ValueError, match="method must be one of"):
        short_name("nope")


def test_opening_the_sample_and_the_layer_helpers_do_not_load_torch():
    code = ("import sys, napari_noise2fast.samples as s, napari_noise2fast.layers, napari_noise2fast.names;"
            "s.noisy_cell(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_events_keep_their_fields_when_the_job_adds_progress():
    base = replace(event(3), eta=4.0, countdown=Countdown(3, 10, "steps"))
    assert replace(base, planes_done=1).countdown == Countdown(3, 10, "steps")
