"""The shipped CIFAR-10 classifiers reproduce their published certificates digit for digit.

docs/cifar10/results/<model>_n10000.tsv holds the certificates of every 50th test image of the
JPEG copy of CIFAR-10 (Cohen et al. 2019's CERTIFY at n0 = 100, n = 10,000, alpha = 0.001). This
test certifies its first two images again with the shipped model, by name and offline, and must get
the same rows in every column but the time: the same prediction, count, lower bound and radius.
The images come from the JPEG copy in the workplace's shared data; without it the test is skipped.
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import pytest

from certify.cli.certify import main as certify_main

REPOSITORY = Path(__file__).resolve().parents[2]
ARCHIVE = REPOSITORY.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
RESULTS = REPOSITORY / "docs" / "cifar10" / "results"
MODELS = ("cifar10-cohen-sigma0.25", "cifar10-rush-sigma0.25", "cifar10-rush-consistency-sigma0.25",
          "cifar10-cohen-sigma0.50", "cifar10-rush-sigma0.50")
IMAGES = 2  # idx 0 and 50, the first rows of the published files (every 50th image)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cifar10_jpeg(tmp_path_factory) -> Path:
    """The test split of the JPEG copy, extracted into a temporary folder."""
    if not ARCHIVE.is_file():
        pytest.skip(f"the JPEG copy of CIFAR-10 is not here ({ARCHIVE})")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(ARCHIVE) as archive:
        members = [member for member in archive.getmembers()
                   if member.isfile() and member.name.lstrip("./").startswith("test/")]
        safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(root, members=members, **safety)
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.parametrize("model", MODELS)
def test_shipped_model_recertifies_its_published_rows(model, cifar10_jpeg, tmp_path):
    sigma = model.rsplit("sigma", 1)[1]  # certified at the sigma it was trained at, its name's
    published_file = RESULTS / f"{model}_n10000.tsv"
    if not (REPOSITORY / "encoders" / "pretrained" / f"{model}.pt").is_file():
        pytest.skip(f"{model} is not shipped yet")
    published = rows(published_file)[:IMAGES]
    assert [int(row["idx"]) for row in published] == [0, 50]
    out = tmp_path / "again.tsv"
    status = certify_main(["--model", model, "--dataset", "cifar10-jpeg", "--data-root",
                           str(cifar10_jpeg), "--sigma", sigma, "--skip", "50", "--max", "51",
                           "--n0", "100", "--n", "10000", "--alpha", "0.001", "--batch", "1000",
                           "--device", "cpu", "--quiet", "--out", str(out)])
    assert status == 0
    again = rows(out)
    for row in published + again:
        del row["time"]
    assert again == published
