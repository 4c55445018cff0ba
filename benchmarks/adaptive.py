"""Samples needed by target-radius certification against fixed-n certification, side by side.

For every image, certifies once at fixed n (Cohen et al. 2019) and once per target radius r with
the sequential mode (``certify(..., radius=r)``, same n as budget, same alpha), each image's noise
seeded by (seed, idx) as in the ``certify`` command, and prints mean noise samples per image
(selection n0 included) and certified accuracy at r for both.

Two models: the shipped digits sigma=0.25 model on its whole test split, and a CIFAR-shaped
ResNet-18 trained briefly with Gaussian noise augmentation on a synthetic 10-class CIFAR-sized
data set (grey plus a faint smooth template per class, plus pixel noise; the fainter the
templates, the closer the classes and the smaller the radii), which needs a GPU at n = 100,000.

Usage:
    python benchmarks/adaptive.py                                   # digits only (CPU: ~40 min)
    python benchmarks/adaptive.py --device cuda --cifar-images 30 --cifar-fast  # both, on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch

from certify import certify
from certify.cli.loading import image_generator
from certify.fast import FastOptions, accelerate
from encoders import load_classifier
from encoders.backbones import build_classifier
from encoders.data import load_dataset

N0 = 100


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


def compare(name: str, model: torch.nn.Module, images: list[tuple[torch.Tensor, int]],
            args: argparse.Namespace, device: torch.device) -> list[str]:
    fixed_correct = {r: 0 for r in args.radii}
    target_correct = {r: 0 for r in args.radii}
    target_samples = {r: 0 for r in args.radii}
    fixed_samples = 0
    start = time.perf_counter()
    for idx, (x, label) in enumerate(images):
        cert = certify(model, x, args.sigma, N0, args.n, args.alpha, args.batch,
                       image_generator(args.seed, idx, device))
        fixed_samples += N0 + cert.samples
        for r in args.radii:
            fixed_correct[r] += cert.label == label and cert.radius >= r
            quick = certify(model, x, args.sigma, N0, args.n, args.alpha, args.batch,
                            image_generator(args.seed, idx, device), radius=r)
            target_samples[r] += N0 + quick.samples
            target_correct[r] += quick.label == label and quick.radius >= r
    elapsed = time.perf_counter() - start
    count = len(images)
    rows = []
    for r in args.radii:
        fixed_accuracy, target_accuracy = fixed_correct[r] / count, target_correct[r] / count
        rows.append(
            f"| {name} | {count} | {r:.2f} | {fixed_samples / count:,.0f} | {fixed_accuracy:.3f} "
            f"| {target_samples[r] / count:,.0f} | {target_accuracy:.3f} "
            f"| {fixed_samples / target_samples[r]:.1f}x "
            f"| {100 * (target_accuracy - fixed_accuracy):+.1f} |")
    rows.append(f"<!-- {name}: {elapsed:.0f} s on {device} -->")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits-images", type=int, default=360, help="0 skips digits")
    parser.add_argument("--cifar-images", type=int, default=0, help="0 skips the ResNet-18")
    parser.add_argument("--cifar-train-steps", type=int, default=300)
    parser.add_argument("--cifar-contrasts", type=float, nargs="+", default=[0.05],
                        help="template amplitudes of the synthetic classes, one model each")
    parser.add_argument("--cifar-fast", action="store_true",
                        help="run the ResNet-18 with channels_last and bfloat16 (both modes)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"n0={N0}, n={args.n}, alpha={args.alpha}, sigma={args.sigma}, device {device}")
    print("| model | images | r | fixed n: samples/image | fixed n: cert. acc. at r "
          "| target r: samples/image | target r: cert. acc. at r | fewer samples | diff (pp) |")
    print("|---|---|---|---|---|---|---|---|---|")
    if args.digits_images:
        model = load_classifier(f"digits-sigma{args.sigma:.2f}").to(device)
        test = load_dataset("digits", "test")
        images = [(test[i][0], int(test[i][1])) for i in range(min(args.digits_images, len(test)))]
        print("\n".join(compare("digits small CNN", model, images, args, device)), flush=True)
    for contrast in args.cifar_contrasts if args.cifar_images else []:
        model = train_briefly(device, args.sigma, args.cifar_train_steps, contrast)
        if args.cifar_fast:
            model = accelerate(model, FastOptions(channels_last=True, bfloat16=True))
        pixels, labels = synthetic_cifar(args.cifar_images, seed=2, contrast=contrast)
        images = [(pixels[i], int(labels[i])) for i in range(args.cifar_images)]
        name = f"CIFAR-shaped ResNet-18, contrast {contrast:g}"
        print("\n".join(compare(name, model, images, args, device)), flush=True)

if __name__ == "__main__":
    main()
