"""The demo's table rows: temperature-scaled columns and paired differences per seed."""

from __future__ import annotations

import pytest

from sabma.cli.demo import paired_differences
from sabma.experiments.demo import demo_config
from sabma.runs.tables import with_scaled


def test_a_row_carries_its_temperature_scaled_nll_and_ece() -> None:
    test = {
        "bma": {"acc": 0.7, "nll": 0.9, "ece": 0.08},
        "bma_ts": {"acc": 0.7, "nll": 0.85, "ece": 0.03},
        "mean": {"acc": 0.7, "nll": 0.95, "ece": 0.1},
    }
    assert with_scaled(test, "bma") == {
        "acc": 0.7,
        "nll": 0.9,
        "ece": 0.08,
        "ts_nll": 0.85,
        "ts_ece": 0.03,
    }
    assert with_scaled(test, "mean") == test["mean"]  # no scaled predictive: raw only


def test_paired_differences_are_taken_seed_by_seed() -> None:
    rows = {
        "SA-BMA (BMA)": [{"nll": 0.8, "acc": 0.7}, {"nll": 0.9, "acc": 0.6}],
        "SA-BMA (posterior mean)": [{"nll": 0.85, "acc": 0.7}, {"nll": 0.88, "acc": 0.62}],
        "SGD": [{"nll": 0.9, "acc": 0.65}, {"nll": 0.95, "acc": 0.6}],
    }
    paired = paired_differences(rows)
    to_sgd = paired["SA-BMA (BMA) − SGD"]
    assert [r["nll"] for r in to_sgd] == pytest.approx([-0.1, -0.05])
    assert [r["acc"] for r in to_sgd] == pytest.approx([0.05, 0.0])
    to_mean = paired["SA-BMA (BMA) − SA-BMA (posterior mean)"]
    assert [r["nll"] for r in to_mean] == pytest.approx([-0.05, 0.02])
    assert paired_differences({"SGD": rows["SGD"]}) == {}


def test_each_demo_task_searches_the_learning_rate_of_the_methods_it_names() -> None:
    """Text: SA-BMA and SGD both choose their lr on validation (a fixed lr under-fits SA-BMA
    there); Fashion-MNIST: SGD searches, SA-BMA keeps the default its own search chose."""
    text = {m: demo_config(m, 0, False, [], "text").optim for m in ("sabma", "sgd")}
    assert text["sabma"].lr_grid == text["sgd"].lr_grid == [0.003, 0.01, 0.03]
    fmnist = {m: demo_config(m, 0, False, [], "fashion_mnist").optim for m in ("sabma", "sgd")}
    assert fmnist["sgd"].lr_grid == [0.0003, 0.001, 0.003]
    assert fmnist["sabma"].lr_grid == [] and fmnist["sabma"].lr == 1e-3
    with pytest.raises(ValueError, match="unknown demo task"):
        demo_config("sgd", 0, False, [], "speech")


def test_the_ood_demo_trains_on_five_classes_and_rows_read_the_ood_sections() -> None:
    """``--task ood``: the embedded default on classes 0–4 (so ``near`` is the other five); a
    row is the raw AUROC per (set, score) of its predictive — the BMA's or the posterior
    mean's, never the other's — with mutual information only where there are draws, and the
    AURC of max-probability confidence."""
    from sabma.experiments.demo import OOD_COLUMNS, ood_row

    cfg = demo_config("sabma", 0, False, [], "ood")
    assert cfg.data.classes == [0, 1, 2, 3, 4] and cfg.data.dataset == "fashion_mnist"

    def section(base: float, mi: bool) -> dict:
        scores = {"msp": base, "entropy": base + 0.01, "energy": base + 0.02}
        if mi:
            scores["mi"] = base - 0.2
        return {"raw": {s: {k: {"auroc": v} for k, v in scores.items()} for s in ("near", "far")}}

    selective = {p: {"raw": {"msp": {"aurc": a}}} for p, a in (("bma", 0.11), ("mean", 0.12))}
    metrics = {
        "ood": {"bma": section(0.8, mi=True), "at_mean": section(0.7, mi=False)},
        "selective": selective,
    }
    bma, mean = ood_row(metrics, "bma"), ood_row(metrics, "mean")
    assert bma["near_msp"] == 0.8 and bma["far_energy"] == pytest.approx(0.82)
    assert bma["near_mi"] == pytest.approx(0.6) and bma["aurc"] == 0.11
    assert mean["near_msp"] == 0.7 and "near_mi" not in mean and mean["aurc"] == 0.12
    assert set(bma) == set(OOD_COLUMNS)
