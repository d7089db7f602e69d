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
