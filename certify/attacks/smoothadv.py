"""SmoothAdv-PGD with noise fixed by the caller: the attack of SmoothAdv adversarial training.

Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers",
NeurIPS 2019, Section 3: to train on adversarial examples of the smoothed classifier, draw the
noise e_1..e_m once per batch and run L2 PGD on the loss of the soft smoothed classifier estimated
with exactly those draws,

    x' = argmax_{||x' - x||_2 <= epsilon} -log((1/m) sum_j softmax(f(x' + e_j))_y),

then train on x' + e_j with the same e_j. Unlike :class:`certify.attacks.EOTPGD` (fresh noise at
every step, an evaluation attack), the noise here is an argument, so training sees the noise the
attack saw. It is the attack of the training recipe "smoothadv" (``encoders.recipes``).

Example:
    >>> noise = 0.25 * torch.randn(4, *images.shape)            # m = 4 draws, scaled by sigma
    >>> adversarial = smoothadv_pgd(model, images, labels, noise, epsilon=0.5, steps=2)
"""

from __future__ import annotations

import torch
from torch import nn

from certify.attacks.pgd import check_batch, check_differentiable, check_eps_in_box
from certify.attacks.projection import ascent_direction, project
from certify.checks import check_count, check_positive
from certify.losses import soft_smoothed_nll
from certify.sampling import evaluating


def smoothadv_pgd(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    epsilon: float,
    steps: int,
) -> torch.Tensor:
    """SmoothAdv-PGD in L2 with the caller's noise (Salman et al. 2019).

    Paper: Salman et al., NeurIPS 2019 (SmoothAdv_PGD, as in their training code): start at the
    clean image, take ``steps`` steps of length 2 * epsilon / steps along the L2-normalised
    gradient of :func:`certify.losses.soft_smoothed_nll`, projecting onto the epsilon-ball and
    the box [0, 1] after each (:func:`certify.attacks.projection.project`). Every step reuses
    ``noise``.
    Distance: L2, in pixel units of images in [0, 1].

    The model runs in eval mode (as in Salman et al.'s training code) and is given back in the
    mode it had; no parameter gradient is accumulated.

    Args:
        model: the base classifier f, pixels (B, C, H, W) -> logits (B, K).
        pixels: clean images (B, C, H, W) with pixels in [0, 1], on the model's device.
        labels: classes (B,), int64.
        noise: e_j, shape (m, B, C, H, W), already scaled by sigma.
        epsilon: radius of the L2 ball, > 0.
        steps: PGD steps, >= 1.

    Returns:
        Adversarial images (B, C, H, W), detached, with ||x' - x||_2 <= epsilon (up to rounding)
        and pixels in [0, 1].

    Raises:
        ValueError: if an argument is out of range or the shapes do not fit.

    Example:
        >>> noise = 0.25 * torch.randn(2, *images.shape)
        >>> adversarial = smoothadv_pgd(model, images, labels, noise, epsilon=1.0, steps=10)
    """
    check_batch(pixels, labels)
    check_positive("epsilon", epsilon)
    check_eps_in_box("epsilon", epsilon, "l2", tuple(pixels.shape[1:]))
    check_count("steps", steps)
    if noise.dim() != 5 or noise.shape[1:] != pixels.shape or noise.shape[0] < 1:
        raise ValueError(
            f"noise must have shape (m, {', '.join(map(str, pixels.shape))}) with m >= 1, "
            f"got {tuple(noise.shape)}"
        )
    if not bool(torch.isfinite(noise).all()):
        raise ValueError("noise must be finite")
    clean = pixels.detach()
    radii = torch.full((clean.shape[0],), float(epsilon), device=clean.device, dtype=clean.dtype)
    step_size = 2 * epsilon / steps
    delta = torch.zeros_like(clean)
    with evaluating(model), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            objective = soft_smoothed_nll(model, clean + delta, labels, noise)  # (B,)
            check_differentiable(objective)
            (grad,) = torch.autograd.grad(objective.sum(), delta)
            step = step_size * ascent_direction(grad, "l2")
            delta = project(delta.detach() + step, clean, radii, "l2")
    return (clean + delta).detach()

