"""The RUSH-claim table: accuracies with exact intervals, naive against EOT paired on the same
images, and certified accuracy at each L2 epsilon, from hand-made results files."""

from __future__ import annotations

import pytest
from rush_claim_table import eps_label, main

ATTACK_HEADER = "idx\tlabel\tclassifier\tattack\tnorm\teps\tpredict\tcorrect\ttime\n"


def _attack_file(tmp_path, naive: list[int], eot: list[int]):
    lines = [ATTACK_HEADER]
    for idx, (naive_ok, eot_ok) in enumerate(zip(naive, eot)):
        for attack, ok in (("clean", 1), ("naive-pgd", naive_ok), ("eot-pgd", eot_ok)):
            norm, eps = ("-", "0") if attack == "clean" else ("l2", "0.5")
            predicted = 3 if ok else 1
            lines.append(f"{idx}\t3\tsmoothed\t{attack}\t{norm}\t{eps}\t{predicted}\t{ok}\t0.1\n")
    path = tmp_path / "attack.tsv"
    path.write_text("".join(lines))
    return path


def _certify_file(tmp_path, radii: list[float]):
    rows = ["idx\tlabel\tpredict\tradius\tcorrect\ttime\n"]
    rows += [f"{idx}\t3\t3\t{radius}\t1\t0.1\n" for idx, radius in enumerate(radii)]
    path = tmp_path / "certify.tsv"
    path.write_text("".join(rows))
    return path


def test_rows_hold_intervals_the_paired_test_and_certified_accuracy(tmp_path, capsys):
    # 10 images: naive PGD leaves 9, EOT-PGD 2; every image EOT keeps, naive keeps too.
    naive, eot = [1] * 9 + [0], [1, 1] + [0] * 8
    radii = [0.6, 0.4, 0.7, 0.1, 0.0, 0.5, 0.2, 0.3, 0.9, 0.45]  # 4 of 10 at least 0.5
    out = tmp_path / "table.md"
    assert main(["--model", "toy", str(_attack_file(tmp_path, naive, eot)),
                 str(_certify_file(tmp_path, radii)), "--out", str(out)]) == 0
    rows = {line.split(" | ")[2]: line for line in out.read_text().splitlines()[2:]}
    assert "| 1.000 [0.692, 1.000] |" in rows["clean"]  # 10 of 10: 1 - 0.025 ** (1 / 10)
    assert "| 0.900 [0.555, 0.997] | 0.400 |" in rows["naive-pgd"]
    # 7 discordant images, all one way: p = 2 / 2 ** 7.
    assert rows["eot-pgd"].endswith("| 0.200 [0.025, 0.556] | 0.400 | "
                                    "robust to naive only 7, to EOT only 0, p = 0.016 |")
    assert capsys.readouterr().out.strip() == out.read_text().strip()


def test_certified_accuracy_is_taken_on_the_attacked_images_alone(tmp_path):
    # Images 0 and 1 attacked of 3 certified; at 0.5 image 0 is certified, 1 is not, 2 is.
    attack = _attack_file(tmp_path, [1, 0], [0, 0])
    out = tmp_path / "table.md"
    assert main(["--model", "toy", str(attack), str(_certify_file(tmp_path, [0.6, 0.1, 0.9])),
                 "--out", str(out)]) == 0
    rows = {line.split(" | ")[2]: line for line in out.read_text().splitlines()[2:]}
    assert "| 0.500 |" in rows["naive-pgd"]


def test_certify_file_lacking_an_attacked_image_is_refused(tmp_path):
    attack = _attack_file(tmp_path, [1, 0, 1], [0, 0, 1])
    with pytest.raises(ValueError, match=r"does not hold the attacked images \[2\]"):
        main(["--model", "toy", str(attack), str(_certify_file(tmp_path, [0.5, 0.5]))])


@pytest.mark.parametrize(("norm", "eps", "label"), [
    ("linf", "0.03137254901960784", "8/255"), ("linf", str(2 / 255), "2/255"),
    ("linf", "0.03", "0.03"), ("l2", "0.5", "0.5"), ("l2", str(8 / 255), str(8 / 255)),
    ("-", "0", "0"),
])
def test_l_inf_radii_in_pixel_steps_read_as_fractions_of_255(norm, eps, label):
    assert eps_label(norm, eps) == label


def test_models_attacked_on_the_same_images_are_paired_per_attack(tmp_path):
    # Model A keeps images 0-5 under naive PGD and 0-1 under EOT; model B keeps 0-5 and 0-5:
    # EOT-PGD ranks B above A on 4 images, none the other way (p = 2 / 2 ** 4); naive PGD ties.
    first = tmp_path / "a"
    second = tmp_path / "b"
    third = tmp_path / "c"
    for folder in (first, second, third):
        folder.mkdir()
    a = _attack_file(first, [1] * 6 + [0] * 4, [1] * 2 + [0] * 8)
    b = _attack_file(second, [1] * 6 + [0] * 4, [1] * 6 + [0] * 4)
    other_images = _attack_file(third, [1] * 6, [1] * 6)  # images 0-5 only: paired with neither
    out = tmp_path / "table.md"
    assert main(["--model", "A", str(a), "--model", "B", str(b), "--model", "C",
                 str(other_images), "--out", str(out)]) == 0
    paired = out.read_text().split("\n\n")[1].splitlines()
    assert paired[0].startswith("| classifier | attack | norm | eps | images | models A vs B |")
    rows = {line.split(" | ")[1]: line for line in paired[2:]}
    assert len(paired) == 2 + 3  # clean, naive and EOT, each A vs B only
    assert rows["eot-pgd"] == ("| smoothed | eot-pgd | l2 | 0.5 | 10 | A vs B | 0.200 [0.025, "
                               "0.556] | 0.600 [0.262, 0.878] | 0 / 4, p = 0.12 |")
    assert rows["naive-pgd"].endswith("| 0 / 0, p = 1 |")
