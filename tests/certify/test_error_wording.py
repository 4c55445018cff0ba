"""Library errors name the arguments of the call; the commands name their flags instead.

A library message that points at another argument puts its name in backquotes (``pass `overwrite`
to replace it``); :func:`certify.cli.common.flags_for_arguments` turns each into the flag that sets
it, so the same fault reads right from Python and from the shell.
"""

from __future__ import annotations

import pytest
from command_output import one_line_error

from certify.cli.certify import main as certify_main
from certify.cli.common import OneLineParser, flags_for_arguments
from certify.cli.finetune import main as finetune_main
from certify.results import ResultsFile, settings_path
from certify.run_modes import CERTIFY_COLUMNS
from encoders.finetune import FinetuneConfig, finetune


def test_each_argument_in_backquotes_becomes_its_flag():
    parser = OneLineParser(prog="command")
    parser.add_argument("--out")
    parser.add_argument("--data-root", "--root", dest="root")
    parser.add_argument("--arch", dest="architecture")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--model-factory")
    message = ("pass `overwrite` or choose another `out`; `root`, `architecture`, `factory`; "
               "`elsewhere` has no flag; ``, `not an-argument` and out stay")
    assert flags_for_arguments(message, parser) == (
        "pass --overwrite or choose another --out; --data-root, --arch, --model-factory; "
        "elsewhere has no flag; ``, `not an-argument` and out stay")


def test_a_renamed_argument_keeps_its_name_where_the_command_has_no_such_flag():
    parser = OneLineParser(prog="command")
    assert flags_for_arguments("name it with `factory`", parser) == "name it with factory"


@pytest.fixture
def unreadable_results(tmp_path):
    """A results file whose recorded settings are not JSON."""
    out = tmp_path / "r.tsv"
    out.write_text("\t".join(CERTIFY_COLUMNS) + "\n")
    settings_path(out).write_text("{")
    return out


def test_a_results_file_that_cannot_be_resumed_names_overwrite_and_out(unreadable_results,
                                                                       capsys):
    with pytest.raises(ValueError, match="pass `overwrite` to replace it or choose another `out`"):
        ResultsFile(unreadable_results, CERTIFY_COLUMNS, {"command": "certify"})
    status = certify_main(["--sigma", "0.25", "--n", "100", "--max", "1", "--batch", "100",
                           "--quiet", "--out", str(unreadable_results)])
    line = one_line_error(capsys)
    assert status == 2
    assert line.endswith("pass --overwrite to replace it or choose another --out")


def test_an_encoder_with_an_architecture_names_both_arguments_then_both_flags(tmp_path, capsys):
    config = FinetuneConfig(dataset="digits", sigma=0.25, out=str(tmp_path / "c.pt"),
                            encoder="simclr.pt",
                            architecture="cifar_resnet20")
    with pytest.raises(ValueError, match="`architecture` applies to the baseline only; the "
                                         "`encoder` checkpoint fixes it"):
        finetune(config)
    status = finetune_main(["--dataset", "digits", "--sigma", "0.25", "--out",
                            str(tmp_path / "c.pt"), "--encoder", "simclr.pt",
                            "--arch", "cifar_resnet20"])
    assert status == 2
    assert one_line_error(capsys).endswith(
        "--arch applies to the baseline only; the --encoder checkpoint fixes it")
