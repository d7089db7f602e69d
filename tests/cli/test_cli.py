"""The command line: help, tables, and one-line errors."""

from __future__ import annotations

import pytest

from sabma.cli.main import main
from sabma.runs.tables import mean_std_table


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["evaluate"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sabma" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("sabma ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["train", "--out", "x", "--set", "optim.lr"], "override 'optim.lr' is not of the form"),
        (["train", "--out", "x", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", "--out", "x", "--config", "missing.yaml"], "config file missing.yaml does not"),
        (["evaluate", "nowhere"], "nowhere is not a run directory"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sabma: error: ") and message in err and "\n" not in err


def test_table_has_mean_and_spread_over_seeds() -> None:
    metrics = {"acc": 0.5, "nll": 1.0, "ece": 0.1, "brier": 0.2}
    rows = {"SGD": [dict(metrics), dict(metrics, acc=0.7)], "SA-BMA": [dict(metrics)] * 2}
    table = mean_std_table(rows)
    assert "| SGD | 0.600 ± 0.141 | 1.000 ± 0.000 |" in table
    assert table.count("\n") == 3
    single = mean_std_table({"probe": [metrics]})
    assert "| probe | 0.500 | 1.000 | 0.100 | 0.200 |" in single  # no spread from one value
