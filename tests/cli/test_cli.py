"""The command line: help, the demo table, and one-line errors."""

from __future__ import annotations

import pytest

from sabma.cli.demo import format_table
from sabma.cli.main import main


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("sabma ")


def test_bad_input_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sabma: error: --seeds must be at least 1, got 0"


def test_table_has_mean_and_spread_over_seeds() -> None:
    metrics = {"acc": 0.5, "nll": 1.0, "ece": 0.1, "brier": 0.2}
    runs = [{k: dict(metrics) for k in ("sgd", "sabma_bma", "sabma_mean")} for _ in range(2)]
    runs[1]["sgd"]["acc"] = 0.7
    table = format_table(runs)
    assert "| SGD (point estimate) | 0.600 ± 0.141 |" in table
    assert table.count("\n") == 4
