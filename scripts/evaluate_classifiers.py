"""Accuracy of a SimCLR encoder and of base classifiers on a test split, as a Markdown table.

- The encoder: the linear probe of Chen et al. (2020, SimCLR, Section 4.1): logistic regression
  on the frozen encoder's features of the training split, accuracy on the test split
  (:func:`encoders.evaluate.probe_accuracy`), beside the same probe on an encoder of the same
  architecture with random weights.
- Each classifier: clean accuracy, and noisy accuracy, the mean over --draws Gaussian draws at
  --sigma per test image (:func:`encoders.evaluate.noisy_accuracy`): what the base classifier
  of randomized smoothing sees.

Example:
    python scripts/evaluate_classifiers.py --dataset cifar10-jpeg --data-root DIR --sigma 0.25 \\
        --encoder runs/cifar10/simclr-r20.pt --classifiers cifar10-cohen-sigma0.25 \\
        cifar10-rush-sigma0.25 --out docs/cifar10/results/accuracy_sigma0.25.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from encoders.backbones import build_encoder
from encoders.checkpoint import read_metadata
from encoders.data import load_dataset
from encoders.evaluate import features, noisy_accuracy, probe_accuracy
from encoders.loading import load_classifier
from encoders.pretrain import load_simclr
from encoders.training import resolve_device


def probe_rows(encoder_path: str, dataset: str, root: str | None, seed: int) -> list[str]:
    """Table rows: the linear probe of the SimCLR encoder and of a random one."""
    train, test = load_dataset(dataset, "train", root), load_dataset(dataset, "test", root)
    simclr, metadata = load_simclr(encoder_path), read_metadata(encoder_path)
    torch.manual_seed(seed)
    random_encoder = build_encoder(metadata["architecture"], metadata["input_shape"][0]).eval()
    rows = []
    for name, encoder in (("SimCLR encoder", simclr.encoder), ("random encoder", random_encoder)):
        def embed(pixels: torch.Tensor, encoder: torch.nn.Module = encoder) -> torch.Tensor:
            return encoder(simclr.normalize(pixels))

        cpu = torch.device("cpu")
        score = probe_accuracy(features(embed, train, cpu), train.labels,
                               features(embed, test, cpu), test.labels)
        rows.append(f"| linear probe, {name} | {100 * score:.2f} | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--encoder", help="an encoders-pretrain checkpoint to probe")
    parser.add_argument("--classifiers", nargs="*", default=[],
                        help="checkpoints or shipped names")
    parser.add_argument("--draws", type=int, default=10, help="noise draws per image (10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: stdout only)")
    args = parser.parse_args(argv)
    lines = [f"Test split of {args.dataset}; noisy: mean over {args.draws} draws of "
             f"N(0, {args.sigma}^2 I) per image ({len(args.classifiers)} classifiers).", "",
             "| model | clean accuracy (%) | noisy accuracy (%) |", "|---|---|---|"]
    if args.encoder:
        lines += probe_rows(args.encoder, args.dataset, args.data_root, args.seed)
    device = resolve_device(args.device)
    test = load_dataset(args.dataset, "test", args.data_root)
    for name in args.classifiers:
        started = time.perf_counter()
        model = load_classifier(name).to(device)
        generator = torch.Generator(device).manual_seed(args.seed)
        clean = noisy_accuracy(model, test, 0.0, 1, generator)
        noisy = noisy_accuracy(model, test, args.sigma, args.draws, generator)
        lines.append(f"| {Path(name).stem} | {100 * clean:.2f} | {100 * noisy:.2f} |")
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
