"""A run's report says when the trained predictive is clearly not fitted."""

from __future__ import annotations

import json
from pathlib import Path

from sabma.methods import get_method
from sabma.pipeline.train import train_run
from sabma.runs.diagnostics import fit_warnings, selected_train_loss, training_losses
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)


def test_the_warnings_follow_the_temperature_and_the_training_loss() -> None:
    assert fit_warnings(0.2, 1.0, 1.0) == []
    assert "under-confident" in fit_warnings(0.2, 1.0, 0.7)[0]

    # the advice names the method's own noise setting, and none where it has none (SWAG)
    def hint(name: str) -> str:
        return get_method(name).less_noise

    assert "method.variance.temperature" in fit_warnings(0.2, 1.0, 0.7, less_noise=hint("sabma"))[0]
    assert "method.bsam.gamma" in fit_warnings(0.2, 1.0, 0.7, less_noise=hint("bsam"))[0]
    swag = fit_warnings(0.2, 1.0, 0.7, less_noise=hint("swag"))[0]
    assert "temperature" not in swag.split("on validation")[1] and "optim.epochs" in swag
    assert "over-confident" in fit_warnings(0.2, 1.0, 1.4)[0]
    assert "under-fitted" in fit_warnings(0.95, 1.0, None)[0]
    assert len(fit_warnings(0.95, 1.0, 0.5)) == 2
    # later epochs fitted the training set and validation got no better: an early stop, not
    # an under-fit (the advice differs)
    early = fit_warnings(0.95, 1.0, None, later_train_loss=0.1)
    assert (
        len(early) == 1 and early[0].startswith("stopped early") and "under-fitted" not in early[0]
    )
    assert "under-fitted" in fit_warnings(0.95, 1.0, None, later_train_loss=0.9)[0]
    # a loss far above a uniform guess's: one line, not "smaller lr" and "larger lr" together
    unstable = fit_warnings(26.2, 13.8, 20.0, num_classes=10)
    assert len(unstable) == 1 and unstable[0].startswith("unstable") and "smaller" in unstable[0]
    assert len(fit_warnings(26.2, 13.8, 20.0)) == 2  # without C the sign cannot be read
    assert not fit_warnings(0.3, 1.0, 1.0, num_classes=2)[0:1]


def test_the_kept_epochs_training_loss_is_read_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    entries = [
        {"epoch": 1, "loss": 2.0},
        {"epoch": 2, "loss": 1.0, "val_nll": 1.5},
        {"epoch": 3, "loss": 0.5},
        {"epoch": 4, "loss": 0.2, "val_nll": 1.7},
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert selected_train_loss(log) == 1.0
    assert training_losses(log) == (1.0, 0.2)  # the kept epoch's loss, the lowest after it
    assert selected_train_loss(tmp_path / "none.jsonl") is None


def test_an_untrained_run_says_so_in_its_report(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    cfg = tiny_config(data_root, "method.name=sgd", "optim.lr=1e-6", "optim.epochs=2")
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    assert any("under-fitted" in line for line in metrics["fit"]["warnings"])
    assert "**Warning — under-fitted" in (tmp_path / "run" / "report.md").read_text()


def test_the_noise_advice_names_settings_that_exist() -> None:
    from sabma.config import Config
    from sabma.methods import METHODS

    hints = {name: cls.less_noise for name, cls in METHODS.items() if cls.less_noise}
    assert {"sabma", "vi", "ivon", "csgld", "emcmc", "bsam", "mcdropout"} <= set(hints)
    for advice in hints.values():
        node: object = Config()
        for part in advice.split()[-1].split("."):
            node = getattr(node, part)  # AttributeError for a setting that does not exist
