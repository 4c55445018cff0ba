"""A model handed over in training mode is evaluated in eval mode and given back as it came."""

from __future__ import annotations

import copy

import pytest
import torch

from certify import certify, predict
from certify.attacks import EOTPGD, PGD, NaiveSmoothedPGD, PGDConfig
from certify.attacks.smoothadv import smoothadv_pgd
from certify.fast import fastest_batch_size
from certify.sampling import evaluating


def batch_norm_model() -> torch.nn.Module:
    """A CNN with BatchNorm whose running statistics are far from any batch's own."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 8 * 8, 4),
    )
    batch_norm = model[1]
    assert isinstance(batch_norm, torch.nn.BatchNorm2d)
    batch_norm.running_mean.fill_(0.7)
    batch_norm.running_var.fill_(3.0)
    return model


def buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.named_buffers()}


def modes(model: torch.nn.Module) -> list[bool]:
    return [module.training for module in model.modules()]


def test_a_train_mode_model_certifies_exactly_like_its_eval_copy() -> None:
    trained = batch_norm_model().train()
    trained[3].eval()  # a submodule the caller froze stays frozen
    evaluated = copy.deepcopy(trained).eval()
    before, mode_before = buffers(trained), modes(trained)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    for function, arguments in ((certify, (0.25, 50, 500, 0.001, 64)),
                                (predict, (0.25, 500, 0.001, 64))):
        got = function(trained, x, *arguments, generator=torch.Generator().manual_seed(2))
        expected = function(evaluated, x, *arguments, generator=torch.Generator().manual_seed(2))
        assert got == expected
    adaptive = certify(trained, x, 0.25, 20, 400, 0.001, 64,
                       torch.Generator().manual_seed(3), adaptive=True)
    assert adaptive == certify(evaluated, x, 0.25, 20, 400, 0.001, 64,
                               torch.Generator().manual_seed(3), adaptive=True)
    for name, tensor in buffers(trained).items():
        assert torch.equal(tensor, before[name]), f"buffer {name} changed"
    assert modes(trained) == mode_before


@pytest.mark.parametrize("make", [
    lambda model: PGD(model, PGDConfig(norm="l2", eps=0.5, steps=3)),
    lambda model: NaiveSmoothedPGD(model, 0.25, PGDConfig(norm="linf", eps=0.1, steps=3)),
    lambda model: EOTPGD(model, 0.25, 4, PGDConfig(norm="l2", eps=0.5, steps=3, restarts=2)),
])
def test_attacks_run_a_train_mode_model_in_eval_mode_and_restore_it(make) -> None:
    trained = batch_norm_model().train()
    evaluated = copy.deepcopy(trained).eval()
    before = buffers(trained)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2])
    got = make(trained)(images, labels, torch.Generator().manual_seed(5))
    expected = make(evaluated)(images, labels, torch.Generator().manual_seed(5))
    assert torch.equal(got, expected)
    assert trained.training and all(module.training for module in trained.modules())
    for name, tensor in buffers(trained).items():
        assert torch.equal(tensor, before[name]), f"buffer {name} changed"


def test_smoothadv_pgd_and_the_batch_chooser_leave_the_mode_and_buffers_alone() -> None:
    trained = batch_norm_model().train()
    evaluated = copy.deepcopy(trained).eval()
    before = buffers(trained)
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([1, 3])
    noise = 0.25 * torch.randn(3, 2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(smoothadv_pgd(trained, images, labels, noise, 0.5, 2),
                       smoothadv_pgd(evaluated, images, labels, noise, 0.5, 2))
    fastest_batch_size(trained, (1, 8, 8), candidates=(8, 16), time_budget=0.5, rounds=1)
    assert trained.training
    for name, tensor in buffers(trained).items():
        assert torch.equal(tensor, before[name]), f"buffer {name} changed"


def test_evaluating_restores_the_modes_after_an_exception() -> None:
    model = batch_norm_model().train()
    with pytest.raises(RuntimeError), evaluating(model):
        assert not any(module.training for module in model.modules())
        raise RuntimeError("the model failed")
    assert all(module.training for module in model.modules())
