"""The README's empirical-robustness table for the shipped digits models.

For each noise level it runs an audit (certify every selected test image, then attack each
certificate with L2 EOT-PGD just inside its radius) and an attack run (naive PGD and EOT-PGD on
the smoothed classifier at the same L2 radii), as ``certify-audit`` and ``certify-attack`` do
(:mod:`certify.runner`), and prints, as Markdown: clean,
naive-PGD and EOT-PGD accuracy of the smoothed classifier next to its certified accuracy at each
radius, and the audit's violation count. The default subsample (every 10th of the 360 test
images) is sized for about ten minutes on two CPU cores; results files land in --out-dir and a
rerun resumes them.

Examples:
    python benchmarks/attack_report.py
    python benchmarks/attack_report.py --skip 1 --n 100000 --predict-n 10000   # full split, hours
    python benchmarks/attack_report.py --sigmas 0.25 --models ckpt.pt --radii 0.25 0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certify.analysis import certified_accuracy, read_results
from certify.results import read_rows
from certify.run_modes import NOT_ATTACKED, Attack, Audit, Evaluation, accuracy_table
from certify.runner import RunSpec, Selection, run
from encoders.errors import one_line
from encoders.runs import RunSource, load_run


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sigmas", nargs="+", default=["0.12", "0.25", "0.50", "1.00"],
                        help="noise levels of the shipped digits models")
    parser.add_argument("--models", nargs="+", default=None,
                        help="checkpoints, one per sigma (default: the shipped digits models)")
    parser.add_argument("--radii", nargs="+", default=["0.25", "0.5", "1.0"],
                        help="L2 radii = attack epsilons")
    parser.add_argument("--skip", type=int, default=10,
                        help="every skip-th test image (default 10)")
    parser.add_argument("--n", type=int, default=10_000, help="certify samples (default 10000)")
    parser.add_argument("--predict-n", type=int, default=1000,
                        help="predict samples at every attacked image (default 1000)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot-samples", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", type=Path, default=Path("results/attack_report"))
    args = parser.parse_args(argv)
    if args.models is not None and len(args.models) != len(args.sigmas):
        parser.error("--models needs one checkpoint per --sigmas entry")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        print(report(args))
    except (ValueError, OSError) as error:  # a missing model, a results conflict
        print(f"attack_report: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def report(args: argparse.Namespace) -> str:
    """Run (or resume) the audits and attacks; the two Markdown tables."""
    radii = [float(radius) for radius in args.radii]
    rows = ["| sigma | L2 radius | smoothed, clean | naive PGD | EOT-PGD | certified |",
            "|---|---|---|---|---|---|"]
    audit_rows = ["| sigma | images | certified and attacked | violations |", "|---|---|---|---|"]
    for position, sigma in enumerate(args.sigmas):
        source = RunSource(model=args.models[position] if args.models else None,
                           device=args.device)
        loaded = load_run(source, float(sigma))
        audit_out = args.out_dir / f"audit_sigma{sigma}.tsv"
        attack_out = args.out_dir / f"attack_sigma{sigma}.tsv"
        attack = Attack(threats=tuple(("l2", radius) for radius in radii), n=args.predict_n,
                        steps=args.steps, eot_samples=args.eot_samples)
        for mode, out in ((Audit(n=args.n, predict_n=args.predict_n, steps=args.steps,
                                 eot_samples=args.eot_samples), audit_out), (attack, attack_out)):
            run(RunSpec(loaded.model, loaded.dataset, mode, float(sigma), out, batch=1000,
                        selection=Selection(skip=args.skip), recorded=loaded.recorded()))
        accuracy = {evaluation: correct / evaluated if evaluated else 0.0
                    for evaluation, correct, evaluated in accuracy_table(attack_out, attack.plan)}
        certified = certified_accuracy(read_results(audit_out), radii)
        clean = accuracy[Evaluation("smoothed", "clean")]
        for radius, certified_at_radius in zip(radii, certified):
            naive = accuracy[Evaluation("smoothed", "naive-pgd", "l2", radius)]
            eot = accuracy[Evaluation("smoothed", "eot-pgd", "l2", radius)]
            rows.append(f"| {sigma} | {radius:g} | {clean:.3f} | {naive:.3f} | {eot:.3f} | "
                        f"{certified_at_radius:.3f} |")
        audited = read_rows(audit_out)
        attacked = [row for row in audited if row["attacked"] != NOT_ATTACKED]
        violations = sum(int(row["violation"]) for row in attacked)
        audit_rows.append(f"| {sigma} | {len(audited)} | {len(attacked)} | {violations} |")
    return "\n".join([*rows, "", *audit_rows])


if __name__ == "__main__":
    sys.exit(main())
