"""``evaluate --shift`` on a run and on a benchmark folder: the metrics.json section and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sabma.cli.main import main
from sabma.config import config_from_dict
from sabma.experiments.benchmark import run_benchmark
from sabma.experiments.shift_summary import write_shift_summary
from sabma.pipeline.evaluate import evaluate_run
from sabma.pipeline.train import train_run
from sabma.runs.benchmark_folder import benchmark_runs
from sabma.shift.evaluate import ShiftOptions
from tests.data.helpers import write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY


def test_shift_section_per_corruption_and_mean(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sabma"])
    run = tmp_path / "run"
    before = train_run(cfg, run, progress=False)
    options = ShiftOptions(
        corruptions=("gaussian_noise", "brightness"),
        severities=(1, 5),
        size=20,
        samples=3,
        cache_dir=tmp_path / "cache",
    )
    metrics = evaluate_run(run, progress=False, shift=options)
    shift = metrics["shift"]
    assert shift["size"] == 20 and shift["severities"] == [1, 5] and shift["samples"] == 3
    assert metrics["samples"] == cfg.eval.samples  # the clean evaluation keeps the run's S
    assert set(shift["per_corruption"]) == {"gaussian_noise", "brightness"}
    for severity in ("1", "5"):
        for key in ("acc", "nll", "ece", "brier"):
            values = [shift["per_corruption"][c][severity][key] for c in shift["corruptions"]]
            assert shift["mean"][severity][key] == pytest.approx(sum(values) / 2)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4
    # the clean and test metrics are untouched by the shift evaluation
    assert metrics["test"]["bma"]["nll"] == pytest.approx(before["test"]["bma"]["nll"])
    # a later evaluation without --shift keeps the section
    again = evaluate_run(run, progress=False)
    assert again["shift"] == shift
    assert json.loads((run / "metrics.json").read_text())["shift"] == shift
    report = (run / "report.md").read_text()
    assert "## Distribution shift" in report and "| severity 5 |" in report


def test_shift_reports_the_temperature_scaled_metrics_with_the_clean_temperature(
    tmp_path: Path,
) -> None:
    """A point method's clean shift row is its test row: raw and, with the validation-fitted
    temperature applied, temperature-scaled; every corrupted set and mean gets ts_nll/ts_ece."""
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sgd"])
    run = tmp_path / "run"
    train_run(cfg, run, progress=False)
    options = ShiftOptions(corruptions=("contrast",), severities=(3,), cache_dir=tmp_path / "c")
    metrics = evaluate_run(run, progress=False, shift=options, temperature_scaling=True)
    assert metrics["temperature"] != pytest.approx(1.0)
    clean, test = metrics["shift"]["clean"], metrics["test"]
    assert clean["nll"] == pytest.approx(test["bma"]["nll"])
    assert clean["ts_nll"] == pytest.approx(test["bma_ts"]["nll"])
    assert clean["ts_ece"] == pytest.approx(test["bma_ts"]["ece"])
    corrupted = metrics["shift"]["per_corruption"]["contrast"]["3"]
    assert corrupted["ts_nll"] != pytest.approx(corrupted["nll"])
    assert metrics["shift"]["mean"]["3"]["ts_nll"] == pytest.approx(corrupted["ts_nll"])
    plain = evaluate_run(run, progress=False, shift=options, temperature_scaling=False)
    assert "ts_nll" not in plain["shift"]["clean"]


def test_benchmark_folder_shift_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    bench = tmp_path / "bench"
    run_benchmark(None, ["sgd", "sabma"], [0], bench, [*TINY, f"data.root={root}"], progress=False)
    assert len(benchmark_runs(bench, [0])) == 2
    with pytest.raises(ValueError, match=r"no finished run of seeds \[1\]"):
        benchmark_runs(bench, [1])
    args = [
        "evaluate",
        str(bench),
        "--shift",
        "--corruptions",
        "contrast",
        "--severities",
        "2,4",
        "--shift-size",
        "10",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--seeds",
        "0",
        "--no-progress",
    ]
    code = main(args)
    assert code == 0
    table = (bench / "shift.md").read_text()
    assert "| sabma | 0 |" in table and "| sgd | 0 |" in table  # each row says its seeds
    assert "| method | seeds | clean | s2 | s4 |" in table
    assert "## NLL (TS)" in table and "## ECE (TS)" in table  # raw and calibrated side by side
    # the paired section: SA-BMA − SGD on the same seed, at each severity
    shifts = {
        name: json.loads((bench / name / "seed0" / "metrics.json").read_text())["shift"]
        for name in ("sabma", "sgd")
    }
    paired = table.split("## NLL: method − sgd on the same seed")[1].split("##")[0]
    delta = shifts["sabma"]["mean"]["4"]["nll"] - shifts["sgd"]["mean"]["4"]["nll"]
    row = next(line for line in paired.splitlines() if line.startswith("| sabma |"))
    assert row.split(" | ")[-1].rstrip(" |") == f"{delta:+.3f}"
    assert "| sgd |" not in paired
    # and what averaging buys: SA-BMA's BMA − its own mean (measured with --shift), not SGD's
    averaging = table.split("## NLL: BMA − the same posterior's mean")[1].split("##")[0]
    sabma = shifts["sabma"]
    delta = sabma["mean"]["4"]["nll"] - sabma["at_mean"]["mean"]["4"]["nll"]
    row = next(line for line in averaging.splitlines() if line.startswith("| sabma |"))
    assert row.split(" | ")[-1].rstrip(" |") == f"{delta:+.3f}"
    assert "| sgd |" not in averaging
    # --shift-mean-only on the folder: adds the mean where it can, skips the point estimate
    sabma_metrics = json.loads((bench / "sabma" / "seed0" / "metrics.json").read_text())
    del sabma_metrics["shift"]["at_mean"]
    (bench / "sabma" / "seed0" / "metrics.json").write_text(json.dumps(sabma_metrics))
    sgd_before = (bench / "sgd" / "seed0" / "metrics.json").read_bytes()
    code = main([*args[:2], "--shift-mean-only", *args[3:]])
    assert code == 0
    assert "skipped" in capsys.readouterr().out
    assert (bench / "sgd" / "seed0" / "metrics.json").read_bytes() == sgd_before
    again = json.loads((bench / "sabma" / "seed0" / "metrics.json").read_text())["shift"]
    assert again["at_mean"] == shifts["sabma"]["at_mean"]
    assert {k: v for k, v in again.items() if k != "at_mean"} == {
        k: v for k, v in shifts["sabma"].items() if k != "at_mean"
    }
    # --missing: both runs have their section, so nothing is evaluated again
    before = {m: (bench / m / "seed0" / "metrics.json").read_bytes() for m in ("sgd", "sabma")}
    assert main([*args, "--missing"]) == 0
    assert capsys.readouterr().out.count("it has a shift section already") == 2
    assert {m: (bench / m / "seed0" / "metrics.json").read_bytes() for m in before} == before
    assert main(["evaluate", str(bench), "--missing", "--no-progress"]) == 2
    assert "--missing applies with --shift" in capsys.readouterr().err
    assert (bench / "shift.png").stat().st_size > 1000
    report = (bench / "report.md").read_text()
    assert report.startswith("# Benchmark") and "## Corruption benchmark" in report
    assert "![metrics against severity](shift.png)" in report
    assert main(["evaluate", str(tmp_path), "--no-progress"]) == 2  # neither run nor benchmark
    assert "neither a run directory" in capsys.readouterr().err
    # runs that measured different corrupted sets are named in a warning above the tables
    assert "different corrupted sets" not in table
    sgd_file = bench / "sgd" / "seed0" / "metrics.json"
    sgd_metrics = json.loads(sgd_file.read_text())
    sgd_metrics["shift"]["size"] = 20
    sgd_file.write_text(json.dumps(sgd_metrics))
    write_shift_summary(bench)
    warning = (bench / "shift.md").read_text().split("\n\n")[1]
    assert warning.startswith("**Warning: the runs measured different corrupted sets**")
    assert "contrast on 10 images: sabma/seed0" in warning
    assert "contrast on 20 images: sgd/seed0" in warning


def test_a_posteriors_mean_is_measured_on_the_shifted_sets_too(tmp_path: Path) -> None:
    """``shift.at_mean``: the posterior mean on the same corrupted sets (its clean row is the
    test split's mean row, raw and scaled with the mean's own temperature). ``mean_only`` adds
    it to an existing section without touching the BMA's figures, and refuses what it cannot
    add to, leaving metrics.json as it was."""
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sabma"])
    run = tmp_path / "run"
    train_run(cfg, run, progress=False)
    options = ShiftOptions(
        corruptions=("contrast", "gaussian_noise"), severities=(5,), cache_dir=tmp_path / "c"
    )
    metrics = evaluate_run(run, progress=False, shift=options, temperature_scaling=True)
    at_mean = metrics["shift"]["at_mean"]
    assert at_mean["clean"]["nll"] == pytest.approx(metrics["test"]["mean"]["nll"])
    assert at_mean["clean"]["ts_nll"] == pytest.approx(metrics["test"]["mean_ts"]["nll"])
    assert at_mean["mean"]["5"]["nll"] != pytest.approx(metrics["shift"]["mean"]["5"]["nll"])
    # the mean alone, added to the section: the BMA's figures are kept as they were
    stripped = {k: v for k, v in metrics["shift"].items() if k != "at_mean"}
    stored = json.loads((run / "metrics.json").read_text())
    stored["shift"] = stripped
    (run / "metrics.json").write_text(json.dumps(stored))
    only = ShiftOptions(
        corruptions=("contrast", "gaussian_noise"),
        severities=(5,),
        cache_dir=tmp_path / "c",
        mean_only=True,
    )
    added = evaluate_run(run, progress=False, shift=only, temperature_scaling=True)["shift"]
    assert {k: v for k, v in added.items() if k != "at_mean"} == stripped
    assert added["at_mean"]["mean"]["5"]["nll"] == pytest.approx(at_mean["mean"]["5"]["nll"])
    before = (run / "metrics.json").read_bytes()
    other = ShiftOptions(corruptions=("contrast",), severities=(5,), mean_only=True)
    with pytest.raises(ValueError, match="measured other corrupted sets"):
        evaluate_run(run, progress=False, shift=other)
    assert (run / "metrics.json").read_bytes() == before
    # mean_only needs a section to add to, and a point estimate has no separate mean
    del stored["shift"]
    (run / "metrics.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="run --shift first"):
        evaluate_run(run, progress=False, shift=only)
    sgd = tmp_path / "sgd"
    train_run(config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sgd"]), sgd, False)
    assert "at_mean" not in evaluate_run(sgd, progress=False, shift=options)["shift"]
    with pytest.raises(ValueError, match="is a point estimate"):
        evaluate_run(sgd, progress=False, shift=only)


def test_measuring_the_mean_leaves_the_bma_figures_unchanged(tmp_path: Path) -> None:
    """The mean runs beside the BMA on every corrupted set; it draws no random numbers, so
    the BMA's figures are the ones a BMA-only measurement gives (MC dropout: its masks come
    from the global generator, which a draw by the mean would shift)."""
    import torch

    from sabma.pipeline.evaluate import load_run
    from sabma.pipeline.predictive import RunPredictive
    from sabma.shift.evaluate import shift_metrics

    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict(
        {}, [*TINY, f"data.root={root}", "method.name=mcdropout", "method.mcdropout.p=0.3"]
    )
    train_run(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    predictive = RunPredictive(run.cfg, run.posterior, run.method, 3, run.weight_set)
    options = ShiftOptions(
        corruptions=("contrast", "gaussian_noise"), severities=(3,), cache_dir=tmp_path / "c"
    )
    bma = (lambda x, g: predictive(x, g), 1.3)
    mean = (lambda x, g: predictive.mean(x), 0.9)
    torch.manual_seed(0)
    alone = shift_metrics({"bma": bma}, run.task, run.cfg, options)["bma"]
    torch.manual_seed(0)
    both = shift_metrics({"bma": bma, "mean": mean}, run.task, run.cfg, options)
    assert both["bma"] == alone
    assert both["mean"]["mean"]["3"]["nll"] != alone["mean"]["3"]["nll"]


def test_an_interrupted_shift_evaluation_resumes_where_it_stopped(tmp_path: Path) -> None:
    """Every set is seeded on its own (the predictive's generator and the global one), so the
    sets finished before an interruption are kept and the rest give what one uninterrupted
    evaluation gives; saved sets of other settings or another posterior are not reused."""
    import torch

    from sabma.data.tasks import load_task
    from sabma.models.inputs import count
    from sabma.runs.progress import SetProgress
    from sabma.shift.evaluate import shift_metrics

    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}"])
    task = load_task(cfg, cfg.seed)
    calls: list[int] = []

    def noisy(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draws from both generators, like MC dropout's masks and a posterior's samples."""
        calls.append(count(x))
        if len(calls) == stop_after:
            raise KeyboardInterrupt
        logits = torch.randn(count(x), 10, generator=generator) + torch.rand(count(x), 10)
        return torch.log_softmax(logits + x.flatten(1)[:, :10], dim=-1)

    options = ShiftOptions(
        corruptions=("contrast", "brightness"), severities=(1, 3), cache_dir=tmp_path / "c"
    )
    predictives = {"bma": (noisy, 1.2)}
    stop_after = 0
    whole = shift_metrics(predictives, task, cfg, options)["bma"]
    progress = SetProgress(tmp_path / "partial.json", "posterior A")
    calls.clear()
    stop_after = 4  # the clean set and two corrupted ones finish, the fourth call is cut off
    with pytest.raises(KeyboardInterrupt):
        shift_metrics(predictives, task, cfg, options, resume=progress)
    assert len(json.loads((tmp_path / "partial.json").read_text())["sets"]) == 3
    calls.clear()
    stop_after = 0
    torch.rand(7)  # the global generator has moved on: the sets do not care
    resumed = shift_metrics(predictives, task, cfg, options, resume=progress)["bma"]
    assert resumed == whole
    assert len(calls) == 2  # only the two sets left were measured
    # other settings, or another posterior: nothing saved is reused
    for other in ({"bma": (noisy, 1.0)}, {"mean": (noisy, 1.2)}):
        progress.save(json.loads(progress.path.read_text())["settings"], {"clean": {"bma": {}}})
        calls.clear()
        shift_metrics(other, task, cfg, options, resume=progress)  # type: ignore[arg-type]
        assert len(calls) == 5
    calls.clear()
    shift_metrics(predictives, task, cfg, options, resume=SetProgress(progress.path, "B"))
    assert len(calls) == 5
    progress.finish()
    assert not progress.path.exists()


def test_evaluate_resumes_an_interrupted_shift_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``evaluate_run``: the sets finished before an interruption are not computed
    again, the section equals an uninterrupted one, and the saved sets go once it is written;
    other draws on the shifted sets (S) start afresh."""
    import shutil

    import sabma.shift.evaluate as shift_evaluate

    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sabma"])
    run = tmp_path / "run"
    train_run(cfg, run, progress=False)
    shutil.copytree(run, tmp_path / "twin")
    options = ShiftOptions(
        corruptions=("contrast", "brightness"),
        severities=(2, 4),
        samples=2,
        cache_dir=tmp_path / "c",
    )
    whole = evaluate_run(tmp_path / "twin", progress=False, shift=options)["shift"]
    built: list[tuple[str, int]] = []
    real = shift_evaluate.corrupted_test_set

    def counted(dataset: str, clean: object, name: str, severity: int, *rest: object) -> object:
        built.append((name, severity))
        if len(built) == interrupt_at:
            raise KeyboardInterrupt
        return real(dataset, clean, name, severity, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(shift_evaluate, "corrupted_test_set", counted)
    interrupt_at = 3  # two corrupted sets finish
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, progress=False, shift=options)
    assert (run / "shift.partial.json").is_file() and "shift" not in json.loads(
        (run / "metrics.json").read_text()
    )
    built.clear()
    interrupt_at = 0
    resumed = evaluate_run(run, progress=False, shift=options)["shift"]
    assert resumed == whole and len(built) == 2
    assert not (run / "shift.partial.json").exists()
    # the same sets with another S are measured again, not taken from a saved file
    with pytest.raises(KeyboardInterrupt):
        interrupt_at = 2
        built.clear()
        evaluate_run(run, progress=False, shift=options)
    built.clear()
    interrupt_at = 0
    other = ShiftOptions(
        corruptions=("contrast", "brightness"),
        severities=(2, 4),
        samples=3,
        cache_dir=tmp_path / "c",
    )
    evaluate_run(run, progress=False, shift=other)
    assert len(built) == 4


def test_evaluate_removes_the_saved_sets_once_the_section_is_written(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict({}, [*TINY, f"data.root={root}", "method.name=sgd"])
    run = tmp_path / "run"
    train_run(cfg, run, progress=False)
    (run / "shift.partial.json").write_text('{"identity": "stale", "sets": {}}')
    options = ShiftOptions(corruptions=("contrast",), severities=(3,), cache_dir=tmp_path / "c")
    metrics = evaluate_run(run, progress=False, shift=options)
    assert "shift" in metrics and not (run / "shift.partial.json").exists()
