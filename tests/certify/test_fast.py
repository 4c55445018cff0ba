"""Opt-in forward-pass speed-ups give the base classifier's answers, and the batch size picker
picks one of its candidates."""

from __future__ import annotations

import pytest
import torch

from certify import certify, fast
from certify.fast import FastForward, FastOptions, accelerate, fastest_batch_size
from encoders.backbones import build_classifier


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier("small_cnn", 10, (3, 16, 16), [0.5] * 3, [0.25] * 3).eval()


def test_no_option_leaves_the_model_alone(cnn) -> None:
    assert accelerate(cnn, FastOptions()) is cnn


@pytest.mark.parametrize(
    ("options", "tolerance"),
    [
        (FastOptions(channels_last=True), 1e-4),
        # bfloat16 keeps 8 bits of mantissa: relative error about 2^-8 per operation.
        (FastOptions(bfloat16=True), 0.1),
        (FastOptions(channels_last=True, bfloat16=True), 0.1),
        pytest.param(FastOptions(compile=True), 1e-4, marks=pytest.mark.slow),
    ],
)
def test_options_keep_the_logits(cnn, options: FastOptions, tolerance: float) -> None:
    batch = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = cnn(batch)
        fast = FastForward(cnn, options).eval()(batch)
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    scale = plain.abs().max()
    assert (fast - plain).abs().max() <= tolerance * scale


def test_fast_model_certifies(cnn) -> None:
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    fast = accelerate(cnn, FastOptions(channels_last=True))
    plain = certify(cnn, x, 0.25, 50, 500, 0.01, 250, torch.Generator().manual_seed(3))
    again = certify(fast, x, 0.25, 50, 500, 0.01, 250, torch.Generator().manual_seed(3))
    assert again.label == plain.label
    assert abs(again.count - plain.count) <= 5  # a few votes may flip at decision boundaries


def test_fastest_batch_size_is_a_candidate(cnn) -> None:
    assert fastest_batch_size(cnn, (3, 16, 16), (16, 64), time_budget=1.0) in (16, 64)
    with pytest.raises(ValueError, match="candidates"):
        fastest_batch_size(cnn, (3, 16, 16), ())
    with pytest.raises(ValueError, match="time_budget"):
        fastest_batch_size(cnn, (3, 16, 16), (16,), time_budget=0)


class TimedModel(torch.nn.Module):
    """Takes ``seconds(batch_size)`` of a fake clock per forward pass; records the batch sizes."""

    def __init__(self, seconds, clock: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seconds, self.clock, self.sizes = seconds, clock, []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(batch))
        self.clock[0] += self.seconds(len(batch))
        return torch.zeros(len(batch), 10)


@pytest.fixture
def fake_clock(monkeypatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(fast.time, "perf_counter", lambda: clock[0])
    return clock


def test_the_search_climbs_from_the_smallest_while_larger_batches_pay(fake_clock) -> None:
    # 0.5 s of overhead per batch, then 1 ms an image; past 2000 images it thrashes.
    model = TimedModel(lambda b: 5 * b / 1000 if b > 2000 else 0.5 + b / 1000, fake_clock)
    assert fastest_batch_size(model, (1, 2, 2), time_budget=1000) == 2000
    assert set(model.sizes) == {100, 250, 500, 1000, 2000, 5000}  # 10,000 never tried


def test_the_search_stops_at_the_first_larger_batch_that_does_not_pay(fake_clock) -> None:
    # A CPU's curve: fastest at 250, slower from 500 up as batches spill out of the caches.
    per_image = {100: 0.009, 250: 0.004, 500: 0.006, 1000: 0.01, 2000: 0.01}
    model = TimedModel(lambda b: b * per_image.get(b, 0.01), fake_clock)
    assert fastest_batch_size(model, (1, 2, 2), time_budget=1000) == 250
    assert set(model.sizes) == {100, 250, 500}


def test_the_search_keeps_within_the_time_budget(fake_clock) -> None:
    # 0.5 s of overhead per batch, then 1 ms an image: 100 takes 1.2 s to time, and 250's two
    # batches would end past half of the 3 s budget.
    model = TimedModel(lambda b: 0.5 + b / 1000, fake_clock)
    assert fastest_batch_size(model, (1, 2, 2), time_budget=3.0) == 100
    assert set(model.sizes) == {100} and fake_clock[0] <= 3.0


def test_batches_that_do_not_fit_in_memory_are_left_out(fake_clock) -> None:
    def seconds(b: int) -> float:
        if b >= 1000:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 0.5 + b / 1000

    model = TimedModel(seconds, fake_clock)
    assert fastest_batch_size(model, (1, 2, 2), time_budget=1000) == 500
    with pytest.raises(ValueError, match="fits in the memory"):
        fastest_batch_size(TimedModel(lambda b: seconds(1000), fake_clock), (1, 2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_options_on_cuda_keep_the_logits_and_pick_a_batch(cnn) -> None:
    model = cnn.cuda()
    batch = torch.rand(64, 3, 16, 16, device="cuda")
    with torch.inference_mode():
        plain = model(batch)
        fast = accelerate(model, FastOptions(channels_last=True, bfloat16=True))(batch)
    assert (fast - plain).abs().max() <= 0.1 * plain.abs().max()
    assert fastest_batch_size(model, (3, 16, 16), (64, 256), time_budget=2.0) in (64, 256)
    cnn.cpu()
