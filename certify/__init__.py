"""Randomized-smoothing certification of image classifiers (Cohen, Rosenfeld and Kolter 2019).

Public API::

    from certify import ABSTAIN, Smooth, certify, predict
"""

from certify.smoothing import ABSTAIN, Certificate, Smooth, certify, predict, sample_counts

__all__ = ["ABSTAIN", "Certificate", "Smooth", "certify", "predict", "sample_counts"]
