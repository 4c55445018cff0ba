"""Monte Carlo sampling of the base classifier's votes under Gaussian noise.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), is estimated from
the votes of f on noisy copies of x (Cohen, Rosenfeld and Kolter 2019, SAMPLEUNDERNOISE). Noise is
drawn on the model's device in batches, never all at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from certify.checks import check_count, check_image, check_positive


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model that has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` in eval mode inside the block, then give every submodule back the mode it had.

    A base classifier left in training mode would normalise each batch of noisy copies by that
    batch's own BatchNorm statistics (and update the caller's running statistics): the votes
    would then depend on each other, which the binomial bounds forbid, and on the batch size.
    Every function of the library that runs a model does so inside this block (as torchattacks
    switches and restores the mode around an attack); submodules the caller froze in eval mode
    inside a training model stay so afterwards.

    Example:
        >>> with evaluating(model):
        ...     logits = model(batch)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def check_sigma_fits(model: torch.nn.Module, sigma: float) -> None:
    """Raise ValueError naming sigma if noise of that level overflows the model's floating-point
    type (the votes would then be those of infinite inputs, whatever the model)."""
    largest = torch.finfo(_model_dtype(model)).max
    if sigma * 16 > largest:  # |N(0, 1)| draws stay far below 16
        raise ValueError(
            f"sigma must be at most {largest / 16:.3g}, got {sigma!r}: larger noise overflows "
            f"the model's {_model_dtype(model)} to infinity"
        )


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def sample_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    num: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Count the base classifier's predictions on ``num`` Gaussian perturbations of x.

    Noise is drawn in batches of at most ``batch_size`` on the model's device (the last batch is
    the remainder, so exactly ``num`` samples are drawn) and never all at once; votes are counted
    on the device as they come, so memory does not grow with ``num``.

    Args:
        model: base classifier mapping (B, C, H, W) pixels to (B, K) logits.
        x: one image (C, H, W).
        sigma: noise standard deviation, > 0.
        num: number of noise samples, >= 1.
        batch_size: samples per forward pass, >= 1.
        generator: optional torch.Generator on the model's device, for reproducible noise.
        num_classes: if given, the number of logits the model must return.

    Returns:
        An int64 CPU tensor of shape (K,) with the vote count of every class; it sums to num.

    Raises:
        ValueError: if an argument is out of range, the model's output is not (B, K), or any
            logit is NaN or infinite (a broken model gets no votes, hence no certificate).
    """
    check_image(x)
    check_positive("sigma", sigma)
    check_count("num", num)
    check_count("batch_size", batch_size)
    device = model_device(model)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator must be on the model's device ({device}), got one on {generator.device}"
        )
    check_sigma_fits(model, sigma)
    x = x.to(device=device, dtype=_model_dtype(model))
    # Votes are counted and logits checked on the device, batch by batch, and read back once at
    # the end: reading them per batch would wait for the GPU at every batch, and keeping every
    # vote would take memory growing with num.
    counts: torch.Tensor | None = None  # (K,), made once the first batch tells K
    with evaluating(model), torch.inference_mode():
        finite = torch.ones((), dtype=torch.bool, device=device)
        drawn = 0
        while drawn < num:
            this_batch = min(batch_size, num - drawn)
            noise = torch.randn(
                (this_batch, *x.shape), generator=generator, device=device, dtype=x.dtype
            )  # (B, C, H, W)
            logits = model(noise.mul_(sigma).add_(x))  # (B, K)
            if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
                kind = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"model must return floating-point logits (B, K), got {kind}")
            if logits.dim() != 2 or logits.shape[0] != this_batch or logits.shape[1] < 2:
                raise ValueError(
                    f"model must map a batch (B, C, H, W) to logits (B, K) with K >= 2, "
                    f"got output shape {tuple(logits.shape)} for B={this_batch}"
                )
            if num_classes is not None and logits.shape[1] != num_classes:
                raise ValueError(
                    f"num_classes is {num_classes} but the model returns {logits.shape[1]} logits"
                )
            if counts is None:
                counts = torch.zeros(logits.shape[1], dtype=torch.long, device=device)
            elif logits.shape[1] != len(counts):
                raise ValueError(
                    f"the model returned {len(counts)} logits, then {logits.shape[1]}"
                )
            finite &= torch.isfinite(logits).all()
            votes = logits.argmax(dim=1)  # (B,)
            counts.scatter_add_(0, votes, torch.ones_like(votes))
            drawn += this_batch
    if not bool(finite):
        raise ValueError(
            "model returned non-finite logits (NaN or inf) under noise; its votes mean nothing, "
            "so nothing is predicted or certified: check its weights and inputs"
        )
    assert counts is not None
    return counts.cpu()
