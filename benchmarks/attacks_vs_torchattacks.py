"""Our PGD and EOT-PGD beside torchattacks' on the same model, images and settings.

Every row attacks the same images with both libraries under the same threat model and optimiser
(steps, step size 2.5 * eps / steps, one random start, no restarts), once per seed, and prints
the median robust accuracy over seeds of each library, [min, max] over seeds, and the
difference of the medians in points. The target:
ours at most 0.5 points above torchattacks in every row (a lower number is a stronger attack).

- Base classifier f: our ``PGD`` against torchattacks ``PGD`` (L-inf) and ``PGDL2`` (L2);
  robust accuracy is f's accuracy on the attacked images.
- Smoothed classifier g at sigma: our ``NaiveSmoothedPGD`` (one noise draw per step) and
  ``EOTPGD`` (m draws per step, with each of its objectives: "expectation", the default and
  torchattacks' own, and SmoothAdv's "smoothed") against torchattacks ``EOTPGD`` with
  ``eot_iter`` 1 and m, wrapped around the noisy base classifier (a module that adds
  N(0, sigma^2 I) noise before f).
  torchattacks' EOTPGD is L-inf only, so these rows are L-inf. Robust accuracy is g's
  Monte Carlo prediction on the attacked images: the majority vote of f over --votes noise draws
  (no abstention), with the same noise for both libraries' images at a given seed. These rows
  cost about m times more, so they run on the first --smoothed-max images (120 by default).

Seeding: our attacks draw from a torch.Generator on the model's device seeded with the seed,
torchattacks from torch's global generator seeded with the same seed, so where the two
algorithms consume random numbers in the same order (the random starts of PGD and PGDL2, one
noise draw per step) they see the same numbers and a row compares the algorithms alone; EOT
with m > 1 lays its draws out differently, so those rows also differ by chance.

torchattacks is a benchmark dependency only (``pip install -e .[bench]``); the library never
imports it.

Usage:
    python benchmarks/attacks_vs_torchattacks.py                          # shipped digits model
    python benchmarks/attacks_vs_torchattacks.py --seeds 2 --max 120      # a quicker look
    python benchmarks/attacks_vs_torchattacks.py --model ckpt.pt --dataset cifar10 \\
        --data-root data --linf-eps 8/255 --l2-eps 0.25 0.5 --sigma 0.25 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from certify.attacks import EOTPGD, PGD, NaiveSmoothedPGD, PGDConfig
from certify.attacks.pgd import parse_epsilon
from certify.attacks.smoothed import OBJECTIVES
from encoders import load_classifier
from encoders.data import load_dataset

TARGET_POINTS = 0.5


class NoisyClassifier(torch.nn.Module):
    """f(x + e), e ~ N(0, sigma^2 I) drawn afresh at every call from torch's global generator.

    Build it in eval mode: torchattacks puts a model that was in training mode back into
    training mode after each attack, and with it the wrapped f (batch-norm statistics).
    """

    def __init__(self, base: torch.nn.Module, sigma: float) -> None:
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.base(images + self.sigma * torch.randn_like(images))


@dataclass(frozen=True)
class Row:
    """One comparison: both libraries' attacks (seed -> adversarial images) and the evaluation."""

    name: str
    eps: float
    ours: Callable[[int], torch.Tensor]
    theirs: Callable[[int], torch.Tensor]
    labels: torch.Tensor  # (B,) of the images both attack
    smoothed: bool


def base_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def vote_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  sigma: float, votes: int, seed: int, chunk: int = 50) -> float:
    """Accuracy of the majority vote of f over ``votes`` noise draws per image (no abstention)."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), chunk):
            batch = images[start:start + chunk]
            repeated = batch.repeat_interleave(votes, dim=0)  # (b*votes, C, H, W), image-major
            noise = torch.randn(repeated.shape, generator=generator, device=images.device)
            logits = model(repeated + sigma * noise)  # (b*votes, K)
            predictions = logits.argmax(1).view(len(batch), votes)  # (b, votes)
            counts = torch.nn.functional.one_hot(predictions, logits.shape[1]).sum(1)  # (b, K)
            winners = counts.argmax(1)  # (b,), ties to the lower class
            correct += int((winners == labels[start:start + chunk]).sum())
    return correct / len(images)


def build_rows(args: argparse.Namespace, model: torch.nn.Module, images: torch.Tensor,
               labels: torch.Tensor) -> list[Row]:
    import torchattacks

    def row(name: str, eps: float, ours: PGD, theirs: torchattacks.Attack,
            smoothed: bool) -> Row:
        count = min(args.smoothed_max, len(images)) if smoothed else len(images)
        batch, truth = images[:count], labels[:count]

        def run_ours(seed: int) -> torch.Tensor:
            return ours(batch, truth, torch.Generator(device=batch.device).manual_seed(seed))

        def run_theirs(seed: int) -> torch.Tensor:
            torch.manual_seed(seed)
            return theirs(batch, truth)

        return Row(name, eps, run_ours, run_theirs, truth, smoothed)

    steps, rows = args.steps, []
    for eps in args.linf_eps:
        config, alpha = PGDConfig(norm="linf", eps=eps, steps=steps), 2.5 * eps / steps
        rows.append(row("f, PGD L-inf", eps, PGD(model, config),
                        torchattacks.PGD(model, eps, alpha, steps, random_start=True), False))
    for eps in args.l2_eps:
        config, alpha = PGDConfig(norm="l2", eps=eps, steps=steps), 2.5 * eps / steps
        rows.append(row("f, PGD L2", eps, PGD(model, config),
                        torchattacks.PGDL2(model, eps, alpha, steps, random_start=True), False))
    noisy = NoisyClassifier(model, args.sigma).eval()
    m = args.eot_samples
    for eps in args.smoothed_eps:
        config, alpha = PGDConfig(norm="linf", eps=eps, steps=steps), 2.5 * eps / steps
        rows.append(row("g, naive PGD L-inf (m=1)", eps,
                        NaiveSmoothedPGD(model, args.sigma, config),
                        torchattacks.EOTPGD(noisy, eps, alpha, steps, eot_iter=1), True))
        for objective in OBJECTIVES:
            rows.append(row(f"g, EOT-PGD L-inf (m={m}, {objective})", eps,
                            EOTPGD(model, args.sigma, m, config, objective),
                            torchattacks.EOTPGD(noisy, eps, alpha, steps, eot_iter=m), True))
    return rows



def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", default="digits-sigma0.25",
                        help="checkpoint or shipped model name (default digits-sigma0.25)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--max", type=int, default=None, help="first MAX test images (all)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--linf-eps", type=parse_epsilon, nargs="*", default=[0.05, 0.1])
    parser.add_argument("--l2-eps", type=parse_epsilon, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--sigma", type=float, default=0.25, help="noise of the smoothed rows")
    parser.add_argument("--smoothed-eps", type=parse_epsilon, nargs="*", default=[0.2],
                        help="L-inf radii of the smoothed-classifier rows")
    parser.add_argument("--smoothed-max", type=int, default=120,
                        help="first images of the smoothed-classifier rows (120)")
    parser.add_argument("--eot-samples", type=int, default=8, help="noise draws per EOT step")
    parser.add_argument("--votes", type=int, default=100,
                        help="noise draws of the majority vote that evaluates g")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    device = torch.device(args.device)
    model = load_classifier(args.model).to(device)
    dataset = load_dataset(args.dataset, "test", args.data_root)
    count = len(dataset) if args.max is None else min(args.max, len(dataset))
    images, labels = dataset.batch(torch.arange(count))
    images, labels = images.to(device), labels.to(device)
    print(f"{args.model} on {count} {args.dataset} test images; {args.steps} steps of "
          f"2.5 eps / {args.steps}, one random start; medians over {args.seeds} seeds "
          f"[min, max]; g = majority vote of {args.votes} draws at sigma {args.sigma}")
    print(f"clean: f {base_accuracy(model, images, labels):.3f}, "
          f"g {vote_accuracy(model, images, labels, args.sigma, args.votes, 0):.3f}")
    header = (f"{'attack':<36} {'eps':>7} {'images':>6} {'ours':>21} {'torchattacks':>21} "
              f"{'diff':>6}  target")
    print(header)
    print("-" * len(header))
    for row in build_rows(args, model, images, labels):
        accuracy: dict[str, list[float]] = {"ours": [], "theirs": []}
        for seed in range(args.seeds):
            for library, attack in (("ours", row.ours), ("theirs", row.theirs)):
                adversarial = attack(seed)
                if model.training:
                    raise RuntimeError(f"{library} left the model in training mode ({row.name})")
                accuracy[library].append(
                    vote_accuracy(model, adversarial, row.labels, args.sigma, args.votes, seed)
                    if row.smoothed else base_accuracy(model, adversarial, row.labels))
        ours, theirs = (statistics.median(accuracy[key]) for key in ("ours", "theirs"))
        points = 100 * (ours - theirs)
        cells = [f"{statistics.median(v):.4f} [{min(v):.3f}, {max(v):.3f}]"
                 for v in accuracy.values()]
        verdict = "met" if points <= TARGET_POINTS else "MISSED"
        print(f"{row.name:<36} {row.eps:>7.4g} {len(row.labels):>6} {cells[0]:>21} "
              f"{cells[1]:>21} {points:>+6.2f}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
