"""Training objectives for the base classifier of a smoothed classifier: four recipes, a loss each.

Randomized smoothing certifies g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I) (Cohen,
Rosenfeld and Kolter 2019) for any base classifier f; how f is trained decides how large the
certified radii are. Each recipe below is a frozen dataclass holding its paper's hyper-parameters
(defaults: the paper's CIFAR-10 setting at sigma = 0.25; other settings of the papers are named
in :data:`RECIPE_PRESETS`) and one loss function written from the paper's equation:

- ``gaussian``: cross-entropy of f on one noisy copy (Cohen et al. 2019, Section 4);
- ``consistency``: cross-entropy on m noisy copies, plus lambda times the mean KL divergence of
  each copy's prediction from their mean and eta times the entropy of the mean (Jeong and Shin,
  "Consistency Regularization for Certified Robustness of Smoothed Classifiers", NeurIPS 2020);
- ``smoothadv``: cross-entropy on m noisy copies of the adversarial example found by PGD on the
  soft smoothed classifier with those same m noise draws (Salman et al., "Provably Robust Deep
  Learning via Adversarially Trained Smoothed Classifiers", NeurIPS 2019);
- ``macer``: cross-entropy of the soft smoothed classifier, plus lambda times a hinge on the
  certified radius of the soft smoothed classifier at correctly classified points (Zhai et al.,
  "MACER: Attack-free and Scalable Robust Training via Maximizing Certified Radius", ICLR 2020).

Every loss takes ``noise`` of shape (m, B, C, H, W), already scaled by sigma, so that m = 1
draws exactly the noise of Gaussian training from the same generator. Every image of a batch
gets m copies. Jeong and Shin's and Salman et al.'s code split each batch of 256 images into m
chunks of 256/m images with m copies each, so ``batch_size = 256 / m`` here reproduces their
steps; MACER's code gives each of 64 images its k copies, as here.

SmoothAdv's attack on the soft smoothed classifier is the library's
:func:`certify.attacks.smoothadv_pgd`; the soft smoothed classifier's losses are those of
:mod:`certify.losses`.

Example:
    >>> recipe = make_recipe("consistency", lbd=10.0)
    >>> loss = recipe_loss(recipe, model, pixels, labels, sigma=0.25, generator=generator, epoch=0)
    >>> loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from certify.attacks.smoothadv import smoothadv_pgd
from certify.checks import check_count, check_non_negative, check_positive, check_whole
from certify.losses import log_soft_smoothed, noisy_logits
from certify.sampling import evaluating


@dataclass(frozen=True)
class GaussianRecipe:
    """Gaussian data augmentation (Cohen et al. 2019, Section 4): one noise draw per image.

    It has no hyper-parameter besides sigma, which belongs to the training run.
    """

    name: str = field(default="gaussian", init=False)

    @property
    def noise_copies(self) -> int:
        return 1


@dataclass(frozen=True)
class ConsistencyRecipe:
    """Consistency regularisation (Jeong and Shin, NeurIPS 2020).

    Attributes:
        noise_copies: m >= 1 noisy copies of each image (paper: 2).
        lbd: lambda >= 0, the weight of the mean KL divergence from the mean prediction (paper,
            CIFAR-10: 20 at sigma = 0.25, 10 at sigma = 0.5 and 1.0; MNIST: 20).
        eta: eta >= 0, the weight of the entropy of the mean prediction (paper: 0.5).

    Raises:
        ValueError: naming the field that is out of range.
    """

    name: str = field(default="consistency", init=False)
    noise_copies: int = 2
    lbd: float = 20.0
    eta: float = 0.5

    def __post_init__(self) -> None:
        check_count("noise_copies", self.noise_copies)
        check_non_negative("lbd", self.lbd)
        check_non_negative("eta", self.eta)


@dataclass(frozen=True)
class SmoothAdvRecipe:
    """SmoothAdv adversarial training of the smoothed classifier (Salman et al., NeurIPS 2019).

    Attributes:
        noise_copies: m >= 1 noise draws per image, shared by the attack and the training loss
            (paper: m_train in {1, 2, 4, 8}; CIFAR-10 at sigma = 0.25: 8).
        epsilon: the L2 radius of the attack in pixel units, >= 0; 0 trains on clean images
            (paper: {0.25, 0.5, 1.0, 2.0}; CIFAR-10 at sigma = 0.25: 255/256, as the released
            code divides its integer flag by 256).
        attack_steps: PGD steps T >= 1 (paper: {1, 2, 4, 6, 8, 10}; CIFAR-10 at sigma = 0.25: 2).
        warmup_epochs: epsilon grows linearly over this many epochs, epsilon * (epoch + 1) /
            warmup_epochs until it reaches epsilon (paper: 10); 0 uses epsilon from the start.

    Raises:
        ValueError: naming the field that is out of range.
    """

    name: str = field(default="smoothadv", init=False)
    noise_copies: int = 8
    epsilon: float = 255 / 256
    attack_steps: int = 2
    warmup_epochs: int = 10

    def __post_init__(self) -> None:
        check_count("noise_copies", self.noise_copies)
        check_non_negative("epsilon", self.epsilon)
        check_count("attack_steps", self.attack_steps)
        check_whole("warmup_epochs", self.warmup_epochs)

    def epsilon_at(self, epoch: int) -> float:
        """The attack radius in epoch ``epoch`` (from 0) under the linear warm-up."""
        if self.warmup_epochs == 0:
            return self.epsilon
        return min(self.epsilon, self.epsilon * (epoch + 1) / self.warmup_epochs)


@dataclass(frozen=True)
class MacerRecipe:
    """MACER, maximising the certified radius of the soft smoothed classifier (Zhai et al. 2020).

    Attributes:
        noise_copies: k >= 1 noise draws per image (paper: 16).
        lbd: lambda >= 0, the weight of the robustness loss (paper, CIFAR-10: 12 at sigma = 0.25
            and 0.5, 4 at sigma = 1.0; MNIST: 16, and 6 at sigma = 1.0).
        gamma: gamma > 0, the hinge: only radii below sigma * gamma / 2 are pushed up (paper: 8).
        beta: beta > 0, the inverse temperature of the softmax in the robustness loss (paper: 16).
        deferred_epochs: lambda is 0 for the first deferred_epochs epochs (paper: 0 on CIFAR-10;
            Jeong and Shin's MNIST runs defer MACER to the first learning-rate drop, 30 of 90).

    Raises:
        ValueError: naming the field that is out of range.
    """

    name: str = field(default="macer", init=False)
    noise_copies: int = 16
    lbd: float = 12.0
    gamma: float = 8.0
    beta: float = 16.0
    deferred_epochs: int = 0

    def __post_init__(self) -> None:
        check_count("noise_copies", self.noise_copies)
        check_non_negative("lbd", self.lbd)
        check_positive("gamma", self.gamma)
        check_positive("beta", self.beta)
        check_whole("deferred_epochs", self.deferred_epochs)

    def lbd_at(self, epoch: int) -> float:
        """The weight of the robustness loss in epoch ``epoch`` (from 0)."""
        return 0.0 if epoch < self.deferred_epochs else self.lbd


Recipe = Union[GaussianRecipe, ConsistencyRecipe, SmoothAdvRecipe, MacerRecipe]
RECIPE_TYPES: dict[str, type] = {
    "gaussian": GaussianRecipe,
    "consistency": ConsistencyRecipe,
    "smoothadv": SmoothAdvRecipe,
    "macer": MacerRecipe,
}
RECIPES = tuple(RECIPE_TYPES)

RECIPE_PRESETS: dict[str, Recipe] = {
    "consistency-cifar10-sigma0.25": ConsistencyRecipe(noise_copies=2, lbd=20.0, eta=0.5),
    "consistency-cifar10-sigma0.50": ConsistencyRecipe(noise_copies=2, lbd=10.0, eta=0.5),
    "consistency-cifar10-sigma1.00": ConsistencyRecipe(noise_copies=2, lbd=10.0, eta=0.5),
    "consistency-mnist": ConsistencyRecipe(noise_copies=2, lbd=20.0, eta=0.5),
    "smoothadv-cifar10-sigma0.25": SmoothAdvRecipe(8, 255 / 256, 2, 10),
    "smoothadv-cifar10-sigma0.50": SmoothAdvRecipe(2, 512 / 256, 2, 10),
    "smoothadv-cifar10-sigma1.00": SmoothAdvRecipe(4, 512 / 256, 2, 10),
    "smoothadv-mnist": SmoothAdvRecipe(4, 255 / 256, 10, 10),
    "macer-cifar10": MacerRecipe(16, 12.0, 8.0, 16.0, 0),
    "macer-cifar10-sigma1.00": MacerRecipe(16, 4.0, 8.0, 16.0, 0),
    "macer-mnist": MacerRecipe(16, 16.0, 8.0, 16.0, 30),
    "macer-mnist-sigma1.00": MacerRecipe(16, 6.0, 8.0, 16.0, 30),
}
"""The papers' settings by name. CIFAR-10: consistency from Jeong and Shin's released logs (their
sigma = 0.25, lambda = 20 model certifies ACR 0.552); SmoothAdv from the released models of Salman
et al. that Jeong and Shin compare with (PGD 2 steps; m = 8, 2, 4; epsilon 255/256, 2, 2 at sigma
0.25, 0.5, 1.0); MACER from Zhai et al. MNIST: the settings of Jeong and Shin's MNIST experiments
(90 epochs; SmoothAdv with 10 PGD steps and m = 4; MACER deferred to epoch 30)."""


def make_recipe(name: str, **overrides: float | int | None) -> Recipe:
    """A recipe by recipe or preset name, with some hyper-parameters replaced.

    Args:
        name: one of :data:`RECIPES` (the paper's defaults) or of :data:`RECIPE_PRESETS`.
        **overrides: hyper-parameters of that recipe; None leaves a value unchanged.

    Returns:
        The recipe dataclass.

    Raises:
        ValueError: if the name is unknown, an override is not a hyper-parameter of the recipe,
            or a value is out of range.

    Example:
        >>> make_recipe("macer-cifar10", lbd=4.0)
        MacerRecipe(name='macer', noise_copies=16, lbd=4.0, gamma=8.0, beta=16.0, deferred_epochs=0)
    """
    if name in RECIPE_TYPES:
        base = RECIPE_TYPES[name]()
    elif name in RECIPE_PRESETS:
        base = RECIPE_PRESETS[name]
    else:
        names = RECIPES + tuple(RECIPE_PRESETS)
        raise ValueError(f"recipe must be one of {names}, got {name!r}")
    settable = [item.name for item in fields(base) if item.init]
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in given:
        if key not in settable:
            raise ValueError(
                f"{key} is not a hyper-parameter of recipe {base.name!r} "
                f"(its hyper-parameters: {', '.join(settable) or 'none'})"
            )
    current = {key: getattr(base, key) for key in settable}
    return type(base)(**{**current, **given})


def draw_noise(
    pixels: torch.Tensor, copies: int, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Gaussian noise N(0, sigma^2 I) of shape (copies, B, C, H, W) on the pixels' device.

    With copies = 1 it holds the same numbers as ``sigma * torch.randn(pixels.shape)`` drawn
    from the same generator state, which Gaussian training draws.
    """
    check_count("copies", copies)
    check_non_negative("sigma", sigma)
    standard = torch.randn(
        (copies, *pixels.shape), generator=generator, device=pixels.device, dtype=pixels.dtype
    )
    return sigma * standard


def _check_noise(pixels: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor) -> None:
    if pixels.dim() != 4:
        raise ValueError(f"pixels must be a batch (B, C, H, W), got shape {tuple(pixels.shape)}")
    if labels.shape != pixels.shape[:1]:
        raise ValueError(f"labels must have shape ({pixels.shape[0]},), got {tuple(labels.shape)}")
    if noise.dim() != 5 or noise.shape[1:] != pixels.shape or noise.shape[0] < 1:
        raise ValueError(
            f"noise must have shape (m, {', '.join(map(str, pixels.shape))}) with m >= 1, "
            f"got {tuple(noise.shape)}"
        )


def _mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(1/m) sum_j CE(logits_j, y), averaged over the batch: (m, B, K), (B,) -> ()."""
    copies, batch, classes = logits.shape
    return F.cross_entropy(logits.reshape(copies * batch, classes), labels.repeat(copies))


def gaussian_loss(
    model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of f on noisy inputs (Cohen et al. 2019, Section 4).

    L = (1/m) sum_j CE(f(x + e_j), y), averaged over the batch; Cohen et al. use m = 1.

    Args:
        model: the base classifier f, pixels (B, C, H, W) -> logits (B, K).
        pixels: clean images (B, C, H, W).
        labels: classes (B,), int64.
        noise: e_j, shape (m, B, C, H, W), already scaled by sigma.

    Returns:
        The scalar loss.

    Raises:
        ValueError: if the shapes do not fit.
    """
    _check_noise(pixels, labels, noise)
    return _mean_cross_entropy(noisy_logits(model, pixels, noise), labels)


def consistency_loss(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    lbd: float,
    eta: float,
) -> torch.Tensor:
    """Gaussian training with consistency regularisation (Jeong and Shin, NeurIPS 2020).

    With p_j = softmax(f(x + e_j)) and their mean p_hat = (1/m) sum_j p_j, per image

        L = (1/m) sum_j CE(f(x + e_j), y)
            + lbd * (1/m) sum_j KL(p_hat || p_j) + eta * H(p_hat),

    where KL(p || q) = sum_c p_c log(p_c / q_c) and H(p) = -sum_c p_c log p_c; the gradient flows
    through p_hat too, as in the paper's code. The loss is averaged over the batch.

    Args:
        model: the base classifier f, pixels (B, C, H, W) -> logits (B, K).
        pixels: clean images (B, C, H, W).
        labels: classes (B,), int64.
        noise: e_j, shape (m, B, C, H, W), already scaled by sigma (paper: m = 2).
        lbd: lambda >= 0 (paper: 10 or 20).
        eta: eta >= 0 (paper: 0.5).

    Returns:
        The scalar loss.

    Raises:
        ValueError: if lbd or eta is out of range or the shapes do not fit.
    """
    check_non_negative("lbd", lbd)
    check_non_negative("eta", eta)
    _check_noise(pixels, labels, noise)
    logits = noisy_logits(model, pixels, noise)  # (m, B, K)
    log_probs = logits.log_softmax(dim=2)  # (m, B, K)
    log_mean = log_soft_smoothed(log_probs, dim=0)  # log p_hat, (B, K)
    mean = log_mean.exp()  # p_hat, (B, K)
    kl = (mean.unsqueeze(0) * (log_mean.unsqueeze(0) - log_probs)).sum(dim=2)  # (m, B)
    entropy = -(mean * log_mean).sum(dim=1)  # (B,)
    regulariser = lbd * kl.mean(dim=0) + eta * entropy  # (B,)
    return _mean_cross_entropy(logits, labels) + regulariser.mean()


def smoothadv_loss(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    epsilon: float,
    steps: int,
) -> torch.Tensor:
    """SmoothAdv: Gaussian training on adversarial examples of the smoothed classifier.

    Salman et al., NeurIPS 2019, Section 3 (SmoothAdv_PGD): the noise e_1..e_m is drawn once
    per batch; the attack maximises the loss of the soft smoothed classifier estimated with it,

        x' = argmax_{||x' - x||_2 <= epsilon} -log((1/m) sum_j softmax(f(x' + e_j))_y),

    with the model in eval mode (as the paper's code does), and the training loss is

        L = (1/m) sum_j CE(f(x' + e_j), y)

    on the same noise, averaged over the batch. No gradient flows through x'. The attack is
    :func:`certify.attacks.smoothadv_pgd`; with epsilon = 0 it is not run and x' = x.

    Args:
        model: the base classifier f, pixels (B, C, H, W) -> logits (B, K).
        pixels: clean images (B, C, H, W) with pixels in [0, 1].
        labels: classes (B,), int64.
        noise: e_j, shape (m, B, C, H, W), already scaled by sigma.
        epsilon: the attack's L2 radius, >= 0 (after any warm-up).
        steps: the attack's PGD steps, >= 1.

    Returns:
        The scalar loss.

    Raises:
        ValueError: if epsilon or steps is out of range, the shapes do not fit, or the attack
            returns images of another shape.
    """
    check_non_negative("epsilon", epsilon)
    check_count("steps", steps)
    _check_noise(pixels, labels, noise)
    adversarial = pixels
    if epsilon > 0:
        with evaluating(model):
            adversarial = smoothadv_pgd(model, pixels, labels, noise, epsilon, steps).detach()
        if adversarial.shape != pixels.shape:
            raise ValueError(
                f"attack returned shape {tuple(adversarial.shape)}, expected {tuple(pixels.shape)}"
            )
    return _mean_cross_entropy(noisy_logits(model, adversarial, noise), labels)


def macer_loss(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    sigma: float,
    lbd: float,
    gamma: float,
    beta: float,
) -> torch.Tensor:
    """MACER (Zhai et al., ICLR 2020, Algorithm 1): maximise the soft smoothed classifier's radius.

    With the soft smoothed classifiers G(x) = (1/k) sum_j softmax(f(x + e_j)) and
    G_beta(x) = (1/k) sum_j softmax(beta * f(x + e_j)), per image

        L = -log G(x)_y + lbd * (sigma / 2) * max(0, gamma - xi)  if argmax G_beta(x) = y,
        L = -log G(x)_y                                            otherwise,

        xi = PhiInv(G_beta(x)_y) - PhiInv(max_{c != y} G_beta(x)_c),

    so (sigma / 2) * xi is the certified radius of G_beta (Zhai et al., Theorem 2) and the hinge
    pushes up radii below sigma * gamma / 2. As in the paper's code, an image whose xi is not
    finite (a probability rounded to 0 or 1) gets no robustness term. The loss is averaged over
    the batch (the robustness sum is divided by the batch size, not by the images it counts).

    Args:
        model: the base classifier f, pixels (B, C, H, W) -> logits (B, K).
        pixels: clean images (B, C, H, W).
        labels: classes (B,), int64.
        noise: e_j, shape (k, B, C, H, W), already scaled by sigma (paper: k = 16).
        sigma: the noise level >= 0 that scaled ``noise``.
        lbd: lambda >= 0 (paper: 12 on CIFAR-10).
        gamma: the hinge gamma > 0 (paper: 8).
        beta: the inverse temperature beta > 0 (paper: 16).

    Returns:
        The scalar loss.

    Raises:
        ValueError: if a hyper-parameter is out of range or the shapes do not fit.
    """
    check_non_negative("sigma", sigma)
    check_non_negative("lbd", lbd)
    check_positive("gamma", gamma)
    check_positive("beta", beta)
    _check_noise(pixels, labels, noise)
    logits = noisy_logits(model, pixels, noise)  # (k, B, K)
    batch = logits.shape[1]
    # log G(x) = log((1/k) sum_j softmax(f(x + e_j))), in log space: (B, K)
    log_soft = log_soft_smoothed(logits.log_softmax(dim=2), dim=0)
    classification = F.nll_loss(log_soft, labels)
    soft_beta = (beta * logits).softmax(dim=2).mean(dim=0)  # G_beta(x), (B, K)
    top = soft_beta.topk(2, dim=1)  # values and indices, (B, 2)
    correct = top.indices[:, 0] == labels  # (B,)
    with torch.no_grad():
        margins = torch.special.ndtri(top.values[:, 0]) - torch.special.ndtri(top.values[:, 1])
        counted = correct & torch.isfinite(margins) & (margins < gamma)  # (B,)
    # recomputed on the counted images only, so no infinite value reaches the backward pass
    xi = torch.special.ndtri(top.values[counted, 0]) - torch.special.ndtri(top.values[counted, 1])
    robustness = (sigma / 2) * (gamma - xi).sum() / batch
    return classification + lbd * robustness


def check_recipe(recipe: Recipe) -> None:
    """Raise ValueError unless ``recipe`` is a recipe dataclass."""
    if not isinstance(recipe, tuple(RECIPE_TYPES.values())):
        raise ValueError(f"recipe must be one of the recipe dataclasses, got {recipe!r}")


def recipe_loss(
    recipe: Recipe,
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None,
    epoch: int,
) -> torch.Tensor:
    """One training step's loss under ``recipe``: draws the noise, applies the epoch's schedule.

    Args:
        recipe: a recipe dataclass (see :func:`make_recipe`).
        model: the base classifier f.
        pixels: clean images (B, C, H, W) with pixels in [0, 1].
        labels: classes (B,), int64.
        sigma: the training noise level >= 0.
        generator: the generator the noise is drawn from (recipe.noise_copies draws per pixel).
        epoch: the epoch (from 0), for SmoothAdv's warm-up and MACER's deferral.

    Returns:
        The scalar loss.

    Raises:
        ValueError: if the recipe is not a recipe or an argument is out of range.
    """
    check_recipe(recipe)
    noise = draw_noise(pixels, recipe.noise_copies, sigma, generator)
    if isinstance(recipe, ConsistencyRecipe):
        return consistency_loss(model, pixels, labels, noise, recipe.lbd, recipe.eta)
    if isinstance(recipe, SmoothAdvRecipe):
        epsilon = recipe.epsilon_at(epoch)
        return smoothadv_loss(model, pixels, labels, noise, epsilon, recipe.attack_steps)
    if isinstance(recipe, MacerRecipe):
        return macer_loss(
            model, pixels, labels, noise, sigma, recipe.lbd_at(epoch), recipe.gamma, recipe.beta
        )
    return gaussian_loss(model, pixels, labels, noise)
