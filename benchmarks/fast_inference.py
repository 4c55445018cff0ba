"""Throughput of the opt-in forward-pass speed-ups against plain fp32, measured in one run.

For each model and option set: forward throughput (noise samples per second, medians over
alternating repeats, at the batch size given) and its ratio to plain fp32; and, for the shipped
digits model, the agreement of the smoothed classifier's prediction (``predict``) with fp32's on
test images with the same noise.

Usage:
    python benchmarks/fast_inference.py                       # CPU
    python benchmarks/fast_inference.py --device cuda --batch 4000 --agreement-images 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from certify import predict
from certify.fast import FastOptions, accelerate
from certify.selection import image_generator
from encoders import load_classifier
from encoders.backbones import build_classifier
from encoders.data import load_dataset

OPTION_SETS = {
    "fp32": FastOptions(),
    "channels_last": FastOptions(channels_last=True),
    "bf16": FastOptions(bfloat16=True),
    "channels_last+bf16": FastOptions(channels_last=True, bfloat16=True),
    "compile": FastOptions(compile=True),
    "compile+channels_last+bf16": FastOptions(channels_last=True, bfloat16=True, compile=True),
}


def throughput(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch).argmax(1)
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
    return repeats * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--agreement-images", type=int, default=60)
    parser.add_argument("--agreement-n", type=int, default=1000)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    options = {name: o for name, o in OPTION_SETS.items()
               if not (args.skip_compile and o.compile)}
    print(f"device {device}, torch {torch.__version__}, batch {args.batch}, "
          f"medians of {args.rounds} alternating rounds")
    digits = load_classifier("digits-sigma0.25").to(device)
    torch.manual_seed(0)
    resnet = build_classifier("resnet18", 10, (3, 32, 32), [0.5] * 3, [0.25] * 3).to(device).eval()
    print(f"{'model':<10} {'options':<28} {'samples/s':>10} {'vs fp32':>8}")
    for name, model, shape, repeats in [("digits", digits, (1, 8, 8), 20),
                                        ("resnet18", resnet, (3, 32, 32), 2)]:
        if device.type == "cuda":
            repeats *= 3
        batch = torch.rand((args.batch, *shape), device=device)
        variants = {label: accelerate(model, o) for label, o in options.items()}
        for variant in variants.values():
            throughput(variant, batch, 1)  # warm-up, compilation included
        rates: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(args.rounds):
            for label, variant in variants.items():
                rates[label].append(throughput(variant, batch, repeats))
        base = statistics.median(rates["fp32"])
        for label in variants:
            rate = statistics.median(rates[label])
            print(f"{name:<10} {label:<28} {rate:>10.0f} {rate / base:>8.2f}", flush=True)
    test = load_dataset("digits", "test")
    count = min(args.agreement_images, len(test))
    for label, o in options.items():
        if o == FastOptions():
            continue
        variant = accelerate(digits, o)
        agree = 0
        for idx in range(count):
            x = test[idx][0]
            plain = predict(digits, x, 0.25, args.agreement_n, 0.001, args.batch,
                            image_generator(0, idx, device))
            fast = predict(variant, x, 0.25, args.agreement_n, 0.001, args.batch,
                           image_generator(0, idx, device))
            agree += plain == fast
        print(f"digits smoothed prediction with {label}: agrees with fp32 on {agree}/{count} "
              f"images (n={args.agreement_n}, same noise)")


if __name__ == "__main__":
    main()
