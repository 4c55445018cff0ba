"""The RUSH claim on given models: clean, PGD, naive PGD and EOT-PGD accuracy beside certified.

For each model it reads the per-image rows of ``certify-attack`` (idx, label, classifier, attack,
norm, eps, predict, correct) and, if given, the ``certify`` results file of the same images, and
writes one Markdown table: every accuracy with its exact 95% Clopper-Pearson interval, certified
accuracy on the same images (the attack may have covered some of the certified images so far),
(:func:`certify.analysis.accuracy_interval`), and for every epsilon the exact McNemar test of
naive PGD against EOT-PGD on the same images (:func:`certify.analysis.mcnemar_exact`). RUSH
(arXiv 2207.05127) reported its robust accuracy under naive PGD, one noise draw per step; EOT
averages the gradient over draws, as an attacker of a randomized defence would. A second table
pairs the models: for every attack, every two models attacked on the same images, with the exact
McNemar test of the images each keeps and the other does not (does the attack rank them apart?).

Example:
    python scripts/rush_claim_table.py \\
        --model baseline docs/cifar10/results/attack_cohen.tsv docs/cifar10/results/cohen.tsv \\
        --model RUSH docs/cifar10/results/attack_rush.tsv docs/cifar10/results/rush.tsv \\
        --out docs/cifar10/rush_claim.md
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from certify.analysis import (
    CertifiedResults,
    accuracy_interval,
    certified_by_image,
    mcnemar_exact,
    read_results,
)
from certify.results import read_rows

ATTACK_ORDER = {"clean": 0, "pgd": 1, "naive-pgd": 2, "eot-pgd": 3}


def _cell(outcomes: list[int]) -> str:
    low, high = accuracy_interval(sum(outcomes), len(outcomes))
    return f"{sum(outcomes) / len(outcomes):.3f} [{low:.3f}, {high:.3f}]"


def eps_label(norm: str, eps: str) -> str:
    """An L-inf radius that is a whole number of 8-bit pixel steps as k/255, others as written."""
    steps = float(eps) * 255
    if norm == "linf" and steps > 0 and abs(steps - round(steps)) < 1e-9:
        return f"{round(steps)}/255"
    return eps


def certified_on(certified: CertifiedResults, indices: list[int], radius: float,
                 certify_file: str) -> float:
    """Certified accuracy at ``radius`` (correct, radius >= it; Cohen et al. 2019) on the images
    ``indices`` alone, so that it stands beside the attacks on the same images."""
    by_idx = certified_by_image(certified, radius)
    missing = sorted(set(indices) - set(by_idx))
    if missing:
        raise ValueError(f"{certify_file} does not hold the attacked images {missing[:5]}")
    return sum(by_idx[idx] for idx in indices) / len(indices)


Outcomes = dict[tuple[str, str, str, str], dict[int, int]]
"""(classifier, attack, norm, eps) -> {idx: 1 if still classified correctly, else 0}."""


def read_outcomes(attack_file: str) -> Outcomes:
    """The per-image outcomes of a ``certify-attack`` results file."""
    outcomes: Outcomes = defaultdict(dict)
    for row in read_rows(attack_file):
        key = (row["classifier"], row["attack"], row["norm"], row["eps"])
        outcomes[key][int(row["idx"])] = int(row["correct"])
    return outcomes


def table_order(keys: Iterable[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Clean first, then each norm by epsilon; within one, base PGD, naive PGD, EOT-PGD."""
    return sorted(set(keys), key=lambda key: (key[2] != "-", key[2], float(key[3]),
                                              ATTACK_ORDER[key[1]], key[0]))


def model_rows(name: str, outcomes: Outcomes, certify_file: str | None) -> list[str]:
    """The table rows of one model."""
    certified = read_results(certify_file) if certify_file else None
    rows = []
    for classifier, attack, norm, eps in table_order(outcomes):
        per_image = outcomes[(classifier, attack, norm, eps)]
        indices = sorted(per_image)
        paired = ""
        if attack == "eot-pgd" and (classifier, "naive-pgd", norm, eps) in outcomes:
            naive = outcomes[(classifier, "naive-pgd", norm, eps)]
            if sorted(naive) == indices:
                test = mcnemar_exact([naive[i] for i in indices], [per_image[i] for i in indices])
                paired = (f"robust to naive only {test.only_a}, to EOT only {test.only_b}, "
                          f"p = {test.p_value:.2g}")
        bound = ""
        if certified is not None and norm == "l2" and classifier == "smoothed":
            bound = f"{certified_on(certified, indices, float(eps), certify_file):.3f}"
        rows.append(f"| {name} | {classifier} | {attack} | {norm} | {eps_label(norm, eps)} | "
                    f"{len(indices)} | "
                    f"{_cell([per_image[i] for i in indices])} | {bound} | {paired} |")
    return rows


def paired_rows(models: list[tuple[str, Outcomes]]) -> list[str]:
    """For every attack, every two models attacked on the same images: both accuracies and the
    exact McNemar test of the images robust on one model only."""
    rows = []
    for key in table_order(key for _, outcomes in models for key in outcomes):
        classifier, attack, norm, eps = key
        for (name_a, a), (name_b, b) in itertools.combinations(models, 2):
            if key not in a or key not in b or sorted(a[key]) != sorted(b[key]):
                continue
            indices = sorted(a[key])
            outcomes_a = [a[key][i] for i in indices]
            outcomes_b = [b[key][i] for i in indices]
            test = mcnemar_exact(outcomes_a, outcomes_b)
            rows.append(f"| {classifier} | {attack} | {norm} | {eps_label(norm, eps)} | "
                        f"{len(indices)} | {name_a} vs {name_b} | {_cell(outcomes_a)} | "
                        f"{_cell(outcomes_b)} | {test.only_a} / {test.only_b}, "
                        f"p = {test.p_value:.2g} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", action="append", required=True,
                        metavar="NAME ATTACK_FILE [CERTIFY_FILE]",
                        help="a model's label, its certify-attack file, its certify file")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: stdout only)")
    args = parser.parse_args(argv)
    lines = ["| model | classifier | attack | norm | eps | images | accuracy [95% CI] | "
             "certified | naive vs EOT: images robust to one only (exact McNemar) |",
             "|---|---|---|---|---|---|---|---|---|"]
    models = []
    for spec in args.model:
        if len(spec) not in (2, 3):
            parser.error("--model takes NAME ATTACK_FILE [CERTIFY_FILE]")
        models.append((spec[0], read_outcomes(spec[1])))
        lines += model_rows(spec[0], models[-1][1], spec[2] if len(spec) == 3 else None)
    paired = paired_rows(models)
    if paired:
        lines += ["", "| classifier | attack | norm | eps | images | models A vs B | A: accuracy "
                  "[95% CI] | B: accuracy [95% CI] | robust on A only / on B only "
                  "(exact McNemar) |", "|---|---|---|---|---|---|---|---|---|", *paired]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
