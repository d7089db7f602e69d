"""``sabma benchmark``: results files, resuming, half-written runs, argument errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sabma.cli.main import main
from sabma.experiments.benchmark import knob_override, parse_methods, parse_seeds, run_benchmark
from sabma.methods import METHODS
from tests.data.helpers import write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY


def test_benchmark_writes_tables_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    out = tmp_path / "bench"
    overrides = [*TINY, f"data.root={root}", "optim.epochs=2"]
    rows = run_benchmark(None, ["sgd", "sabma"], [0, 1], out, overrides, progress=False)
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("sgd", 0),
        ("sgd", 1),
        ("sabma", 0),
        ("sabma", 1),
    ]
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and {"acc", "nll", "ece", "brier", "train_s"} <= set(table[0])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))
    markdown = (out / "results.md").read_text()
    assert "| sgd |" in markdown and "| sabma |" in markdown and (out / "results.png").is_file()
    # the paired table: sabma − sgd per seed, then mean ± std over the two seeds
    paired = markdown.split("Paired differences")[1]
    delta = [rows[2]["nll"] - rows[0]["nll"], rows[3]["nll"] - rows[1]["nll"]]
    mean, spread = sum(delta) / 2, abs(delta[0] - delta[1]) / 2**0.5
    assert f"{mean:+.3f} ± {spread:.3f}" in paired.split("| sabma |")[1].split("\n")[0]
    assert "| sgd |" not in paired

    finished = out / "sgd" / "seed0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    half = out / "sabma" / "seed1" / "metrics.json"
    half.unlink()  # as if killed before the end
    again = run_benchmark(None, ["sgd", "sabma"], [0, 1], out, overrides, progress=False)
    assert finished.stat().st_mtime_ns == stamp  # reused, not rerun
    untimed = [[{k: v for k, v in r.items() if k != "train_s"} for r in rs] for rs in (rows, again)]
    assert half.is_file() and untimed[0] == untimed[1]  # rerun: same metrics (deterministic)
    with pytest.raises(ValueError, match="another configuration"):
        run_benchmark(None, ["sgd"], [0], out, [*overrides, "optim.lr=0.5"], progress=False)


def test_argument_parsing_and_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_seeds("0, 2") == [0, 2]
    assert parse_methods("all") == sorted(METHODS) and "sabma" in parse_methods("all")
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]"):
        parse_methods("sgd,nope")
    assert main(["benchmark", "--out", "x", "--seeds", "a,b"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err


def test_every_method_knob_grid_is_valid_and_holds_its_default() -> None:
    """The grids ``--knob-search`` gives each method pass the configuration checks, name a
    real setting, and contain the configured default (so stage 1's run is one candidate), or
    extend a default of None (the model's own dropout rate)."""
    from sabma.config import config_from_dict
    from sabma.pipeline.checks import check_config
    from sabma.pipeline.grid import configured_knob

    searched = {name for name, cls in METHODS.items() if cls.knob}
    assert searched == set(METHODS) - {"sgd", "ensemble"}
    for name in sorted(searched):
        plain = config_from_dict({}, [f"method.name={name}"])
        cfg = config_from_dict({}, [f"method.name={name}", *knob_override(plain)])
        check_config(cfg)
        assert cfg.optim.knob_grid == [float(v) for v in METHODS[name].knob_grid]
        default = configured_knob(cfg)
        assert default is None or default in cfg.optim.knob_grid, name
    assert knob_override(config_from_dict({}, ["method.name=sgd"])) == []


def test_benchmark_skips_a_knob_that_does_nothing() -> None:
    """Where the configuration leaves the method's knob without effect, ``--knob-search``
    gives no grid (the candidates would be identical runs), and the configuration passes."""
    from sabma.config import config_from_dict
    from sabma.pipeline.checks import check_config

    for options in (
        ["method.name=vi", "method.variance.kind=gradient"],
        ["method.name=ivon", "method.ivon.ess=100.0"],
        ["method.name=laplace", "method.laplace.subset=subset", "method.laplace.hessian=diag"],
    ):
        cfg = config_from_dict({}, options)
        assert knob_override(cfg) == [], options
        check_config(cfg)
    # the same methods with their knob in use get their grid
    for name in ("vi", "ivon", "laplace"):
        assert knob_override(config_from_dict({}, [f"method.name={name}"])), name


def test_benchmark_knob_search_reaches_each_run(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    overrides = [*TINY, f"data.root={root}", "optim.epochs=2"]
    rows = run_benchmark(
        None, ["sam", "sgd"], [0], tmp_path / "b", overrides, progress=False, knob_search=True
    )
    search = json.loads((tmp_path / "b" / "sam" / "seed0" / "lr_search.json").read_text())
    assert search["knob"]["name"] == "method.sam.rho"
    grid = set(search["knob"]["grid"])  # the method's grid, and one step past an edge if won
    assert {"0.01", "0.05", "0.2"} <= grid and grid - {"0.01", "0.05", "0.2"} <= {"0.002", "0.8"}
    assert rows[0]["knob"] == search["knob"]["chosen"] and rows[1]["knob"] is None
    # results.md names the runs whose choice sits on the edge of the (extended) grid
    text = (tmp_path / "b" / "results.md").read_text()
    assert rows[0]["edge"] == ",".join(search["edge"]) and rows[1]["edge"] == ""
    assert ("On the edge of the searched grid" in text) == bool(rows[0]["edge"])
    if rows[0]["edge"]:
        assert f"sam seed 0 ({rows[0]['edge']})" in text
    # a knob grid of the user's wins over the method's, as a user's lr grid does
    run_benchmark(
        None,
        ["sam"],
        [0],
        tmp_path / "c",
        [*overrides, "optim.knob_grid=[0.02]"],
        progress=False,
        knob_search=True,
    )
    search = json.loads((tmp_path / "c" / "sam" / "seed0" / "lr_search.json").read_text())
    grid = set(search["knob"]["grid"])
    assert {"0.05", "0.02"} <= grid and grid - {"0.05", "0.02"} <= {"0.008", "0.125"}


def test_benchmark_ood_and_selective_tables(tmp_path: Path) -> None:
    """With OOD sets, every run is scored against them; ood.md and selective.md tabulate the
    methods (SA-BMA's own mean as a row) with per-seed paired differences against SA-BMA."""
    from sabma.ood.evaluate import OODOptions

    pytest.importorskip("sklearn")
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    overrides = [*TINY, f"data.root={root}", "optim.epochs=2", "data.classes=[0,1,2,3,4]"]
    ood = OODOptions(("near", "far"), size=20)
    run_benchmark(None, ["sabma", "sgd"], [0, 1], tmp_path / "b", overrides, False, False, ood=ood)
    text = (tmp_path / "b" / "ood.md").read_text()
    for heading in ("## near, raw", "## far, raw", "## near, temperature-scaled (TS)"):
        assert heading in text
    assert "| sabma (posterior mean) |" in text and "| mutual information |" in text
    assert "| sgd | " in text and "SA-BMA − the row, per seed" in text
    selective = (tmp_path / "b" / "selective.md").read_text()
    assert "| sabma | " in selective and "AURC (max-prob.)" in selective
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Selective prediction" in report and "Out-of-distribution detection" in report
    # the runs are reused; a second call with the same sets trains and scores nothing new
    before = (tmp_path / "b" / "sgd" / "seed0" / "metrics.json").read_bytes()
    run_benchmark(None, ["sgd"], [0], tmp_path / "b", overrides, False, False, ood=ood)
    assert (tmp_path / "b" / "sgd" / "seed0" / "metrics.json").read_bytes() == before
