"""Overhead of ``certify`` over the bare forward pass of its base classifier.

For each model and batch size, times alternately (a) the model alone on pre-made noisy batches
and (b) ``certify`` drawing the same number of samples (noise generation, argmax and counting
included), and prints the throughputs in noise samples per second and their ratio, medians over
the repeats. A ratio of 1.0 means the certifier runs at the physical limit of the model.

Usage:
    python benchmarks/certify_overhead.py                       # CPU, both models
    python benchmarks/certify_overhead.py --device cuda --resnet-samples 100000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from certify import certify
from encoders.backbones import build_classifier

N0 = 100


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(run: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def measure(model: torch.nn.Module, shape: tuple[int, ...], samples: int, batch: int,
            repeats: int, device: torch.device) -> tuple[float, float]:
    """Median throughputs (samples/s) of the bare model and of certify, measured alternately."""
    x = torch.rand(shape, device=device)
    total = N0 + samples
    sizes = [batch] * (total // batch) + ([total % batch] if total % batch else [])
    batches = [x + 0.25 * torch.randn((size, *shape), device=device) for size in sizes]

    def bare() -> None:
        with torch.inference_mode():
            for noisy in batches:
                model(noisy).argmax(1)

    def certifier() -> None:
        certify(model, x, 0.25, N0, samples, 0.001, batch)

    bare()
    certifier()  # warm-up
    bare_rates, certify_rates = [], []
    for _ in range(repeats):
        bare_rates.append(total / seconds(bare, device))
        certify_rates.append(total / seconds(certifier, device))
    return statistics.median(bare_rates), statistics.median(certify_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--small-samples", type=int, default=100_000)
    parser.add_argument("--resnet-samples", type=int, default=1_000)
    parser.add_argument("--small-batches", type=int, nargs="+", default=[100, 500, 1000, 5000])
    parser.add_argument("--resnet-batches", type=int, nargs="+", default=[50, 100, 250])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    setups = [
        ("small_cnn", (1, 8, 8), args.small_samples, args.small_batches),
        ("resnet18", (3, 32, 32), args.resnet_samples, args.resnet_batches),
    ]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"medians of {args.repeats} alternating repeats, n0={N0}")
    print(f"{'model':<10} {'input':<10} {'batch':>6} {'bare samples/s':>15} "
          f"{'certify samples/s':>18} {'ratio':>6}")
    for architecture, shape, samples, batch_sizes in setups:
        model = build_classifier(architecture, 10, shape, [0.5] * shape[0], [0.25] * shape[0])
        model = model.to(device).eval()
        rows = []
        for batch in batch_sizes:
            bare, certifying = measure(model, shape, samples, batch, args.repeats, device)
            rows.append((certifying, batch, certifying / bare))
            print(f"{architecture:<10} {'x'.join(map(str, shape)):<10} {batch:>6} {bare:>15.0f} "
                  f"{certifying:>18.0f} {certifying / bare:>6.3f}")
        fastest, batch, ratio = max(rows)
        print(f"{architecture:<10} at its fastest batch size ({batch}): {fastest:.0f} samples/s, "
              f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
