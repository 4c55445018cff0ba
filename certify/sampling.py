"""Monte Carlo sampling of the base classifier's votes under Gaussian noise.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), is estimated from
the votes of f on noisy copies of x (Cohen, Rosenfeld and Kolter 2019, SAMPLEUNDERNOISE). Noise is
drawn on the model's device in batches, never all at once.
"""

from __future__ import annotations

import torch

from certify.checks import check_count, check_image, check_positive


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model that has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


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
    the remainder, so exactly ``num`` samples are drawn) and never all at once.

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
        ValueError: if an argument is out of range or the model's output is not (B, K).
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
    x = x.to(device=device, dtype=_model_dtype(model))
    # Votes stay on the device and are counted once at the end: a bincount per batch would wait
    # for the GPU at every batch.
    votes = torch.empty(num, dtype=torch.long, device=device)  # (num,)
    with torch.inference_mode():
        drawn = 0
        while drawn < num:
            this_batch = min(batch_size, num - drawn)
            noise = torch.randn(
                (this_batch, *x.shape), generator=generator, device=device, dtype=x.dtype
            )  # (B, C, H, W)
            logits = model(noise.mul_(sigma).add_(x))  # (B, K)
            if logits.dim() != 2 or logits.shape[0] != this_batch or logits.shape[1] < 2:
                raise ValueError(
                    f"model must map a batch (B, C, H, W) to logits (B, K) with K >= 2, "
                    f"got output shape {tuple(logits.shape)} for B={this_batch}"
                )
            if num_classes is not None and logits.shape[1] != num_classes:
                raise ValueError(
                    f"num_classes is {num_classes} but the model returns {logits.shape[1]} logits"
                )
            votes[drawn : drawn + this_batch] = logits.argmax(dim=1)
            drawn += this_batch
        counts = torch.bincount(votes, minlength=logits.shape[1])  # (K,)
    return counts.cpu()
