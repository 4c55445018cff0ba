"""Certified accuracy, ACR, envelope and the results-file reader, against hand-made results and the
published Cohen et al. (2019) results file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from certify.analysis import (
    CertifiedResults,
    average_certified_radius,
    certified_accuracy,
    certified_accuracy_curve,
    certified_accuracy_table,
    certified_by_image,
    envelope,
    envelope_curve,
    paired_certified_table,
    parse_seconds,
    read_results,
    sigma_of,
    summarize,
)
from certify.guarantee import clopper_pearson_lower, radius_from_bound
from certify.results import settings_path

# A results file of Cohen et al.'s repository (ResNet-110, noise 0.25, certified at sigma 0.25);
# tests/data/cohen2019/README.md gives its provenance and that of its sigma 0.5 neighbour.
COHEN_FILE = (Path(__file__).resolve().parents[1] / "data" / "cohen2019"
              / "cifar10_resnet110_noise0.25_sigma0.25.tsv")

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def make_results(labels, predictions, radii) -> CertifiedResults:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return CertifiedResults(
        idx=np.arange(len(labels)),
        label=labels,
        predict=predictions,
        radius=radii,
        correct=(labels == predictions).astype(int),
        time=np.ones(len(labels)),
    )


# Six images: four correct with radii 0.1, 0.3, 0.3, 0.8; one wrong with radius 0.9; one abstention.
HAND_MADE = make_results([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 0, -1], [0.1, 0.3, 0.3, 0.8, 0.9, 0.0])


def write(tmp_path: Path, text: str, name: str = "results.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def slow_certified_accuracy(results: CertifiedResults, radius: float) -> float:
    """Cohen et al.'s definition row by row: correct and radius >= r, over all rows."""
    hits = sum(1 for c, r in zip(results.correct, results.radius) if c == 1 and r >= radius)
    return hits / len(results)


def test_certified_accuracy_of_hand_made_results():
    radii = [0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 0.85, 1.0]
    # Counted by hand from HAND_MADE: the wrong prediction and the abstention never count.
    expected = np.array([4, 4, 3, 3, 1, 1, 0, 0]) / 6
    np.testing.assert_allclose(certified_accuracy(HAND_MADE, radii), expected)


def test_average_certified_radius_is_mean_of_correct_radii_and_area_under_curve():
    assert average_certified_radius(HAND_MADE) == pytest.approx((0.1 + 0.3 + 0.3 + 0.8) / 6)
    breakpoints, accuracies = certified_accuracy_curve(HAND_MADE)
    # With steps-pre the value on (r_k, r_k+1] is accuracies[k + 1].
    area = float(np.sum(np.diff(breakpoints) * accuracies[1:]))
    assert area == pytest.approx(average_certified_radius(HAND_MADE))


def test_step_curve_matches_certified_accuracy_everywhere():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 3, 200), rng.integers(-1, 3, 200)
    results = make_results(labels, predictions, np.where(predictions == -1, 0.0, rng.random(200)))
    breakpoints, accuracies = certified_accuracy_curve(results)
    probes = np.concatenate([rng.random(500) * breakpoints[-1], breakpoints])
    # steps-pre: the curve's value at r is the accuracy at the first breakpoint >= r.
    drawn = accuracies[np.searchsorted(breakpoints, probes, side="left")]
    np.testing.assert_array_equal(drawn, certified_accuracy(results, probes))
    assert accuracies[-1] == 0 and breakpoints[0] == 0


def test_envelope_equals_pointwise_maximum_of_slow_reference():
    rng = np.random.default_rng(1)
    results_list = []
    for _ in range(3):
        labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        results_list.append(make_results(labels, predictions, rng.random(50) * rng.random()))
    radii = np.linspace(0, 1, 41)
    expected = [max(slow_certified_accuracy(r, radius) for r in results_list) for radius in radii]
    np.testing.assert_allclose(envelope(results_list, radii), expected)
    breakpoints, accuracies = envelope_curve(results_list)
    np.testing.assert_allclose(accuracies, envelope(results_list, breakpoints))


@pytest.mark.parametrize("radii", [[], [-0.1], [float("nan")], [float("inf")], [[0.1]]])
def test_bad_radii_are_refused(radii):
    with pytest.raises(ValueError, match="radii"):
        certified_accuracy(HAND_MADE, radii)


def test_envelope_of_nothing_is_refused():
    with pytest.raises(ValueError, match="results_list"):
        envelope([], [0.0])


def test_cohen_file_reads_unchanged_and_reproduces_published_table():
    results = read_results(COHEN_FILE)
    with open(COHEN_FILE, newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    assert len(results) == len(rows) == 500
    for name in ("idx", "label", "predict", "correct"):
        np.testing.assert_array_equal(getattr(results, name), [int(row[name]) for row in rows])
    for name in ("radius", "time"):
        np.testing.assert_array_equal(getattr(results, name), [float(row[name]) for row in rows])
    # The sigma = 0.25 row of Cohen et al.'s table (ICML 2019, Table 1), from their file.
    summary = summarize(results)
    published = {0.0: 0.748, 0.25: 0.600, 0.5: 0.428, 0.75: 0.266, 1.0: 0.0}
    assert summary["certified_accuracy"] == published
    assert summary["abstain_rate"] == 0.086
    assert summary["accuracy"] == 0.748
    assert summary["mean_time_s"] == pytest.approx(16.9, abs=0.05)
    assert summary["num_images"] == 500


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_cohen_files_largest_radii_are_those_of_alpha_0_01(sigma):
    """Cohen et al. certified at n = 100,000 and, as they state, alpha = 0.001; yet the four
    largest distinct radii of their results files are sigma * PhiInv of the Clopper-Pearson
    bound at alpha = 0.01 for 100,000, 99,999, 99,998 and 99,997 votes, rounded to the three
    significant digits the files print. At alpha = 0.001 no radius can pass
    sigma * PhiInv(0.001 ** (1 / 100,000)), which 77 rows at sigma 0.25 (0.955 and 0.978) and 9
    at 0.5 (1.96) do."""
    path = COHEN_FILE.with_name(f"cifar10_resnet110_noise{sigma:.2f}_sigma{sigma:.2f}.tsv")
    largest_first = np.unique(read_results(path).radius)[::-1]

    def radius(votes: int, alpha: float) -> float:
        return radius_from_bound(sigma, clopper_pearson_lower(votes, 100_000, alpha))

    at_alpha_0_01 = [float(f"{radius(100_000 - fewer, 0.01):.3g}") for fewer in range(4)]
    assert list(largest_first[:4]) == at_alpha_0_01
    assert largest_first[0] > radius(100_000, 0.001) + 0.02


def test_reader_accepts_timedelta_times_and_keeps_extra_columns(tmp_path):
    path = write(
        tmp_path,
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\tpA_lower\tcount\tsamples\n"
        "0\t3\t3\t0.378\t1\t0:00:15.400000\t0.93\t93000\t100000\n"
        "20\t7\t-1\t0.0\t0\t1 day, 1:02:03.5\t0.41\t41000\t100000\n\n",
    )
    results = read_results(path)
    np.testing.assert_array_equal(results.time, [15.4, 86400 + 3723.5])
    assert results.extra == {
        "pA_lower": ("0.93", "0.41"),
        "count": ("93000", "41000"),
        "samples": ("100000", "100000"),
    }
    np.testing.assert_array_equal(results.predict, [3, -1])


def test_reader_accepts_windows_line_ends_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_bytes(
        b"\xef\xbb\xbf" + (HEADER + "0\t3\t3\t0.378\t1\t15.4\n").replace("\n", "\r\n").encode()
    )
    results = read_results(path)
    assert (results.idx.tolist(), results.radius.tolist(), results.time.tolist()) == (
        [0],
        [0.378],
        [15.4],
    )


@pytest.mark.parametrize(
    "text, seconds",
    [("15.4", 15.4), ("0:00:15.400000", 15.4), ("2:03:04", 7384.0), ("1 day, 0:00:01", 86401.0)],
)
def test_parse_seconds(text, seconds):
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0:0:15", "15 s", "-1", "nan", "inf"])
def test_parse_seconds_refuses_other_text(text):
    with pytest.raises(ValueError):
        parse_seconds(text)


ROW = "0\t3\t3\t0.378\t1\t15.4\n"
BAD_FILES = {
    "empty": ("", "empty"),
    "blank lines only": ("\n\n", "empty"),
    "header only": (HEADER, "no rows"),
    "comma-separated": (HEADER.replace("\t", ",") + ROW.replace("\t", ","), "not tab-separated"),
    "space-separated": (HEADER.replace("\t", " ") + ROW.replace("\t", " "), "not tab-separated"),
    "missing column": (HEADER.replace("\tradius", "") + "0\t3\t3\t1\t15.4\n", "lacks.*radius"),
    "short row": (HEADER + "0\t3\t3\t0.378\t1\n", "line 2 has 5 tab-separated fields"),
    "unparsable radius": (HEADER + ROW.replace("0.378", "abc"), "line 2, column radius.*'abc'"),
    "unparsable time": (HEADER + ROW.replace("15.4", "soon"), "line 2, column time"),
    "float label": (HEADER + "0\t3.0\t3\t0.378\t1\t15.4\n", "line 2, column label"),
    "correct contradicts predict": (HEADER + "0\t3\t4\t0.378\t1\t15.4\n", "predict == label"),
    "correct not 0/1": (HEADER + "0\t3\t3\t0.378\t2\t15.4\n", "correct must be 0 or 1"),
    "negative radius": (HEADER + "0\t3\t3\t-0.1\t1\t15.4\n", "radius must be finite and >= 0"),
    "nan radius": (HEADER + "0\t3\t3\tnan\t1\t15.4\n", "radius must be finite and >= 0"),
    "abstention with radius": (HEADER + "0\t3\t-1\t0.2\t0\t15.4\n", "abstention must have radius"),
    "repeated idx": (HEADER + ROW + ROW, "idx 0 repeats"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_give_one_clear_error_naming_the_file(tmp_path, case):
    text, problem = BAD_FILES[case]
    path = write(tmp_path, text, name="bad_sigma0.25.tsv")
    with pytest.raises(ValueError, match=problem) as error:
        read_results(path)
    message = str(error.value)
    assert message.startswith(f"results file {path}: ") and "\n" not in message


def test_missing_file_gives_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="results file .*absent.tsv: No such file"):
        read_results(tmp_path / "absent.tsv")


def test_results_columns_must_have_equal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        CertifiedResults(idx=[0, 1], label=[1], predict=[1], radius=[0.1], correct=[1], time=[1.0])


# Two hand-made results for the tables: HAND_MADE and one with larger radii but fewer correct.
OTHER = make_results([1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, -1], [0.5, 1.0, 1.0, 0.2, 0.9, 0.0])


def test_markdown_table_marks_the_best_entry_per_radius():
    table = certified_accuracy_table({"σ = 0.25": HAND_MADE, "σ = 0.50": OTHER}, [0.0, 0.3, 0.75])
    # HAND_MADE: 4/6, 3/6, 1/6, ACR 1.5/6; OTHER: 3/6, 3/6, 2/6, ACR 2.5/6, counted by hand; at
    # r = 0.3 every row ties, so that column has no best entry.
    assert table == (
        "|  | r = 0.00 | r = 0.30 | r = 0.75 | ACR |\n"
        "|---|---|---|---|---|\n"
        "| σ = 0.25 | **0.667** | 0.500 | 0.167 | 0.250 |\n"
        "| σ = 0.50 | 0.500 | 0.500 | **0.333** | **0.417** |\n"
    )


def test_latex_table_escapes_labels_and_marks_the_best_entry():
    table = certified_accuracy_table(
        {"σ = 0.25 & 50%": HAND_MADE, "b_2": OTHER}, [0.125], style="latex", decimals=2
    )
    # At r = 0.125 both have 3 of 6 correct with radius >= r: a tie of all rows, nothing bold.
    assert table == (
        "\\begin{tabular}{lrr}\n"
        "\\hline\n"
        " & $r = 0.125$ & ACR \\\\\n"
        "\\hline\n"
        "$\\sigma$ = 0.25 \\& 50\\% & 0.50 & 0.25 \\\\\n"
        "b\\_2 & 0.50 & \\textbf{0.42} \\\\\n"
        "\\hline\n"
        "\\end{tabular}\n"
    )


def test_certified_by_image_follows_the_certified_accuracy_rule():
    # HAND_MADE at 0.3: images 1, 2 (radius exactly 0.3) and 3 correct; 4 wrong at 0.9; 5 abstains.
    by_image = certified_by_image(HAND_MADE, 0.3)
    assert by_image == {0: False, 1: True, 2: True, 3: True, 4: False, 5: False}
    assert sum(by_image.values()) / len(by_image) == certified_accuracy(HAND_MADE, [0.3])[0]
    with pytest.raises(ValueError, match="radius"):
        certified_by_image(HAND_MADE, -0.1)


def test_paired_table_compares_every_two_results_over_the_same_images():
    # Certified correctly at r (counted by hand from HAND_MADE and OTHER, idx 0-5):
    # r = 0: HAND_MADE {0, 1, 2, 3}, OTHER {0, 1, 2}; r = 0.75: HAND_MADE {3}, OTHER {1, 2}.
    # A results file over other images (idx 10-15) is paired with neither.
    elsewhere = CertifiedResults(idx=np.arange(10, 16), label=OTHER.label, predict=OTHER.predict,
                                 radius=OTHER.radius, correct=OTHER.correct, time=OTHER.time)
    table = paired_certified_table({"a": HAND_MADE, "b|c": OTHER, "far": elsewhere}, [0.0, 0.75])
    assert table == (
        "| certified by A only / by B only (exact McNemar p) | r = 0.00 | r = 0.75 |\n"
        "|---|---|---|\n"
        "| a vs b\\|c | 1 / 0 (p = 1) | 1 / 2 (p = 1) |\n"
    )
    latex = paired_certified_table({"a_1": HAND_MADE, "b": OTHER}, [0.0], style="latex")
    assert latex.splitlines()[2:5] == [
        "certified by A only / by B only (exact McNemar p) & $r = 0.00$ \\\\", "\\hline",
        "a\\_1 vs b & 1 / 0 (p = 1) \\\\"]
    assert paired_certified_table({"a": HAND_MADE, "far": elsewhere}, [0.0]) == ""
    with pytest.raises(ValueError, match="radii"):
        paired_certified_table({"a": HAND_MADE, "b": OTHER}, [])
    with pytest.raises(ValueError, match="style"):
        paired_certified_table({"a": HAND_MADE, "b": OTHER}, [0.0], style="html")


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"style": "html"}, "style"),
        ({"decimals": -1}, "decimals"),
        ({"decimals": 1.5}, "decimals"),
    ],
)
def test_table_refuses_bad_arguments(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        certified_accuracy_table({"a": HAND_MADE}, [0.0], **arguments)
    with pytest.raises(ValueError, match="results_by_label"):
        certified_accuracy_table({}, [0.0])


@pytest.mark.parametrize(
    "name, sigma",
    [
        ("cifar10_resnet110_noise0.25_sigma0.25.tsv", 0.25),
        ("sigma_0.50", 0.5),  # Cohen et al.'s layout: noise_0.50/test/sigma_0.50
        # our certify's name: the model's training sigma first, the certification sigma last
        ("digits-sigma0.50_digits-test_sigma0.25_n100000.tsv", 0.25),
        ("Sigma-1.tsv", 1.0),
        ("noise_0.25.tsv", None),
    ],
)
def test_sigma_from_the_file_name(tmp_path, name, sigma):
    assert sigma_of(tmp_path / name) == sigma


def test_sigma_from_the_settings_file_comes_first(tmp_path):
    path = tmp_path / "run_sigma0.25.tsv"
    settings_path(path).write_text('{"sigma": 0.12, "n": 100}', encoding="utf-8")
    assert sigma_of(path) == 0.12
    settings_path(path).write_text("damaged", encoding="utf-8")
    assert sigma_of(path) == 0.25


def test_ties_for_best_are_all_bold_unless_every_row_ties():
    # At r = 0.3 "a" and "b" tie for best (3/6) above "c" (0/6): both bold. At r = 2 every row
    # prints 0.000, and a one-row table has no comparison to mark either: nothing bold.
    third = make_results([1, 2], [0, 0], [0.5, 0.5])
    table = certified_accuracy_table({"a": HAND_MADE, "b": OTHER, "c": third}, [0.3, 2.0])
    assert "| a | **0.500** | 0.000 | 0.250 |" in table
    assert "| b | **0.500** | 0.000 | **0.417** |" in table
    assert "| c | 0.000 | 0.000 | 0.000 |" in table
    assert "**" not in certified_accuracy_table({"a": HAND_MADE}, [0.0, 0.5])
