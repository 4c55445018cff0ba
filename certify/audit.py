"""An empirical audit of randomized-smoothing certificates with the strongest attack we have.

A certificate (label, R) from :func:`certify.certify` claims that the smoothed classifier g
keeps ``label`` on the whole L2 ball of radius R (Cohen et al. 2019, Theorem 1). The audit
attacks g inside that ball with L2 EOT-PGD (Athalye et al. 2018) at eps just below R
and asks :func:`certify.predict` for g's label at the attacked point. A definite answer other
than ``label`` is a violation: either the certificate was wrong (probability <= alpha for a
correct certifier) or predict was (probability <= alpha), so a correct certifier shows at most
about 2 * alpha violations per attacked image, while inflated radii show many.

Example:
    >>> certificates = [certify(model, x, 0.25, 100, 10_000, 0.001) for x in images]
    >>> records = audit(model, images, [c.label for c in certificates],
    ...                 [c.radius for c in certificates], AuditConfig(sigma=0.25))
    >>> sum(record.violation for _, record in records)
    0
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from certify.attacks import EOTPGD, PGDConfig
from certify.checks import check_alpha, check_count, check_positive
from certify.guarantee import ABSTAIN
from certify.smoothing import predict


@dataclass(frozen=True)
class AuditConfig:
    """How hard to attack each certificate and how to read the smoothed classifier afterwards.

    Attributes:
        sigma: noise level of the smoothed classifier that was certified, > 0.
        n: noise samples for ``predict`` at the attacked point (10,000).
        alpha: failure probability of that ``predict`` (0.001).
        eot_samples: noise draws per EOT gradient step (32).
        steps: PGD steps (20), step size 2.5 * eps / steps.
        restarts: PGD restarts (1).
        shrink: the attack radius is shrink * R, "just below R" (0.99); in (0, 1].
        batch_size: noise samples per forward pass of ``predict`` (1000).
        attack_batch: images attacked together; one EOT step runs the model on
            attack_batch * eot_samples images (32).

    Raises:
        ValueError: if a field is out of range.
    """

    sigma: float
    n: int = 10_000
    alpha: float = 0.001
    eot_samples: int = 32
    steps: int = 20
    restarts: int = 1
    shrink: float = 0.99
    batch_size: int = 1000
    attack_batch: int = 32

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        check_count("n", self.n)
        check_alpha(self.alpha)
        check_count("eot_samples", self.eot_samples)
        check_count("steps", self.steps)
        check_count("restarts", self.restarts)
        check_count("batch_size", self.batch_size)
        check_count("attack_batch", self.attack_batch)
        if not (isinstance(self.shrink, (int, float)) and 0.0 < self.shrink <= 1.0):
            raise ValueError(f"shrink must be in (0, 1], got {self.shrink!r}")


class AuditRecord(NamedTuple):
    """The audit of one certified image.

    Attributes:
        label: the certified class.
        radius: the certified L2 radius R.
        epsilon: the L2 radius of the attack, shrink * R.
        prediction: ``predict`` at the attacked image (a class or ``ABSTAIN``).
        violation: True when ``prediction`` is a class other than ``label``.
    """

    label: int
    radius: float
    epsilon: float
    prediction: int
    violation: bool


def check_certificate(label: int, radius: float) -> None:
    """Raise ValueError unless label is a class or ``ABSTAIN`` and radius is finite and >= 0."""
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    if isinstance(label, bool) or not isinstance(label, int) or label < ABSTAIN:
        raise ValueError(f"label must be a class >= 0 or ABSTAIN ({ABSTAIN}), got {label!r}")


def audit_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: Sequence[int],
    radii: Sequence[float],
    config: AuditConfig,
    generator: torch.Generator | None = None,
) -> list[AuditRecord | None]:
    """Attack a batch of certificates together, each with L2 EOT-PGD at shrink * its radius.

    Guarantee: for each correct certificate, its record is a violation with probability at most
    ``config.alpha`` (the error probability of ``predict``).

    Args:
        model: base classifier mapping (B, C, H, W) pixels in [0, 1] to (B, K) logits.
        images: the certified images (B, C, H, W), pixels in [0, 1].
        labels: the certified class of each image, or ``ABSTAIN``.
        radii: the certified L2 radius of each image, >= 0.
        config: the attack and the prediction settings.
        generator: optional torch.Generator on the model's device (attack and predict noise).

    Returns:
        One entry per image: its :class:`AuditRecord`, or None when there is nothing to attack
        (the label is ``ABSTAIN`` or the radius is 0).

    Raises:
        ValueError: if an argument is out of range.
    """
    if (
        not isinstance(images, torch.Tensor)
        or images.dim() != 4
        or not images.shape[0] == len(labels) == len(radii)
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"images (B, C, H, W), labels and radii must have one entry per image, got images "
            f"{shape} and {len(labels)} labels and {len(radii)} radii"
        )
    for label, radius in zip(labels, radii):
        check_certificate(label, radius)
    targets = [
        i for i, (label, radius) in enumerate(zip(labels, radii)) if label != ABSTAIN and radius > 0
    ]
    records: list[AuditRecord | None] = [None] * len(labels)
    if not targets:
        return records
    epsilons = [config.shrink * radii[i] for i in targets]
    attack_config = PGDConfig(
        norm="l2", eps=max(epsilons), steps=config.steps, restarts=config.restarts
    )
    attack = EOTPGD(model, config.sigma, config.eot_samples, attack_config)
    attacked = attack(
        images[targets],
        torch.tensor([labels[i] for i in targets]),
        generator,
        eps=torch.tensor(epsilons, dtype=images.dtype),
    )  # (T, C, H, W)
    for i, epsilon, x in zip(targets, epsilons, attacked):
        prediction = predict(
            model, x, config.sigma, config.n, config.alpha, config.batch_size, generator
        )
        violation = prediction not in (labels[i], ABSTAIN)
        records[i] = AuditRecord(labels[i], float(radii[i]), epsilon, prediction, violation)
    return records


def audit_certificate(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int,
    radius: float,
    config: AuditConfig,
    generator: torch.Generator | None = None,
) -> AuditRecord | None:
    """Audit one certificate: :func:`audit_batch` for the single image x (C, H, W).

    Example:
        >>> cert = certify(model, x, 0.25, 100, 10_000, 0.001)
        >>> audit_certificate(model, x, cert.label, cert.radius, AuditConfig(sigma=0.25))
        AuditRecord(label=3, radius=0.61, epsilon=0.60, prediction=-1, violation=False)
    """
    return audit_batch(model, x.unsqueeze(0), [label], [radius], config, generator)[0]


def audit(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    labels: Sequence[int],
    radii: Sequence[float],
    config: AuditConfig,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[int, AuditRecord]]:
    """Audit a list of certificates, ``config.attack_batch`` images at a time; yields
    (position, record) for every certified image.

    The certificates are inputs, not recomputed, so any certifier (or a deliberately inflated
    one) can be audited. Images certified as ``ABSTAIN`` or with radius 0 are skipped.

    Args:
        model: base classifier mapping (B, C, H, W) pixels in [0, 1] to (B, K) logits.
        images: the certified images, each (C, H, W).
        labels: the certified class of each image (or ``ABSTAIN``).
        radii: the certified L2 radius of each image.
        config: the attack and the prediction settings.
        generator: optional torch.Generator on the model's device.

    Raises:
        ValueError: if the three sequences differ in length or an entry is out of range.
    """
    if not len(images) == len(labels) == len(radii):
        raise ValueError(
            f"images, labels and radii must have one entry per image, got lengths "
            f"{len(images)}, {len(labels)} and {len(radii)}"
        )
    for start in range(0, len(images), config.attack_batch):
        chunk = slice(start, start + config.attack_batch)
        batch = torch.stack(list(images[chunk]))  # (B, C, H, W)
        chunk_labels = [int(label) for label in labels[chunk]]
        chunk_radii = [float(radius) for radius in radii[chunk]]
        records = audit_batch(model, batch, chunk_labels, chunk_radii, config, generator)
        for offset, record in enumerate(records):
            if record is not None:
                yield start + offset, record
