"""Cost of each training recipe per epoch, relative to Gaussian training on the same model and data.

Every recipe runs the library's own training step (:func:`encoders.recipes.recipe_loss`, backward,
Adam step), as ``encoders-finetune`` does, on the same batches of the same model. Rounds alternate
over the recipes, so a change in machine load hits all of them alike; the script prints the median
over rounds of the seconds per step, the seconds per epoch that implies (steps per epoch = training
images // batch size) and the ratio to Gaussian training. SmoothAdv runs at its full epsilon (after
the warm-up) with :func:`certify.attacks.smoothadv.smoothadv_pgd`.

Command lines::

    python benchmarks/recipe_cost.py                                   # digits CNN on the CPU
    python benchmarks/recipe_cost.py --threads 1                       # shared cores: one thread
    python benchmarks/recipe_cost.py --device cuda --arch resnet18 --batch-size 256 --rounds 3
        # CIFAR-10-shaped synthetic images (50,000 a epoch), ResNet-18, on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from encoders.backbones import build_classifier
from encoders.data import load_dataset
from encoders.pretrain import make_optimizer
from encoders.recipes import make_recipe, recipe_loss

RECIPE_NAMES = (
    "gaussian",
    "consistency",
    "macer",
    "smoothadv-cifar10-sigma0.25",
    "smoothadv-mnist",
)
SIGMA = 0.25
CIFAR_TRAIN_IMAGES = 50_000
LATE_EPOCH = 1_000  # after every warm-up and deferral: each recipe at full strength


def batches(arch: str, batch_size: int, count: int) -> tuple[list, int, tuple[int, ...]]:
    """``count`` batches of (pixels, labels), the images of one epoch, and the input shape."""
    if arch == "small_cnn":
        train = load_dataset("digits", "train")
        generator = torch.Generator().manual_seed(0)
        chosen = [torch.randperm(len(train), generator=generator)[:batch_size]
                  for _ in range(count)]
        return [train.batch(indices) for indices in chosen], len(train), (1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    made = [
        (
            torch.rand(batch_size, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]
    return made, CIFAR_TRAIN_IMAGES, (3, 32, 32)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(recipe, model, optimizer, data, device, generator) -> float:
    """Seconds per training step over the batches in ``data``."""
    synchronize(device)
    started = time.perf_counter()
    for pixels, labels in data:
        loss = recipe_loss(recipe, model, pixels, labels, SIGMA, generator, LATE_EPOCH)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return (time.perf_counter() - started) / len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", choices=("small_cnn", "resnet18"), default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per recipe per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPE_NAMES))
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    recipes = {name: make_recipe(name) for name in arguments.recipes}
    if "gaussian" not in recipes:
        parser.error("--recipes must include gaussian, the reference")
    data, epoch_images, shape = batches(arguments.arch, arguments.batch_size, arguments.steps)
    data = [(pixels.to(device), labels.to(device)) for pixels, labels in data]
    torch.manual_seed(0)
    model = build_classifier(arguments.arch, 10, shape, [0.5] * shape[0], [0.25] * shape[0])
    model.to(device).train()
    optimizer = make_optimizer("adam", model.parameters(), 1e-3, 1e-5)
    generator = torch.Generator(device=device).manual_seed(0)
    for recipe in recipes.values():  # warm-up, untimed
        time_steps(recipe, model, optimizer, data[:1], device, generator)
    seconds: dict[str, list[float]] = {name: [] for name in recipes}
    for round_index in range(arguments.rounds):
        order = list(recipes) if round_index % 2 == 0 else list(reversed(recipes))
        for name in order:
            seconds[name].append(time_steps(recipes[name], model, optimizer, data, device,
                                            generator))
    steps_per_epoch = epoch_images // arguments.batch_size
    reference = statistics.median(seconds["gaussian"])
    print(f"{arguments.arch} on {device}, batch {arguments.batch_size}, {steps_per_epoch} steps "
          f"an epoch, {torch.get_num_threads()} CPU threads; medians of {arguments.rounds} "
          f"alternating rounds of {arguments.steps} steps")
    print("| recipe | setting | s / step | s / epoch | cost vs Gaussian |")
    print("|---|---|---|---|---|")
    for name, recipe in recipes.items():
        median = statistics.median(seconds[name])
        setting = ", ".join(
            f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in vars(recipe).items() if key != "name"
        )
        print(f"| {name} | {setting or '-'} | {median:.4f} | {median * steps_per_epoch:.2f} "
              f"| {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
