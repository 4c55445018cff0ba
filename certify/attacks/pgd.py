"""Projected gradient descent (PGD) against a base classifier, and the loop every attack shares.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018: from a random point of the eps-ball, repeatedly step along the
steepest-ascent direction of the loss and project back onto the ball and the image box.

Example:
    >>> attack = PGD(model, PGDConfig(norm="l2", eps=0.5, steps=20))
    >>> adversarial = attack(images, labels, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from certify.attacks.projection import ascent_direction, check_norm, project, random_start
from certify.checks import check_count, check_positive
from certify.sampling import evaluating, model_device


@dataclass(frozen=True)
class PGDConfig:
    """The threat model and the optimiser of a PGD attack.

    Attributes:
        norm: "linf" or "l2".
        eps: radius of the threat ball in pixel units ([0, 1] images), > 0.
        steps: gradient steps per restart, >= 1.
        step_size: length of one step in the norm's units; None means 2.5 * eps / steps (for
            each image's own eps when radii are given per image), which lets a run cross the
            ball more than once (Madry et al. 2018).
        restarts: independent runs; each image keeps the run whose final loss is highest, the
            losses of all runs taken under the same noise draws when the loss is stochastic.
        random_start: start each run at a random point of the ball (True; see
            :func:`certify.attacks.projection.random_start`) or at the clean image.

    Raises:
        ValueError: if a field is out of range.
    """

    norm: str = "linf"
    eps: float = 8 / 255
    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_positive("eps", self.eps)
        check_count("steps", self.steps)
        check_count("restarts", self.restarts)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)

    def step_sizes(self, radii: torch.Tensor) -> torch.Tensor:
        """The step length for each image's radius: (B,) -> (B,)."""
        if self.step_size is not None:
            return torch.full_like(radii, self.step_size)
        return 2.5 * radii / self.steps


def check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError unless images is (B, C, H, W) finite in [0, 1] and labels is (B,) >= 0."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch of shape (B, C, H, W), got {shape}")
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise ValueError("images must hold finite floating-point pixels in [0, 1]")
    if float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise ValueError("images must hold pixels in [0, 1] (normalisation is the model's job)")
    if (
        not isinstance(labels, torch.Tensor)
        or labels.shape != images.shape[:1]
        or labels.dtype != torch.int64
        or bool((labels < 0).any())
    ):
        raise ValueError(
            f"labels must be an int64 tensor of shape ({images.shape[0]},) with classes >= 0"
        )


def check_radii(eps: torch.Tensor, batch: int) -> None:
    """Raise ValueError unless eps is a finite positive floating-point tensor of shape (batch,)."""
    if (
        not isinstance(eps, torch.Tensor)
        or eps.shape != (batch,)
        or not eps.is_floating_point()
        or not bool(torch.isfinite(eps).all())
        or not bool((eps > 0).all())
    ):
        raise ValueError(f"eps must be a tensor of {batch} finite radii > 0, one per image")


def check_differentiable(loss: torch.Tensor) -> None:
    """Raise ValueError unless ``loss`` has a gradient with respect to the attacked input (a
    model that thresholds its output or runs under no_grad has none, and no gradient attack
    applies to it)."""
    if not loss.requires_grad:
        raise ValueError(
            "model gives no gradient with respect to its input (its output does not require "
            "grad); gradient attacks such as PGD cannot run on it"
        )


def box_diameter(norm: str, image_shape: tuple[int, ...]) -> float:
    """The largest distance between two images of ``image_shape`` (C, H, W) with pixels in [0, 1]:
    1 in L-inf, sqrt(C * H * W) in L2. A ball of larger radius holds every image."""
    return 1.0 if norm == "linf" else math.sqrt(math.prod(image_shape))


def parse_epsilon(text: str) -> float:
    """An attack radius written as a decimal or a fraction, as papers write them: "0.5", "8/255".

    Raises:
        ValueError: naming eps, unless ``text`` is a finite number > 0.
    """
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError, OverflowError):
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"eps must be a number > 0 such as 0.5 or 8/255, got {text!r}")
    return value


def check_eps_in_box(name: str, eps: float, norm: str, image_shape: tuple[int, ...]) -> None:
    """Raise ValueError naming ``name`` if ``eps`` exceeds :func:`box_diameter`."""
    diameter = box_diameter(norm, image_shape)
    if eps > diameter:
        raise ValueError(
            f"{name} must be at most {diameter:.6g} in {norm} for images of shape "
            f"{tuple(image_shape)} with pixels in [0, 1] (a larger ball holds every image), "
            f"got {eps!r}"
        )


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Raise ValueError unless the generator is None or lives on ``device``'s type."""
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator must be on the model's device ({device}), got one on {generator.device}"
        )


class PGD:
    """PGD on the cross-entropy of the base classifier f.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018.
    Distance: L-inf or L2 (``config.norm``), in pixel units of images in [0, 1].

    Arguments (defaults): ``model`` the base classifier; ``config`` a :class:`PGDConfig`
    (norm="linf", eps=8/255, steps=20, step_size=2.5*eps/steps, restarts=1, random_start=True).

    Shapes: images (B, C, H, W) in [0, 1], labels (B,) int64, optional per-image radii eps (B,)
    that replace ``config.eps``; returns adversarial images (B, C, H, W) on the images' device
    with ||adv - images|| <= eps and pixels in [0, 1].

    Subclasses change only :meth:`loss`, the per-image objective that PGD ascends.

    Example:
        >>> attack = PGD(model, PGDConfig(norm="linf", eps=8 / 255))
        >>> adversarial = attack(images, labels)
        >>> robust_accuracy = (model(adversarial).argmax(1) == labels).float().mean()
    """

    def __init__(self, model: torch.nn.Module, config: PGDConfig | None = None) -> None:
        self.model = model
        self.config = config if config is not None else PGDConfig()

    def loss(
        self, inputs: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Cross-entropy of f at each input: (B, C, H, W), (B,) -> (B,)."""
        return F.cross_entropy(self.model(inputs), labels, reduction="none")

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attack a batch; see the class docstring for shapes and guarantees.

        Args:
            images: clean images (B, C, H, W) with pixels in [0, 1].
            labels: true classes (B,), int64.
            generator: optional torch.Generator on the model's device (random starts and noise).
            eps: optional radius of each image's ball (B,), > 0; default ``config.eps`` for all
                (which must not exceed the box's diameter, :func:`box_diameter`; radii given
                here are clamped to it).

        Returns:
            Adversarial images (B, C, H, W) inside the eps-ball around ``images`` and the box.

        The model runs in eval mode and is given back in the mode it had.

        Raises:
            ValueError: if an argument is out of range.
        """
        restarts = self.config.restarts
        return self.after_restarts(images, labels, (restarts,), generator, eps)[restarts]

    def after_restarts(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        counts: Sequence[int],
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[int, torch.Tensor]:
        """What the attack returns with k restarts, for each k of ``counts``, from one run.

        An attack with k restarts is the start of one with more: under the same generator its
        first k runs are the same, and the runs are scored under the same noise. So the
        adversarial images of k restarts here equal, to the bit, those of this attack with
        ``config.restarts`` = k and the same generator. Costs those of the largest k.

        Args:
            counts: restart counts, each between 1 and ``config.restarts``.
            images, labels, generator, eps: as for :meth:`__call__`.

        Returns:
            Each k of ``counts`` to its adversarial images (B, C, H, W) on the images' device.

        Raises:
            ValueError: if an argument is out of range.
        """
        config = self.config
        if not counts or any(isinstance(k, bool) or not isinstance(k, int)
                             or not 1 <= k <= config.restarts for k in counts):
            raise ValueError(
                f"counts must be restart counts between 1 and {config.restarts} (the config's "
                f"restarts), got {list(counts)!r}"
            )
        check_batch(images, labels)
        device = model_device(self.model)
        check_generator(generator, device)
        clean = images.to(device)
        labels = labels.to(device)
        if eps is None:
            check_eps_in_box("eps", config.eps, config.norm, tuple(clean.shape[1:]))
            radii = torch.full((clean.shape[0],), config.eps, device=device, dtype=clean.dtype)
        else:
            check_radii(eps, clean.shape[0])
            # A ball wider than the box holds every image: the box's diameter is the same ball.
            diameter = box_diameter(config.norm, tuple(clean.shape[1:]))
            radii = eps.clamp(max=diameter).to(device=device, dtype=clean.dtype)  # (B,)
        wanted = set(counts)
        adversarial: dict[int, torch.Tensor] = {}
        best_delta = torch.zeros_like(clean)
        best_loss = torch.full((clean.shape[0],), -math.inf, device=device)  # (B,)
        selection_seed: int | None = None
        with evaluating(self.model), torch.enable_grad():
            for run in range(1, max(wanted) + 1):
                delta = self._run(clean, labels, radii, generator)
                if run == 1 and 1 in wanted:  # one restart keeps its run as it is
                    adversarial[1] = (clean + delta).to(images.device)
                if run == max(wanted) == 1:
                    break
                if selection_seed is None:  # drawn after the first run, which stays the single run
                    selection_seed = int(
                        torch.randint(2**62, (1,), generator=generator, device=device)
                    )
                # Every run is scored under the same noise draws (common random numbers), so a
                # stochastic loss compares the runs rather than the draws.
                selection = torch.Generator(device=device).manual_seed(selection_seed)
                with torch.no_grad():
                    final_loss = self.loss(clean + delta, labels, selection)  # (B,)
                better = final_loss > best_loss  # (B,)
                best_delta[better] = delta[better]
                best_loss = torch.where(better, final_loss, best_loss)
                if run > 1 and run in wanted:
                    adversarial[run] = (clean + best_delta).to(images.device)
        return adversarial

    def _run(
        self,
        clean: torch.Tensor,
        labels: torch.Tensor,
        radii: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One PGD run from a random (or zero) start; returns the final perturbation."""
        config = self.config
        if config.random_start:
            delta = random_start(clean, radii, config.norm, generator)
        else:
            delta = torch.zeros_like(clean)
        step_sizes = config.step_sizes(radii).view(-1, *([1] * (clean.dim() - 1)))  # (B, 1, 1, 1)
        for _ in range(config.steps):
            delta.requires_grad_(True)
            loss = self.loss(clean + delta, labels, generator)  # (B,)
            check_differentiable(loss)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            step = step_sizes * ascent_direction(grad, config.norm)
            delta = project(delta.detach() + step, clean, radii, config.norm)
        return delta.detach()
