"""The training recipes against slow per-image references written from their papers' equations,
their schedules, their reduction to Gaussian training, and their argument checks.

The references loop over images and noise draws one at a time in float64, so a batching, layout
or detaching mistake in the vectorised losses shows up as a different value or gradient."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

import encoders
from encoders.backbones import build_classifier
from encoders.data import load_dataset
from encoders.finetune import FinetuneConfig, finetune
from encoders.recipes import (
    RECIPE_PRESETS,
    ConsistencyRecipe,
    GaussianRecipe,
    MacerRecipe,
    SmoothAdvRecipe,
    consistency_loss,
    draw_noise,
    gaussian_loss,
    macer_loss,
    make_recipe,
    recipe_loss,
    smoothadv_loss,
)

SIGMA = 0.25


def tiny_linear(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).double()


def batch(size: int = 6, copies: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(size, 1, 8, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (size,), generator=generator)
    noise = SIGMA * torch.randn(copies, size, 1, 8, 8, generator=generator, dtype=torch.float64)
    return pixels, labels, noise


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


def assert_same_value_and_gradient(model, loss, reference) -> None:
    assert torch.allclose(loss, reference, rtol=1e-10, atol=1e-12), (loss, reference)
    for ours, theirs in zip(gradients(model, loss), gradients(model, reference)):
        assert torch.allclose(ours, theirs, rtol=1e-8, atol=1e-12)


# --- slow references, one image and one noise draw at a time --------------------------------


def reference_gaussian(model, pixels, labels, noise) -> torch.Tensor:
    total = 0.0
    for i in range(len(pixels)):
        for j in range(len(noise)):
            probabilities = model((pixels[i] + noise[j, i]).unsqueeze(0))[0].softmax(0)
            total = total - torch.log(probabilities[labels[i]])
    return total / (len(pixels) * len(noise))


def reference_consistency(model, pixels, labels, noise, lbd, eta) -> torch.Tensor:
    """Jeong and Shin 2020: (1/m) sum_j CE_j + lbd (1/m) sum_j KL(p_hat || p_j) + eta H(p_hat)."""
    m = len(noise)
    total = 0.0
    for i in range(len(pixels)):
        p = [model((pixels[i] + noise[j, i]).unsqueeze(0))[0].softmax(0) for j in range(m)]
        p_hat = sum(p) / m
        cross_entropy = sum(-torch.log(p[j][labels[i]]) for j in range(m)) / m
        kl = sum((p_hat * (torch.log(p_hat) - torch.log(p[j]))).sum() for j in range(m)) / m
        entropy = -(p_hat * torch.log(p_hat)).sum()
        total = total + cross_entropy + lbd * kl + eta * entropy
    return total / len(pixels)


def macer_margin(model, image, noise_of_image, beta, label) -> tuple[float, bool]:
    """xi of Zhai et al. for one image, with scipy's inverse normal CDF, and whether the soft
    smoothed classifier G_beta classifies it correctly."""
    g_beta = sum((beta * model((image + e).unsqueeze(0))[0]).softmax(0) for e in noise_of_image)
    g_beta = (g_beta / len(noise_of_image)).detach().numpy()
    others = [g_beta[c] for c in range(len(g_beta)) if c != label]
    return float(norm.ppf(g_beta[label]) - norm.ppf(max(others))), int(g_beta.argmax()) == label


def reference_macer(model, pixels, labels, noise, sigma, lbd, gamma, beta) -> torch.Tensor:
    """Zhai et al. 2020: -log G(x)_y, plus lbd * sigma / 2 * max(0, gamma - xi) where
    argmax G_beta(x) = y, xi = PhiInv(G_beta(x)_y) - PhiInv(max_{c != y} G_beta(x)_c)."""
    m = len(noise)
    classification, robustness = 0.0, 0.0
    for i in range(len(pixels)):
        logits = [model((pixels[i] + noise[j, i]).unsqueeze(0))[0] for j in range(m)]
        g = sum(z.softmax(0) for z in logits) / m
        classification = classification - torch.log(g[labels[i]])
        g_beta = sum((beta * z).softmax(0) for z in logits) / m
        if int(g_beta.argmax()) != int(labels[i]):
            continue
        others = torch.cat([g_beta[: labels[i]], g_beta[labels[i] + 1 :]])
        xi = torch.special.ndtri(g_beta[labels[i]]) - torch.special.ndtri(others.max())
        if math.isfinite(float(xi.detach())):
            robustness = robustness + sigma / 2 * torch.clamp(gamma - xi, min=0)
    return (classification + lbd * robustness) / len(pixels)


# --- each loss against its reference ---------------------------------------------------------


def test_gaussian_loss_matches_reference():
    model = tiny_linear()
    pixels, labels, noise = batch()
    assert_same_value_and_gradient(
        model,
        gaussian_loss(model, pixels, labels, noise),
        reference_gaussian(model, pixels, labels, noise),
    )


@pytest.mark.parametrize("copies,lbd,eta", [(2, 20.0, 0.5), (3, 10.0, 0.0), (4, 0.0, 2.0)])
def test_consistency_loss_matches_reference(copies, lbd, eta):
    model = tiny_linear()
    pixels, labels, noise = batch(copies=copies)
    assert_same_value_and_gradient(
        model,
        consistency_loss(model, pixels, labels, noise, lbd, eta),
        reference_consistency(model, pixels, labels, noise, lbd, eta),
    )


def test_macer_loss_matches_reference_with_every_case_of_the_hinge():
    model = tiny_linear()
    pixels, _, noise = batch(size=8, copies=4)
    beta = 2.0
    with torch.no_grad():
        logits = model((pixels.unsqueeze(0) + noise).flatten(0, 1)).view(4, 8, 10)
        predicted = (beta * logits).softmax(2).mean(0).argmax(1)
    # six images labelled as G_beta predicts them, two labelled otherwise
    labels = torch.cat([predicted[:6], (predicted[6:] + 1) % 10])
    margins = [macer_margin(model, pixels[i], noise[:, i], beta, int(labels[i])) for i in range(8)]
    correct_margins = sorted(xi for xi, correct in margins if correct)
    assert len(correct_margins) == 6 and sum(correct for _, correct in margins) == 6
    gamma = (correct_margins[2] + correct_margins[3]) / 2  # three hinges active, three not
    loss = macer_loss(model, pixels, labels, noise, SIGMA, 12.0, gamma, beta)
    reference = reference_macer(model, pixels, labels, noise, SIGMA, 12.0, gamma, beta)
    assert_same_value_and_gradient(model, loss, reference)
    # the robustness term counts exactly those three: sum of sigma/2 * (gamma - xi), scipy's xi
    expected = sum(SIGMA / 2 * (gamma - xi) for xi in correct_margins if xi < gamma) / 8
    without = macer_loss(model, pixels, labels, noise, SIGMA, 0.0, gamma, beta)
    assert float((loss - without).detach()) == pytest.approx(12.0 * expected, rel=1e-9)


def test_macer_skips_images_whose_radius_is_infinite():
    # huge weights round G_beta to exactly one-hot, so xi is infinite for every correct image:
    # the paper's code drops them, and the loss must stay finite with a finite gradient
    model = tiny_linear()
    with torch.no_grad():
        model[1].weight.mul_(1e4)
    pixels, _, noise = batch(copies=1)
    labels = model(pixels + noise[0]).argmax(1)
    labels[0] = (labels[0] + 1) % 10  # one wrong image too
    margins = [macer_margin(model, pixels[i], noise[:, i], 16.0, int(labels[i])) for i in range(6)]
    assert any(correct for _, correct in margins)
    assert all(math.isinf(xi) for xi, correct in margins if correct)
    loss = macer_loss(model, pixels, labels, noise, SIGMA, 12.0, 8.0, 16.0)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(grad).all() for grad in gradients(model, loss))
    assert torch.equal(loss, macer_loss(model, pixels, labels, noise, SIGMA, 0.0, 8.0, 16.0))


class _RecordingAttack:
    """Moves every image by epsilon along +1 (then clips) and records what it was given."""

    def __init__(self, frozen: torch.nn.Module) -> None:
        self.frozen = frozen
        self.calls: list[dict] = []

    def __call__(self, model, pixels, labels, noise, epsilon, steps):
        self.calls.append(
            {"noise": noise, "epsilon": epsilon, "steps": steps, "training": model.training,
             "any_module_training": any(module.training for module in model.modules())}
        )
        direction = torch.ones_like(pixels) / math.sqrt(pixels[0].numel())
        return (pixels + epsilon * direction).clamp(0, 1)


def test_smoothadv_loss_trains_on_the_attack_output_with_the_attack_noise(monkeypatch):
    model = tiny_linear()
    frozen = model[0]
    model.train()
    frozen.eval()  # a frozen part must stay in eval mode after the attack
    pixels, labels, noise = batch(copies=4)
    attack = _RecordingAttack(frozen)
    monkeypatch.setattr(encoders.recipes, "smoothadv_pgd", attack)
    loss = smoothadv_loss(model, pixels, labels, noise, 0.5, 3)
    (call,) = attack.calls
    assert call["noise"] is noise and call["epsilon"] == 0.5 and call["steps"] == 3
    assert not call["training"] and not call["any_module_training"]
    assert model.training and not frozen.training
    adversarial = attack(model, pixels, labels, noise, 0.5, 3)
    assert_same_value_and_gradient(
        model, loss, reference_gaussian(model, adversarial, labels, noise)
    )


def test_smoothadv_with_zero_epsilon_runs_no_attack(monkeypatch):
    model = tiny_linear()
    pixels, labels, noise = batch()

    def forbidden(*arguments):
        raise AssertionError("the attack ran with epsilon 0")

    monkeypatch.setattr(encoders.recipes, "smoothadv_pgd", forbidden)
    assert torch.equal(
        smoothadv_loss(model, pixels, labels, noise, 0.0, 3),
        gaussian_loss(model, pixels, labels, noise),
    )


# --- schedules and the dispatcher ------------------------------------------------------------


def test_warmup_and_deferral_schedules():
    recipe = SmoothAdvRecipe(epsilon=1.0, warmup_epochs=10)
    assert [recipe.epsilon_at(epoch) for epoch in (0, 4, 9, 30)] == pytest.approx(
        [0.1, 0.5, 1.0, 1.0]
    )
    assert SmoothAdvRecipe(epsilon=1.0, warmup_epochs=0).epsilon_at(0) == 1.0
    macer = MacerRecipe(lbd=12.0, deferred_epochs=2)
    assert [macer.lbd_at(epoch) for epoch in (0, 1, 2, 50)] == [0.0, 0.0, 12.0, 12.0]


def test_recipe_loss_draws_m_copies_and_applies_the_schedule():
    model = tiny_linear().float()
    pixels, labels, _ = batch()
    pixels = pixels.float()
    recipe = MacerRecipe(noise_copies=3, lbd=12.0, deferred_epochs=1)
    for epoch, lbd in ((0, 0.0), (1, 12.0)):
        noise = draw_noise(pixels, 3, SIGMA, torch.Generator().manual_seed(5))
        assert noise.shape == (3, *pixels.shape)
        expected = macer_loss(model, pixels, labels, noise, SIGMA, lbd, 8.0, 16.0)
        got = recipe_loss(
            recipe, model, pixels, labels, SIGMA, torch.Generator().manual_seed(5), epoch
        )
        assert torch.equal(got, expected)


# --- training lowers each recipe's own loss --------------------------------------------------


def digits_model_and_batch(count: int = 64):
    train = load_dataset("digits", "train")
    pixels, labels = train.batch(torch.arange(count))
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, (1, 8, 8), [0.3], [0.4])
    return model, pixels, labels


LOSSES = {
    "gaussian": lambda model, x, y, noise: gaussian_loss(model, x, y, noise),
    "consistency": lambda model, x, y, noise: consistency_loss(model, x, y, noise, 20.0, 0.5),
    "macer": lambda model, x, y, noise: macer_loss(model, x, y, noise, SIGMA, 12.0, 8.0, 16.0),
}


@pytest.mark.parametrize("name,copies", [("gaussian", 1), ("consistency", 2), ("macer", 8)])
def test_each_recipe_lowers_its_own_loss(name, copies):
    model, pixels, labels = digits_model_and_batch()
    noise = draw_noise(pixels, copies, SIGMA, torch.Generator().manual_seed(0))
    loss = LOSSES[name]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.no_grad():
        before = float(loss(model, pixels, labels, noise))
    for _ in range(15):
        optimizer.zero_grad()
        loss(model, pixels, labels, noise).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss(model, pixels, labels, noise))
    assert after < 0.5 * before, (before, after)


# --- m = 1 and lambda = 0 is Gaussian training -----------------------------------------------


def _forbidden_attack(*arguments):
    raise AssertionError("the attack ran with epsilon 0")


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gaussian") / "gaussian.pt"
    config = FinetuneConfig(sigma=SIGMA, out=str(out), epochs=1, batch_size=256, device="cpu")
    return finetune(config)


@pytest.mark.parametrize(
    "recipe,attack,equal",
    [
        (ConsistencyRecipe(noise_copies=1, lbd=0.0, eta=0.0), None, True),
        (MacerRecipe(noise_copies=1, lbd=0.0), None, True),
        (SmoothAdvRecipe(noise_copies=1, epsilon=0.0), _forbidden_attack, True),
        (ConsistencyRecipe(noise_copies=1, lbd=0.0, eta=0.5), None, False),
        (MacerRecipe(noise_copies=2, lbd=0.0), None, False),
    ],
)
def test_one_copy_and_no_regulariser_is_exactly_gaussian_training(
    gaussian_run, tmp_path, monkeypatch, recipe, attack, equal
):
    out = tmp_path / "recipe.pt"
    config = FinetuneConfig(
        sigma=SIGMA, out=str(out), epochs=1, batch_size=256, device="cpu", recipe=recipe
    )
    if attack is not None:
        monkeypatch.setattr(encoders.recipes, "smoothadv_pgd", attack)
    finetune(config)
    reference = encoders.load_classifier(gaussian_run).state_dict()
    trained = encoders.load_classifier(out).state_dict()
    same = all(torch.equal(reference[key], trained[key]) for key in reference)
    assert same == equal
    recorded = encoders.read_metadata(out)["recipe"]["recipe"]
    assert recorded == {"name": recipe.name, **{
        key: value for key, value in vars(recipe).items() if key != "name"}}


def test_gaussian_is_the_default_recipe(gaussian_run):
    assert encoders.read_metadata(gaussian_run)["recipe"]["recipe"] == {"name": "gaussian"}


# --- configuration, presets, command line ----------------------------------------------------


def test_presets_and_overrides():
    assert make_recipe("consistency") == ConsistencyRecipe(noise_copies=2, lbd=20.0, eta=0.5)
    assert make_recipe("consistency-cifar10-sigma0.50").lbd == 10.0
    assert make_recipe("macer-mnist", lbd=3.0) == MacerRecipe(16, 3.0, 8.0, 16.0, 30)
    assert make_recipe("smoothadv", epsilon=None) == SmoothAdvRecipe()
    assert make_recipe("gaussian") == GaussianRecipe()
    assert all(make_recipe(name) == preset for name, preset in RECIPE_PRESETS.items())


@pytest.mark.parametrize(
    "build,name",
    [
        (lambda: ConsistencyRecipe(noise_copies=0), "noise_copies"),
        (lambda: ConsistencyRecipe(noise_copies=1.5), "noise_copies"),
        (lambda: ConsistencyRecipe(lbd=-1.0), "lbd"),
        (lambda: ConsistencyRecipe(eta=float("nan")), "eta"),
        (lambda: SmoothAdvRecipe(epsilon=-0.1), "epsilon"),
        (lambda: SmoothAdvRecipe(attack_steps=0), "attack_steps"),
        (lambda: SmoothAdvRecipe(warmup_epochs=-1), "warmup_epochs"),
        (lambda: MacerRecipe(gamma=0.0), "gamma"),
        (lambda: MacerRecipe(beta=-16.0), "beta"),
        (lambda: MacerRecipe(lbd=float("inf")), "lbd"),
        (lambda: MacerRecipe(deferred_epochs=-2), "deferred_epochs"),
        (lambda: make_recipe("stability"), "recipe"),
        (lambda: make_recipe("macer", eta=0.5), "eta"),
        (lambda: consistency_loss(*_loss_arguments(), lbd=-1.0, eta=0.5), "lbd"),
        (lambda: macer_loss(*_loss_arguments(), sigma=-0.25, lbd=1.0, gamma=8.0, beta=16.0),
         "sigma"),
        (lambda: smoothadv_loss(*_loss_arguments(), -1.0, 2), "epsilon"),
        (lambda: smoothadv_loss(*_loss_arguments(), 1.0, 0), "steps"),
        (lambda: gaussian_loss(*_loss_arguments()[:3], torch.zeros(2, 5, 1, 8, 8)), "noise"),
        (lambda: draw_noise(torch.zeros(2, 1, 8, 8), 0, 0.25, None), "copies"),
    ],
)
def test_bad_hyper_parameters_are_value_errors_naming_them(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def _loss_arguments():
    model = tiny_linear()
    pixels, labels, noise = batch(copies=2)
    return model, pixels, labels, noise
