"""Certified accuracy of every training recipe on digits: RUSH and the baseline, over seeds.

For each seed: SimCLR pre-training of the small CNN on the digits training split (as
``make_defaults`` does), then for each sigma and each recipe (Gaussian, consistency, SmoothAdv,
MACER with the settings of the papers' MNIST experiments, ``encoders.recipes.RECIPE_PRESETS``)
two base classifiers: RUSH (the SimCLR encoder trained whole with the recipe) and the baseline (the
same network and recipe from random weights). Each is certified on the digits test split with
``certify`` (n0 = 100, alpha = 0.001); the script prints certified accuracy at r = 0, 0.25, 0.5,
0.75, 1.0 and the average certified radius (ACR), mean ± sd over seeds, as a Markdown table.

Everything is resumable: finished checkpoints are kept, ``certify`` resumes its results files,
and a rerun with the same flags only prints the table again. The MNIST settings assume 90 epochs;
at the default 60 epochs MACER's robustness term starts at epoch 20 (a third of the run, where
Jeong and Shin start it on MNIST) and SmoothAdv's epsilon warms up over 10 epochs (the papers').

Command lines::

    python scripts/recipes_digits.py --device cuda --batch 100000            # the README table
    python scripts/recipes_digits.py --seeds 0 --n 10000 --skip 8 --epochs 10 \\
        --warmup-epochs 2 --deferred-epochs 3 --threads 1 --work runs/recipes-small   # CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from certify.analysis import average_certified_radius, certified_accuracy, read_results
from certify.run_modes import Certify
from certify.runner import RunSpec, Selection
from certify.runner import run as run_spec
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain
from encoders.recipes import make_recipe
from encoders.runs import RunSource, load_run

DIGITS_PRESETS = {
    "gaussian": "gaussian",
    "consistency": "consistency-mnist",
    "smoothadv": "smoothadv-mnist",
    "macer": "macer-mnist",
}
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
STAGES = ("rush", "baseline")


@dataclass(frozen=True)
class DigitsRecipesConfig:
    """What the run trains and certifies."""

    work: str = "runs/recipes-digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    sigmas: tuple[float, ...] = (0.25, 0.5)
    recipes: tuple[str, ...] = tuple(DIGITS_PRESETS)
    pretrain_epochs: int = 100
    epochs: int = 60
    warmup_epochs: int = 10
    deferred_epochs: int = 20
    n: int = 100_000
    n0: int = 100
    skip: int = 1
    batch: int | None = None
    device: str = "auto"
    table_only: bool = False


def recipe_for(name: str, config: DigitsRecipesConfig):
    """The MNIST preset of a recipe with its schedule fitted to ``config.epochs``."""
    schedule = {"smoothadv": {"warmup_epochs": config.warmup_epochs},
                "macer": {"deferred_epochs": config.deferred_epochs}}.get(name, {})
    return make_recipe(DIGITS_PRESETS[name], **schedule)


def results_path(work: Path, stem: str, config: DigitsRecipesConfig) -> Path:
    return work / "results" / f"{stem}_n{config.n}_skip{config.skip}.tsv"


def run(config: DigitsRecipesConfig, log=print) -> dict[tuple[float, str, str], list[dict]]:
    """Train and certify everything missing (with ``table_only``, only read the results files);
    returns, for each (sigma, recipe, stage), one {"accuracy": [per radius], "acr", "images"}
    per seed.

    Raises:
        ValueError: if certifying fails, or with ``table_only`` a results file is missing.
    """
    work = Path(config.work)
    scores: dict[tuple[float, str, str], list[dict]] = {}
    for seed in config.seeds:
        if config.table_only:
            for sigma in config.sigmas:
                for name in config.recipes:
                    for stage in STAGES:
                        stem = f"{stage}-{name}-sigma{sigma:.2f}-seed{seed}"
                        _score(scores, (sigma, name, stage), results_path(work, stem, config))
            continue
        started = time.perf_counter()
        simclr = work / f"simclr-seed{seed}.pt"
        if not simclr.exists():  # a finished run is never overwritten
            pretrain(PretrainConfig(dataset="digits", out=str(simclr),
                                    epochs=config.pretrain_epochs, seed=seed,
                                    device=config.device))
        log(f"seed {seed}: SimCLR ready after {time.perf_counter() - started:.0f} s")
        for sigma in config.sigmas:
            for name in config.recipes:
                recipe = recipe_for(name, config)
                for stage in STAGES:
                    stem = f"{stage}-{name}-sigma{sigma:.2f}-seed{seed}"
                    checkpoint = work / f"{stem}.pt"
                    if not checkpoint.exists():
                        begun = time.perf_counter()
                        finetune(
                            FinetuneConfig(
                                sigma=sigma, out=str(checkpoint),
                                encoder=str(simclr) if stage == "rush" else None,
                                epochs=config.epochs, seed=seed, device=config.device,
                                recipe=recipe,
                            ),
                        )
                        log(f"{stem}: trained in {time.perf_counter() - begun:.0f} s")
                    results = results_path(work, stem, config)
                    begun = time.perf_counter()
                    loaded = load_run(RunSource(model=str(checkpoint), device=config.device),
                                      sigma)
                    run_spec(RunSpec(loaded.model, loaded.dataset,
                                     Certify(n0=config.n0, n=config.n), sigma, results,
                                     batch=config.batch, selection=Selection(skip=config.skip),
                                     recorded=loaded.recorded()))
                    log(f"{stem}: certified in {time.perf_counter() - begun:.0f} s")
                    _score(scores, (sigma, name, stage), results)
    return scores


def _score(scores: dict, key: tuple[float, str, str], results: Path) -> None:
    if not results.exists():
        raise ValueError(f"no results file {results}; run without --table-only first")
    certified = read_results(results)
    scores.setdefault(key, []).append({
        "accuracy": certified_accuracy(certified, RADII).tolist(),
        "acr": average_certified_radius(certified),
        "images": len(certified),
    })


def _cell(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def table(scores: dict[tuple[float, str, str], list[dict]], config: DigitsRecipesConfig) -> str:
    """Markdown: certified accuracy at each radius and ACR, mean ± sd over seeds."""
    images = {entry["images"] for entries in scores.values() for entry in entries}
    lines = [
        f"Digits test split ({', '.join(map(str, sorted(images)))} images: every "
        f"{config.skip}th), n0 = {config.n0}, n = {config.n:,}, alpha = 0.001; mean"
        f"{' ± sd' if len(config.seeds) > 1 else ''} over seeds {list(config.seeds)}; "
        f"{config.epochs} epochs of recipe training (SmoothAdv warm-up {config.warmup_epochs}, "
        f"MACER deferred {config.deferred_epochs}), SimCLR {config.pretrain_epochs} epochs.",
        "",
        "| sigma | recipe | start | " + " | ".join(f"r = {r:.2f}" for r in RADII) + " | ACR |",
        "|---|---|---|" + "---|" * (len(RADII) + 1),
    ]
    for (sigma, name, stage), entries in scores.items():
        cells = [_cell([entry["accuracy"][k] for entry in entries]) for k in range(len(RADII))]
        cells.append(_cell([entry["acr"] for entry in entries]))
        start = "RUSH (SimCLR)" if stage == "rush" else "baseline (random)"
        lines.append(f"| {sigma:.2f} | {name} | {start} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = DigitsRecipesConfig()
    parser = argparse.ArgumentParser(prog="python scripts/recipes_digits.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=defaults.work, help="checkpoints and results (resumable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(defaults.sigmas))
    parser.add_argument("--recipes", nargs="+", choices=tuple(DIGITS_PRESETS),
                        default=list(defaults.recipes))
    for name in ("pretrain_epochs", "epochs", "warmup_epochs", "deferred_epochs", "n", "n0",
                 "skip"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name))
    parser.add_argument("--batch", type=int, default=None,
                        help="noise samples per forward pass in certify (default: measured)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--table-only", action="store_true",
                        help="only read the results files under --work and print the table")
    arguments = vars(parser.parse_args(argv))
    threads = arguments.pop("threads")
    if threads:
        torch.set_num_threads(threads)
    arguments["seeds"], arguments["sigmas"] = tuple(arguments["seeds"]), tuple(arguments["sigmas"])
    arguments["recipes"] = tuple(arguments["recipes"])
    config = DigitsRecipesConfig(**arguments)
    try:
        scores = run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as error:
        print(f"recipes_digits: error: {error}", file=sys.stderr)
        return 2
    markdown = table(scores, config)
    (Path(config.work) / f"table_n{config.n}_skip{config.skip}.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
