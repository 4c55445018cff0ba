"""CIFAR-10 (JPEG copy) evidence in GPU runs of at most 15 minutes: one run's share per call.

The plan, done in this order, each step resumable:

1. SimCLR pre-training of the CIFAR ResNet-18 on the train split (100 epochs, batch 512, SGD
   with Nesterov momentum, lr 0.6 with cosine decay, temperature 0.5);
2. the linear probe of its encoder on clean images (standardised features, logistic regression,
   as in benchmarks of the digits models: :func:`encoders.evaluate.probe_accuracy`);
3. for sigma = 0.25, then 0.5, then 0.12 and 1.0: RUSH (the SimCLR encoder trained whole with
   Gaussian noise) and the baseline (the same network from random weights), both with Cohen et
   al.'s recipe (``encoders-finetune --preset cohen``: 90 epochs, SGD momentum 0.9, lr 0.1 / 10
   every 30 epochs, batch 256, weight decay 1e-4, crops and flips), so that they differ only
   in the initial weights; each model is certified right after it is trained: every 20th test
   image (500), n0 = 100, n = 100,000, alpha = 0.001, ``--bf16 --channels-last``.

Models are named ``cifar10-rush-sigma0.25``, ``cifar10-cohen-sigma0.25``, ...; their metadata
names the data set ``cifar10-jpeg``. The sigma 0.25 models are the shipped ones.

**What a run does.** It unpacks the state that travelled (``--state``: ``plan.json`` and the
checkpoints it lists, see scripts/lease_files.py) and the results files (``--results``), loads
the data (``--data``: the folder, or the tar.gz that it extracts), works through the plan until
``--budget`` seconds have passed since its start (training stops at an epoch boundary when the
next epoch would not fit; certification runs as the ``certify`` command, stopped at the
deadline, which resumes after its last complete row), writes what the next run needs to
``--out`` and prints one status line: what is done, what is under way, what is left.

**What comes back** (at most 8 files of at most 16 MiB): ``text.tar`` (``plan.json`` and every
results file) and the compressed parts of each checkpoint that changed in the run. Weights travel
in float16 without optimizer state (a ResNet-18: 22.4 MB; with SGD momentum in float32 it would
be 90 MB, more than a run may receive). So SGD momentum restarts from zero when training resumes
in a new run (the data order and the learning rate go on exactly as in an uninterrupted run),
and the weights are rounded to float16 there (relative error at most 2**-11). A finished model
is rounded to float16 once, and that copy is the one certified and shipped.

**What travels in** (at most 64 MiB with the code, 2 MB, and the data, 19.6 MB): the plan
certifies each model before training the next, so the state holds at most two checkpoints,
the SimCLR checkpoint (needed until the last RUSH model is trained) and the model in hand, about
20 MB each after compression: about 42 MiB with the data. A certified model leaves the state.

**Backbone.** The CIFAR ResNet-18, as the issue, RUSH (Pang et al. 2022) and SimCLR's CIFAR
experiments use, and on which the H100 timings were measured. Cohen et al.'s ResNet-110 (1.7 M
weights, 7 MB) would travel more easily, but SimCLR's representations suffer from its narrow
64-wide last stage, the RUSH comparison would then not be RUSH's setting, and its speed on the
H100 is unmeasured. The price of the ResNet-18 is that two sigma 0.25 models in
``encoders/pretrained`` (22.4 MB each) would leave no room in later runs for the SimCLR
checkpoint and a model in hand: ``collect`` therefore puts finished sigma 0.25 models into
``--ship-dir``, which must lie outside the tree that travels (a git worktree of another branch,
see below) until the last run is done.

**Between runs**, on a CPU machine (the next run may come in another session, on a fresh clone,
so the state is committed)::

    python scripts/cifar10_lease.py collect <folder of the returned files> \\
        --ship-dir ../cifar10-models/encoders/pretrained
    git add docs/cifar10 && git commit -m "CIFAR-10 lease: <the status line>"
    (cd ../cifar10-models && git add -A && git commit -m "shipped CIFAR-10 models")  # if any

where ``../cifar10-models`` is ``git worktree add ../cifar10-models -b cifar10-models``, made
once. After the last run: ``git checkout cifar10-models -- encoders/pretrained``.

**The GPU run** (the tarball copied into the repository under an ignored folder, carried)::

    PYTHONPATH=. PYTHONUNBUFFERED=1 timeout 590 python3 scripts/cifar10_lease.py run \\
        --data .lease/cifar10-jpeg.tar.gz --state docs/cifar10/state \\
        --results docs/cifar10/results --out "$OUT" --budget 540

**A CPU dry run** on a tiny folder (a few images per class), small models and few steps::

    python scripts/cifar10_lease.py run --tiny --data /tmp/cifar-tiny --state STATE \\
        --results RESULTS --out OUT --budget 60
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lease_files import (
    half_precision_bytes,
    pack,
    parts_needed,
    sha256_of,
    travel_copy,
    unpack,
)

from encoders.backbones import Normalize, build_classifier, build_encoder
from encoders.checkpoint import half_precision_copy, load_checkpoint
from encoders.data import CIFAR10_CLASSES, ImageDataset, load_dataset
from encoders.finetune import PRESETS, FinetuneConfig, finetune
from encoders.folders import open_image_folder
from encoders.pretrain import PretrainConfig, pretrain
from encoders.simclr import SimCLRModel

REPO = Path(__file__).resolve().parents[1]
DATASET = "cifar10-jpeg"
MAX_FILES_BACK = 8
WORK = Path("/tmp/cifar10-lease")
PRIOR_SECONDS = {"simclr_epoch": 10.0, "noise_epoch": 10.0, "certify_image": 0.7,
                 "probe": 90.0, "start": 30.0}
"""Guesses for a step's duration until a run has measured it (measured on the H100: a SimCLR
epoch 7 s and a noise-training epoch 7.7 s in float32; certify 0.52 s an image in bfloat16)."""
TINY_PRIOR_SECONDS = {"simclr_epoch": 2.0, "noise_epoch": 2.0, "certify_image": 0.2,
                      "probe": 5.0, "start": 5.0}


@dataclass(frozen=True)
class Settings:
    """What the plan trains and certifies; fixed when the plan is made (the first run)."""

    architecture: str = "resnet18"
    simclr_epochs: int = 100
    simclr_batch: int = 512
    simclr_lr: float = 0.6
    simclr_weight_decay: float = 1e-6
    temperature: float = 0.5
    finetune: dict[str, Any] = field(default_factory=lambda: dict(PRESETS["cohen"]))
    sigmas: tuple[float, ...] = (0.25, 0.5, 0.12, 1.0)
    ship_sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    skip: int = 20
    certify_batch: int | None = None
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False

    @classmethod
    def tiny(cls, **changes: Any) -> Settings:
        """Small models and few steps, for a dry run on a CPU over a tiny folder."""
        finetune_recipe = {**PRESETS["cohen"], "epochs": 3, "lr_step_epochs": 1,
                           "batch_size": 16}
        return replace(cls(architecture="small_cnn", simclr_epochs=3, simclr_batch=16,
                           simclr_lr=0.1, finetune=finetune_recipe, n0=10, n=200, skip=5,
                           certify_batch=100, bf16=False, channels_last=False), **changes)


@dataclass
class Run:
    """One run: where things are, when it must stop, and what it changed."""

    settings: Settings
    plan: dict[str, Any]
    data: Path
    device: str
    deadline: float
    state_in: Path
    files_back: int = MAX_FILES_BACK
    changed: set[str] = field(default_factory=set)
    steps_begun: int = 0
    _train: Any = None

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float) -> bool:
        """Whether a piece of work of about ``seconds`` fits before the deadline; the first
        piece of a run always starts, so that a pessimistic estimate cannot stall the plan."""
        self.steps_begun += 1
        return self.steps_begun == 1 or self.left >= seconds

    def train_split(self) -> ImageDataset:
        """The train split, loaded once per run."""
        if self._train is None:
            self._train = load_dataset(DATASET, "train", self.data)
        return self._train

    def seconds(self, key: str) -> float:
        return self.plan["timings"].get(key, PRIOR_SECONDS[key])

    def measured(self, key: str, seconds: float) -> None:
        self.plan["timings"][key] = round(seconds, 3)


def model_names(settings: Settings) -> list[tuple[str, str, float]]:
    """(name, kind, sigma) of every classifier in plan order; kind is "rush" or "cohen"."""
    return [(f"cifar10-{kind}-sigma{sigma:.2f}", kind, sigma)
            for sigma in settings.sigmas for kind in ("rush", "cohen")]


def stages(settings: Settings) -> list[str]:
    """Every step of the plan, in order."""
    steps = ["simclr", "probe"]
    for name, _, _ in model_names(settings):
        steps += [f"train {name}", f"certify {name}"]
    return steps


def new_plan(settings: Settings) -> dict[str, Any]:
    return {"format": 1, "settings": asdict(settings), "done": [], "progress": {},
            "results": {}, "timings": {}, "files": {}, "ship": [], "runs": []}


def settings_of(plan: dict[str, Any]) -> Settings:
    stored = dict(plan["settings"])
    stored["sigmas"] = tuple(stored["sigmas"])
    return Settings(**stored)


# --- the steps ------------------------------------------------------------------------------


def should_stop_after(run: Run, key: str):
    """A callback for pretrain/finetune: stop when the next epoch (as long as the last) would
    pass the deadline; records the epoch time under ``key``."""
    last = [time.monotonic()]

    def should_stop(epochs_done: int) -> bool:
        now = time.monotonic()
        run.measured(key, now - last[0])  # the first includes the set-up: an overestimate
        last[0] = now
        return run.left < run.plan["timings"][key]

    return should_stop


def step_simclr(run: Run) -> bool:
    settings = run.settings
    if not run.fits(run.seconds("start") + run.seconds("simclr_epoch")):
        return False
    config = PretrainConfig(
        dataset=DATASET, out=str(WORK / "models" / "simclr.pt"), root=str(run.data),
        architecture=settings.architecture, epochs=settings.simclr_epochs,
        batch_size=settings.simclr_batch, temperature=settings.temperature, optimizer="sgd",
        lr=settings.simclr_lr, weight_decay=settings.simclr_weight_decay, device=run.device,
        bf16=settings.bf16, channels_last=settings.channels_last, compile=settings.compile,
    )
    pretrain(config, should_stop=should_stop_after(run, "simclr_epoch"), train=run.train_split())
    run.changed.add("simclr")
    epoch = load_checkpoint(config.out, kind="simclr")["training_state"]["epoch"]
    run.plan["progress"]["simclr"] = f"{epoch}/{settings.simclr_epochs} epochs"
    if epoch < settings.simclr_epochs:
        return False
    # every RUSH model, in this run or a later one, starts from the copy that travels
    travel_copy(Path(config.out), Path(config.out))
    return True


def step_probe(run: Run) -> bool:
    from encoders.evaluate import features, probe_accuracy

    if not run.fits(run.seconds("probe")):
        return False
    start = time.monotonic()
    payload = load_checkpoint(WORK / "models" / "simclr.pt", kind="simclr")
    metadata = payload["metadata"]
    model = SimCLRModel(Normalize([0.0] * 3, [1.0] * 3),
                        build_encoder(metadata["architecture"], 3),
                        metadata["recipe"]["projection_dim"])
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    device = torch.device("cuda" if run.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device).eval()

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        return model.encoder(model.normalize(pixels))

    train, test = run.train_split(), load_dataset(DATASET, "test", run.data)
    accuracy = probe_accuracy(features(embed, train, device), train.labels,
                              features(embed, test, device), test.labels)
    run.plan["results"]["linear_probe_accuracy"] = round(accuracy, 4)
    run.measured("probe", time.monotonic() - start)
    return True


def step_train(run: Run, name: str, kind: str, sigma: float) -> bool:
    settings = run.settings
    if not run.fits(run.seconds("start") + run.seconds("noise_epoch")):
        return False
    if not room_for_another_model(run, name):
        return False
    out = WORK / "models" / f"{name}.fp32.pt"
    config = FinetuneConfig(
        **settings.finetune, sigma=sigma, out=str(out), dataset=DATASET, root=str(run.data),
        encoder=str(WORK / "models" / "simclr.pt") if kind == "rush" else None,
        architecture=None if kind == "rush" else settings.architecture, device=run.device,
        bf16=settings.bf16, channels_last=settings.channels_last, compile=settings.compile,
    )
    result = finetune(config, should_stop=should_stop_after(run, "noise_epoch"),
                      train=run.train_split())
    run.changed.add(name)
    if result == config.partial_path:
        epoch = load_checkpoint(result)["training_state"]["epoch"]
        run.plan["progress"][f"train {name}"] = f"{epoch}/{config.epochs} epochs"
        return False
    half_precision_copy(out, WORK / "models" / f"{name}.pt")  # the model certified and shipped
    out.unlink()
    run.plan["progress"][f"train {name}"] = f"{config.epochs}/{config.epochs} epochs"
    return True


def step_certify(run: Run, name: str, sigma: float) -> bool:
    settings = run.settings
    todo = len(range(0, run.plan["test_size"], settings.skip))
    if not run.fits(run.seconds("start") + 2 * run.seconds("certify_image")):
        return False
    results = WORK / "results" / f"{name}_n{settings.n}.tsv"
    command = [sys.executable, "-m", "certify", "--model", f"models/{name}.pt",
               "--dataset", DATASET, "--data-root", str(run.data), "--sigma", f"{sigma}",
               "--n", str(settings.n), "--n0", str(settings.n0), "--alpha", str(settings.alpha),
               "--skip", str(settings.skip), "--out", str(results.relative_to(WORK)),
               "--device", run.device, "--quiet"]
    command += ["--bf16"] * settings.bf16 + ["--channels-last"] * settings.channels_last
    if settings.certify_batch is not None:
        command += ["--batch", str(settings.certify_batch)]
    before = rows(results)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    try:
        finished = subprocess.run(command, cwd=WORK, env=environment, capture_output=True,
                                  text=True, timeout=max(run.left, 1.0))
    except subprocess.TimeoutExpired:
        finished = None
    made = image_seconds(results)[before:]
    if made:
        run.measured("certify_image", sum(made) / len(made))
    run.plan["progress"][f"certify {name}"] = f"{rows(results)}/{todo} images"
    if finished is not None and finished.returncode != 0:
        raise RuntimeError(f"certify failed for {name}: {finished.stderr.strip()[-500:]}")
    if finished is not None:
        run.plan["results"][name] = finished.stdout.strip().splitlines()[1:8]
    return rows(results) == todo


def image_seconds(results: Path) -> list[float]:
    """The ``time`` column of the complete rows of a results file (read here rather than with
    certify.analysis.read_results, which refuses the torn last line a stopped run may leave)."""
    if not results.exists():
        return []
    lines = results.read_text(encoding="utf-8").split("\n")[1:-1]  # header; torn or empty end
    return [float(line.split("\t")[5]) for line in lines]


def rows(results: Path) -> int:
    """Complete rows of a results file (a torn last line is not counted)."""
    if not results.exists():
        return 0
    text = results.read_text(encoding="utf-8")
    return max(0, text.count("\n") - 1)


# --- what travels ----------------------------------------------------------------------------


def needed_files(settings: Settings, done: set[str]) -> dict[str, Path]:
    """The checkpoints the rest of the plan needs, by slot name: the SimCLR run until the last
    RUSH model is trained, and the model in hand (training or waiting for certification)."""
    models = WORK / "models"
    wanted: dict[str, Path] = {}
    rush_left = any(f"train {name}" not in done for name, kind, _ in model_names(settings)
                    if kind == "rush")
    if "simclr" not in done or rush_left:
        wanted["simclr"] = models / "simclr.pt"
    for name, _, _ in model_names(settings):
        if f"train {name}" not in done and (models / f"{name}.fp32.pt.partial").exists():
            wanted[name] = models / f"{name}.fp32.pt.partial"
        elif f"train {name}" in done and f"certify {name}" not in done:
            wanted[name] = models / f"{name}.pt"
    return {slot: path for slot, path in wanted.items() if path.exists()}


def room_for_another_model(run: Run, name: str) -> bool:
    """Whether the files coming back (text.tar and the parts of each changed checkpoint) can
    take one more changed checkpoint."""
    model = build_classifier(run.settings.architecture, 10, [3, 32, 32], [0.5] * 3, [0.25] * 3)
    per_model = parts_needed(half_precision_bytes(model))
    changed = run.changed | {name}
    return 1 + per_model * len(changed) <= run.files_back


def unpack_state(state: Path, plan: dict[str, Any]) -> None:
    for _slot, entry in plan["files"].items():
        unpack(state, entry["parts"], WORK / entry["path"], entry["sha256"])


def write_outputs(run: Run, out: Path) -> tuple[int, float]:
    """Write text.tar and the parts of changed checkpoints to ``out``; returns the number of
    files written and the megabytes of checkpoints the next run receives."""
    settings, plan = run.settings, run.plan
    done = set(plan["done"])
    out.mkdir(parents=True, exist_ok=True)
    travel = WORK / "travel"
    travel.mkdir(exist_ok=True)
    files: dict[str, Any] = {}
    written = 1
    for slot, path in needed_files(settings, done).items():
        previous = plan["files"].get(slot)
        unchanged = previous is not None and previous["path"] == str(path.relative_to(WORK))
        if unchanged and slot not in run.changed:
            files[slot] = previous
            continue
        finished_classifier = path.name == f"{slot}.pt" and slot != "simclr"
        light = path if finished_classifier else travel_copy(path, travel / path.name)
        parts = pack(light, out, path.name)
        written += len(parts)
        files[slot] = {"path": str(path.relative_to(WORK)), "sha256": sha256_of(light),
                       "parts": parts}
    for name, _, sigma in model_names(settings):
        shipped = f"certify {name}" in done and math.isclose(sigma, settings.ship_sigma)
        if shipped and name not in plan["ship"]:
            plan["ship"].append(name)
            if name in run.changed:  # trained in this run: its parts never travelled yet
                parts = pack(WORK / "models" / f"{name}.pt", out, f"{name}.pt")
                written += len(parts)
                files[f"ship {name}"] = {"path": f"models/{name}.pt",
                                         "sha256": sha256_of(WORK / "models" / f"{name}.pt"),
                                         "parts": parts}
            elif name in plan["files"]:
                files[f"ship {name}"] = plan["files"][name]
    plan["files"] = files
    with tarfile.open(out / "text.tar", "w") as archive:
        add_text(archive, "plan.json", json.dumps(plan, indent=1, sort_keys=True))
        for results in sorted((WORK / "results").glob("*")):
            archive.add(results, arcname=f"results/{results.name}")
    incoming = sum(
        (out / part if (out / part).exists() else run.state_in / part).stat().st_size
        for slot, entry in files.items() if not slot.startswith("ship ")
        for part in entry["parts"]
    )
    return written, incoming / 1e6


def add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


# --- the run ---------------------------------------------------------------------------------


def prepare_data(data: Path) -> Path:
    """The folder holding train/ and test/: ``data`` itself, or the tar.gz extracted to /tmp."""
    if data.is_dir():
        return data
    target = Path("/tmp/cifar10-jpeg")
    if not (target / "train").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as archive:
            archive.extractall(target, filter="data")
    return target


def status_line(plan: dict[str, Any], seconds: float, files: int, megabytes: float) -> str:
    settings = settings_of(plan)
    done = set(plan["done"])
    steps = stages(settings)
    left = [step for step in steps if step not in done]
    now = f"{left[0]} ({plan['progress'].get(left[0], 'not started')})" if left else "nothing"
    probe = plan["results"].get("linear_probe_accuracy")
    return (f"cifar10 lease: {len(done)}/{len(steps)} steps done"
            + (f", linear probe {probe:.4f}" if probe is not None else "")
            + f"; under way: {now}; left after it: {max(len(left) - 1, 0)} steps"
            + f"; this run {seconds:.0f} s, {files} files back, next run receives "
              f"{megabytes:.1f} MB of checkpoints")


def run_share(args: argparse.Namespace) -> int:
    start = time.monotonic()
    state, results_in, out = Path(args.state), Path(args.results), Path(args.out)
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "models").mkdir(parents=True)
    (WORK / "results").mkdir()
    plan_path = state / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    elif args.tiny:
        plan = new_plan(Settings.tiny())
        plan["timings"] = dict(TINY_PRIOR_SECONDS)
    else:
        plan = new_plan(Settings(compile=args.compile))
    unpack_state(state, plan)
    if results_in.is_dir():
        for results in results_in.glob("*"):
            shutil.copyfile(results, WORK / "results" / results.name)
    settings = settings_of(plan)
    already_back = len(list(out.iterdir())) if out.is_dir() else 0  # e.g. a benchmark's log
    run = Run(settings, plan, prepare_data(Path(args.data)), args.device,
              start + args.budget - args.reserve, state, MAX_FILES_BACK - already_back)
    plan["test_size"] = len(open_image_folder(run.data, "test", CIFAR10_CLASSES))
    done = set(plan["done"])
    did, failure = [], None
    for step in stages(settings):
        if step in done:
            continue
        try:
            finished = take_step(run, step)
        except Exception as error:  # keep what earlier steps made: it still goes back
            failure = f"{step} failed: {type(error).__name__}: {' '.join(str(error).split())}"
            break
        if not finished:
            break
        plan["done"].append(step)
        did.append(step)
    seconds = time.monotonic() - start
    plan["runs"].append({"device": device_name(args.device), "seconds": round(seconds),
                         "finished": did, **({"error": failure} if failure else {})})
    files, megabytes = write_outputs(run, out)
    if failure:
        print(f"cifar10 lease: {failure}", file=sys.stderr)
    print(status_line(plan, time.monotonic() - start, files, megabytes))
    return 1 if failure else 0


def take_step(run: Run, step: str) -> bool:
    """Work on one step of the plan until it is done (True) or the run must end (False)."""
    if step == "simclr":
        return step_simclr(run)
    if step == "probe":
        return step_probe(run)
    verb, name = step.split(" ", 1)
    kind, sigma = next((k, s) for n, k, s in model_names(run.settings) if n == name)
    if verb == "train":
        return step_train(run, name, kind, sigma)
    return step_certify(run, name, sigma)


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


# --- between runs ----------------------------------------------------------------------------


def collect(args: argparse.Namespace) -> int:
    """Lay the returned files out in the repository: plan.json and parts into --state,
    results into --results; finished models to ship into --ship-dir."""
    back, state, results = Path(args.files), Path(args.state), Path(args.results)
    state.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    with tarfile.open(back / "text.tar") as archive:
        plan = json.loads(archive.extractfile("plan.json").read().decode("utf-8"))
        for member in archive.getmembers():
            if member.name.startswith("results/") and member.isfile():
                (results / Path(member.name).name).write_bytes(
                    archive.extractfile(member).read())
    for part in back.glob("*.z[0-9][0-9]"):
        shutil.copyfile(part, state / part.name)
    for slot, entry in list(plan["files"].items()):
        if not slot.startswith("ship "):
            continue
        if args.ship_dir is None:
            raise SystemExit("collect: finished models to ship came back; give --ship-dir "
                             "(outside the tree that travels)")
        name = slot.removeprefix("ship ")
        unpack(state, entry["parts"], Path(args.ship_dir) / f"{name}.pt", entry["sha256"])
        del plan["files"][slot]
        print(f"shipped {Path(args.ship_dir) / f'{name}.pt'}")
    keep = {part for entry in plan["files"].values() for part in entry["parts"]}
    for part in state.glob("*.z[0-9][0-9]"):
        if part.name not in keep:
            part.unlink()
    (state / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    print(status_line(plan, plan["runs"][-1]["seconds"], 0,
                      sum((state / p).stat().st_size for p in keep) / 1e6))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    share = commands.add_parser("run", help="do one GPU run's share of the plan")
    share.add_argument("--data", required=True, help="the CIFAR-10 JPEG folder or its tar.gz")
    share.add_argument("--state", required=True, help="the state that travelled (plan.json)")
    share.add_argument("--results", required=True, help="the results files so far")
    share.add_argument("--out", required=True, help="where the files that come back go")
    share.add_argument("--budget", type=float, default=540.0,
                       help="seconds of work from the start (default 540)")
    share.add_argument("--reserve", type=float, default=25.0,
                       help="seconds kept for writing the state at the end (default 25)")
    share.add_argument("--device", default="auto")
    share.add_argument("--compile", action="store_true", help="train through torch.compile "
                       "(only when the plan is made)")
    share.add_argument("--tiny", action="store_true",
                       help="small models and few steps, for a CPU dry run (a new plan only)")
    gather = commands.add_parser("collect", help="lay returned files out in the repository")
    gather.add_argument("files", help="the folder holding the returned files")
    gather.add_argument("--state", default="docs/cifar10/state")
    gather.add_argument("--results", default="docs/cifar10/results")
    gather.add_argument("--ship-dir", help="where finished sigma 0.25 models go")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        return run_share(args)
    return collect(args)


if __name__ == "__main__":
    sys.exit(main())
