"""Published models: Cohen et al.'s checkpoint format, TorchScript and a user's factory, loaded
and certified end to end; each wrong input is a one-line error.

Checkpoints are written here the way their authors' code writes them: the network wrapped in
``Sequential(NormalizeLayer, network)`` with the layer's constants as plain tensors (so not in the
state dict), the ImageNet ResNet-50 inside ``torch.nn.DataParallel``, and
``torch.save({"epoch", "arch", "state_dict", "optimizer"})``, in the pre-1.6 file format of the
2019 releases as well as the current one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import encoders
from certify import certify
from encoders.backbones import build_classifier
from encoders.errors import CheckpointError
from encoders.published import cohen_classifier, sigma_from_path

# The constants of Cohen et al.'s code/datasets.py (github.com/locuslab/smoothing).
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class CohenNormalizeLayer(nn.Module):
    """Cohen et al.'s NormalizeLayer: its constants are plain tensors, not in the state dict."""

    def __init__(self, means: list[float], sds: list[float]) -> None:
        super().__init__()
        self.means = torch.tensor(means)
        self.sds = torch.tensor(sds)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.means.view(1, -1, 1, 1)) / self.sds.view(1, -1, 1, 1)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random batch-norm statistics and affine weights, so that eval mode is not the identity
    (convolutions and linear layers keep their random initialisation)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.running_mean, module.bias):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
                for tensor in (module.running_var, module.weight):
                    tensor.copy_(1 + torch.rand(tensor.shape, generator=generator))
    return model.eval()


def _save_cohen(path: Path, arch: str, model: nn.Module, *, legacy: bool = False) -> Path:
    """``torch.save`` as Cohen et al.'s train.py does, with one step of SGD state."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": 90,
        "arch": arch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def _cohen_key_names(blocks: int) -> set[str]:
    """The state-dict keys of Cohen et al.'s Sequential(NormalizeLayer, cifar ResNet), written
    from their archs/cifar_resnet.py: conv1, bn1, layer1-3 of ``blocks`` BasicBlocks each (a 1x1
    ``downsample`` convolution and batch norm where the stage changes the shape), fc."""

    def batch_norm(prefix: str) -> set[str]:
        return {
            f"{prefix}.{name}"
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        }

    names = {"1.conv1.weight", "1.fc.weight", "1.fc.bias"} | batch_norm("1.bn1")
    for stage in (1, 2, 3):
        for block in range(blocks):
            prefix = f"1.layer{stage}.{block}"
            names |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            names |= batch_norm(f"{prefix}.bn1") | batch_norm(f"{prefix}.bn2")
            if stage > 1 and block == 0:
                names |= {f"{prefix}.downsample.0.weight"} | batch_norm(f"{prefix}.downsample.1")
    return names


def _reference_cifar_resnet(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """Cohen et al.'s CIFAR ResNet forward pass, written from their code with functional ops."""

    def batch_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            x,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    x = (pixels - mean) / std
    x = F.relu(batch_norm(F.conv2d(x, state["1.conv1.weight"], padding=1), "1.bn1"))
    blocks = sum(1 for key in state if key.startswith("1.layer1.") and key.endswith("conv1.weight"))
    for stage in (1, 2, 3):
        for block in range(blocks):
            prefix = f"1.layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = F.conv2d(x, state[f"{prefix}.conv1.weight"], stride=stride, padding=1)
            out = F.relu(batch_norm(out, f"{prefix}.bn1"))
            out = batch_norm(
                F.conv2d(out, state[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2"
            )
            shortcut = x
            if f"{prefix}.downsample.0.weight" in state:
                shortcut = F.conv2d(x, state[f"{prefix}.downsample.0.weight"], stride=stride)
                shortcut = batch_norm(shortcut, f"{prefix}.downsample.1")
            x = F.relu(out + shortcut)
    x = F.avg_pool2d(x, 8).flatten(1)  # (B, 64, 8, 8) -> (B, 64)
    return F.linear(x, state["1.fc.weight"], state["1.fc.bias"])


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("arch, blocks", [("cifar_resnet20", 3), ("cifar_resnet110", 18)])
def test_cifar_resnets_have_the_key_layout_of_cohen_et_al(arch, blocks):
    assert set(cohen_classifier(arch).state_dict()) == _cohen_key_names(blocks)


def test_parameter_counts_are_the_published_ones():
    def count(model: nn.Module) -> int:
        return sum(parameter.numel() for parameter in model.parameters())

    # He et al. (2016), Table 6: ResNet-20 0.27 M and ResNet-110 1.7 M parameters. Counted by
    # hand for 6n + 2 layers with 1x1 projection shortcuts (Cohen et al.'s code): stem 464,
    # stage 1 4,672 n, stage 2 14,528 + 18,560 (n - 1), stage 3 57,728 + 73,984 (n - 1), fc 650.
    assert count(cohen_classifier("cifar_resnet20")) == 272_474
    assert count(cohen_classifier("cifar_resnet110")) == 1_730_714
    assert count(cohen_classifier("resnet50")) == count(torchvision.models.resnet50())


@pytest.mark.parametrize("legacy", [True, False], ids=["torch<1.6 file", "zip file"])
def test_cohen_cifar_checkpoint_loads_with_its_constants_and_certifies(tmp_path, legacy):
    saved = _randomize(cohen_classifier("cifar_resnet20"), seed=1)
    path = _save_cohen(
        tmp_path / "models/cifar10/resnet20/noise_0.25/checkpoint.pth.tar",
        "cifar_resnet20",
        saved,
        legacy=legacy,
    )
    model, metadata = encoders.load_model(path)

    assert not model.training
    assert metadata == {
        "format": "cohen2019",
        "architecture": "cifar_resnet20",
        "dataset": "cifar10",
        "num_classes": 10,
        "input_shape": [3, 32, 32],
        "sigma": 0.25,
        "epoch": 90,
        "mean": pytest.approx(CIFAR10_MEAN),
        "std": pytest.approx(CIFAR10_STD),
    }
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = _reference_cifar_resnet(torch.load(path, weights_only=True)["state_dict"], pixels)
    torch.testing.assert_close(model(pixels), reference, rtol=1e-4, atol=1e-4)

    x = pixels[0]
    mine = certify(model, x, 0.25, 8, 32, 0.001, 32, torch.Generator().manual_seed(3))
    theirs = certify(saved, x, 0.25, 8, 32, 0.001, 32, torch.Generator().manual_seed(3))
    assert mine == theirs
    assert torch.equal(encoders.load_classifier(path)(pixels), model(pixels))


def test_cohen_resnet50_in_data_parallel_gives_the_logits_of_torchvisions_resnet50(tmp_path):
    network = _randomize(torchvision.models.resnet50(), seed=2)
    wrapped = nn.Sequential(
        CohenNormalizeLayer(IMAGENET_MEAN, IMAGENET_STD), nn.DataParallel(network)
    )
    path = _save_cohen(
        tmp_path / "imagenet/resnet50/noise_0.50/checkpoint.pth.tar",
        "resnet50",
        wrapped,
        legacy=True,
    )
    assert next(iter(torch.load(path, weights_only=True)["state_dict"])) == "1.module.conv1.weight"
    network.cpu().eval()  # DataParallel moves it to the GPU where there is exactly one

    model, metadata = encoders.load_model(path)
    assert (metadata["architecture"], metadata["dataset"], metadata["num_classes"]) == (
        "resnet50",
        "imagenet",
        1000,
    )
    assert (metadata["input_shape"], metadata["sigma"]) == ([3, 224, 224], 0.5)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), network((pixels - mean) / std), rtol=0, atol=0)


def test_data_parallel_prefix_is_matched_either_way(tmp_path):
    """A CIFAR model saved inside DataParallel, and a ResNet-50 saved without it, still load."""
    cifar = _randomize(cohen_classifier("cifar_resnet20"), seed=5)
    state = {key.replace("1.", "1.module.", 1): value for key, value in cifar.state_dict().items()}
    torch.save({"arch": "cifar_resnet20", "state_dict": state}, tmp_path / "cifar.pth")
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(encoders.load_classifier(tmp_path / "cifar.pth")(pixels), cifar(pixels))

    network = _randomize(torchvision.models.resnet50(), seed=6)
    plain = nn.Sequential(CohenNormalizeLayer(IMAGENET_MEAN, IMAGENET_STD), network)
    torch.save({"arch": "resnet50", "state_dict": plain.state_dict()}, tmp_path / "in.pth")
    with torch.no_grad():
        loaded = encoders.load_classifier(tmp_path / "in.pth")
        assert torch.equal(loaded(pixels[:1]), plain(pixels[:1]))


def test_state_dicts_without_batch_norm_step_counters_load(tmp_path):
    """Files from torch < 0.4.1 have no num_batches_tracked; eval mode does not use it."""
    saved = _randomize(cohen_classifier("cifar_resnet20"), seed=10)
    state = {k: v for k, v in saved.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"arch": "cifar_resnet20", "state_dict": state}, tmp_path / "old.pth")
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(encoders.load_classifier(tmp_path / "old.pth")(pixels), saved(pixels))


def test_normalize_replaces_the_constants_of_a_cohen_checkpoint(tmp_path):
    """SmoothAdv's code can centre without scaling (InputCenterLayer): std 1 says so."""
    saved = _randomize(cohen_classifier("cifar_resnet20", CIFAR10_MEAN, [1.0, 1.0, 1.0]), seed=7)
    path = _save_cohen(tmp_path / "checkpoint.pth.tar", "cifar_resnet20", saved)
    model, metadata = encoders.load_model(path, normalize=(CIFAR10_MEAN, [1, 1, 1]))
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(pixels), saved(pixels)) and metadata["std"] == [1.0, 1.0, 1.0]
    assert metadata["sigma"] is None  # no noise_<sigma> folder


def _small_network(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(8)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(20, num_classes),
    ).eval()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated in torch 2.10
def test_torchscript_is_detected_loaded_normalised_and_certified(tmp_path):
    network = _small_network()
    path = tmp_path / "noise_1.00" / "model.pth.tar"
    path.parent.mkdir()
    torch.jit.trace(network, torch.rand(1, 3, 8, 8)).save(str(path))

    model, metadata = encoders.load_model(path, normalize=([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
    assert (metadata["format"], metadata["sigma"], metadata["num_classes"]) == (
        "torchscript",
        1.0,
        None,
    )
    pixels = torch.rand(3, 3, 8, 8)
    normalised = (pixels - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model(pixels), network(normalised))
    plain = encoders.load_classifier(path)
    assert torch.equal(plain(pixels), network(pixels).detach())
    generator = torch.Generator().manual_seed(5)
    mine = certify(plain, pixels[0], 0.5, 16, 200, 0.001, 100, generator)
    assert mine == certify(
        network, pixels[0], 0.5, 16, 200, 0.001, 100, torch.Generator().manual_seed(5)
    )


@pytest.mark.parametrize("wrapping", ["raw", "under state_dict", "data parallel"])
def test_factory_builds_the_users_network_and_loads_its_weights(tmp_path, monkeypatch, wrapping):
    (tmp_path / "user_nets.py").write_text(
        "from torch import nn\n\n"
        "def small(num_classes=10):\n"
        "    layers = [nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)]\n"
        "    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(20, num_classes))\n"
    )
    network = _small_network()
    state = network.state_dict()
    if wrapping == "data parallel":
        state = nn.DataParallel(network).state_dict()
    payload = {"state_dict": state, "epoch": 3} if wrapping == "under state_dict" else state
    torch.save(payload, tmp_path / "weights.pt")
    monkeypatch.syspath_prepend(str(tmp_path))
    network.cpu()

    reference = nn.Sequential(CohenNormalizeLayer([0.5] * 3, [0.25] * 3), network)
    pixels = torch.rand(2, 3, 8, 8)
    for spec in ("user_nets:small(num_classes=4)", f"{tmp_path}/user_nets.py:small(4)"):
        model, metadata = encoders.load_model(
            tmp_path / "weights.pt", factory=spec, normalize=([0.5] * 3, [0.25] * 3)
        )
        assert metadata["format"] == "state-dict" and metadata["architecture"] == spec
        assert torch.equal(model(pixels), reference(pixels))
        mine = certify(model, pixels[0], 0.5, 8, 64, 0.001, 64, torch.Generator().manual_seed(1))
        assert mine == certify(
            reference, pixels[0], 0.5, 8, 64, 0.001, 64, torch.Generator().manual_seed(1)
        )


def test_factory_can_name_a_published_architecture(tmp_path):
    """MACER's own code saves the bare CIFAR ResNet-110 (no normalisation) under 'net'."""
    network = _randomize(cohen_classifier("cifar_resnet20")[1], seed=9)
    torch.save({"net": network.state_dict(), "epoch": 440}, tmp_path / "440.pth")
    model = encoders.load_classifier(
        tmp_path / "440.pth", factory="encoders.published:CifarResNet(20, 10)"
    )
    pixels = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(pixels), network(pixels))


def test_sigma_is_read_from_release_folder_names():
    assert sigma_from_path(Path("models/cifar10/resnet110/noise_0.12/checkpoint.pth.tar")) == 0.12
    assert sigma_from_path(Path("logs/cifar10/cohen/noise_0.50_2341/checkpoint.pth.tar")) == 0.5
    assert sigma_from_path(Path("noise_0.25/x/noisy_1.0/checkpoint.pth.tar")) == 0.25
    assert sigma_from_path(Path("runs/checkpoint.pth.tar")) is None


def test_unknown_arch_is_a_one_line_error_naming_the_known_ones(tmp_path):
    torch.save({"arch": "vgg16", "state_dict": {"w": torch.zeros(1)}}, tmp_path / "vgg.pth")
    with pytest.raises(CheckpointError) as error:
        encoders.load_model(tmp_path / "vgg.pth")
    assert "'vgg16'" in _one_line(error) and "cifar_resnet110" in _one_line(error)


def test_state_dict_of_another_arch_is_a_one_line_error(tmp_path):
    resnet20 = cohen_classifier("cifar_resnet20")
    torch.save({"arch": "cifar_resnet110", "state_dict": resnet20.state_dict()}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError) as error:
        encoders.load_model(tmp_path / "a.pt")
    assert "does not fit arch 'cifar_resnet110'" in _one_line(error)

    cifar100 = cohen_classifier("cifar100_resnet110")
    torch.save({"arch": "cifar_resnet110", "state_dict": cifar100.state_dict()}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError) as error:
        encoders.load_model(tmp_path / "b.pt")
    assert "weights do not fit arch 'cifar_resnet110'" in _one_line(error)


def test_files_that_are_no_checkpoint_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 16)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    for name, expected in [
        ("notes.txt", "damaged or not a torch file"),
        ("noise.bin", "damaged or not a torch file"),
        ("plain.pt", "factory='module:function'"),
        ("missing.pt", "no checkpoint file"),
    ]:
        with pytest.raises(CheckpointError) as error:
            encoders.load_model(tmp_path / name)
        assert expected in _one_line(error)


class _Exploit:
    """An object whose unpickling would call os.system: a planted checkpoint."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_objects_in_a_cohen_checkpoint_are_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(
        {"arch": "cifar_resnet20", "state_dict": {}, "optimizer": _Exploit()}, tmp_path / "e.pth"
    )
    for factory in (None, "encoders.published:CifarResNet(20, 10)"):
        with pytest.raises(CheckpointError) as error:
            encoders.load_model(tmp_path / "e.pth", factory=factory)
        assert "arbitrary pickled objects" in _one_line(error)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("no_colon_here", "must be 'module:function'"),
        ("no_such_module_xyz:build", "cannot import 'no_such_module_xyz'"),
        ("math:no_such_function", "has no 'no_such_function'"),
        ("math:pi", "not callable"),
        ("math:sqrt", "raised TypeError"),
        ("collections:OrderedDict", "not a torch.nn.Module"),
        ("torch.nn:Linear(2, 3, bias=__import__('os'))", "arguments must be literals"),
        ("/no/such/file.py:build", "no file"),
    ],
)
def test_bad_factory_is_a_one_line_error(tmp_path, spec, expected):
    torch.save(_small_network().state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError) as error:
        encoders.load_model(tmp_path / "w.pt", factory=spec)
    assert expected in _one_line(error) and "factory" in _one_line(error)


def test_weights_that_do_not_fit_the_factory_are_a_one_line_error(tmp_path):
    torch.save(_small_network(num_classes=4).state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as error:
        encoders.load_model(tmp_path / "w.pt", factory="torchvision.models:resnet18")
    assert "does not fit the network of factory" in _one_line(error)


@pytest.mark.parametrize(
    "normalize",
    [([0.5], [0.0]), ([0.5, 0.5], [1.0]), ([float("nan")], [1.0]), ([], []), (0.5, 0.2)],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated
def test_bad_normalize_is_a_one_line_error(tmp_path, normalize):
    torch.jit.script(_small_network()).save(str(tmp_path / "ts.pt"))
    with pytest.raises(ValueError) as error:
        encoders.load_model(tmp_path / "ts.pt", normalize=normalize)
    assert "normalize must be" in _one_line(error)


def test_normalize_is_refused_for_our_own_checkpoints():
    with pytest.raises(ValueError) as error:
        encoders.load_model("digits-sigma0.25", normalize=([0.5], [0.5]))
    assert "own normalisation" in _one_line(error)


def test_our_checkpoints_load_unchanged_with_their_metadata():
    model, metadata = encoders.load_model("digits-sigma0.25")
    expected = {**encoders.read_metadata("digits-sigma0.25"), "format": "encoders-checkpoint"}
    assert metadata == expected
    pixels = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(pixels), encoders.load_classifier("digits-sigma0.25")(pixels))


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_resnet110"])
def test_trainable_cifar_resnet_is_cohens_network_with_our_head(arch):
    """build_classifier's CIFAR ResNet holds Cohen et al.'s network: its encoder and head, renamed
    to their keys, load strictly into cohen_classifier and give the same logits."""
    ours = _randomize(build_classifier(arch, 10, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD), seed=2)
    theirs = cohen_classifier(arch).eval()
    renamed = {("1.fc." + key[len("head."):] if key.startswith("head.")
                else "1." + key[len("encoder."):]): value
               for key, value in ours.state_dict().items() if not key.startswith("normalize.")}
    theirs.load_state_dict(renamed, strict=True)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(pixels), theirs(pixels), atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in theirs.parameters())
