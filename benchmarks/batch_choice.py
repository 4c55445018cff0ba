"""How long choosing the batch size takes, and how good the choice is.

``certify`` without ``--batch`` asks :func:`certify.fast.fastest_batch_size` for the fastest batch
size on the device. This measures, side by side in one run: the seconds from start to the first
image (loading the test split and choosing the batch), the batch sizes that --repeats choices pick,
then the time per image of ``certify`` at n = 10,000 with every candidate batch size on the same
images (the order of the batch sizes rotates from image to image, so a passing load spreads over
all of them), and the ratio of each chosen batch's median to the best fixed one's.

Usage:
    python benchmarks/batch_choice.py --dataset cifar10-jpeg --data-root DIR
    python benchmarks/batch_choice.py --dataset cifar10-jpeg --data-root DIR --model CHECKPOINT
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from certify import certify
from certify.fast import BATCH_CANDIDATES, fastest_batch_size
from encoders import load_classifier
from encoders.backbones import build_classifier
from encoders.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10-jpeg")
    parser.add_argument("--data-root")
    parser.add_argument("--model", help="checkpoint (default: a cifar_resnet20, random weights)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=5, help="choices made (5)")
    args = parser.parse_args()

    started = time.perf_counter()
    test = load_dataset(args.dataset, "test", args.data_root)
    loaded = time.perf_counter() - started
    if args.model:
        model = load_classifier(args.model)
    else:
        model = build_classifier("cifar_resnet20", test.num_classes, test.input_shape,
                                 (0.5,) * 3, (0.25,) * 3).eval()
    choices, choosing = [], []
    for _ in range(args.repeats):
        chose_at = time.perf_counter()
        choices.append(fastest_batch_size(model, tuple(test.input_shape)))
        choosing.append(time.perf_counter() - chose_at)
    print(f"{torch.get_num_threads()} threads; data loaded in {loaded:.1f} s; batch sizes chosen "
          f"{choices} in {', '.join(f'{t:.1f}' for t in choosing)} s: first image after "
          f"{loaded + statistics.median(choosing):.1f} s (median)")

    sizes = sorted(set(BATCH_CANDIDATES))
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    step = max(1, len(test) // args.images)
    for image_number, index in enumerate(range(0, step * args.images, step)):
        x, _ = test[index]
        rotation = image_number % len(sizes)
        for size in sizes[rotation:] + sizes[:rotation]:
            start = time.perf_counter()
            certify(model, x, args.sigma, 100, args.n, 0.001, size,
                    torch.Generator().manual_seed(index))
            seconds[size].append(time.perf_counter() - start)
    medians = {size: statistics.median(times) for size, times in seconds.items()}
    best = min(medians, key=lambda size: medians[size])
    print(f"time per image at n = {args.n}, median of {args.images} images:")
    for size in sizes:
        times = choices.count(size)
        mark = f" <- chosen {times} of {len(choices)} times" if times else ""
        print(f"  batch {size:>6}: {medians[size]:6.2f} s  ({medians[size] / medians[best]:.3f}x "
              f"the best){mark}")
    worst = max(medians[size] for size in choices) / medians[best]
    print(f"the worst choice is {worst:.3f}x the best fixed batch ({best})")


if __name__ == "__main__":
    main()
