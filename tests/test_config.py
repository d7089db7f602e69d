"""Configuration: defaults, YAML files, --set overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sabma.config import Config, config_from_dict, dump_config, load_config


def test_defaults_are_the_embedded_task() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert (cfg.data.dataset, cfg.data.shots, cfg.model.backbone, cfg.model.subset) == (
        "fashion_mnist",
        10,
        "efficientnet_lite0",
        "norm+head",
    )


def test_yaml_file_then_overrides_with_types(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("seed: 4\nmethod:\n  rho: 0.2\n  perturb: [mean]\noptim: {lr: 1}\n")
    cfg = load_config(
        file,
        [
            "method.rho=0.3",
            "data.augment=true",
            "data.root=null",
            "model.backbone=tiny_cnn",
            "prior.var_floor=1e-12",
        ],
    )
    assert cfg.seed == 4 and cfg.method.rho == 0.3 and cfg.method.perturb == ["mean"]
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.prior.var_floor == 1e-12  # YAML 1.1 alone would read "1e-12" as a string
    assert cfg.data.augment is True and cfg.data.root is None
    assert load_config(_write(tmp_path, dump_config(cfg))) == cfg  # dump round-trips


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "again.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'; valid keys here"),
        (["optim.lr=fast"], "'optim.lr' must be a number"),
        (["optim.epochs=1.5"], "'optim.epochs' must be an integer"),
        (["data.augment=maybe"], "'data.augment' must be true or false"),
        (["optim=3"], "config section 'optim' must be a mapping"),
        (["novalue"], "is not of the form key.path=value"),
        (["seed.x=1"], "'seed' is a value, not a section"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict({}, overrides)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping at the top level"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
