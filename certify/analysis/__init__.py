"""Analysis of certification results: reading results files, certified accuracy, average certified
radius, the envelope over noise levels, confidence intervals of accuracies, the exact paired test
of two attacks or two models, and the tables papers print.

Example:
    >>> from certify.analysis import certified_accuracy, read_results, summarize
    >>> results = read_results("results/digits_sigma0.25.tsv")
    >>> certified_accuracy(results, [0.0, 0.25, 0.5])
    array([0.93, 0.81, 0.52])
    >>> summarize(results)["abstain_rate"]
    0.03
"""

from certify.analysis.intervals import accuracy_interval
from certify.analysis.metrics import (
    SUMMARY_RADII,
    average_certified_radius,
    certified_accuracy,
    certified_accuracy_curve,
    certified_by_image,
    envelope,
    envelope_curve,
    summarize,
)
from certify.analysis.paired import PairedTest, mcnemar_exact, paired_certified
from certify.analysis.reader import (
    COLUMNS,
    CertifiedResults,
    parse_seconds,
    read_results,
    sigma_of,
)
from certify.analysis.tables import (
    TABLE_STYLES,
    certified_accuracy_table,
    paired_certified_table,
    short_number,
)

__all__ = [
    "COLUMNS",
    "SUMMARY_RADII",
    "TABLE_STYLES",
    "CertifiedResults",
    "PairedTest",
    "accuracy_interval",
    "average_certified_radius",
    "certified_accuracy",
    "certified_accuracy_curve",
    "certified_accuracy_table",
    "certified_by_image",
    "envelope",
    "envelope_curve",
    "mcnemar_exact",
    "paired_certified",
    "paired_certified_table",
    "parse_seconds",
    "read_results",
    "short_number",
    "sigma_of",
    "summarize",
]
