"""Training speed: float32 against the opt-in speed options, side by side in one run.

Times one epoch of SimCLR pre-training (:func:`encoders.pretrain.simclr_step`: two augmented
views, NT-Xent, backward, step) and one epoch of noise training with Cohen et al.'s preset
(:func:`encoders.finetune.noise_step`: crop and flip, Gaussian noise, cross-entropy, SGD with
momentum) of the CIFAR ResNet-18, for each variant:

- fp32: plain float32, eager;
- bf16+cl: bfloat16 autocast and channels_last;
- bf16+cl+compile: the same through torch.compile (with ``--compile``).

The data set is held on the device, as the training commands hold it, and augmented there. Each
variant is warmed up first (one untimed epoch: cuDNN autotuning, compilation), then the variants
are timed in alternation, ``--repeats`` rounds, and the medians are compared, so that a passing
load affects all of them alike. Finally each variant trains ``--loss-steps`` steps from the same
initial weights on the same batches, and the losses are printed side by side: the speed options
must leave the loss curve within noise of float32.

Images are the CIFAR-10 JPEG copy when ``--data-root`` is given (the first ``--images`` of its
train split), else uniform random bytes of CIFAR's shape.

Command lines::

    python benchmarks/training_speed.py --device cuda --data-root /tmp/cifar10-jpeg \\
        --images 50000 --repeats 3 --compile                        # the H100 figures
    python benchmarks/training_speed.py --device cpu --images 64 --simclr-batch 32 \\
        --noise-batch 32 --repeats 2 --loss-steps 2                 # a CPU dry run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from certify.fast import FastOptions
from encoders.augment import AugmentConfig
from encoders.backbones import Normalize, build_classifier, build_encoder
from encoders.data import ImageDataset, load_dataset
from encoders.finetune import PRESETS, noise_step
from encoders.pretrain import make_optimizer, simclr_step
from encoders.simclr import SimCLRModel
from encoders.training import Processes, epoch_batches, epoch_generator

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]  # CIFAR-10's channel statistics, rounded


def images(count: int, data_root: str | None, device: torch.device) -> ImageDataset:
    if data_root is not None:
        train = load_dataset("cifar10-jpeg", "train", data_root)
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
        return ImageDataset(train.images[chosen], train.labels[chosen], 10).to(device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return ImageDataset(pixels, labels, num_classes=10).to(device)


class Workload:
    """One kind of training (SimCLR or noise training) with one variant's model and optimizer."""

    def __init__(self, kind: str, speed: FastOptions, data: ImageDataset, batch_size: int,
                 device: torch.device) -> None:
        torch.manual_seed(0)  # the same initial weights for every variant
        self.kind, self.speed, self.data, self.device = kind, speed, data, device
        self.batch_size = batch_size
        if kind == "simclr":
            self.model = SimCLRModel(Normalize(MEAN, STD), build_encoder("resnet18", 3)).to(device)
            self.optimizer = make_optimizer("sgd", self.model.parameters(), 0.6, 1e-6)
        else:
            self.model = build_classifier("resnet18", 10, [3, 32, 32], MEAN, STD).to(device)
            preset = PRESETS["cohen"]
            self.optimizer = make_optimizer(preset["optimizer"], self.model.parameters(),
                                            preset["lr"], preset["weight_decay"])
        self.model.train()
        self.forward = speed.prepare(self.model)
        self.processes = Processes(0, 1, device)

    def steps(self, epoch: int, count: int | None = None) -> list[float]:
        """Train ``count`` steps (default: one epoch) of the data's epoch ``epoch``; the losses."""
        generator = epoch_generator(0, epoch, 0, self.device)
        batches = epoch_batches(len(self.data), self.batch_size, 0, epoch, self.processes)
        losses = []
        for indices in batches[:count]:
            pixels, labels = self.data.batch(indices)
            if self.kind == "simclr":
                losses.append(simclr_step(self.forward, self.optimizer, pixels, 0.5,
                                          AugmentConfig.for_dataset("cifar10"), generator,
                                          self.processes, self.speed))
            else:
                losses.append(noise_step(self.forward, self.optimizer, pixels, labels, 0.25,
                                         "crop-flip", generator, self.speed))
        return losses


def timed(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-root", help="the CIFAR-10 JPEG copy (default: random images)")
    parser.add_argument("--images", type=int, default=50_000, help="images per epoch")
    parser.add_argument("--simclr-batch", type=int, default=512)
    parser.add_argument("--noise-batch", type=int, default=PRESETS["cohen"]["batch_size"])
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--loss-steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = images(args.images, args.data_root, device)
    variants = {"fp32": FastOptions(), "bf16+cl": FastOptions(bfloat16=True, channels_last=True)}
    if args.compile:
        variants["bf16+cl+compile"] = FastOptions(bfloat16=True, channels_last=True, compile=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, {args.images} images "
          f"({'CIFAR-10 JPEG copy' if args.data_root else 'random'}), ResNet-18")
    for kind, batch_size in (("simclr", args.simclr_batch), ("noise", args.noise_batch)):
        workloads = {label: Workload(kind, speed, data, batch_size, device)
                     for label, speed in variants.items()}
        warmup = {label: timed(lambda w=w: w.steps(0), device) for label, w in workloads.items()}
        seconds: dict[str, list[float]] = {label: [] for label in workloads}
        for repeat in range(args.repeats):
            for label, workload in workloads.items():
                seconds[label].append(timed(lambda w=workload, r=repeat: w.steps(1 + r), device))
        base = statistics.median(seconds["fp32"])
        print(f"\n{kind} epoch, batch {batch_size}: median of {args.repeats} "
              f"(first epoch, untimed warm-up, in brackets)")
        for label, times in seconds.items():
            median = statistics.median(times)
            print(f"  {label:<16} {median:8.3f} s  ({warmup[label]:.1f} s)   "
                  f"speed-up x{base / median:.2f}")
        fresh = {label: Workload(kind, speed, data, batch_size, device)
                 for label, speed in variants.items()}
        curves = {label: w.steps(0, args.loss_steps) for label, w in fresh.items()}
        print(f"  loss of the first {args.loss_steps} steps from the same weights and batches:")
        for label, curve in curves.items():
            print(f"  {label:<16} " + " ".join(f"{loss:.3f}" for loss in curve))


if __name__ == "__main__":
    main()
