"""The audit against ground truth: on a linear model the smoothed classifier is the linear
classifier itself (Cohen et al. 2019, Section 3.1), so a correct radius is at most the distance d
to the hyperplane and EOT-PGD moves the point straight towards it."""

from __future__ import annotations

import pytest
import torch

from certify import ABSTAIN, certify
from certify.audit import AuditConfig, audit, audit_certificate

SIGMA = 0.25


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def centred_linear(linear_model):
    """The shared linear model with the hyperplane through the grey image 0.5, so attacked
    points keep their pixels inside [0, 1]."""
    weight = linear_model.weight
    return type(linear_model)(weight, bias=-0.5 * float(weight.sum()))


def certified_points(model, generator):
    # Distances 0.5, 0.75 and 1 sigma on both sides. With n = 10,000 at alpha = 0.001 the
    # Clopper-Pearson bound lies about 3.1 standard errors below pA = Phi(d / sigma), which
    # keeps R >= 0.8 d here (checked below), and R <= d with probability >= 1 - alpha each.
    distances = [sign * f * SIGMA for f in (0.5, 0.75, 1.0) for sign in (1.0, -1.0)]
    images = [model.point_at_distance(d) for d in distances]
    certificates = [certify(model, x, SIGMA, 100, 10_000, 0.001, 10_000, generator) for x in images]
    for d, cert in zip(distances, certificates):
        assert cert.label == int(d > 0)
        assert 0.8 * abs(d) <= cert.radius <= abs(d)
    return images, certificates


def test_a_correct_certifier_shows_no_violation(centred_linear) -> None:
    # eps = 0.99 R < d: the attacked point stays on the certified side, where predict can
    # return the other class only with probability <= alpha = 0.001 per image.
    generator = seeded(0)
    images, certificates = certified_points(centred_linear, generator)
    config = AuditConfig(sigma=SIGMA, n=2000, attack_batch=4)  # two batches: 4 + 2
    records = dict(
        audit(
            centred_linear,
            images,
            [c.label for c in certificates],
            [c.radius for c in certificates],
            config,
            generator,
        )
    )
    assert sorted(records) == list(range(len(images)))
    for position, record in records.items():
        assert record.label == certificates[position].label
        assert record.epsilon == pytest.approx(0.99 * certificates[position].radius)
        assert not record.violation
    # The attack did its job: it pushed points far enough that some predictions abstain or the
    # smoothed classifier's margin shrank; at least the closest points end near the hyperplane.
    assert any(record.prediction == ABSTAIN for record in records.values())


def test_the_audit_catches_radii_inflated_twofold(centred_linear) -> None:
    # Claimed radius 2R >= 1.6 d: EOT-PGD at eps = 1.98 R (moving >= 0.97 eps towards the
    # hyperplane with the default 20 steps) lands at least 0.5 d = 0.125..0.25 beyond it, where
    # the other class has probability >= Phi(0.5) = 0.69; with n = 2000, predict's two-sided
    # test rejects the tie at alpha = 0.001 with probability > 1 - 1e-20 (z > 17). So every
    # inflated certificate must be caught.
    generator = seeded(1)
    images, certificates = certified_points(centred_linear, generator)
    inflated = [2 * c.radius for c in certificates]
    config = AuditConfig(sigma=SIGMA, n=2000, attack_batch=4)  # two batches: 4 + 2
    records = [
        record
        for _, record in audit(
            centred_linear, images, [c.label for c in certificates], inflated, config, generator
        )
    ]
    assert len(records) == len(images)
    assert all(record.violation for record in records)
    assert all(record.prediction == 1 - record.label for record in records)


def test_abstentions_and_zero_radii_are_not_attacked(tiny_cnn) -> None:
    images = [torch.rand(1, 8, 8, generator=seeded(2)) for _ in range(3)]
    config = AuditConfig(sigma=SIGMA, n=100, steps=2, eot_samples=2)
    records = list(audit(tiny_cnn, images, [ABSTAIN, 3, 4], [0.0, 0.0, 0.3], config, seeded(3)))
    assert [position for position, _ in records] == [2]
    assert records[0][1].epsilon == pytest.approx(0.99 * 0.3)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"n": 0}, "n"),
        ({"alpha": 1.0}, "alpha"),
        ({"eot_samples": 0}, "eot_samples"),
        ({"steps": 0}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"shrink": 0.0}, "shrink"),
        ({"shrink": 1.5}, "shrink"),
        ({"batch_size": 0}, "batch_size"),
        ({"attack_batch": 0}, "attack_batch"),
    ],
)
def test_bad_configuration_is_refused(changes: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        AuditConfig(**{"sigma": SIGMA, **changes})


def test_bad_certificates_are_refused(tiny_cnn) -> None:
    x, config = torch.rand(1, 8, 8), AuditConfig(sigma=SIGMA)
    with pytest.raises(ValueError, match="radius"):
        audit_certificate(tiny_cnn, x, 1, -0.5, config)
    with pytest.raises(ValueError, match="radius"):
        audit_certificate(tiny_cnn, x, 1, float("nan"), config)
    with pytest.raises(ValueError, match="label"):
        audit_certificate(tiny_cnn, x, -2, 0.5, config)
    with pytest.raises(ValueError, match="radii"):
        list(audit(tiny_cnn, [x, x], [1, 1], [0.5], config))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_audit_runs_on_cuda(tiny_cnn) -> None:
    model = tiny_cnn.cuda()
    images = [torch.rand(1, 8, 8, generator=seeded(4)) for _ in range(2)]
    config = AuditConfig(sigma=SIGMA, n=200, steps=2, eot_samples=2)
    generator = torch.Generator(device="cuda").manual_seed(0)
    records = list(audit(model, images, [1, 2], [0.3, 0.4], config, generator))
    assert [position for position, _ in records] == [0, 1]
    assert [record.epsilon for _, record in records] == pytest.approx([0.297, 0.396])
