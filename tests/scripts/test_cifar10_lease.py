"""scripts/cifar10_lease.py: the checkpoints that travel between GPU runs, the plan's order, and
a dry run of the whole plan over several runs that resume from each other's returned files."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import cifar10_lease
import lease_files
import numpy as np
import pytest
import torch
from PIL import Image

from encoders.backbones import build_classifier
from encoders.checkpoint import load_checkpoint, save_checkpoint, versions
from encoders.data import CIFAR10_CLASSES


def _checkpoint(path: Path, training_state=None) -> Path:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, [3, 32, 32], [0.5] * 3, [0.25] * 3)
    metadata = {"architecture": "small_cnn", "dataset": "cifar10-jpeg", "sigma": 0.25,
                "num_classes": 10, "input_shape": [3, 32, 32], "recipe": {},
                "versions": versions()}
    save_checkpoint(path, "classifier", metadata, model.state_dict(), training_state)
    return path


def test_parts_join_into_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_files, "PART_BYTES", 50_000)
    source = _checkpoint(tmp_path / "model.pt")
    names = lease_files.pack(source, tmp_path / "parts", "model.pt")
    assert len(names) > 1 and all(
        (tmp_path / "parts" / name).stat().st_size <= 50_000 for name in names)
    back = lease_files.unpack(tmp_path / "parts", names, tmp_path / "back.pt",
                              lease_files.sha256_of(source))
    assert back.read_bytes() == source.read_bytes()
    for odd in (b"", b"x", b"xyz", os.urandom(1001)):
        assert lease_files._join_bytes(lease_files._split_bytes(odd)) == odd


def test_a_missing_or_damaged_part_is_named(tmp_path):
    source = _checkpoint(tmp_path / "model.pt")
    names = lease_files.pack(source, tmp_path / "parts", "model.pt")
    sha = lease_files.sha256_of(source)
    part = tmp_path / "parts" / names[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.pt.z00"):
        lease_files.unpack(tmp_path / "parts", names, tmp_path / "back.pt", sha)
    part.unlink()
    with pytest.raises(ValueError, match="missing"):
        lease_files.unpack(tmp_path / "parts", names, tmp_path / "back.pt", sha)


def test_the_travel_copy_is_half_precision_without_optimizer(tmp_path):
    source = _checkpoint(tmp_path / "run.pt", {"epoch": 3, "history": [1.0, 0.5, 0.4],
                                               "optimizer": {"state": {}, "param_groups": []}})
    light = load_checkpoint(lease_files.travel_copy(source, tmp_path / "light.pt"))
    assert light["training_state"] == {"epoch": 3, "history": [1.0, 0.5, 0.4]}
    assert light["state_dict"]["head.weight"].dtype == torch.float16
    assert (tmp_path / "light.pt").stat().st_size < 0.6 * source.stat().st_size


def test_the_plan_puts_sigma_025_first_and_certifies_each_model_after_training_it():
    steps = cifar10_lease.stages(cifar10_lease.Settings())
    assert steps[:6] == ["simclr", "probe", "train cifar10-rush-sigma0.25",
                         "certify cifar10-rush-sigma0.25", "train cifar10-cohen-sigma0.25",
                         "certify cifar10-cohen-sigma0.25"]
    assert steps[6] == "train cifar10-rush-sigma0.50" and len(steps) == 18
    assert cifar10_lease.Settings().finetune["epochs"] == 90


def _tiny_cifar_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(CIFAR10_CLASSES):
            for i in range(count):
                pixels = np.clip(rng.normal(25 * label, 40, (32, 32, 3)), 0, 255)
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.jpg")
    return root


@pytest.mark.slow
def test_the_whole_plan_over_runs_that_resume_from_each_others_files(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_lease, "WORK", tmp_path / "work")
    real_should_stop_after = cifar10_lease.should_stop_after
    calls = []

    def stop_each_training_once(run, key):  # so that every training spans two runs
        calls.append(key)
        return (lambda epochs: True) if len(calls) % 2 else real_should_stop_after(run, key)

    monkeypatch.setattr(cifar10_lease, "should_stop_after", stop_each_training_once)
    data = _tiny_cifar_folder(tmp_path / "data")
    state, results = tmp_path / "repo" / "state", tmp_path / "repo" / "results"
    ship = tmp_path / "ship"
    state.mkdir(parents=True)
    stopped_in_training = False
    for number in range(1, 30):
        out = tmp_path / f"out{number}"
        assert cifar10_lease.main(["run", "--tiny", "--data", str(data), "--state", str(state),
                                   "--results", str(results), "--out", str(out),
                                   "--budget", "25", "--reserve", "2", "--device", "cpu"]) == 0
        returned = list(out.iterdir())
        assert len(returned) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in returned)
        stopped_in_training |= any("partial" in f.name for f in returned)
        stopped_in_training |= (number == 1 and "simclr.pt.z00" in {f.name for f in returned}
                                and "simclr" not in json.loads(tarfile.open(
                                    out / "text.tar").extractfile("plan.json").read())["done"])
        cifar10_lease.main(["collect", str(out), "--state", str(state), "--results",
                            str(results), "--ship-dir", str(ship)])
        plan = json.loads((state / "plan.json").read_text())
        if len(plan["done"]) == 18:
            break
    assert len(plan["done"]) == 18 and number > 1 and stopped_in_training
    assert sorted(path.name for path in state.iterdir()) == ["plan.json"]  # nothing left to carry
    for name in ("cifar10-rush-sigma0.25", "cifar10-cohen-sigma0.25"):
        settings = json.loads((results / f"{name}_n200.tsv.run.json").read_text())
        assert settings["checkpoint_sha256"] == lease_files.sha256_of(ship / f"{name}.pt")
    for sigma in ("0.12", "0.25", "0.50", "1.00"):
        for kind in ("rush", "cohen"):
            lines = (results / f"cifar10-{kind}-sigma{sigma}_n200.tsv").read_text().splitlines()
            assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(0, 20, 5)]
    with tarfile.open(out / "text.tar") as archive:
        assert "plan.json" in archive.getnames()


def test_a_failing_step_still_sends_back_the_state(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_lease, "WORK", tmp_path / "work")

    def broken(run, step):
        raise RuntimeError("out of memory\non the device")

    monkeypatch.setattr(cifar10_lease, "take_step", broken)
    data = _tiny_cifar_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert cifar10_lease.main(["run", "--tiny", "--data", str(data), "--state",
                               str(tmp_path / "state"), "--results", str(tmp_path / "results"),
                               "--out", str(out), "--device", "cpu"]) == 1
    with tarfile.open(out / "text.tar") as archive:
        plan = json.loads(archive.extractfile("plan.json").read())
    assert plan["runs"][-1]["error"] == "simclr failed: RuntimeError: out of memory on the device"
    assert plan["done"] == []
