"""Opt-in forward-pass speed-ups give the base classifier's answers, and the batch size picker
picks one of its candidates."""

from __future__ import annotations

import pytest
import torch

from certify import certify
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
    assert fastest_batch_size(cnn, (3, 16, 16), (16, 64), samples_per_try=128) in (16, 64)
    with pytest.raises(ValueError, match="candidates"):
        fastest_batch_size(cnn, (3, 16, 16), ())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_options_on_cuda_keep_the_logits_and_pick_a_batch(cnn) -> None:
    model = cnn.cuda()
    batch = torch.rand(64, 3, 16, 16, device="cuda")
    with torch.inference_mode():
        plain = model(batch)
        fast = accelerate(model, FastOptions(channels_last=True, bfloat16=True))(batch)
    assert (fast - plain).abs().max() <= 0.1 * plain.abs().max()
    assert fastest_batch_size(model, (3, 16, 16), (64, 256), samples_per_try=512) in (64, 256)
    cnn.cpu()
