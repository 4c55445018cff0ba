"""The ``certify`` command: smoothed certification of a whole data set (Cohen et al.'s certify.py).

Each selected image gets its own noise generator seeded by (seed, idx), so an interrupted,
resumed or sharded run writes the same rows as one uninterrupted run (all columns but ``time``).
Rows are flushed and fsynced as they are made; rerunning the same command resumes.

Examples:
    certify --sigma 0.25 --n 100000                      # the shipped digits model, test split
    certify --sigma 0.25 --n 100000 --skip 5 --plot      # every 5th image, then draw the curve
    certify --model ckpt.pt --dataset cifar10 --data-root data --sigma 0.5 --n 100000 --skip 20
    torchrun --nproc_per_node 2 -m certify --sigma 0.25 --N 100000   # two processes, one file
    # (under torchrun spell --n as --N: torchrun takes --n for an abbreviation of its own flags)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from certify.cli.common import (
    OneLineParser,
    add_time_limit,
    file_path,
    positive_float,
    positive_int,
    probability,
    run_command,
    stopped_line,
)
from certify.cli.loading import add_model_arguments, default_out, load_run, run_selected
from certify.fast import FastOptions
from certify.results import read_rows, record_output
from certify.run_modes import Certify, Predict
from certify.sequential import RULES
from certify.shards import merge_parts
from certify.torchrun import torchrun_place


def build_parser(prog: str, certifying: bool) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--sigma", type=positive_float, required=True,
                        help="noise level of the smoothed classifier")
    parser.add_argument("--n", "--N", dest="n", type=positive_int, default=100_000,
                        help="Monte Carlo samples per image (default 100000)")
    if certifying:
        parser.add_argument("--n0", "--N0", dest="n0", type=positive_int, default=100,
                            help="selection samples per image (default 100)")
    parser.add_argument("--alpha", type=probability, default=0.001,
                        help="failure probability (default 0.001)")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="noise samples per forward pass (default: the fastest on the device, "
                             "measured at start; 1000 when sharded)")
    add_model_arguments(parser)
    parser.add_argument("--out", type=file_path, default=None,
                        help="results file "
                             "(default: results/<model>_<dataset>-<split>_sigma<s>_n<n>.tsv)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing results file made by other settings")
    parser.add_argument("--shard", default=None,
                        help="i/K: certify only shard i of K (under torchrun: RANK/WORLD_SIZE)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_time_limit(parser)
    speed = parser.add_argument_group("speed (opt-in; see benchmarks/fast_inference.py)")
    speed.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    speed.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model")
    if certifying:
        sequential = parser.add_argument_group(
            "sequential sampling (same guarantee, fewer samples; see certify/sequential.py)")
        mode = sequential.add_mutually_exclusive_group()
        mode.add_argument("--radius", type=positive_float, default=None,
                          help="only decide whether each image is certified at this L2 radius, "
                               "stopping as soon as that is settled (--n is the budget)")
        mode.add_argument("--adaptive", action="store_true",
                          help="stop once the radius can grow by at most --tolerance")
        sequential.add_argument("--tolerance", type=positive_float, default=0.05,
                                help="L2 tolerance of --adaptive (default 0.05)")
        sequential.add_argument("--rule", choices=RULES, default=RULES[0],
                                help="stopping rule of --radius and --adaptive: the betting "
                                     "confidence sequence or Clopper-Pearson bounds at "
                                     f"doubling looks (default {RULES[0]})")
        parser.add_argument("--plot", action="store_true",
                            help="also draw the certified-accuracy curve next to the results file")
    return parser


def parse_shard(text: str) -> tuple[int, int]:
    """Parse 'i/K' with 0 <= i < K.

    Raises:
        ValueError: naming --shard, for anything else.
    """
    try:
        shard, num_shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/K, e.g. 0/4, got {text!r}") from None
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard i/K needs 0 <= i < K, got {text!r}")
    return shard, num_shards


def shard_of(args: argparse.Namespace) -> tuple[int, int]:
    """(shard, number of shards) from --shard, else from torchrun's RANK and WORLD_SIZE."""
    if args.shard is not None:
        return parse_shard(args.shard)
    place = torchrun_place()
    return place.rank, place.world_size


def run(args: argparse.Namespace, kind: str) -> int:
    """Certify (or predict) every selected image, appending one row per image."""
    loaded = load_run(args, args.sigma)
    trained_sigma = loaded.metadata.get("sigma")
    if trained_sigma is not None and abs(float(trained_sigma) - args.sigma) > 1e-9:
        print(f"{kind}: warning: the model was trained at sigma {trained_sigma}, "
              f"certifying at sigma {args.sigma}", file=sys.stderr)
    out = args.out or default_out(loaded.model_name, loaded.dataset_name, args.split, args.sigma,
                                  args.n, kind)
    shard, num_shards = shard_of(args)
    fast = FastOptions(args.channels_last, args.bf16, args.compile)
    mode = Certify(n0=args.n0, n=args.n, radius=args.radius, adaptive=args.adaptive,
                   tolerance=args.tolerance, rule=args.rule, fast=fast) if kind == "certify" else (
        Predict(n=args.n, fast=fast))
    outcome = run_selected(args, loaded, mode, out, (shard, num_shards))
    if outcome.dropped:
        print(f"{kind}: repaired {outcome.path}: dropped {outcome.dropped} repeated or malformed "
              "rows (redone unless their images were done)", file=sys.stderr)
    if outcome.stopped is not None:
        print(stopped_line(outcome))
        return 0
    if num_shards > 1:
        if not wait_for_shards(shard, num_shards):
            print(f"{kind}: shard {shard}/{num_shards} done; join the parts with "
                  f"`certify-merge {out} --shards {num_shards}` once all are done", file=sys.stderr)
            return 0
        merge_parts(out, num_shards)
    if shard == 0:
        report(out, kind, getattr(args, "plot", False))
    return 0


def wait_for_shards(shard: int, num_shards: int) -> bool:
    """Under torchrun, wait for every process and tell whether this one should join the parts."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    dist.destroy_process_group()
    return shard == 0


def report(out: Path, kind: str, plot: bool) -> None:
    """Print the summary table of a finished results file (and draw its curve with --plot)."""
    if kind == "predict":
        rows = read_rows(out)
        total = max(len(rows), 1)
        accuracy = sum(int(row["correct"]) for row in rows) / total
        abstain_rate = sum(row["predict"] == "-1" for row in rows) / total
        print(f"predict: {len(rows)} images -> {out}\n"
              f"  accuracy of the smoothed classifier  {accuracy:.3f}\n"
              f"  abstain rate                         {abstain_rate:.3f}")
        return
    from certify.analysis import read_results, summarize

    results = read_results(out)
    summary = summarize(results)
    radii = summary["certified_accuracy"]
    print("\n".join([
        f"certify: {summary['num_images']} images -> {out}",
        f"  clean accuracy of the smoothed classifier  {summary['accuracy']:.3f}",
        f"  abstain rate                               {summary['abstain_rate']:.3f}",
        "  certified accuracy at L2 radius   " + " ".join(f"{r:>6.2f}" for r in radii),
        "                                    " + " ".join(f"{a:>6.3f}" for a in radii.values()),
        f"  average certified radius                   {summary['average_certified_radius']:.3f}",
        f"  time per image                             {summary['mean_time_s']:.2f} s",
        f"  noise samples per image (estimation)       "
        f"{sum(map(int, results.extra['samples'])) / len(results):.0f}",
    ]))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        from certify.cli.plot import default_label
        from certify.plot import plot_certified_accuracy

        figure = plot_certified_accuracy({default_label(out): results})
        figure.savefig(figure_path(out), dpi=150, bbox_inches="tight")
        record_output(out, figure_path(out))
        print(f"  curve                                      {figure_path(out)}")


def figure_path(out: Path) -> Path:
    """Where --plot draws the curve of the results file ``out``: beside it as .png, and never
    the results file itself (``--out r.png`` draws r.png.png)."""
    figure = out.with_suffix(".png")
    return figure if figure != out else out.with_name(out.name + ".png")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify``."""
    return run_command("certify", build_parser("certify", certifying=True),
                       lambda args: run(args, "certify"), argv)


if __name__ == "__main__":
    sys.exit(main())
