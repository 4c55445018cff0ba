"""Empirical robustness: PGD against a base classifier and against its smoothed classifier.

Public API::

    from certify.attacks import PGD, PGDConfig, NaiveSmoothedPGD, EOTPGD, smoothadv_pgd

The evaluation attacks share one loop (:class:`PGD`) and differ only in the loss they ascend;
:func:`smoothadv_pgd`, the training attack of SmoothAdv, takes its noise from the caller. Inputs
are pixels in [0, 1] and every returned image lies in the eps-ball around its clean image and in
the box [0, 1].
"""

from certify.attacks.pgd import PGD, PGDConfig
from certify.attacks.projection import NORMS, perturbation_norms
from certify.attacks.smoothadv import smoothadv_pgd
from certify.attacks.smoothed import EOTPGD, NaiveSmoothedPGD

__all__ = [
    "EOTPGD",
    "NORMS",
    "NaiveSmoothedPGD",
    "PGD",
    "PGDConfig",
    "perturbation_norms",
    "smoothadv_pgd",
]
