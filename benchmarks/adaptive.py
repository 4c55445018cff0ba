"""Samples that sequential certification needs, against fixed n, Horvath et al. and Wald's limit.

On the same images, with each image's noise seeded by (seed, idx) as in the ``certify`` command
(so every rule sees the same noise draws), it certifies:

- fixed n (Cohen et al. 2019): n0 selection samples, then n = 100,000;
- per target radius r (``certify(..., radius=r)``, budget n, same alpha), with the Clopper-Pearson
  looks (``rule="clopper-pearson"``) and the betting confidence sequence (``rule="betting"``);
- per r, the three-stage schedule of Horvath et al. ("Boosting Randomized Smoothing with Variance
  Reduced Classifiers", ICLR 2022, adaptive sampling; their code's defaults): stages of 1,000,
  10,000 and 125,000 fresh samples (at n = 100,000; scaled with n), each after its own n0
  selection samples; stage i certifies if
  its one-sided Clopper-Pearson bound at alpha / 3 reaches Phi(r / sigma) (the union bound over
  the three stages spends alpha), and stages 1 and 2 give up if the upper bound at
  beta / 2 = 0.00005 stays below it;
- and the limit: Wald's approximate lower bound on the expected samples of any sequential test
  at level alpha, log(1 / alpha) / KL(pA || Phi(r / sigma)) (Bernoulli KL), with pA the fixed-n
  run's vote share of its candidate, capped at n.

It prints the mean noise samples per image (the n0 selection samples included: the Wald column
adds n0 to its bound, since every rule draws them before testing), the certified accuracy at r,
and the ratio of the betting rule's estimation samples to Wald's bound, over all images and over
those the fixed-n run certifies at r (where the bound limits every level-alpha test that certifies
them). Then the adaptive mode (``certify(..., adaptive=True, tolerance=...)``) of both rules, with
and without ``curve_radii`` = the curve's radii, against the fixed-n run: samples per image and
the whole certified accuracy curve.

Rows: linear ground-truth models (pA = Phi(d / sigma) exactly: images at distance d from the
hyperplane, pA evenly spread over [0.79, 0.99]), the shipped digits model, CIFAR-shaped ResNet-18s
trained briefly with noise on a synthetic 10-class data set (grey plus a faint smooth template
per class plus pixel noise; the fainter the templates, the smaller the radii; they need a GPU at
n = 100,000), and any checkpoint on any data set (``--model``, ``--dataset``). With
``--simulate`` only the fixed-n run uses the model; every other rule counts votes drawn from the
fixed-n run's vote share by :class:`VoteShares` from the same seeded noise (cheap on a CPU). A
``--model`` row's images are seeded by their index in the data set, as ``certify`` seeds them, so
``--certificates`` can hand it that command's results file for the fixed-n run: with
``--simulate`` the model then never runs.

Usage:
    python benchmarks/adaptive.py --linear-images 200 --digits-skip 0          # CPU: ~1 min
    python benchmarks/adaptive.py --linear-images 0 --digits-skip 12 --simulate  # CPU: ~8 min
    python benchmarks/adaptive.py --linear-images 0 --digits-skip 0 --simulate --n 10000 \
        --model M --dataset D --skip 50 --certificates M_n10000.tsv     # from certify's rows
    python benchmarks/adaptive.py --device cuda --batch 20000 --linear-images 200 --digits-skip 1
    python benchmarks/adaptive.py --device cuda --batch 20000 --linear-images 0 --digits-skip 0 \
        --cifar-images 50 --cifar-contrasts 0.05 --cifar-fast                      # GPU
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import norm

from certify import ABSTAIN, certify, sample_counts
from certify.fast import FastOptions, accelerate
from certify.guarantee import Certificate, clopper_pearson_lower, clopper_pearson_upper
from certify.results import differing_settings, read_rows, read_settings
from certify.selection import image_generator
from encoders import load_classifier
from encoders.backbones import build_classifier
from encoders.checkpoint import resolve
from encoders.data import load_dataset

N0 = 100
HORVATH_STAGES = (1_000, 10_000, 125_000)
HORVATH_BETA = 0.0001
"""Horvath et al.'s default error for giving up early (their ``--beta``)."""
CURVE_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The curve's radii unless --curve-radii says otherwise."""
TARGET_RULES = ("clopper-pearson", "horvath", "betting")


def adaptive_runs(curve_radii: tuple[float, ...]) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """(rule, curve_radii) of each adaptive run: both rules, without and with the curve's radii."""
    return (("clopper-pearson", ()), ("betting", ()), ("clopper-pearson", curve_radii),
            ("betting", curve_radii))


def adaptive_name(rule: str, curve_radii: tuple[float, ...]) -> str:
    return f"adaptive {rule}" + (" + curve radii" if curve_radii else "")


class LinearGroundTruth(torch.nn.Module):
    """f(x) = 1 if <w, x> > 0 else 0 with |w| = 1, as logits (0, <w, x>): under noise
    N(0, sigma^2 I) every vote is Bernoulli(Phi(<w, x> / sigma)), so pA is known exactly."""

    def __init__(self, shape: tuple[int, ...] = (1, 4, 4)) -> None:
        super().__init__()
        weight = torch.linspace(-1.0, 1.0, math.prod(shape)) + 0.3
        self.register_buffer("weight", weight / weight.norm())
        self.shape = shape

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        margin = batch.flatten(1) @ self.weight  # (B,)
        return torch.stack([torch.zeros_like(margin), margin], dim=1)  # (B, 2)

    def image_at(self, distance: float) -> torch.Tensor:
        return (distance * self.weight).view(self.shape)  # (1, 4, 4)


def linear_images(count: int, sigma: float) -> tuple[LinearGroundTruth, list]:
    """The linear model and ``count`` images (x, label 1) with pA evenly spread over
    [0.79, 0.99]: the midpoints of ``count`` equal slices."""
    model = LinearGroundTruth()
    shares = 0.79 + 0.2 * (np.arange(count) + 0.5) / count
    return model, [(model.image_at(sigma * float(norm.ppf(p))), 1) for p in shares]


def synthetic_cifar(count: int, seed: int, contrast: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 3, 32, 32) in [0, 1]: grey plus one smooth random template per class of
    amplitude ``contrast``, plus pixel noise; a lower contrast puts the classes closer in L2."""
    generator = torch.Generator().manual_seed(1234)  # the same ten templates for every split
    coarse = 2 * torch.rand(10, 3, 4, 4, generator=generator) - 1  # (10, 3, 4, 4)
    templates = 0.5 + contrast * torch.nn.functional.interpolate(
        coarse, size=32, mode="bilinear")  # (10, 3, 32, 32)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = templates[labels] + 0.1 * torch.randn(count, 3, 32, 32, generator=generator)
    return images.clamp(0, 1), labels


def train_briefly(device: torch.device, sigma: float, steps: int,
                  contrast: float) -> torch.nn.Module:
    """A CIFAR ResNet-18 trained for ``steps`` steps with Gaussian noise augmentation."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 10, (3, 32, 32), [0.5] * 3, [0.25] * 3).to(device)
    images, labels = synthetic_cifar(8192, seed=1, contrast=contrast)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(steps):
        chosen = torch.randint(0, len(images), (128,))
        batch = images[chosen].to(device)
        batch = batch + sigma * torch.randn_like(batch)  # (128, 3, 32, 32)
        loss = torch.nn.functional.cross_entropy(model(batch), labels[chosen].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def horvath_three_stage(model: torch.nn.Module, x: torch.Tensor, sigma: float, radius: float,
                        alpha: float, n: int, batch: int,
                        generator: torch.Generator) -> tuple[int, int]:
    """(label or ABSTAIN, noise samples drawn) of Horvath et al.'s adaptive sampling at r; their
    stages are for n = 100,000 and scale with n (for quick runs at a small n)."""
    threshold = norm.cdf(radius / sigma)
    samples = 0
    stages = [max(1, round(size * n / 100_000)) for size in HORVATH_STAGES]
    for stage, size in enumerate(stages):
        selection = sample_counts(model, x, sigma, N0, batch, generator)
        candidate = int(selection.argmax())
        votes = sample_counts(model, x, sigma, size, batch, generator, len(selection))
        count = int(votes[candidate])
        samples += N0 + size
        if clopper_pearson_lower(count, size, alpha / len(HORVATH_STAGES)) >= threshold:
            return candidate, samples
        last = stage == len(HORVATH_STAGES) - 1
        if not last and clopper_pearson_upper(
                count, size, HORVATH_BETA / (len(HORVATH_STAGES) - 1)) < threshold:
            break
    return ABSTAIN, samples


def bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats, for q in (0, 1)."""
    return sum(a * math.log(a / b) for a, b in ((p, q), (1 - p, 1 - q)) if a > 0)


def wald_bound(pA: float, threshold: float, alpha: float, n: int) -> float:
    """log(1 / alpha) / KL(pA || threshold), capped at the budget n."""
    divergence = bernoulli_kl(pA, threshold)
    return float(n) if divergence == 0 else min(float(n), math.log(1 / alpha) / divergence)


@dataclass
class Tally:
    """Sums over a row's images per (rule, radius): noise samples, certified images, images."""

    samples: dict = field(default_factory=dict)
    certified: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)

    def add(self, key: tuple, samples: float, certified: bool) -> None:
        self.samples[key] = self.samples.get(key, 0.0) + samples
        self.certified[key] = self.certified.get(key, 0) + int(certified)
        self.images[key] = self.images.get(key, 0) + 1


class VoteShares(torch.nn.Module):
    """Stands in for a model at one image x whose candidate class has vote share pA: it votes
    ``candidate`` when the noise's first coordinate is below PhiInv(pA) and ``other`` otherwise,
    so its votes are i.i.d. with P(candidate) = pA and follow the same seeded noise draws."""

    def __init__(self, x: torch.Tensor, sigma: float, pA: float, candidate: int,
                 other: int) -> None:
        super().__init__()
        self.register_buffer("corner", x.flatten()[0].clone())
        self.sigma, self.cut = sigma, float(norm.ppf(pA))
        self.candidate, self.other = candidate, other

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        noise = (batch.flatten(1)[:, 0] - self.corner) / self.sigma  # (B,) standard normal
        votes = torch.where(noise < self.cut, self.candidate, self.other)  # (B,)
        return torch.nn.functional.one_hot(votes, max(self.candidate, self.other) + 1).float()


def stand_in(fixed, x: torch.Tensor, label: int, sigma: float) -> VoteShares:
    """The fixed-n run's candidate with its vote share, every other vote to a wrong class (an
    abstaining run's candidate is taken to be wrong)."""
    candidate = fixed.label if fixed.label != ABSTAIN else (label + 1) % 10
    other = min({0, 1, 2} - {candidate, label})
    return VoteShares(x, sigma, fixed.count / fixed.samples, candidate, other)


def recorded_fixed_runs(path: str, args: argparse.Namespace,
                        labels: Mapping[int, int]) -> dict[int, Certificate]:
    """The fixed-n certificates of a ``certify`` results file, by image index.

    They stand in for the fixed-n run only if the file was made by fixed-n ``certify`` with this
    benchmark's model, data set, sigma, n0, n, alpha and seed (recorded in its settings file), so
    each row is the certificate that run would compute from the same seeded noise.

    Raises:
        ValueError: naming --certificates and what differs, the images it lacks, or a row
            whose label is not the image's in ``labels`` (index -> label).
    """
    recorded = read_settings(path)
    checkpoint = hashlib.sha256(resolve(args.model).read_bytes()).hexdigest()
    expected = {"command": "certify", "dataset": args.dataset, "checkpoint_sha256": checkpoint,
                "sigma": args.sigma, "n0": N0, "n": args.n, "alpha": args.alpha, "seed": args.seed}
    differences = [f"{key} {recorded.get(key)!r} (here {expected[key]!r})"
                   for key in differing_settings(recorded, expected)]
    if recorded.get("adaptive") or recorded.get("radius") is not None:
        differences.append("a sequential run (here fixed n)")
    if differences:
        raise ValueError(f"--certificates {path} were made with other settings: "
                         + ", ".join(differences))
    rows = {int(row["idx"]): row for row in read_rows(path)}
    missing = [idx for idx in labels if idx not in rows]
    if missing:
        raise ValueError(f"--certificates {path} lack {len(missing)} of the {len(labels)} "
                         f"images, the first {missing[0]}: finish that certify run first")
    mislabelled = [idx for idx, label in labels.items() if int(rows[idx]["label"]) != label]
    if mislabelled:
        raise ValueError(f"--certificates {path} give image {mislabelled[0]} the label "
                         f"{rows[mislabelled[0]]['label']}, the data set "
                         f"{labels[mislabelled[0]]}: they were made on other images")
    return {idx: Certificate(int(rows[idx]["predict"]), float(rows[idx]["radius"]),
                             float(rows[idx]["pA_lower"]), int(rows[idx]["count"]),
                             int(rows[idx]["samples"]))
            for idx in labels}


def measure(model: torch.nn.Module | None, images: list, indices: list[int],
            args: argparse.Namespace, device: torch.device,
            recorded: Mapping[int, Certificate] | None = None) -> tuple[Tally, float]:
    """Every rule on every image, each run from the generator seeded by (seed, the image's index
    in ``indices``); the fixed-n run is taken from ``recorded`` (index -> certificate) when given,
    else certified with ``model``."""
    tally = Tally()
    start = time.perf_counter()
    for idx, (x, label) in zip(indices, images):
        if recorded is not None:
            fixed = recorded[idx]
        else:
            assert model is not None
            fixed = certify(model, x, args.sigma, N0, args.n, args.alpha, args.batch,
                            image_generator(args.seed, idx, device))
        voter = stand_in(fixed, x, label, args.sigma).to(device) if args.simulate else model
        pA = fixed.count / fixed.samples
        for r in sorted({*args.curve_radii, *args.radii}):  # both tables compare with fixed n
            tally.add(("fixed", r), N0 + args.n, fixed.label == label and fixed.radius >= r)
        for r in args.radii:
            wald = wald_bound(pA, float(norm.cdf(r / args.sigma)), args.alpha, args.n)
            tally.add(("wald", r), N0 + wald, False)
            predicted, samples = horvath_three_stage(voter, x, args.sigma, r, args.alpha, args.n,
                                                     args.batch,
                                                     image_generator(args.seed, idx, device))
            tally.add(("horvath", r), samples, predicted == label)
            for rule in ("clopper-pearson", "betting"):
                cert = certify(voter, x, args.sigma, N0, args.n, args.alpha, args.batch,
                               image_generator(args.seed, idx, device), radius=r, rule=rule)
                tally.add((rule, r), N0 + cert.samples, cert.label == label and cert.radius >= r)
            if fixed.label == label and fixed.radius >= r:  # where Wald's bound is a true limit
                tally.add(("wald, certified", r), wald, False)
                tally.add(("betting, certified", r), cert.samples, False)
        for rule, curve_radii in adaptive_runs(args.curve_radii):
            cert = certify(voter, x, args.sigma, N0, args.n, args.alpha, args.batch,
                           image_generator(args.seed, idx, device), adaptive=True,
                           tolerance=args.tolerance, rule=rule, curve_radii=curve_radii)
            for r in args.curve_radii:
                tally.add((adaptive_name(rule, curve_radii), r), N0 + cert.samples,
                          cert.label == label and cert.radius >= r)
    return tally, time.perf_counter() - start


def target_rows(name: str, count: int, tally: Tally, radii: list[float]) -> list[str]:
    rows = []
    for r in radii:
        cells = []
        for rule in ("fixed", *TARGET_RULES):
            cells.append(f"{tally.samples[rule, r] / count:,.0f} "
                         f"({tally.certified[rule, r] / count:.3f})")
        wald = tally.samples["wald", r] / count
        betting_vs_wald = (tally.samples["betting", r] / count - N0) / (wald - N0)
        certified = tally.samples.get(("wald, certified", r))
        certified_ratio = (f"{tally.samples['betting, certified', r] / certified:.2f}x "
                           f"({tally.images['wald, certified', r]})" if certified else "-")
        fewest = min(tally.samples[rule, r] for rule in ("fixed", *TARGET_RULES)
                     ) == tally.samples["betting", r]
        rows.append(f"| {name} | {count} | {r:.2f} | " + " | ".join(cells)
                    + f" | {wald:,.0f} | {betting_vs_wald:.2f}x | {certified_ratio} "
                    f"| {'yes' if fewest else 'no'} |")
    return rows


def adaptive_rows(name: str, count: int, tally: Tally,
                  curve_radii: tuple[float, ...]) -> list[str]:
    rows = []
    first = curve_radii[0]  # a run draws the same samples whatever radius it is read at
    fixed_samples = tally.samples["fixed", first]
    for run in ("fixed", *(adaptive_name(*adaptive) for adaptive in adaptive_runs(curve_radii))):
        curve = [tally.certified[run, r] / count for r in curve_radii]
        gap = max(abs(tally.certified[run, r] - tally.certified["fixed", r]) / count
                  for r in curve_radii)
        rows.append(f"| {name} | {count} | {run} | {tally.samples[run, first] / count:,.0f} | "
                    f"{fixed_samples / tally.samples[run, first]:.1f}x | "
                    + " | ".join(f"{value:.3f}" for value in curve) + f" | {100 * gap:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.25, 0.5],
                        help="target radii of the first table")
    parser.add_argument("--curve-radii", type=float, nargs="+", default=list(CURVE_RADII),
                        help="the radii of the adaptive mode's curve, its curve_radii "
                             "(default 0 0.25 0.5 0.75 1)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--linear-images", type=int, default=100, help="0 skips the linear row")
    parser.add_argument("--digits-skip", type=int, default=6,
                        help="every k-th digits test image (0 skips digits)")
    parser.add_argument("--digits-start", type=int, default=0, help="first digits test image")
    parser.add_argument("--simulate", action="store_true",
                        help="run only fixed n on the models; every other rule counts votes "
                             "drawn with the fixed-n run's vote share from the same seeded noise "
                             "(VoteShares: cheap on a CPU; the rules see the same statistics)")
    parser.add_argument("--cifar-images", type=int, default=0, help="0 skips the ResNet-18")
    parser.add_argument("--cifar-train-steps", type=int, default=300)
    parser.add_argument("--cifar-contrasts", type=float, nargs="+", default=[0.05],
                        help="template amplitudes of the synthetic classes, one model each")
    parser.add_argument("--cifar-fast", action="store_true",
                        help="run the ResNet-18s with channels_last and bfloat16 (all rules)")
    parser.add_argument("--model", help="a checkpoint to add as a row (with --dataset)")
    parser.add_argument("--dataset", help="its data set, e.g. cifar10 (test split)")
    parser.add_argument("--data-root", help="folder of --dataset")
    parser.add_argument("--skip", type=int, default=20, help="every k-th image of --dataset")
    parser.add_argument("--certificates",
                        help="a fixed-n certify results file of --model on these images, made "
                             "with the same settings: its rows are the fixed-n run (with "
                             "--simulate the model is not run at all)")
    args = parser.parse_args(argv)
    args.curve_radii = tuple(sorted(set(args.curve_radii)))
    if args.curve_radii[0] < 0:
        parser.error(f"--curve-radii must be at least 0, got {args.curve_radii[0]}")
    if args.certificates and not args.model:
        parser.error("--certificates needs the --model (and --dataset) that made them")
    device = torch.device(args.device)

    # (name, images, the index of each (its generator's seed), model, recorded fixed-n runs)
    rows: list[tuple[str, list, list[int], torch.nn.Module | None,
                     dict[int, Certificate] | None]] = []
    if args.linear_images:
        model, images = linear_images(args.linear_images, args.sigma)
        rows.append(("linear, pA in [0.79, 0.99]", images, list(range(len(images))),
                     model.to(device), None))
    if args.digits_skip:
        test = load_dataset("digits", "test")
        chosen = range(args.digits_start, len(test), args.digits_skip)
        images = [(test[i][0], int(test[i][1])) for i in chosen]
        rows.append(("digits small CNN", images, list(range(len(images))),
                     load_classifier(f"digits-sigma{args.sigma:.2f}").to(device), None))
    for contrast in args.cifar_contrasts if args.cifar_images else []:
        model = train_briefly(device, args.sigma, args.cifar_train_steps, contrast)
        if args.cifar_fast:
            model = accelerate(model, FastOptions(channels_last=True, bfloat16=True))
        pixels, labels = synthetic_cifar(args.cifar_images, seed=2, contrast=contrast)
        images = [(pixels[i], int(labels[i])) for i in range(args.cifar_images)]
        rows.append((f"CIFAR-shaped ResNet-18, contrast {contrast:g}", images,
                     list(range(len(images))), model, None))
    if args.model:
        test = load_dataset(args.dataset, "test", args.data_root)
        chosen = list(range(0, len(test), args.skip))  # seeded as the certify command seeds them
        images = [(test[i][0], int(test[i][1])) for i in chosen]
        recorded = None
        if args.certificates:
            try:
                recorded = recorded_fixed_runs(args.certificates, args, {
                    idx: label for idx, (_, label) in zip(chosen, images)})
            except ValueError as error:
                parser.error(str(error))
        model = None
        if recorded is None or not args.simulate:  # simulated rules need only the vote shares
            model = load_classifier(args.model).to(device)
            if args.cifar_fast:
                model = accelerate(model, FastOptions(channels_last=True, bfloat16=True))
        rows.append((f"{args.model} on {args.dataset}", images, chosen, model, recorded))

    print(f"n0={N0}, n={args.n}, alpha={args.alpha}, sigma={args.sigma}, "
          f"tolerance={args.tolerance}, device {device}"
          + (", votes of all but fixed n simulated" if args.simulate else ""), flush=True)
    for name, images, indices, model, recorded in rows:
        tally, seconds = measure(model, images, indices, args, device, recorded)
        report(name, len(images), tally, args)
        sums = {part: {str(key): value for key, value in table.items()}
                for part, table in vars(tally).items()}  # to pool runs over other images
        print(f"<!-- {name}: {len(images)} images, {seconds:.0f} s on {device}; sums "
              f"{json.dumps(sums)} -->", flush=True)


def report(name: str, count: int, tally: Tally, args: argparse.Namespace) -> None:
    """Both tables for one row, printed as soon as it is measured."""
    print(f"\n{name}, target radius: mean noise samples per image (certified accuracy at r)\n")
    print("| model | images | r | fixed n | CP looks | Horvath 3-stage | betting CS "
          "| Wald bound + n0 | betting / Wald | same, on the images fixed n certifies (count) "
          "| betting fewest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(target_rows(name, count, tally, args.radii)))
    print(f"\n{name}, adaptive mode (tolerance {args.tolerance}): samples per image and "
          "certified accuracy at r\n")
    print("| model | images | run | samples/image | fewer than fixed | "
          + " | ".join(f"r = {r:.2f}" for r in args.curve_radii) + " | max diff (points) |")
    print("|---|---|---|---|---|" + "---|" * len(args.curve_radii) + "---|")
    print("\n".join(adaptive_rows(name, count, tally, args.curve_radii)))


if __name__ == "__main__":
    main()
