"""certify.runner: one loop for every mode, resumable after a stop at a time limit or SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from command_output import StepClock, rows_but_time

import certify.runner as runner
from certify.results import read_rows, read_settings
from certify.run_modes import Attack, Audit, Certify, Predict
from certify.runner import RunSpec, Selection, choose_batch, run


@pytest.fixture
def images() -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(3)
    return [(torch.rand(1, 8, 8, generator=generator), idx % 10) for idx in range(12)]


def spec_of(model, dataset, out: Path, **changes) -> RunSpec:
    fields = {"mode": Certify(n0=10, n=50), "sigma": 0.25, "batch": 25,
              "selection": Selection(skip=2)}
    return RunSpec(model, dataset, out=out, **{**fields, **changes})




@pytest.mark.parametrize("mode", [Certify(n0=10, n=50), Predict(n=50),
                                  Attack(threats=(("l2", 0.5),), n=20, steps=1, eot_samples=2,
                                         attack_batch=2),
                                  Audit(n0=10, n=50, predict_n=20, steps=1, eot_samples=2,
                                        attack_batch=2)],
                         ids=["certify", "predict", "attack", "audit"])
def test_a_time_limit_stops_after_whole_chunks_and_a_rerun_completes_the_same_file(
        tiny_cnn, images, tmp_path, mode) -> None:
    whole = run(spec_of(tiny_cnn, images, tmp_path / "whole.tsv", mode=mode))
    assert (whole.done, whole.total, whole.stopped) == (6, 6, None)
    stopped = spec_of(tiny_cnn, images, tmp_path / "stopped.tsv", mode=mode, time_limit=3.5)
    # the clock is read at the start, before the first chunk and after each (one second
    # apart): after the second chunk, a third would end at 4 > 3.5 seconds
    first = run(stopped, clock=StepClock())
    taken = 2 * mode.chunk_size  # images: one per chunk for certify and predict, else two
    assert (first.done, first.total, first.stopped) == (taken, 6, runner.TIME_LIMIT)
    assert {int(row["idx"]) for row in read_rows(first.path)} == set(range(0, 2 * taken, 2))
    reruns = [run(stopped, clock=StepClock())]
    while reruns[-1].stopped is not None and len(reruns) < 5:
        reruns.append(run(stopped, clock=StepClock()))
    second = reruns[-1]
    assert [report.done for report in reruns] == [
        min(6, taken * runs) for runs in range(2, 2 + len(reruns))]
    assert (second.done, second.total, second.stopped) == (6, 6, None)
    assert rows_but_time(second.path) == rows_but_time(whole.path)
    assert read_settings(second.path) == read_settings(whole.path)


def test_sigterm_stops_after_the_image_at_hand_and_restores_the_handler(
        tiny_cnn, images, tmp_path) -> None:
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        def terminate_at_two(done: int, total: int) -> None:
            if done == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        spec = spec_of(tiny_cnn, images, tmp_path / "run.tsv")
        report = run(spec, progress=terminate_at_two)
        assert (report.done, report.total, report.stopped) == (2, 6, runner.SIGTERM)
        assert [row["idx"] for row in read_rows(report.path)] == ["0", "2"]
        assert received == []  # the run caught it, not the handler before it
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]  # and gave it back
        assert run(spec).done == 6
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sharded_run_takes_every_kth_chunk_and_marks_its_part_complete(
        tiny_cnn, images, tmp_path) -> None:
    out = tmp_path / "run.tsv"
    report = run(spec_of(tiny_cnn, images, out, shard=(1, 2)))
    assert report.path == out.with_name("run.tsv.part1of2")
    assert [row["idx"] for row in read_rows(report.path)] == ["2", "6", "10"]
    assert out.with_name("run.tsv.part1of2.complete").exists()
    assert read_settings(report.path)["shard"] == [1, 2]


def test_the_batch_size_is_chosen_from_the_images_shape(tiny_cnn, images, tmp_path,
                                                          monkeypatch) -> None:
    measured = []

    def fastest(model, input_shape):
        measured.append(input_shape)
        return 40

    monkeypatch.setattr(runner, "fastest_batch_size", fastest)
    spec = spec_of(tiny_cnn, images, tmp_path / "run.tsv", batch=None)
    assert choose_batch(spec) == 40 and measured == [(1, 8, 8)]
    assert run(spec).batch == 40
    assert read_settings(tmp_path / "run.tsv")["batch"] == 40
    assert choose_batch(spec) == 40 and len(measured) == 2  # the run's own, read back
    sharded = spec_of(tiny_cnn, images, tmp_path / "other.tsv", batch=None, shard=(0, 2))
    assert choose_batch(sharded) == runner.SHARDED_BATCH


@pytest.mark.parametrize(("changes", "name"), [
    ({"sigma": 0.0}, "sigma"), ({"alpha": 1.0}, "alpha"), ({"batch": 0}, "batch"),
    ({"seed": -1}, "seed"), ({"selection": Selection(skip=0)}, "skip"),
    ({"shard": (2, 2)}, "shard"), ({"time_limit": 0.0}, "time_limit"),
])
def test_a_bad_specification_is_a_value_error_naming_the_argument(tiny_cnn, images, tmp_path,
                                                                   changes, name) -> None:
    with pytest.raises(ValueError, match=name):
        spec_of(tiny_cnn, images, tmp_path / "run.tsv", **changes)


@pytest.mark.parametrize(("make", "name"), [
    (lambda: Certify(n0=0), "n0"), (lambda: Certify(n=0), "n"),
    (lambda: Certify(radius=0.5, adaptive=True), "radius"), (lambda: Certify(rule="x"), "rule"),
    (lambda: Certify(tolerance=0.0), "tolerance"), (lambda: Predict(n=0), "n"),
    (lambda: Attack(steps=0), "steps"), (lambda: Attack(threats=(("l1", 0.5),)), "norm"),
    (lambda: Attack(threats=(("l2", 0.0),)), "eps"), (lambda: Audit(predict_n=0), "predict_n"),
    (lambda: Audit(shrink=1.5), "shrink"), (lambda: Audit(attack_batch=0), "attack_batch"),
])
def test_a_bad_mode_is_a_value_error_naming_the_field(make, name) -> None:
    with pytest.raises(ValueError, match=name):
        make()
