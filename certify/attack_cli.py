"""The ``certify-attack`` and ``certify-audit`` commands: empirical robustness, and an audit of
the certificates with the strongest attack we have.

``certify-attack`` reports the clean and robust accuracy of the base classifier (PGD) and of the
smoothed classifier (its ``predict``, abstain counted as wrong) under naive PGD (one noise draw
per step, as RUSH evaluated) and EOT-PGD (SmoothAdv), at every requested epsilon. It writes one
row per image and evaluation; robust accuracy is the fraction of images whose attacked
prediction is the true label.

``certify-audit`` certifies each image (or reads the certificates of a ``certify`` results file),
attacks every certified image with L2 EOT-PGD at 0.99 times its radius and counts the images
whose ``predict`` then names another class (violations; expected at most about 2 * alpha of the
images attacked for a correct certifier).

Images are attacked --attack-batch at a time, in groups fixed by the selection, and each group
draws its noise from a generator seeded by (seed, its first idx), so a resumed run writes the
same rows as an uninterrupted one (all columns but ``time``); rerunning the same command resumes
(row by row), and a results file made by other settings is never overwritten without
--overwrite.

Examples:
    python -m certify.attack_cli --sigma 0.25 --n 10000 --skip 10           # shipped digits model
    python -m certify.attack_cli --sigma 0.25 --linf-eps 8/255 --l2-eps 0.25 0.5 1.0 \\
        --steps 50 --eot-samples 64 --restarts 2 --max 100
    python -m certify.attack_cli --model ckpt.pt --dataset cifar10 --data-root data \\
        --sigma 0.5 --skip 20 --device cuda
    python -m certify.attack_cli audit --sigma 0.25 --n 100000 --skip 5     # certify-audit
    python -m certify.attack_cli audit --sigma 0.25 \\
        --certificates results/digits-sigma0.25_digits-test_sigma0.25_n100000.tsv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from certify.attacks import EOTPGD, PGD, NaiveSmoothedPGD, PGDConfig
from certify.audit import AuditConfig, audit_batch
from certify.cli_support import (
    OneLineParser,
    UserError,
    add_model_arguments,
    default_out,
    image_generator,
    load_model_and_data,
    positive_float,
    positive_int,
    probability,
    run_command,
    selected_indices,
)
from certify.results import COHEN_CERTIFY_COLUMNS, ResultsFile
from certify.smoothing import ABSTAIN, certify, model_device, predict

ATTACK_COLUMNS = ("idx", "label", "classifier", "attack", "norm", "eps", "predict", "correct",
                  "time")
AUDIT_COLUMNS = (*COHEN_CERTIFY_COLUMNS, "epsilon", "attacked", "violation")
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
        """How the row names this evaluation, as written in the results file."""
        return self.classifier, self.attack, self.norm, f"{self.eps:.6g}"


def evaluation_plan(threats: Sequence[tuple[str, float]]) -> list[Evaluation]:
    """Clean base and smoothed accuracy, then PGD, naive PGD and EOT-PGD for each threat."""
    plan = [Evaluation("base", "clean"), Evaluation("smoothed", "clean")]
    for norm, eps in threats:
        plan += [Evaluation("base", "pgd", norm, eps),
                 Evaluation("smoothed", "naive-pgd", norm, eps),
                 Evaluation("smoothed", "eot-pgd", norm, eps)]
    return plan


def epsilon(text: str) -> float:
    """argparse type: an epsilon > 0 written as a number or a fraction such as 8/255."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 such as 0.5 or 8/255, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser(prog: str, auditing: bool) -> OneLineParser:
    description = (
        "Attack every certified image with L2 EOT-PGD just inside its radius; count violations."
        if auditing else
        "Clean and robust accuracy of a classifier and its smoothed classifier under PGD, "
        "naive PGD and EOT-PGD."
    )
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--sigma", type=positive_float, required=True,
                        help="noise level of the smoothed classifier")
    if auditing:
        parser.add_argument("--certificates", type=Path, default=None,
                            help="audit the rows of this certify results file "
                                 "instead of certifying")
        parser.add_argument("--n0", "--N0", dest="n0", type=positive_int, default=100,
                            help="selection samples per certificate (default 100)")
        parser.add_argument("--n", "--N", dest="n", type=positive_int, default=100_000,
                            help="estimation samples per certificate (default 100000)")
        parser.add_argument("--predict-n", type=positive_int, default=10_000,
                            help="predict samples at each attacked image (default 10000)")
        parser.add_argument("--shrink", type=probability, default=0.99,
                            help="attack at eps = shrink * radius (default 0.99)")
    else:
        parser.add_argument("--n", "--N", dest="n", type=positive_int, default=10_000,
                            help="predict samples per smoothed evaluation (default 10000)")
        parser.add_argument("--linf-eps", type=epsilon, nargs="*", default=[8 / 255],
                            help="L-inf epsilons, e.g. 8/255 (default 8/255)")
        parser.add_argument("--l2-eps", type=epsilon, nargs="*", default=[0.25, 0.5],
                            help="L2 epsilons (default 0.25 0.5)")
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
    parser.add_argument("--skip", type=positive_int, default=1, help="take every skip-th image")
    parser.add_argument("--max", type=positive_int, default=None,
                        help="stop before image index max")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="results file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing results file made by other settings")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a results file, by column name."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def accuracy_table(path: Path, plan: list[Evaluation]) -> list[tuple[Evaluation, int, float]]:
    """(evaluation, images, accuracy) for every evaluation of the plan, from a results file."""
    rows = read_rows(path)
    table = []
    for evaluation in plan:
        correct = [int(row["correct"]) for row in rows
                   if (row["classifier"], row["attack"], row["norm"], row["eps"]) == evaluation.key]
        table.append((evaluation, len(correct), sum(correct) / len(correct) if correct else 0.0))
    return table


def run_attack(args: argparse.Namespace) -> int:
    threats = list(dict.fromkeys([("linf", eps) for eps in args.linf_eps]
                                 + [("l2", eps) for eps in args.l2_eps]))  # repeats once
    model, dataset, metadata, model_name, dataset_name = load_model_and_data(args, args.sigma)
    device = model_device(model)
    plan = evaluation_plan(threats)
    settings = {
        "command": "attack", "model": model_name,
        "checkpoint_sha256": metadata["checkpoint_sha256"], "dataset": dataset_name,
        "split": args.split,
        "sigma": args.sigma, "n": args.n, "alpha": args.alpha, "batch": args.batch,
        "threats": [[norm, eps] for norm, eps in threats], "steps": args.steps,
        "eot_samples": args.eot_samples, "restarts": args.restarts,
        "attack_batch": args.attack_batch, "skip": args.skip,
        "max": args.max, "seed": args.seed, "device": device.type,
    }
    out = args.out or default_out(model_name, dataset_name, args.split, args.sigma, args.n,
                                  "attack")
    indices = selected_indices(len(dataset), args.skip, args.max)
    with ResultsFile(out, ATTACK_COLUMNS, settings, overwrite=args.overwrite) as results:
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
             f"  {'classifier':<10} {'attack':<10} {'norm':<5} {'eps':>8} {'accuracy':>9}"]
    for evaluation, _, accuracy in accuracy_table(out, plan):
        lines.append(f"  {evaluation.classifier:<10} {evaluation.attack:<10} {evaluation.norm:<5} "
                     f"{evaluation.key[3]:>8} {accuracy:>9.4f}")
    print("\n".join(lines))
    return 0


def certificates_to_audit(args: argparse.Namespace, size: int) -> dict[int, tuple[int, float]]:
    """idx -> (certified label, radius) from --certificates; empty without it."""
    if args.certificates is None:
        return {}
    from certify.analysis import read_results, sigma_of

    recorded_sigma = sigma_of(args.certificates)
    if recorded_sigma is not None and abs(recorded_sigma - args.sigma) > 1e-9:
        raise UserError(f"--certificates were made at sigma {recorded_sigma}, "
                        f"but --sigma is {args.sigma}; their radii hold only for their own sigma")
    results = read_results(args.certificates)
    if int(results.idx.max()) >= size:
        raise UserError(f"--certificates name image {int(results.idx.max())}, "
                        f"but the data set has {size} images; pass the --dataset and --split "
                        "they were made on")
    return {int(idx): (int(label), float(radius))
            for idx, label, radius in zip(results.idx, results.predict, results.radius)}


def run_audit(args: argparse.Namespace) -> int:
    model, dataset, metadata, model_name, dataset_name = load_model_and_data(args, args.sigma)
    device = model_device(model)
    given = certificates_to_audit(args, len(dataset))
    config = AuditConfig(sigma=args.sigma, n=args.predict_n, alpha=args.alpha,
                         eot_samples=args.eot_samples, steps=args.steps, restarts=args.restarts,
                         shrink=args.shrink, batch_size=args.batch,
                         attack_batch=args.attack_batch)
    settings = {
        "command": "audit", "model": model_name,
        "checkpoint_sha256": metadata["checkpoint_sha256"], "dataset": dataset_name,
        "split": args.split,
        "sigma": args.sigma, "certificates": str(args.certificates) if given else None,
        "n0": args.n0, "n": args.n, "predict_n": args.predict_n, "alpha": args.alpha,
        "batch": args.batch, "steps": args.steps, "eot_samples": args.eot_samples,
        "restarts": args.restarts, "shrink": args.shrink, "attack_batch": args.attack_batch,
        "skip": args.skip, "max": args.max,
        "seed": args.seed, "device": device.type,
    }
    out = args.out or default_out(model_name, dataset_name, args.split, args.sigma,
                                  args.n, "audit")
    indices = sorted(given) if given else selected_indices(len(dataset), args.skip, args.max)
    with ResultsFile(out, AUDIT_COLUMNS, settings, overwrite=args.overwrite) as results:
        todo = [chunk for chunk in chunks(indices, args.attack_batch)
                if any(idx not in results.done for idx in chunk)]
        with tqdm(total=len(indices), initial=len(indices) - sum(map(len, todo)), unit="img",
                  disable=args.quiet, desc=f"audit {out.name}", file=sys.stderr) as bar:
            for chunk in todo:
                images, labels = load_images(dataset, chunk, device)
                generator = image_generator(args.seed, chunk[0], device)
                certified, radii, seconds = [], [], []
                for idx, x in zip(chunk, images):
                    start = time.perf_counter()
                    if given:
                        label, radius = given[idx]
                    else:
                        certificate = certify(model, x, args.sigma, args.n0, args.n, args.alpha,
                                              args.batch, generator)
                        label, radius = certificate.label, certificate.radius
                    certified.append(label)
                    radii.append(radius)
                    seconds.append(time.perf_counter() - start)
                start = time.perf_counter()
                records = audit_batch(model, images, certified, radii, config, generator)
                shared = (time.perf_counter() - start) / len(chunk)
                for i, (idx, label, record) in enumerate(zip(chunk, labels.tolist(), records)):
                    if idx in results.done:
                        continue
                    attack_columns = (
                        [0.0, NOT_ATTACKED, 0] if record is None
                        else [f"{record.epsilon:.6f}", record.prediction, int(record.violation)])
                    results.append([idx, label, certified[i], f"{radii[i]:.6f}",
                                    int(certified[i] == label), f"{seconds[i] + shared:.4f}",
                                    *attack_columns])
                bar.update(len(chunk))
    rows = read_rows(out)
    attacked = [row for row in rows if row["attacked"] != NOT_ATTACKED]
    violations = sum(int(row["violation"]) for row in attacked)
    abstained = sum(int(row["attacked"]) == ABSTAIN for row in attacked)
    print("\n".join([
        f"certify-audit: {len(rows)} images -> {out}",
        f"  {'certified and attacked':<32} {len(attacked)}",
        f"  {'violations':<32} {violations}",
        f"  {'expected at most about':<32} {2 * args.alpha * len(attacked):.3g} (2 * alpha each)",
        f"  {'abstained after the attack':<32} {abstained}",
    ]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-attack``."""
    args = build_parser("certify-attack", auditing=False).parse_args(argv)
    return run_command("certify-attack", lambda: run_attack(args))


def audit_main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-audit``."""
    args = build_parser("certify-audit", auditing=True).parse_args(argv)
    return run_command("certify-audit", lambda: run_audit(args))


if __name__ == "__main__":
    if sys.argv[1:2] == ["audit"]:
        sys.exit(audit_main(sys.argv[2:]))
    sys.exit(main())
