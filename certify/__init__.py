"""Randomized-smoothing certification of image classifiers (Cohen, Rosenfeld and Kolter 2019).

Public API::

    from certify import ABSTAIN, Smooth, certify, predict
"""

from certify.guarantee import ABSTAIN, Certificate
from certify.sampling import sample_counts
from certify.smoothing import Smooth, certify, predict

__all__ = ["ABSTAIN", "Certificate", "Smooth", "certify", "predict", "sample_counts"]
