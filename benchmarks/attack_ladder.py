"""The attack-strength ladder: did we attack the smoothed classifier hard enough?

For one checkpoint and data set it attacks the smoothed classifier at one L-inf (or L2) radius
with every combination of noise draws per step m, steps and restarts: EOT-PGD
(``certify.attacks.EOTPGD``, --objective) for m > 1, and for m = 1, where either objective is
the cross-entropy at one noise draw, naive PGD (``NaiveSmoothedPGD``, as RUSH evaluated its
defence). After each attack the smoothed classifier's ``predict`` (Cohen et al. 2019) labels
the attacked image, abstaining counted as wrong; robust accuracy is the fraction of images
still labelled correctly, with its exact 95% Clopper-Pearson interval.

The verdict compares the strongest EOT rung (the largest m, steps and restarts) with each rung
that lowers one of the three by one notch: if any of them leaves more than the strongest
rung's interval half-width of extra accuracy, robust accuracy was still falling and the table
says "not converged".

Each rung writes its own results file in --out-dir (Cohen et al.'s predict columns: idx, label,
predict, correct, time), row by row (time: the image's share of the attack that made it plus
its predict); a rerun resumes every rung where it stopped, so a long
ladder can be built over several runs. Images are attacked --attack-batch at a time, each group
with noise seeded by (--seed, its first idx), and predict's noise for an image is seeded by
(--seed, idx) alone: a resumed rung writes the rows an uninterrupted one would, and every rung
starts from the same random points and is judged on the same noise. ``ladder.tsv`` (one row
per rung) and ``ladder.png`` are rewritten from the results files at the end.

--time-limit (or SIGTERM) stops the ladder cleanly before a chunk of --attack-batch images that
would end past the limit at the pace of the last chunk (its units of work: forward-backward
passes of one image, predict's n forward passes counting n / 3), but never before the run's
first chunk; the table is then written by the rerun that finishes. A process that is killed
loses at most the chunk at hand, so a smaller --attack-batch loses less.

Cost: a rung of m draws, s steps and r restarts is worth m * s * r forward-backward passes per
image (the strongest default rung 64,000). Rungs that differ only in restarts share one attack
with the most restarts (an attack with 1 restart is the first run of one with 5, to the bit), so
the whole default grid spends 101,400 passes per image, not the 121,680 its rungs add up to. The
seconds printed beside a rung are those of its group of restart counts.

Examples:
    python benchmarks/attack_ladder.py --model digits-sigma0.25 --dataset digits --sigma 0.25 \\
        --eps 0.1 --eot-samples 1 8 --steps 20 --restarts 1 2 --skip 10 --max 120
    python benchmarks/attack_ladder.py --model cifar10.pt --dataset cifar10 --data-root DIR \\
        --sigma 0.25 --skip 20 --device cuda --out-dir results/ladder_sigma0.25
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch

from certify import predict
from certify.analysis import accuracy_interval
from certify.attacks import EOTPGD, NORMS, PGD, NaiveSmoothedPGD, PGDConfig
from certify.attacks.pgd import parse_epsilon
from certify.attacks.smoothed import OBJECTIVES
from certify.fast import FastOptions, accelerate
from certify.files import write_atomically
from certify.results import COHEN_PREDICT_COLUMNS, ResultsFile
from certify.runner import StopSignal, parse_duration
from certify.selection import image_generator, selected_indices
from encoders import load_classifier
from encoders.data import load_dataset
from encoders.training import resolve_device

SUMMARY_COLUMNS = ("attack", "eot_samples", "steps", "restarts", "cost", "images", "correct",
                   "accuracy", "ci_low", "ci_high")


@dataclass(frozen=True)
class Rung:
    """One attack setting of the ladder; attack is "clean", "naive" or "eot"."""

    attack: str
    eot_samples: int = 0
    steps: int = 0
    restarts: int = 0

    @property
    def cost(self) -> int:
        """Forward-backward passes per image (one per noise draw, step and restart)."""
        return max(self.eot_samples, 1) * self.steps * self.restarts

    @property
    def file_name(self) -> str:
        if self.attack == "clean":
            return "clean.tsv"
        return f"{self.attack}_m{self.eot_samples}_steps{self.steps}_restarts{self.restarts}.tsv"

    @property
    def label(self) -> str:
        if self.attack == "clean":
            return "no attack"
        return f"{self.attack} m={self.eot_samples} steps={self.steps} restarts={self.restarts}"


def attack_rung(eot_samples: int, steps: int, restarts: int) -> Rung:
    """The rung of one setting: naive PGD for one draw per step, EOT-PGD for more."""
    return Rung("naive" if eot_samples == 1 else "eot", eot_samples, steps, restarts)


def ladder(eot_samples: list[int], steps: list[int], restarts: list[int]) -> list[Rung]:
    """Clean, then every (m, steps, restarts) by cost; m = 1 always, as naive PGD.

    With one draw, either EOT objective is -log p_y(x + e), the naive attack's loss, so the
    m = 1 rungs run :class:`NaiveSmoothedPGD` (RUSH's evaluation) and are labelled "naive".
    """
    draws = sorted({1, *eot_samples})
    grid = itertools.product(draws, sorted(set(steps)), sorted(set(restarts)))
    rungs = [attack_rung(m, s, r) for m, s, r in grid]
    return [Rung("clean"), *sorted(rungs, key=lambda rung: rung.cost)]


def predict_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """Predict's noise at image idx: the same at every rung, and apart from the attack's."""
    state = np.random.SeedSequence([seed, idx, 1]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed((int(state[0]) << 31) ^ int(state[1]))


def build_attack(rung: Rung, model: torch.nn.Module, args: argparse.Namespace) -> PGD:
    config = PGDConfig(norm=args.norm, eps=args.eps, steps=rung.steps, restarts=rung.restarts)
    if rung.attack == "naive":
        return NaiveSmoothedPGD(model, args.sigma, config)
    return EOTPGD(model, args.sigma, rung.eot_samples, config, args.objective)


def rung_settings(rung: Rung, args: argparse.Namespace, device: torch.device) -> dict:
    """What a rung's results file records of the run; a rerun under others is refused."""
    return {"model": args.model, "dataset": args.dataset, "split": "test",
            "sigma": args.sigma, "norm": args.norm, "eps": args.eps, "attack": rung.attack,
            "objective": args.objective if rung.attack == "eot" else None,
            "eot_samples": rung.eot_samples, "steps": rung.steps, "restarts": rung.restarts,
            "n": args.n, "alpha": args.alpha, "batch": args.batch,
            "attack_batch": args.attack_batch, "skip": args.skip, "max": args.max,
            "seed": args.seed, "device": device.type, "channels_last": args.channels_last}


@dataclass
class Pace:
    """Seconds a unit of work took in the last chunk of this run (0 before the first): a unit
    is one image's forward-backward pass, and predict's n forward passes count n / 3 of them."""

    seconds_per_unit: float = 0.0

    @staticmethod
    def work(lacking: list[Rung], images: int, n: int) -> float:
        """A chunk's units: the attack with the most restarts a lacking rung needs, then predict
        for each lacking rung."""
        return images * (max(rung.cost for rung in lacking) + len(lacking) * n / 3)


def run_group(group: list[Rung], model: torch.nn.Module, dataset, indices: list[int],
              args: argparse.Namespace, device: torch.device, stop: StopSignal,
              pace: Pace) -> dict[Rung, tuple[int, int]]:
    """Attack and predict every selected image that a rung's file lacks; (correct, images) of
    each rung. Before each chunk of images it asks ``stop`` whether the chunk, at ``pace``,
    would end past the time limit, and returns early if so (or after SIGTERM).

    The rungs of a group differ only in restarts, so one attack with the most restarts that a
    lacking file needs gives the adversarial images of all of them (:meth:`PGD.after_restarts`:
    the same, to the bit, as an attack per rung), and the group costs its largest rung."""
    with contextlib.ExitStack() as stack:
        files = {rung: stack.enter_context(ResultsFile(
            args.out_dir / rung.file_name, COHEN_PREDICT_COLUMNS,
            rung_settings(rung, args, device), overwrite=args.overwrite)) for rung in group}
        for start in range(0, len(indices), args.attack_batch):
            chunk = indices[start:start + args.attack_batch]
            lacking = [rung for rung, results in files.items()
                       if not all(idx in results.done for idx in chunk)]
            if not lacking:
                continue
            work = Pace.work(lacking, len(chunk), args.n)
            if pace.seconds_per_unit and stop.before_chunk(pace.seconds_per_unit * work):
                break  # never before the run's first chunk: each run makes some progress
            chunk_began = time.perf_counter()
            generator = image_generator(args.seed, chunk[0], device)
            images, labels = dataset.batch(torch.tensor(chunk))
            images, labels = images.to(device), labels.to(device)
            began = time.perf_counter()
            if lacking[0].attack == "clean":
                adversarial = {rung: images for rung in lacking}
            else:
                strongest = max(lacking, key=lambda rung: rung.restarts)
                by_restarts = build_attack(strongest, model, args).after_restarts(
                    images, labels, [rung.restarts for rung in lacking], generator)
                adversarial = {rung: by_restarts[rung.restarts] for rung in lacking}
            shared = (time.perf_counter() - began) / len(chunk)
            for rung in lacking:
                results = files[rung]
                for idx, image, label in zip(chunk, adversarial[rung], labels.tolist()):
                    if idx in results.done:
                        continue
                    began = time.perf_counter()
                    label_predicted = predict(model, image, args.sigma, args.n, args.alpha,
                                              args.batch, predict_generator(args.seed, idx, device))
                    results.append((idx, label, label_predicted, int(label_predicted == label),
                                    f"{shared + time.perf_counter() - began:.4f}"))
            pace.seconds_per_unit = (time.perf_counter() - chunk_began) / work
    return {rung: rung_counts(args.out_dir / rung.file_name, indices) for rung in group}


def rung_counts(path: Path, indices: list[int]) -> tuple[int, int]:
    """(correct, images) of a rung's file over the selected images."""
    selected = set(indices)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t")
                if int(row["idx"]) in selected]
    return sum(int(row["correct"]) for row in rows), len(rows)


def verdict(accuracy: dict[Rung, tuple[int, int]], eot_samples: list[int], steps: list[int],
            restarts: list[int]) -> tuple[bool | None, list[str]]:
    """Whether robust accuracy stopped falling at the strongest EOT rung, and why.

    Returns:
        (converged, lines): converged is None when no axis has two values to compare.
    """
    grid = {"m": sorted({1, *eot_samples}), "steps": sorted(set(steps)),
            "restarts": sorted(set(restarts))}
    strongest = attack_rung(grid["m"][-1], grid["steps"][-1], grid["restarts"][-1])
    correct, total = accuracy[strongest]
    low, high = accuracy_interval(correct, total)
    half_width = (high - low) / 2
    lines = [f"strongest rung: {strongest.label}: {correct / total:.3f} "
             f"[{low:.3f}, {high:.3f}], half-width {100 * half_width:.1f} points"]
    converged: bool | None = None
    for axis, values in grid.items():
        if len(values) < 2:
            continue
        lower = {"m": attack_rung(values[-2], strongest.steps, strongest.restarts),
                 "steps": attack_rung(strongest.eot_samples, values[-2], strongest.restarts),
                 "restarts": attack_rung(strongest.eot_samples, strongest.steps, values[-2])}[axis]
        fall = accuracy[lower][0] / accuracy[lower][1] - correct / total
        falling = fall > half_width
        converged = (converged is not False) and not falling
        lines.append(f"  {axis} {values[-2]} -> {values[-1]}: falls by {100 * fall:+.1f} points, "
                     f"{'still falling' if falling else 'within the half-width'}")
    return converged, lines


def model_name(model: str) -> str:
    """A checkpoint's file name without .pt, or a shipped model's name as given."""
    return Path(model).name.removesuffix(".pt")


def plot(summary: list[tuple[Rung, int, int]], args: argparse.Namespace, path: Path) -> None:
    """Robust accuracy (95% CP bars) against noise draws per step, one line per (steps,
    restarts); m = 1 is naive PGD."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    lines: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for rung, correct, total in summary:
        if rung.attack == "clean":
            axes.axhline(correct / total, color="grey", linestyle=":", label="no attack")
        else:
            lines.setdefault((rung.steps, rung.restarts), []).append(
                (rung.eot_samples, correct, total))
    for number, ((steps, restarts), points) in enumerate(sorted(lines.items())):
        points.sort()
        shift = 1.04 ** (number - (len(lines) - 1) / 2)  # keeps the bars apart on a log axis
        draws = [m * shift for m, _, _ in points]
        values = [correct / total for _, correct, total in points]
        bounds = [accuracy_interval(correct, total) for _, correct, total in points]
        errors = [[v - low for v, (low, _) in zip(values, bounds)],
                  [high - v for v, (_, high) in zip(values, bounds)]]
        axes.errorbar(draws, values, yerr=errors, marker="o", capsize=3,
                      label=f"{steps} steps, {restarts} restart{'s' if restarts > 1 else ''}")
    ticks = sorted({m for points in lines.values() for m, _, _ in points})
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, [("1\n(naive)" if m == 1 else str(m)) for m in ticks])
    axes.minorticks_off()
    axes.set_xlabel("noise draws per step (EOT)")
    axes.set_ylabel("robust accuracy, smoothed classifier")
    axes.set_title(f"{model_name(args.model)}: {args.norm} eps {args.eps:.4g}, sigma {args.sigma},"
                   f" {summary[0][2]} images, 95% CP", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)



def print_group(group: list[Rung], accuracy: dict[Rung, tuple[int, int]],
                seconds: float) -> None:
    """The table's lines of one group of rungs, with the seconds the group took."""
    for member in group:
        correct, total = accuracy[member]
        low, high = accuracy_interval(correct, total)
        m, steps, restarts = ((str(v) if member.attack != "clean" else "-")
                              for v in (member.eot_samples, member.steps, member.restarts))
        print(f"{member.attack:<6} {m:>4} {steps:>5} {restarts:>8} {member.cost:>7} "
              f"{f'{correct}/{total}':>9} {correct / total:>8.3f}  [{low:.3f}, {high:.3f}]  "
              f"{seconds:>8.1f}", flush=True)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint or shipped model name")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--skip", type=int, default=20, help="every skip-th test image (20)")
    parser.add_argument("--max", type=int, default=None, help="images below this index only")
    parser.add_argument("--norm", choices=NORMS, default="linf")
    parser.add_argument("--eps", type=parse_epsilon, default=8 / 255, help="radius (8/255)")
    parser.add_argument("--eot-samples", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--objective", choices=OBJECTIVES, default="expectation",
                        help="EOT's loss: mean cross-entropy (default) or SmoothAdv's; the rung "
                        "files record it, so the other one needs another --out-dir")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--n", type=int, default=1000, help="predict samples (1000)")
    parser.add_argument("--alpha", type=float, default=0.001, help="predict's alpha (0.001)")
    parser.add_argument("--batch", type=int, default=1000, help="predict batch (1000)")
    parser.add_argument("--attack-batch", type=int, default=50, help="images attacked at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", type=Path, default=Path("results/attack_ladder"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace rung files made with other settings")
    parser.add_argument("--channels-last", action="store_true",
                        help="NHWC memory format (faster on CPUs; the rung files record it)")
    parser.add_argument("--time-limit", type=parse_duration, default=None,
                        help="stop cleanly before a chunk of images that would end past this "
                             "much wall time (seconds, or 45m, 5.5h); rerun to resume")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return run(args)
    except ValueError as error:  # a missing model or data set, a results conflict
        print(f"attack_ladder: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    matplotlib.use("Agg")  # a script's choice; the library never picks a backend
    device = resolve_device(args.device)
    model = accelerate(load_classifier(args.model).to(device), FastOptions(args.channels_last))
    dataset = load_dataset(args.dataset, "test", args.data_root)
    indices = selected_indices(len(dataset), args.skip, args.max)
    rungs = ladder(args.eot_samples, args.steps, args.restarts)
    passes = sum(max(1, m) * steps for m, steps in {(r.eot_samples, r.steps) for r in rungs
                                                     if r.attack != "clean"}) * max(args.restarts)
    print(f"{args.model} on {len(indices)} {args.dataset} test images, {args.norm} eps "
          f"{args.eps:.4g}, sigma {args.sigma}; predict n={args.n}, alpha={args.alpha} "
          f"(abstain counts as wrong); {passes} forward-backward passes per "
          "image in all", flush=True)
    header = f"{'attack':<6} {'m':>4} {'steps':>5} {'restarts':>8} {'cost':>7} " \
             f"{'correct':>9} {'accuracy':>8}  95% CI          seconds"
    print(header)
    print("-" * len(header), flush=True)
    accuracy: dict[Rung, tuple[int, int]] = {}
    pace = Pace()
    with StopSignal(args.time_limit, time.monotonic) as stop:
        for rung in rungs:  # by cost; a rung's group (its restart counts) runs together
            if rung in accuracy:
                continue
            group = [other for other in rungs if (other.attack, other.eot_samples, other.steps)
                     == (rung.attack, rung.eot_samples, rung.steps)]
            began = time.perf_counter()
            accuracy.update(run_group(group, model, dataset, indices, args, device, stop, pace))
            if stop.reason is not None:
                print(f"stopped at {rung.label} ({stop.reason}); {args.out_dir} holds the rungs "
                      "so far: rerun the same command to resume", flush=True)
                return 0
            print_group(group, accuracy, time.perf_counter() - began)
    summary = [(rung, *accuracy[rung]) for rung in rungs]
    converged, lines = verdict(accuracy, args.eot_samples, args.steps, args.restarts)
    print("\n".join(lines))
    print({True: "converged", False: "not converged",
           None: "cannot tell: every axis has one value"}[converged])
    rows = ["\t".join(SUMMARY_COLUMNS)]
    for rung, correct, total in summary:
        low, high = accuracy_interval(correct, total)
        rows.append("\t".join(str(v) for v in (rung.attack, rung.eot_samples, rung.steps,
                                                  rung.restarts, rung.cost, total, correct,
                                                  f"{correct / total:.4f}", f"{low:.4f}",
                                                  f"{high:.4f}")))
    write_atomically(args.out_dir / "ladder.tsv", "\n".join(rows) + "\n")
    plot(summary, args, args.out_dir / "ladder.png")
    print(f"wrote {args.out_dir / 'ladder.tsv'} and {args.out_dir / 'ladder.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
