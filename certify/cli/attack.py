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

from certify.analysis import accuracy_interval
from certify.attacks.pgd import check_eps_in_box
from certify.cli.common import (
    OneLineParser,
    add_time_limit,
    epsilon,
    file_path,
    positive_float,
    positive_int,
    probability,
    run_command,
    stopped_line,
)
from certify.cli.loading import add_model_arguments, default_out, load_run, run_selected
from certify.run_modes import Attack, accuracy_table
from encoders.runs import check_model_gradients


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
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="noise samples per forward pass of predict and certify (default: "
                             "the fastest on the device, measured at start)")
    parser.add_argument("--attack-batch", type=positive_int, default=32,
                        help="images attacked together; an EOT step runs the model on "
                             "attack-batch * eot-samples images (default 32)")
    add_model_arguments(parser)
    parser.add_argument("--out", type=file_path, default=None, help="results file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing results file made by other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_time_limit(parser)
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


def run_attack(args: argparse.Namespace) -> int:
    threats = [("linf", eps) for eps in args.linf_eps] + [("l2", eps) for eps in args.l2_eps]
    loaded = load_run(args, args.sigma)
    model, dataset = loaded.model, loaded.dataset
    check_model_gradients(model, dataset, loaded.model_name,
                          "the attacks pgd, naive-pgd and eot-pgd")
    for norm, eps in threats:
        check_eps_in_box(f"--{norm}-eps", eps, norm,
                         tuple(dataset[0][0].shape))
    mode = Attack(threats=tuple(threats), n=args.n, steps=args.steps,
                  eot_samples=args.eot_samples, restarts=args.restarts,
                  attack_batch=args.attack_batch)
    out = args.out or default_out(loaded.model_name, loaded.dataset_name, args.split, args.sigma,
                                  args.n, "attack")
    outcome = run_selected(args, loaded, mode, out)
    if outcome.stopped is not None:
        print(stopped_line(outcome))
        return 0
    lines = [f"certify-attack: {outcome.total} images -> {out}",
             f"  {'classifier':<10} {'attack':<10} {'norm':<5} {'eps':>8} {'accuracy':>9}"
             f"  {'95% interval':>17}"]
    for evaluation, correct, evaluated in accuracy_table(out, mode.plan):
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
