"""The ``certify-audit`` command: attack each certificate inside its radius and count violations.

It certifies each image (or reads the certificates of a ``certify`` results file), attacks every
certified image with L2 EOT-PGD at 0.99 times its radius and counts the images whose ``predict``
then names another class (violations; expected at most about 2 * alpha of the images attacked for
a correct certifier). Resumable and reproducible as ``certify-attack``.

Examples:
    certify-audit --sigma 0.25 --n 100000 --skip 5
    certify-audit --sigma 0.25 \\
        --certificates results/digits-sigma0.25_digits-test_sigma0.25_n100000.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certify.cli.attack import build_parser
from certify.cli.common import (
    OneLineParser,
    UserError,
    file_path,
    positive_int,
    probability,
    run_command,
    stopped_line,
)
from certify.cli.loading import default_out, load_run, run_selected
from certify.guarantee import ABSTAIN
from certify.results import differing_settings, read_rows, read_settings, settings_path
from certify.run_modes import NOT_ATTACKED, Audit
from encoders.runs import LoadedRun, check_model_gradients


def audit_parser() -> OneLineParser:
    parser = build_parser(
        "certify-audit",
        "Attack every certified image with L2 EOT-PGD just inside its radius; count violations.")
    parser.add_argument("--certificates", type=file_path, default=None,
                        help="audit the rows of this certify results file instead of certifying")
    parser.add_argument("--n0", "--N0", dest="n0", type=positive_int, default=100,
                        help="selection samples per certificate (default 100)")
    parser.add_argument("--n", "--N", dest="n", type=positive_int, default=100_000,
                        help="estimation samples per certificate (default 100000)")
    parser.add_argument("--predict-n", type=positive_int, default=10_000,
                        help="predict samples at each attacked image (default 10000)")
    parser.add_argument("--shrink", type=probability, default=0.99,
                        help="attack at eps = shrink * radius (default 0.99)")
    return parser


def certificates_to_audit(args: argparse.Namespace,
                          loaded: LoadedRun) -> dict[int, tuple[int, float]]:
    """idx -> (certified label, radius) from --certificates; empty without it.

    Certificates hold only for the model, data and sigma they were made with: those their
    settings file records must be this audit's (a file without one, such as Cohen et al.'s, is
    checked for its sigma and its indices only).

    Raises:
        UserError: naming the file and what differs.
    """
    if args.certificates is None:
        return {}
    from certify.analysis import read_results, sigma_of

    if settings_path(args.certificates).exists():
        check_certificate_settings(args.certificates, args, loaded)
    size = len(loaded.dataset)
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


def check_certificate_settings(path: Path, args: argparse.Namespace, loaded: LoadedRun) -> None:
    """Refuse certificates whose settings file names another command, model, data set, split or
    sigma than this audit's."""
    recorded = read_settings(path)
    if recorded.get("command") != "certify":
        raise UserError(f"--certificates {path} were made by certify-{recorded.get('command')}, "
                        "not certify: they hold no certified radii")
    expected = {**loaded.model_and_data(), "sigma": args.sigma}
    differences = [
        "the checkpoint (another model's weights)" if key == "checkpoint_sha256"
        else "the images (other pixels or files)" if key == "data_sha256"
        else f"{key} {recorded.get(key)} (this audit: {expected[key]})"
        for key in differing_settings(recorded, expected)]
    if differences:
        raise UserError(f"--certificates {path} were made with other settings than this audit's: "
                        f"{', '.join(differences)}; their radii hold only for their own model, "
                        "data and sigma")


def run_audit(args: argparse.Namespace) -> int:
    loaded = load_run(args, args.sigma)
    model, dataset = loaded.model, loaded.dataset
    check_model_gradients(model, dataset, loaded.model_name, "the audit's attack eot-pgd")
    given = certificates_to_audit(args, loaded)
    mode = Audit(n0=args.n0, n=args.n, predict_n=args.predict_n, steps=args.steps,
                 eot_samples=args.eot_samples, restarts=args.restarts, shrink=args.shrink,
                 attack_batch=args.attack_batch, certificates=given,
                 certificates_file=str(args.certificates) if given else None)
    out = args.out or default_out(loaded.model_name, loaded.dataset_name, args.split, args.sigma,
                                  args.n, "audit")
    outcome = run_selected(args, loaded, mode, out)
    if outcome.stopped is not None:
        print(stopped_line(outcome))
        return 0
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
    """Entry point of ``certify-audit``."""
    return run_command("certify-audit", audit_parser(), run_audit, argv)


if __name__ == "__main__":
    sys.exit(main())
