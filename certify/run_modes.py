"""What a run over a data set does with each image: the four modes of :mod:`certify.runner`.

- :class:`Certify`: Cohen et al.'s certify.py (optionally with sequential sampling,
  :mod:`certify.sequential`), one row per image;
- :class:`Predict`: Cohen et al.'s predict.py, one row per image;
- :class:`Attack`: clean and robust accuracy of the base and the smoothed classifier under PGD,
  naive PGD and EOT-PGD (Athalye et al. 2018; Salman et al. 2019), one row per image and
  evaluation;
- :class:`Audit`: each certificate attacked with L2 EOT-PGD just inside its radius
  (:mod:`certify.audit`), one row per image.

A mode works on a *chunk*, the images that share one noise generator: one image for certify and
predict, ``attack_batch`` consecutive selected images for attack and audit (attacked together),
the generator seeded by the chunk's first index. Chunks are fixed by the selection alone, so a
resumed run regroups and reseeds them exactly as before.

Every mode is a frozen dataclass of its own numbers with the same face: ``command`` (recorded as
the settings' command), ``columns`` and ``key`` (the results file's header and the columns that
name a row), ``chunk_size``, ``settings()`` (its entries of the settings file), ``keys(idx)`` (the
keys of the rows an image gets, as written) and ``rows(model, dataset, chunk, generator, noise)``
(the rows of a chunk, in file order). Making one with a field out of range raises ValueError
naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from certify.attacks import EOTPGD, PGD, NaiveSmoothedPGD, PGDConfig
from certify.attacks.projection import check_norm
from certify.audit import AuditConfig, audit_batch
from certify.checks import check_count, check_positive
from certify.fast import FastOptions
from certify.results import COHEN_CERTIFY_COLUMNS, COHEN_PREDICT_COLUMNS, read_rows
from certify.sequential import RULES
from certify.smoothing import certify, predict

CERTIFY_COLUMNS = (*COHEN_CERTIFY_COLUMNS, "pA_lower", "count", "samples")
PREDICT_COLUMNS = COHEN_PREDICT_COLUMNS
ATTACK_COLUMNS = ("idx", "label", "classifier", "attack", "norm", "eps", "predict", "correct",
                  "time")
ATTACK_KEY = ("idx", "classifier", "attack", "norm", "eps")
"""The columns that name an attack row: one image under one evaluation."""
AUDIT_COLUMNS = (*COHEN_CERTIFY_COLUMNS, "epsilon", "attacked", "violation")
NOT_ATTACKED = "-"

Row = list[Any]


@dataclass(frozen=True)
class Noise:
    """What every mode shares: the smoothed classifier's noise level, the failure probability of
    its predict and certify, and the noise samples per forward pass."""

    sigma: float
    alpha: float
    batch: int


@dataclass(frozen=True)
class Certify:
    """Certify each image with n0 selection and n estimation samples (Cohen et al. 2019).

    Attributes:
        n0, n: selection and estimation samples per image.
        radius: with sequential sampling, only decide certification at this L2 radius.
        adaptive: with sequential sampling, stop once the radius can grow by at most
            ``tolerance``.
        tolerance: L2 tolerance of ``adaptive``.
        rule: the stopping rule of ``radius`` and ``adaptive`` (:data:`certify.sequential.RULES`).
        fast: opt-in speed-ups of the forward pass (:mod:`certify.fast`).
    """

    n0: int = 100
    n: int = 100_000
    radius: float | None = None
    adaptive: bool = False
    tolerance: float = 0.05
    rule: str = RULES[0]
    fast: FastOptions = FastOptions()

    command = "certify"
    columns = CERTIFY_COLUMNS
    key = ("idx",)
    chunk_size = 1

    def __post_init__(self) -> None:
        check_counts(self, "n0", "n")
        check_positive("tolerance", self.tolerance)
        if self.radius is not None:
            check_positive("radius", self.radius)
        if self.radius is not None and self.adaptive:
            raise ValueError("radius and adaptive are exclusive: give one of them")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")

    def settings(self) -> dict[str, Any]:
        """The mode's entries of the settings file (sequential ones only when sequential)."""
        recorded: dict[str, Any] = {"n": self.n, "n0": self.n0, **fast_settings(self.fast)}
        if self.radius is not None or self.adaptive:
            recorded.update(radius=self.radius, adaptive=self.adaptive,
                            tolerance=self.tolerance, rule=self.rule)
        return recorded

    def keys(self, idx: int) -> list[tuple[str, ...]]:
        return [(str(idx),)]

    def rows(self, model: torch.nn.Module, dataset: Any, chunk: list[int],
             generator: torch.Generator, noise: Noise) -> list[Row]:
        x, label = dataset[chunk[0]]
        start = time.perf_counter()
        cert = certify(model, x, noise.sigma, self.n0, self.n, noise.alpha, noise.batch,
                       generator, radius=self.radius, adaptive=self.adaptive,
                       tolerance=self.tolerance, rule=self.rule)
        elapsed = time.perf_counter() - start
        return [[chunk[0], int(label), cert.label, f"{cert.radius:.6f}",
                 int(cert.label == int(label)), f"{elapsed:.4f}", f"{cert.pA_lower:.8f}",
                 cert.count, cert.samples]]


@dataclass(frozen=True)
class Predict:
    """The smoothed classifier's prediction of each image from n samples (Cohen et al. 2019).

    Attributes:
        n: samples per image.
        fast: opt-in speed-ups of the forward pass (:mod:`certify.fast`).
    """

    n: int = 100_000
    fast: FastOptions = FastOptions()

    command = "predict"
    columns = PREDICT_COLUMNS
    key = ("idx",)
    chunk_size = 1

    def __post_init__(self) -> None:
        check_counts(self, "n")

    def settings(self) -> dict[str, Any]:
        return {"n": self.n, "n0": None, **fast_settings(self.fast)}

    def keys(self, idx: int) -> list[tuple[str, ...]]:
        return [(str(idx),)]

    def rows(self, model: torch.nn.Module, dataset: Any, chunk: list[int],
             generator: torch.Generator, noise: Noise) -> list[Row]:
        x, label = dataset[chunk[0]]
        start = time.perf_counter()
        prediction = predict(model, x, noise.sigma, self.n, noise.alpha, noise.batch, generator)
        elapsed = time.perf_counter() - start
        return [[chunk[0], int(label), prediction, int(prediction == int(label)),
                 f"{elapsed:.4f}"]]


def check_counts(mode: object, *names: str) -> None:
    """Raise ValueError naming the first of the fields ``names`` of ``mode`` that is not an
    integer >= 1."""
    for name in names:
        check_count(name, getattr(mode, name))


def fast_settings(fast: FastOptions) -> dict[str, bool]:
    """How certify and predict record their speed-ups."""
    return {"channels_last": fast.channels_last, "bf16": fast.bfloat16, "compile": fast.compile}


@dataclass(frozen=True)
class Evaluation:
    """One row kind of an attack run: a classifier under an attack at one epsilon."""

    classifier: str  # "base" or "smoothed"
    attack: str  # "clean", "pgd", "naive-pgd" or "eot-pgd"
    norm: str = NOT_ATTACKED
    eps: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """How the row names this evaluation, as written in the results file: epsilon exactly
        (6 significant digits where they read back as the same float, as 0.5; else the shortest
        decimal that does, as 0.03137254901960784 for 8/255), so that two epsilons never share
        rows however close they are."""
        short = f"{self.eps:.6g}"
        return (self.classifier, self.attack, self.norm,
                short if float(short) == self.eps else repr(float(self.eps)))


def evaluation_plan(threats: Sequence[tuple[str, float]]) -> list[Evaluation]:
    """Clean base and smoothed accuracy, then PGD, naive PGD and EOT-PGD for each threat."""
    plan = [Evaluation("base", "clean"), Evaluation("smoothed", "clean")]
    for norm, eps in threats:
        plan += [Evaluation("base", "pgd", norm, eps),
                 Evaluation("smoothed", "naive-pgd", norm, eps),
                 Evaluation("smoothed", "eot-pgd", norm, eps)]
    return plan


def load_images(dataset: Any, chunk: list[int],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (B, C, H, W) and labels (B,) of a chunk, on ``device``."""
    items = [dataset[idx] for idx in chunk]
    images = torch.stack([image for image, _ in items]).to(device)  # (B, C, H, W)
    labels = torch.tensor([int(label) for _, label in items], device=device)
    return images, labels


@dataclass(frozen=True)
class Attack:
    """Clean and robust accuracy under each threat (norm, eps): PGD against the base classifier,
    naive PGD (one noise draw per step, as RUSH evaluated) and EOT-PGD against the smoothed
    classifier, whose prediction (abstain counted as wrong) uses n samples.

    Attributes:
        threats: (norm, eps) pairs, norm "linf" or "l2"; repeats count once.
        n: predict samples per smoothed evaluation.
        steps, restarts: of every PGD attack.
        eot_samples: noise draws per EOT step.
        attack_batch: images attacked together (one chunk).
    """

    threats: tuple[tuple[str, float], ...] = (("linf", 8 / 255), ("l2", 0.25), ("l2", 0.5))
    n: int = 10_000
    steps: int = 20
    eot_samples: int = 32
    restarts: int = 1
    attack_batch: int = 32

    command = "attack"
    columns = ATTACK_COLUMNS
    key = ATTACK_KEY

    def __post_init__(self) -> None:
        check_counts(self, "n", "steps", "eot_samples", "restarts", "attack_batch")
        for norm, eps in self.threats:
            check_norm(norm)
            check_positive("eps of threats", eps)
        object.__setattr__(self, "threats", tuple(dict.fromkeys(
            (norm, float(eps)) for norm, eps in self.threats)))

    @property
    def chunk_size(self) -> int:
        return self.attack_batch

    @property
    def plan(self) -> list[Evaluation]:
        return evaluation_plan(self.threats)

    def settings(self) -> dict[str, Any]:
        return {"n": self.n, "threats": [[norm, eps] for norm, eps in self.threats],
                "steps": self.steps, "eot_samples": self.eot_samples, "restarts": self.restarts,
                "attack_batch": self.attack_batch,
                "eps_column": "exact"}  # files that rounded it to 6 digits are not resumed

    def keys(self, idx: int) -> list[tuple[str, ...]]:
        return [(str(idx), *evaluation.key) for evaluation in self.plan]

    def build(self, model: torch.nn.Module, evaluation: Evaluation, sigma: float) -> PGD:
        """The attack an evaluation names."""
        config = PGDConfig(norm=evaluation.norm, eps=evaluation.eps, steps=self.steps,
                           restarts=self.restarts)
        if evaluation.attack == "pgd":
            return PGD(model, config)
        if evaluation.attack == "naive-pgd":
            return NaiveSmoothedPGD(model, sigma, config)
        return EOTPGD(model, sigma, self.eot_samples, config)

    def rows(self, model: torch.nn.Module, dataset: Any, chunk: list[int],
             generator: torch.Generator, noise: Noise) -> list[Row]:
        """The rows of a chunk, image by image, one per evaluation of the plan. A row's time is
        its share of the batched attack plus its own prediction."""
        images, labels = load_images(dataset, chunk, generator.device)
        rows: dict[int, list[Row]] = {idx: [] for idx in chunk}
        for evaluation in self.plan:
            start = time.perf_counter()
            attacked = images
            if evaluation.attack != "clean":
                attacked = self.build(model, evaluation, noise.sigma)(images, labels, generator)
            shared = (time.perf_counter() - start) / len(chunk)
            if evaluation.classifier == "base":
                start = time.perf_counter()
                with torch.no_grad():
                    predictions = model(attacked).argmax(dim=1).tolist()
                seconds = [shared + (time.perf_counter() - start) / len(chunk)] * len(chunk)
            else:
                predictions, seconds = [], []
                for x in attacked:
                    start = time.perf_counter()
                    predictions.append(predict(model, x, noise.sigma, self.n, noise.alpha,
                                               noise.batch, generator))
                    seconds.append(shared + time.perf_counter() - start)
            for idx, label, prediction, elapsed in zip(chunk, labels.tolist(), predictions,
                                                       seconds):
                rows[idx].append([idx, label, *evaluation.key, prediction,
                                  int(prediction == label), f"{elapsed:.4f}"])
        return [row for idx in chunk for row in rows[idx]]


def accuracy_table(path: Any, plan: list[Evaluation]) -> list[tuple[Evaluation, int, int]]:
    """(evaluation, images correct, images evaluated) for every evaluation of the plan, from an
    attack run's results file."""
    rows = read_rows(path)
    table = []
    for evaluation in plan:
        correct = [int(row["correct"]) for row in rows
                   if (row["classifier"], row["attack"], row["norm"], row["eps"]) == evaluation.key]
        table.append((evaluation, sum(correct), len(correct)))
    return table


@dataclass(frozen=True)
class Audit:
    """Certify each image (or take its given certificate), attack every certified one with L2
    EOT-PGD at ``shrink`` times its radius and record whether ``predict`` then names another
    class: a violation (:mod:`certify.audit`).

    Attributes:
        n0, n: selection and estimation samples per certificate.
        predict_n: predict samples at each attacked image.
        steps, restarts, eot_samples: of the attack.
        shrink: the attack's radius is shrink * the certified radius.
        attack_batch: images attacked together (one chunk).
        certificates: idx -> (certified label, radius) to audit instead of certifying; the run
            then takes exactly these images.
        certificates_file: where ``certificates`` were read from (recorded in the settings).
    """

    n0: int = 100
    n: int = 100_000
    predict_n: int = 10_000
    steps: int = 20
    eot_samples: int = 32
    restarts: int = 1
    shrink: float = 0.99
    attack_batch: int = 32
    certificates: Mapping[int, tuple[int, float]] = field(default_factory=dict)
    certificates_file: str | None = None

    command = "audit"
    columns = AUDIT_COLUMNS
    key = ("idx",)

    def __post_init__(self) -> None:
        check_counts(self, "n0", "n", "predict_n", "steps", "eot_samples", "restarts",
                     "attack_batch")
        if not 0 < self.shrink <= 1:
            raise ValueError(f"shrink must be in (0, 1], got {self.shrink}")

    @property
    def chunk_size(self) -> int:
        return self.attack_batch

    def settings(self) -> dict[str, Any]:
        return {"certificates": self.certificates_file if self.certificates else None,
                "n0": self.n0, "n": self.n, "predict_n": self.predict_n, "steps": self.steps,
                "eot_samples": self.eot_samples, "restarts": self.restarts,
                "shrink": self.shrink, "attack_batch": self.attack_batch}

    def keys(self, idx: int) -> list[tuple[str, ...]]:
        return [(str(idx),)]

    def rows(self, model: torch.nn.Module, dataset: Any, chunk: list[int],
             generator: torch.Generator, noise: Noise) -> list[Row]:
        images, labels = load_images(dataset, chunk, generator.device)
        config = AuditConfig(sigma=noise.sigma, n=self.predict_n, alpha=noise.alpha,
                             eot_samples=self.eot_samples, steps=self.steps,
                             restarts=self.restarts, shrink=self.shrink, batch_size=noise.batch,
                             attack_batch=self.attack_batch)
        certified, radii, seconds = [], [], []
        for idx, x in zip(chunk, images):
            start = time.perf_counter()
            if self.certificates:
                label, radius = self.certificates[idx]
            else:
                certificate = certify(model, x, noise.sigma, self.n0, self.n, noise.alpha,
                                      noise.batch, generator)
                label, radius = certificate.label, certificate.radius
            certified.append(label)
            radii.append(radius)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        records = audit_batch(model, images, certified, radii, config, generator)
        shared = (time.perf_counter() - start) / len(chunk)
        rows = []
        for i, (idx, label, record) in enumerate(zip(chunk, labels.tolist(), records)):
            attack_columns = (
                [0.0, NOT_ATTACKED, 0] if record is None
                else [f"{record.epsilon:.6f}", record.prediction, int(record.violation)])
            rows.append([idx, label, certified[i], f"{radii[i]:.6f}", int(certified[i] == label),
                         f"{seconds[i] + shared:.4f}", *attack_columns])
        return rows


Mode = Certify | Predict | Attack | Audit
"""What a run does with each chunk of images."""
