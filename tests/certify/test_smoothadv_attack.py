"""SmoothAdv-PGD, the training attack of SmoothAdv, against a slow per-image reference written from
Salman et al. (2019) and against the closed form on a linear model; then the SmoothAdv recipe with
this attack, as the finetune command runs it."""

from __future__ import annotations

import math

import pytest
import torch

import encoders
from certify.attacks import perturbation_norms, smoothadv_pgd
from certify.losses import soft_smoothed_nll
from encoders.backbones import build_classifier
from encoders.data import load_dataset
from encoders.finetune import FinetuneConfig, finetune
from encoders.recipes import SmoothAdvRecipe, draw_noise, smoothadv_loss

SIGMA = 0.25


def reference_smoothadv_pgd(model, pixels, labels, noise, epsilon, steps) -> torch.Tensor:
    """One image at a time: from delta = 0, `steps` steps of 2 epsilon / steps along the unit
    gradient of -log((1/m) sum_j softmax(f(x + delta + e_j))_y), each followed by scaling delta
    back onto the L2 ball and clipping x + delta to [0, 1]."""
    result = []
    for i in range(len(pixels)):
        x, y = pixels[i], int(labels[i])
        delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            probabilities = [
                model((x + delta + noise[j, i]).unsqueeze(0))[0].softmax(0)[y]
                for j in range(len(noise))
            ]
            objective = -torch.log(sum(probabilities) / len(noise))
            (grad,) = torch.autograd.grad(objective, delta)
            delta = delta.detach() + (2 * epsilon / steps) * grad / grad.norm()
            if delta.norm() > epsilon:
                delta = delta * (epsilon / delta.norm())
            delta = (x + delta).clamp(0, 1) - x
        result.append(x + delta)
    return torch.stack(result)


@pytest.fixture
def double_cnn(tiny_cnn):
    return tiny_cnn.double()


def images_and_noise(count=5, copies=3, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(count, 1, 8, 8, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (count,), generator=generator)
    noise = SIGMA * torch.randn(copies, count, 1, 8, 8, generator=generator, dtype=dtype)
    return pixels, labels, noise


@pytest.mark.parametrize("epsilon,steps", [(0.5, 1), (1.0, 4), (2.0, 10)])
def test_matches_the_per_image_reference(double_cnn, epsilon, steps):
    pixels, labels, noise = images_and_noise()
    ours = smoothadv_pgd(double_cnn, pixels, labels, noise, epsilon, steps)
    reference = reference_smoothadv_pgd(double_cnn, pixels, labels, noise, epsilon, steps)
    assert torch.allclose(ours, reference, atol=1e-10)
    assert not torch.equal(ours, pixels)


def test_linear_two_class_model_moves_by_epsilon_towards_the_other_class(linear_model):
    # For logits (0, w.x + b), every noise draw's gradient of -log p_y is a positive multiple of
    # -w for y = 1, so every step points along -w / |w| and the ball stops it at epsilon.
    image = torch.full((1, 1, 4, 4), 0.5)
    noise = SIGMA * torch.randn(6, 1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    unit = (linear_model.weight / linear_model.weight.norm()).view(1, 1, 4, 4)
    for label, sign in ((1, -1.0), (0, 1.0)):
        for steps in (1, 3):
            adversarial = smoothadv_pgd(
                linear_model, image, torch.tensor([label]), noise, 0.2, steps
            )
            assert torch.allclose(adversarial, image + sign * 0.2 * unit, atol=1e-6)


def test_stays_in_ball_and_box_raises_the_objective_and_draws_no_randomness(tiny_cnn):
    train = load_dataset("digits", "train")
    pixels, labels = train.batch(torch.arange(32))  # real digits: many pixels at 0 and 1
    noise = draw_noise(pixels, 4, SIGMA, torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    adversarial = smoothadv_pgd(tiny_cnn, pixels, labels, noise, 1.0, 5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's noise, nothing else
    assert float(perturbation_norms(adversarial - pixels, "l2").max()) <= 1.0 + 1e-5
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    with torch.no_grad():
        clean = soft_smoothed_nll(tiny_cnn, pixels, labels, noise)
        attacked = soft_smoothed_nll(tiny_cnn, adversarial, labels, noise)
    assert bool((attacked >= clean - 1e-6).all()) and float((attacked - clean).mean()) > 0
    assert all(parameter.grad is None for parameter in tiny_cnn.parameters())


def test_soft_smoothed_nll_is_the_log_of_the_mean_probability(double_cnn):
    pixels, labels, noise = images_and_noise(copies=4)
    with torch.no_grad():
        ours = soft_smoothed_nll(double_cnn, pixels, labels, noise)
        for i in range(len(pixels)):
            probabilities = [
                double_cnn((pixels[i] + e[i]).unsqueeze(0))[0].softmax(0)[labels[i]]
                for e in noise
            ]
            assert float(ours[i]) == pytest.approx(-math.log(sum(probabilities) / 4), rel=1e-12)


@pytest.mark.parametrize(
    "change,name",
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"steps": 0}, "steps"),
        ({"noise": torch.zeros(2, 5, 1, 8, 7, dtype=torch.float64)}, "noise"),
        ({"noise": torch.full((2, 5, 1, 8, 8), float("nan"), dtype=torch.float64)}, "noise"),
        ({"pixels": torch.full((5, 1, 8, 8), 2.0, dtype=torch.float64)}, "images"),
    ],
)
def test_bad_arguments_are_value_errors(double_cnn, change, name):
    pixels, labels, noise = images_and_noise()
    arguments = {"pixels": pixels, "labels": labels, "noise": noise, "epsilon": 1.0, "steps": 2}
    arguments.update(change)
    with pytest.raises(ValueError, match=name):
        smoothadv_pgd(double_cnn, **arguments)


def test_smoothadv_recipe_lowers_its_own_loss():
    train = load_dataset("digits", "train")
    pixels, labels = train.batch(torch.arange(64))
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, (1, 8, 8), [0.3], [0.4]).train()
    noise = draw_noise(pixels, 2, SIGMA, torch.Generator().manual_seed(0))

    def loss() -> torch.Tensor:
        return smoothadv_loss(model, pixels, labels, noise, 0.5, 2)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.5 * before, (before, after)


def test_finetune_with_the_smoothadv_recipe(tmp_path):
    recipe = SmoothAdvRecipe(noise_copies=2, epsilon=0.5, attack_steps=2, warmup_epochs=2)
    config = FinetuneConfig(
        sigma=SIGMA, out=str(tmp_path / "smoothadv.pt"), epochs=1, batch_size=256, device="cpu",
        recipe=recipe,
    )
    out = finetune(config)
    assert encoders.read_metadata(out)["recipe"]["recipe"] == {
        "name": "smoothadv", "noise_copies": 2, "epsilon": 0.5, "attack_steps": 2,
        "warmup_epochs": 2,
    }
