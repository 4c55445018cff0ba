"""SimCLR pre-training throughput: images per second on the CPU, and one CIFAR-10 epoch on a GPU.

Each step is the library's own :func:`encoders.pretrain.simclr_step` (two augmented views, the
forward pass, NT-Xent, backward, optimizer step) on batches gathered from an in-memory
:class:`encoders.data.ImageDataset` and moved to the device, as ``encoders-pretrain`` does.
Images are synthetic (uniform random bytes), so timings need no data set on disk.

Command lines::

    python benchmarks/pretrain_throughput.py                      # CPU, both backbones
    python benchmarks/pretrain_throughput.py --device cuda        # + one ResNet-18 epoch on
                                                                  #   50,000 CIFAR-sized images
"""

from __future__ import annotations

import argparse
import time

import torch

from encoders.augment import AugmentConfig
from encoders.backbones import Normalize, build_encoder
from encoders.data import ImageDataset
from encoders.pretrain import make_optimizer, simclr_step
from encoders.simclr import SimCLRModel
from encoders.training import Processes, epoch_batches, epoch_generator


def synthetic(count: int, shape: tuple[int, int, int]) -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator)
    return ImageDataset(images, torch.randint(0, 10, (count,), generator=generator), num_classes=10)


def time_steps(
    architecture: str,
    dataset: ImageDataset,
    augment_name: str,
    batch_size: int,
    steps: int,
    device: torch.device,
    warmup: int = 2,
) -> tuple[float, float, int]:
    """Wall seconds and process CPU seconds for ``steps`` SimCLR steps (after ``warmup`` untimed
    ones), and the images they saw. On shared cores both rise: CPU seconds include the time
    that threads spin waiting for one another."""
    torch.manual_seed(0)
    channels = dataset.images.shape[1]
    model = SimCLRModel(
        Normalize([0.5] * channels, [0.25] * channels), build_encoder(architecture, channels)
    )
    model.to(device).train()
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, weight_decay=1e-6)
    processes = Processes(0, 1, device)
    generator = epoch_generator(0, 0, 0, device)
    config = AugmentConfig.for_dataset(augment_name)
    batches = epoch_batches(len(dataset), batch_size, 0, 0, processes)
    if len(batches) < warmup + steps:
        raise ValueError(f"need {warmup + steps} batches, the data give {len(batches)}")
    for number, indices in enumerate(batches[: warmup + steps]):
        if number == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started, cpu_started = time.perf_counter(), time.process_time()
        simclr_step(
            model,
            optimizer,
            dataset.batch(indices)[0].to(device),
            0.5,
            config,
            generator,
            processes,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, time.process_time() - cpu_started, steps * batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to add the GPU epoch")
    parser.add_argument("--cpu-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="CPU timings; the best is shown")
    parser.add_argument("--gpu-batch-size", type=int, default=512)
    arguments = parser.parse_args()
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for architecture, shape, augment_name, batch_size in (
        ("small_cnn", (1, 8, 8), "digits", 256),
        ("resnet18", (3, 32, 32), "cifar10", 32),
    ):
        dataset = synthetic(batch_size * (arguments.cpu_steps + 2), shape)  # 2 warm-up steps
        timings = [
            time_steps(architecture, dataset, augment_name, batch_size, arguments.cpu_steps, cpu)
            for _ in range(arguments.repeats)
        ]
        seconds, cpu_seconds, images = min(timings)  # the least disturbed by other processes
        print(
            f"cpu  {architecture:9s} batch {batch_size:3d}: {images / seconds:8.1f} images/s "
            f"(best of {arguments.repeats}: {arguments.cpu_steps} steps in {seconds:.2f} s wall, "
            f"{cpu_seconds:.2f} s CPU; 2 views per image)"
        )
    if arguments.device != "cpu":
        device = torch.device(arguments.device)
        cifar = synthetic(50_000, (3, 32, 32))
        steps = len(cifar) // arguments.gpu_batch_size
        seconds, _, images = time_steps(
            "resnet18", cifar, "cifar10", arguments.gpu_batch_size, steps - 2, device
        )
        per_epoch = seconds * steps / (steps - 2)
        print(
            f"{device} ({torch.cuda.get_device_name(device)}) resnet18 "
            f"batch {arguments.gpu_batch_size}: "
            f"{images / seconds:.0f} images/s, one CIFAR-10 epoch ({steps} steps, 50,000 images) "
            f"takes {per_epoch:.1f} s"
        )


if __name__ == "__main__":
    main()
