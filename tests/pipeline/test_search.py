"""The learning rate chosen on validation, early stopping, and the automatic head prior."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sabma.config import dump_config, load_config
from sabma.data.tasks import load_task
from sabma.models.head_scale import HEAD_LOGIT_VAR, head_feature_scale
from sabma.pipeline.build import build_posterior, build_prior
from sabma.pipeline.evaluate import evaluate_run, load_run
from sabma.pipeline.train import run_or_reuse, train_run
from sabma.posterior.prior import head_mask
from sabma.training.selection import patience_spent
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)


def test_the_learning_rate_is_chosen_on_validation_and_only_it_sees_the_test_set(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    cfg = tiny_config(data_root, "method.name=sgd", "optim.lr_grid=[1e-5,0.05,50.0]")
    out = tmp_path / "run"
    metrics = train_run(cfg, out, progress=False)
    search = json.loads((out / "lr_search.json").read_text())
    scores = {float(k): v for k, v in search["grid"].items()}
    finite = {k: v for k, v in scores.items() if v is not None}
    assert metrics["lr"] == search["chosen"] == min(finite, key=finite.__getitem__)
    assert metrics["lr_search"]["grid"] == search["grid"]
    for lr in (1e-5, 0.05, 50.0):  # every candidate ran, judged on validation only
        candidate = json.loads((out / "lr_search" / f"lr={lr:g}" / "metrics.json").read_text())
        assert "test" not in candidate
        if scores[lr] is not None:
            assert candidate["val"]["bma"]["nll"] == pytest.approx(scores[lr])
    chosen = out / "lr_search" / f"lr={metrics['lr']:g}"
    assert (out / "posterior.safetensors").read_bytes() == (
        chosen / "posterior.safetensors"
    ).read_bytes()
    assert set(metrics["test"]) >= {"bma", "mean"}
    # a finished search is reused as it is
    assert run_or_reuse(cfg, out, progress=False)["lr"] == metrics["lr"]
    # and a re-evaluation (sabma evaluate) keeps the chosen rate and the search's scores
    again = evaluate_run(out, progress=False)
    assert again["lr"] == metrics["lr"] and again["lr_search"] == metrics["lr_search"]
    assert again["test"]["bma"] == metrics["test"]["bma"]


def test_a_candidate_folder_of_another_configuration_stops_the_search(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    """A stale candidate (a finished run of other settings in lr_search/lr=…) is an error, not a
    learning rate that 'failed to train' and is silently left out of the choice."""
    out = tmp_path / "run"
    stale = tiny_config(data_root, "method.name=sgd", "optim.lr=0.05", "optim.epochs=2")
    run_or_reuse(stale, out / "lr_search" / "lr=0.05", progress=False, test=False)
    cfg = tiny_config(data_root, "method.name=sgd", "optim.lr_grid=[1e-5,0.05]")
    with pytest.raises(ValueError, match=r"lr=0\.05 holds a finished run with another config"):
        train_run(cfg, out, progress=False)
    assert not (out / "lr_search" / "lr=1e-05").exists()  # nothing trained before the check


def test_the_knob_is_chosen_after_the_learning_rate_and_evaluation_uses_the_winner(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    """Stage 1 picks the learning rate at the configured knob, stage 2 tries the knob's other
    values at that rate; the best of all candidates on validation is the run, and re-loading
    the run gives the winner's settings, not the configured ones."""
    cfg = tiny_config(
        data_root,
        "method.name=sam",
        "method.sam.rho=5.0",  # a ball far too wide: the search should leave it
        "optim.lr_grid=[1e-5,0.5]",
        "optim.knob_grid=[0.0,0.01,5.0]",
        "optim.epochs=8",
        "model.bn_mode=train",
    )
    out = tmp_path / "run"
    metrics = train_run(cfg, out, progress=False)
    search = json.loads((out / "lr_search.json").read_text())
    knob = search["knob"]
    best_lr = knob["lr"]
    # the best of the two-value grid is on its edge: one step past it was tried (ratio 5·10⁴)
    first = min((1e-5, 0.5), key=lambda lr: search["grid"][f"{lr:g}"])
    extra = 2e-10 if first == 1e-5 else 25000.0
    assert set(search["grid"]) == {"1e-05", "0.5", f"{extra:g}"}
    finished = {k: v for k, v in search["grid"].items() if v is not None}
    assert f"{best_lr:g}" == min(finished, key=lambda k: finished[k])
    assert ("lr" in search["edge"]) == (best_lr in (min(1e-5, extra), max(0.5, extra)))
    assert metrics["lr_search"]["edge"] == search["edge"]
    folders = sorted(p.name for p in (out / "lr_search").iterdir())
    assert folders == sorted(
        ["lr=1e-05", "lr=0.5", f"lr={extra:g}", f"lr={best_lr:g},rho=0", f"lr={best_lr:g},rho=0.01"]
    )  # the knob's grid holds 0: no geometric step past it
    assert set(knob["grid"]) == {"0", "0.01", "5"}
    assert knob["grid"]["5"] == search["grid"][f"{best_lr:g}"]  # stage 1's run, reused
    every = [v for v in (*search["grid"].values(), *knob["grid"].values()) if v is not None]
    winner = min(knob["grid"], key=lambda k: knob["grid"][k])
    assert knob["grid"][winner] == min(every)
    assert winner != "5"  # the too-wide ball lost on validation
    assert knob["chosen"] == float(winner) and metrics["knob"]["value"] == float(winner)
    assert metrics["lr"] == best_lr
    folder = out / "lr_search" / f"lr={best_lr:g},rho={winner}"
    assert (out / "posterior.safetensors").read_bytes() == (
        folder / "posterior.safetensors"
    ).read_bytes()
    candidate = json.loads((folder / "metrics.json").read_text())
    assert candidate["val"]["bma"]["nll"] == pytest.approx(knob["grid"][winner])
    loaded = load_run(out).cfg
    assert loaded.method.sam.rho == float(winner) and loaded.optim.lr == best_lr
    assert loaded == load_config(folder / "config.yaml")
    assert evaluate_run(out, progress=False)["knob"] == metrics["knob"]  # carried


def test_knob_grids_are_checked(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    for options, message in (
        (["method.name=sgd", "optim.knob_grid=[0.1]"], r"method 'sgd' has no knob to search"),
        (["method.name=sam", "optim.knob_grid=[0.1,0.1]"], "repeated values"),
        (
            ["method.name=laplace", "optim.knob_grid=[0.0,-1.0]"],
            r"knob_grid value -1: method.laplace.prior_precision must be >= 0",
        ),
        (
            [
                "method.name=laplace",
                "method.laplace.subset=subset",
                "method.laplace.hessian=diag",
                "optim.knob_grid=[0.0,10.0]",
            ],
            r"a knob that does nothing here: method.laplace.prior_precision applies to "
            "subset=last_layer only",
        ),
        (
            ["method.name=vi", "method.variance.kind=gradient", "optim.knob_grid=[0.01]"],
            r"does nothing here: method.variance.temperature applies to method.variance.kind="
            "natural only",
        ),
        (
            ["method.name=ivon", "method.ivon.ess=100.0", "optim.knob_grid=[0.01]"],
            r"does nothing here: method.ivon.temperature sets .* only when method.ivon.ess is 0",
        ),
        (["method.name=sam", "optim.knob_grid=[0.1,0.1000000001]"], "repeated values"),
    ):
        with pytest.raises(ValueError, match=message):
            train_run(tiny_config(data_root, *options), tmp_path / "r", False)
        assert not (tmp_path / "r").exists()


def test_a_half_trained_candidate_of_other_settings_stops_the_search(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    """A checkpointed candidate written with other settings would fail to resume and be counted
    as a failed candidate; the search refuses it before training anything."""
    out = tmp_path / "run"
    folder = out / "lr_search" / "lr=0.05"
    folder.mkdir(parents=True)
    other = tiny_config(data_root, "method.name=sam", "optim.lr=0.05", "method.sam.rho=0.2")
    (folder / "config.yaml").write_text(dump_config(other))
    (folder / "checkpoint.safetensors").write_bytes(b"")
    cfg = tiny_config(data_root, "method.name=sam", "optim.lr_grid=[1e-5,0.05]")
    with pytest.raises(ValueError, match=r"lr=0\.05 holds a half-trained run with another config"):
        train_run(cfg, out, progress=False)
    assert not (out / "lr_search" / "lr=1e-05").exists()


def test_bad_grids_are_refused(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    for grid, message in (("[0.1,-1.0]", "positive learning rates"), ("[0.1,0.1]", "repeated")):
        with pytest.raises(ValueError, match=message):
            train_run(tiny_config(data_root, f"optim.lr_grid={grid}"), tmp_path / "r", False)
        assert not (tmp_path / "r").exists()


def test_patience_stops_after_evaluations_without_improvement() -> None:
    log = [{"val_nll": v} for v in (1.0, 0.8, 0.9, 0.85)]
    assert patience_spent(log, 2) and not patience_spent(log, 3)
    assert not patience_spent(log, 0)
    assert not patience_spent([{"val_nll": 1.0}, {"val_nll": 0.7}, {"val_nll": 0.6}], 2)


def test_early_stopping_ends_training_and_keeps_the_best_state(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    cfg = tiny_config(
        data_root,
        "method.name=sgd",
        "optim.lr=1.0",
        "optim.epochs=30",
        "eval.eval_every=1",
        "eval.patience=2",
        "model.bn_mode=train",
    )
    train_run(cfg, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    scores = [e["val_nll"] for e in log]
    assert len(log) < 30  # stopped early
    assert min(scores[-2:]) >= min(scores[:-2])  # the last two did not improve on the best
    assert not patience_spent(log[:-1], 2)  # and it stopped at the first such point


def test_the_automatic_head_prior_scales_with_the_features(data_root: Path) -> None:  # noqa: F811
    cfg = tiny_config(data_root, "prior.head_var=0")
    task = load_task(cfg, 0)
    data = task.train_data()
    posterior, head = build_posterior(cfg, task.num_classes)
    scale = head_feature_scale(posterior, head, data.x_train)
    prior = build_prior(cfg, posterior, head, data)
    is_head = head_mask(posterior, head)
    torch.testing.assert_close(
        prior.var[is_head], torch.full_like(prior.var[is_head], HEAD_LOGIT_VAR / scale)
    )
    # the scale is the mean squared norm of what enters the head (+1 for the bias)
    with torch.no_grad():
        fc = posterior.model.fc
        features = []
        hook = fc.register_forward_pre_hook(lambda _m, a: features.append(a[0]))
        posterior.eval()
        posterior.mean_forward(data.x_train[:4])
        hook.remove()
    expected = float(features[0].flatten(1).square().sum(1).mean()) + 1
    assert head_feature_scale(posterior, head, data.x_train[:4]) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"prior\.head_var must be >= 0"):
        build_prior(tiny_config(data_root, "prior.head_var=-1"), posterior, head, data)


def test_an_unstable_candidate_is_skipped_but_a_configuration_error_stops_the_search(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    """A learning rate the method cannot train at (E-MCMC's coupling needs η > lr) is a failed
    candidate, recorded as None; any other error is the user's to see, not a 'failed' one."""
    cfg = tiny_config(
        data_root, "method.name=emcmc", "method.emcmc.eta=0.03", "optim.lr_grid=[0.01,0.05]"
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    search = json.loads((tmp_path / "run" / "lr_search.json").read_text())
    assert search["grid"]["0.05"] is None and search["grid"]["0.01"] is not None
    assert metrics["lr"] == 0.01
    # more cycles than epochs: found when training starts, and shown rather than skipped
    bad = tiny_config(
        data_root, "method.name=csgld", "method.csgld.cycles=100", "optim.lr_grid=[0.01,0.05]"
    )
    with pytest.raises(ValueError, match=r"cycles must be between 1 and optim\.epochs"):
        train_run(bad, tmp_path / "bad", progress=False)


def test_the_step_past_a_grids_edge() -> None:
    from sabma.pipeline.grid import beyond_edge, on_edge

    assert beyond_edge([3e-4, 1e-3, 3e-3], 3e-3) == pytest.approx(9e-3)
    assert beyond_edge([3e-4, 1e-3, 3e-3], 3e-4) == pytest.approx(9e-5)
    assert beyond_edge([3e-4, 1e-3, 3e-3], 1e-3) is None  # inside
    assert beyond_edge([0.3, 1.0, 3.0], 3.0) == pytest.approx(9.0)
    assert beyond_edge([0.0, 0.01, 5.0], 5.0) is None  # no geometric step through 0
    assert beyond_edge([1.0], 1.0) is None
    assert on_edge([1.0, 3.0, 9.0], 9.0) and not on_edge([1.0, 3.0, 9.0], 3.0)
