"""The ``encoders-finetune`` command builds the recipe from its flags; SmoothAdv trains with the
attack of certify/attacks."""

from __future__ import annotations

import pytest

import certify.cli.finetune as finetune_command
import encoders.recipes
from certify.attacks import smoothadv_pgd
from encoders.recipes import GaussianRecipe, MacerRecipe, SmoothAdvRecipe


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """The (config, attack) the command would train with, without training."""
    calls = []

    def fake_finetune(config, progress=False, should_stop=None):
        smoothadv = isinstance(config.recipe, SmoothAdvRecipe)
        calls.append((config, encoders.recipes.smoothadv_pgd if smoothadv else None))
        return tmp_path / "x.pt"

    monkeypatch.setattr(finetune_command, "finetune", fake_finetune)
    return calls


def test_command_line_builds_the_recipe(captured):
    assert finetune_command.main(
        ["--sigma", "0.5", "--out", "x.pt", "--recipe", "macer", "--noise-copies", "4",
         "--lbd", "6", "--deferred-epochs", "20"]) == 0
    assert finetune_command.main(["--sigma", "0.5", "--out", "x.pt"]) == 0
    (macer, no_attack), (gaussian, _) = captured
    assert macer.recipe == MacerRecipe(noise_copies=4, lbd=6.0, deferred_epochs=20)
    assert no_attack is None and gaussian.recipe == GaussianRecipe()


def test_smoothadv_gets_the_attack_of_certify(captured):
    assert finetune_command.main(["--sigma", "0.25", "--out", "x.pt", "--recipe", "smoothadv"]) == 0
    (config, attack), = captured
    assert isinstance(config.recipe, SmoothAdvRecipe) and attack is smoothadv_pgd


@pytest.mark.parametrize(
    "arguments,name",
    [(["--recipe", "macer", "--eta", "1"], "eta"),
     (["--recipe", "consistency", "--lbd", "-1"], "lbd")],
)
def test_command_line_rejects_bad_hyper_parameters(captured, capsys, arguments, name):
    assert finetune_command.main(["--sigma", "0.5", "--out", "x.pt", *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and not captured
