"""Reproduce the shipped digits models and the README table (means over seeds).

For each seed: SimCLR pre-training of the small CNN on the digits training split; a linear probe
of the frozen encoder beside two controls measured in the same run (logistic regression on raw
pixels, and the same encoder with random weights); then for each shipped sigma, the RUSH model
(the SimCLR encoder fine-tuned whole with Gaussian noise at sigma) beside the supervised
noise-trained baseline of Cohen et al. (same architecture, same noise-training steps, random
initial weights), each scored on clean test images and on noisy ones (mean over 10 draws).
With ``--ship``, the first seed's RUSH models are copied to encoders/pretrained as soon as
they exist.

Command line (measured: 81 s per seed on 2 idle CPU cores, 12-20 minutes per seed on cores shared
with three other jobs; rerunning resumes from the files in --work)::

    python scripts/make_defaults.py --work runs/defaults --ship   # or: make models
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from encoders.backbones import build_encoder
from encoders.checkpoint import PRETRAINED_DIR
from encoders.data import ImageDataset, load_dataset
from encoders.evaluate import features, noisy_accuracy, probe_accuracy
from encoders.finetune import FinetuneConfig, finetune
from encoders.loading import load_classifier
from encoders.pretrain import PretrainConfig, load_simclr, pretrain

SHIPPED_SIGMAS = (0.12, 0.25, 0.50, 1.00)
NOISE_DRAWS = 10


@dataclass(frozen=True)
class DefaultsConfig:
    """The recipe of the shipped models (SimCLR then whole-network noise training)."""

    work: str = "runs/defaults"
    seeds: tuple[int, ...] = (0, 1, 2)
    sigmas: tuple[float, ...] = SHIPPED_SIGMAS
    pretrain_epochs: int = 100
    finetune_epochs: int = 60
    ship: bool = False


def _probes(
    simclr_path: Path, seed: int, train: ImageDataset, test: ImageDataset
) -> dict[str, float]:
    cpu = torch.device("cpu")
    trained = load_simclr(simclr_path)
    torch.manual_seed(seed)
    random_encoder = build_encoder("small_cnn", 1)
    scores = {}
    for name, encoder in (("simclr", trained.encoder), ("random", random_encoder)):
        encoder.eval()

        def embed(pixels: torch.Tensor, encoder=encoder) -> torch.Tensor:
            return encoder(trained.normalize(pixels))

        scores[name] = probe_accuracy(
            features(embed, train, cpu), train.labels, features(embed, test, cpu), test.labels
        )
    raw = probe_accuracy(
        train.images.flatten(1).double().numpy(),
        train.labels,
        test.images.flatten(1).double().numpy(),
        test.labels,
    )
    scores["pixels"] = raw
    return scores


def run(config: DefaultsConfig, log=print) -> str:
    """Train and measure everything; returns the Markdown table. ``log`` receives progress lines."""
    work = Path(config.work)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    rows: dict[str, list[float]] = {}
    for seed in config.seeds:
        started = time.perf_counter()
        simclr = work / f"simclr-seed{seed}.pt"
        if not simclr.exists():  # a finished run is never overwritten
            pretrain(
                PretrainConfig(
                    dataset="digits",
                    out=str(simclr),
                    epochs=config.pretrain_epochs,
                    seed=seed,
                    device="cpu",
                )
            )
        log(f"seed {seed}: SimCLR done after {time.perf_counter() - started:.0f} s")
        for name, score in _probes(simclr, seed, train, test).items():
            rows.setdefault(f"probe {name}", []).append(score)
            log(f"seed {seed}: linear probe {name}: {100 * score:.2f}%")
        for sigma in config.sigmas:
            for stage, encoder in (("rush", str(simclr)), ("baseline", None)):
                out = work / f"{stage}-sigma{sigma:.2f}-seed{seed}.pt"
                if not out.exists():
                    finetune(
                        FinetuneConfig(
                            sigma=sigma,
                            out=str(out),
                            encoder=encoder,
                            seed=seed,
                            epochs=config.finetune_epochs,
                            device="cpu",
                        )
                    )
                model = load_classifier(out)
                generator = torch.Generator().manual_seed(seed)
                clean = noisy_accuracy(model, test, 0.0, 1, generator)
                noisy = noisy_accuracy(model, test, sigma, NOISE_DRAWS, generator)
                rows.setdefault(f"{stage} {sigma:.2f} clean", []).append(clean)
                rows.setdefault(f"{stage} {sigma:.2f} noisy", []).append(noisy)
                log(
                    f"seed {seed}: {stage} sigma {sigma:.2f}: clean {100 * clean:.2f}%, "
                    f"noisy {100 * noisy:.2f}%"
                )
            log(f"seed {seed}: sigma {sigma:.2f} done after {time.perf_counter() - started:.0f} s")
        if config.ship and seed == config.seeds[0]:
            _ship(work, seed, config.sigmas)
    return table(rows, config)


def _ship(work: Path, seed: int, sigmas: tuple[float, ...]) -> None:
    """Copy one seed's RUSH models to encoders/pretrained as digits-sigma{sigma:.2f}.pt."""
    PRETRAINED_DIR.mkdir(exist_ok=True)
    for sigma in sigmas:
        shutil.copyfile(
            work / f"rush-sigma{sigma:.2f}-seed{seed}.pt",
            PRETRAINED_DIR / f"digits-sigma{sigma:.2f}.pt",
        )


def _cell(values: list[float]) -> str:
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{spread}"


def table(rows: dict[str, list[float]], config: DefaultsConfig) -> str:
    """Markdown: mean ± standard deviation over seeds, in percent of the 360 test images."""
    lines = [
        f"Digits test split (360 images), mean ± sd over seeds {list(config.seeds)}, "
        "accuracy in %.",
        "",
        "| linear probe (frozen, no noise) | accuracy |",
        "|---|---|",
        f"| SimCLR encoder ({config.pretrain_epochs} epochs) | {_cell(rows['probe simclr'])} |",
        f"| same encoder, random weights | {_cell(rows['probe random'])} |",
        f"| logistic regression on raw pixels | {_cell(rows['probe pixels'])} |",
        "",
        f"Noise training: {config.finetune_epochs} epochs at sigma for both; RUSH starts from the "
        "SimCLR encoder, the baseline (Cohen et al.) from random weights. "
        f"Noisy: mean over {NOISE_DRAWS} draws.",
        "",
        "| sigma | RUSH clean | RUSH noisy | baseline clean | baseline noisy |",
        "|---|---|---|---|---|",
    ]
    for sigma in config.sigmas:
        cells = [
            _cell(rows[f"{stage} {sigma:.2f} {kind}"])
            for stage in ("rush", "baseline")
            for kind in ("clean", "noisy")
        ]
        lines.append(f"| {sigma:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/make_defaults.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--work", default=DefaultsConfig.work, help="folder for checkpoints (resumable)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DefaultsConfig.seeds))
    parser.add_argument(
        "--ship",
        action="store_true",
        help="copy the first seed's RUSH models to encoders/pretrained",
    )
    arguments = parser.parse_args(argv)
    config = DefaultsConfig(work=arguments.work, seeds=tuple(arguments.seeds), ship=arguments.ship)
    try:
        markdown = run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as error:
        print(f"make_defaults: error: {error}", file=sys.stderr)
        return 2
    (Path(config.work) / "table.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
