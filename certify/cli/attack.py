"""The ``certify-attack`` command: empirical robustness of a classifier and its smoothed classifier.

It reports the clean and robust accuracy of the base classifier (PGD) and of the smoothed
classifier (its ``predict``, abstain counted as wrong) under naive PGD (one noise draw per step,
as RUSH evaluated) and EOT-PGD (Athalye et al.'s EOT), at every requested epsilon, each with
its exact 95% Clopper-Pearson interval. It writes one row per image
and evaluation; robust accuracy is the fraction of images whose attacked prediction is the true
label.

Images are attacked --attack-batch at a time, in groups fixed by the selection, and each group
draws its noise from a generator seeded by (seed, its first idx), so a resumed run writes the
same rows as an uninterrupted one (all columns but ``time``); rerunning the same command resumes
(row by row), and a results file made by other settings is never overwritten without
--overwrite.

Examples:
    certify-attack --sigma 0.25 --n 10000 --skip 10           # shipped digits model
    certify-attack --sigma 0.25 --linf-eps 8/255 --l2-eps 0.25 0.5 1.0 \\
        --steps 50 --eot-samples 64 --restarts 2 --max 100
    certify-attack --model ckpt.pt --dataset cifar10 --data-root data --sigma 0.5 --skip 20
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from certify.analysis import accuracy_interval
from certify.attacks import EOTPGD, PGD, NaiveSmoothedPGD, PGDConfig
from certify.attacks.pgd import check_eps_in_box
from certify.cli.common import (
    OneLineParser,
    epsilon,
    file_path,
    positive_float,
    positive_int,
    probability,
    run_command,
)
from certify.cli.loading import (
    add_model_arguments,
    check_model_gradients,
    default_out,
    image_generator,
    load_run,
    run_settings,
    selected_indices,
)
from certify.results import ResultsFile, read_rows
from certify.sampling import model_device
from certify.smoothing import predict

ATTACK_COLUMNS = ("idx", "label", "classifier", "attack", "norm", "eps", "predict", "correct",
                  "time")
ATTACK_KEY = ("idx", "classifier", "attack", "norm", "eps")
"""The columns that name a row: one image under one evaluation."""
NOT_ATTACKED = "-"


@dataclass(frozen=True)
class Evaluation:
    """One row kind of ``certify-attack``: a classifier under an attack at one epsilon."""

    classifier: str  # "base" or "smoothed"
    attack: str  # "clean", "pgd", "naive-pgd" or "eot-pgd"
    norm: str = NOT_ATTACKED
    eps: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """How the row names this evaluation, as written in the results file: epsilon exactly
        (6 significant digits where they read back as the same float, as 0.5; else the shortest
        decimal that does, as 0.03137254901960784 for 8/255), so that two epsilons never share
        rows however close they are."""
        short = f"{self.eps:.6g}"
        return (self.classifier, self.attack, self.norm,
                short if float(short) == self.eps else repr(float(self.eps)))


def evaluation_plan(threats: Sequence[tuple[str, float]]) -> list[Evaluation]:
    """Clean base and smoothed accuracy, then PGD, naive PGD and EOT-PGD for each threat."""
    plan = [Evaluation("base", "clean"), Evaluation("smoothed", "clean")]
    for norm, eps in threats:
        plan += [Evaluation("base", "pgd", norm, eps),
                 Evaluation("smoothed", "naive-pgd", norm, eps),
                 Evaluation("smoothed", "eot-pgd", norm, eps)]
    return plan


def build_parser(prog: str, description: str) -> OneLineParser:
    """The flags that certify-attack and certify-audit share: the attack, the selection, the
    model and data, the results file."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--sigma", type=positive_float, required=True,
                        help="noise level of the smoothed classifier")
    parser.add_argument("--alpha", type=probability, default=0.001,
                        help="failure probability of predict and certify (default 0.001)")
    parser.add_argument("--steps", type=positive_int, default=20, help="PGD steps (default 20)")
    parser.add_argument("--eot-samples", type=positive_int, default=32,
                        help="noise draws per EOT step (default 32)")
    parser.add_argument("--restarts", type=positive_int, default=1,
                        help="PGD restarts (default 1)")
    parser.add_argument("--batch", type=positive_int, default=1000,
                        help="noise samples per forward pass of predict and certify")
    parser.add_argument("--attack-batch", type=positive_int, default=32,
                        help="images attacked together; an EOT step runs the model on "
                             "attack-batch * eot-samples images (default 32)")
    add_model_arguments(parser)
    parser.add_argument("--out", type=file_path, default=None, help="results file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing results file made by other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def attack_parser() -> OneLineParser:
    parser = build_parser("certify-attack",
                          "Clean and robust accuracy of a classifier and its smoothed classifier "
                          "under PGD, naive PGD and EOT-PGD.")
    parser.add_argument("--n", "--N", dest="n", type=positive_int, default=10_000,
                        help="predict samples per smoothed evaluation (default 10000)")
    parser.add_argument("--linf-eps", type=epsilon, nargs="*", default=[8 / 255],
                        help="L-inf epsilons, e.g. 8/255 (default 8/255)")
    parser.add_argument("--l2-eps", type=epsilon, nargs="*", default=[0.25, 0.5],
                        help="L2 epsilons (default 0.25 0.5)")
    return parser


def build_attack(args: argparse.Namespace, model: torch.nn.Module, evaluation: Evaluation) -> PGD:
    """The attack an evaluation names, configured from the command line."""
    config = PGDConfig(norm=evaluation.norm, eps=evaluation.eps, steps=args.steps,
                       restarts=args.restarts)
    if evaluation.attack == "pgd":
        return PGD(model, config)
    if evaluation.attack == "naive-pgd":
        return NaiveSmoothedPGD(model, args.sigma, config)
    return EOTPGD(model, args.sigma, args.eot_samples, config)


def chunks(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive groups of ``size`` indices: the images attacked together, fixed by the
    selection alone so that a resumed run regroups them exactly as before."""
    return [indices[start:start + size] for start in range(0, len(indices), size)]


def load_images(dataset: Any, chunk: list[int],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (B, C, H, W) and labels (B,) of a chunk, on ``device``."""
    items = [dataset[idx] for idx in chunk]
    images = torch.stack([image for image, _ in items]).to(device)  # (B, C, H, W)
    labels = torch.tensor([int(label) for _, label in items], device=device)
    return images, labels


def evaluate_chunk(args: argparse.Namespace, model: torch.nn.Module, plan: list[Evaluation],
                   images: torch.Tensor, labels: torch.Tensor, chunk: list[int],
                   generator: torch.Generator) -> list[list[Any]]:
    """The rows of a chunk of images, image by image, one per evaluation of the plan.

    A row's time is its share of the batched attack plus its own prediction.
    """
    rows: dict[int, list[list[Any]]] = {idx: [] for idx in chunk}
    for evaluation in plan:
        start = time.perf_counter()
        attacked = images
        if evaluation.attack != "clean":
            attacked = build_attack(args, model, evaluation)(images, labels, generator)
        shared = (time.perf_counter() - start) / len(chunk)
        if evaluation.classifier == "base":
            start = time.perf_counter()
            with torch.no_grad():
                predictions = model(attacked).argmax(dim=1).tolist()
            seconds = [shared + (time.perf_counter() - start) / len(chunk)] * len(chunk)
        else:
            predictions, seconds = [], []
            for x in attacked:
                start = time.perf_counter()
                predictions.append(predict(model, x, args.sigma, args.n, args.alpha,
                                           args.batch, generator))
                seconds.append(shared + time.perf_counter() - start)
        for idx, label, prediction, elapsed in zip(chunk, labels.tolist(), predictions, seconds):
            rows[idx].append([idx, label, *evaluation.key, prediction, int(prediction == label),
                              f"{elapsed:.4f}"])
    return [row for idx in chunk for row in rows[idx]]


def accuracy_table(path: Path, plan: list[Evaluation]) -> list[tuple[Evaluation, int, int]]:
    """(evaluation, images correct, images evaluated) for every evaluation of the plan, from a
    results file."""
    rows = read_rows(path)
    table = []
    for evaluation in plan:
        correct = [int(row["correct"]) for row in rows
                   if (row["classifier"], row["attack"], row["norm"], row["eps"]) == evaluation.key]
        table.append((evaluation, sum(correct), len(correct)))
    return table


def run_attack(args: argparse.Namespace) -> int:
    threats = list(dict.fromkeys([("linf", eps) for eps in args.linf_eps]
                                 + [("l2", eps) for eps in args.l2_eps]))  # repeats once
    loaded = load_run(args, args.sigma)
    model, dataset = loaded.model, loaded.dataset
    check_model_gradients(model, dataset, loaded.model_name,
                          "the attacks pgd, naive-pgd and eot-pgd")
    for norm, eps in threats:
        check_eps_in_box(f"--{norm}-eps", eps, norm,
                         tuple(dataset[0][0].shape))
    device = model_device(model)
    plan = evaluation_plan(threats)
    settings = run_settings(
        "attack", args, loaded, device, n=args.n, alpha=args.alpha, batch=args.batch,
        threats=[[norm, eps] for norm, eps in threats], steps=args.steps,
        eot_samples=args.eot_samples, restarts=args.restarts, attack_batch=args.attack_batch,
        eps_column="exact")  # files that rounded it to 6 digits are not resumed
    out = args.out or default_out(loaded.model_name, loaded.dataset_name, args.split, args.sigma,
                                  args.n, "attack")
    indices = selected_indices(len(dataset), args.skip, args.max)
    with ResultsFile(out, ATTACK_COLUMNS, settings, overwrite=args.overwrite,
                     key=ATTACK_KEY) as results:
        # Resume row by row: a chunk whose rows were cut short is redone with the same noise
        # and only its missing rows are written.
        written = {(int(row["idx"]), row["classifier"], row["attack"], row["norm"], row["eps"])
                   for row in read_rows(out)}
        todo = [chunk for chunk in chunks(indices, args.attack_batch)
                if any((idx, *evaluation.key) not in written
                       for idx in chunk for evaluation in plan)]
        with tqdm(total=len(indices), initial=len(indices) - sum(map(len, todo)), unit="img",
                  disable=args.quiet, desc=f"attack {out.name}", file=sys.stderr) as bar:
            for chunk in todo:
                images, labels = load_images(dataset, chunk, device)
                rows = evaluate_chunk(args, model, plan, images, labels, chunk,
                                      image_generator(args.seed, chunk[0], device))
                for row in rows:
                    if (row[0], *row[2:6]) not in written:
                        results.append(row)
                bar.update(len(chunk))
    lines = [f"certify-attack: {len(indices)} images -> {out}",
             f"  {'classifier':<10} {'attack':<10} {'norm':<5} {'eps':>8} {'accuracy':>9}"
             f"  {'95% interval':>17}"]
    for evaluation, correct, evaluated in accuracy_table(out, plan):
        accuracy = correct / evaluated if evaluated else 0.0
        low, high = accuracy_interval(correct, evaluated) if evaluated else (0.0, 1.0)
        lines.append(f"  {evaluation.classifier:<10} {evaluation.attack:<10} {evaluation.norm:<5} "
                     f"{evaluation.key[3]:>8} {accuracy:>9.4f}  [{low:.4f}, {high:.4f}]")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-attack``."""
    return run_command("certify-attack", attack_parser(), run_attack, argv)


if __name__ == "__main__":
    sys.exit(main())
