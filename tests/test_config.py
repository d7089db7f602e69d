"""Configuration: defaults, YAML files, --set overrides and their errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from sabma.config import Config, MethodConfig, config_from_dict, dump_config, load_config
from sabma.config.legacy import METHOD_KEYS, PRIOR_KEYS
from sabma.methods import METHODS


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
    file.write_text("seed: 4\nmethod:\n  sabma: {rho: 0.2, perturb: [mean]}\noptim: {lr: 1}\n")
    cfg = load_config(
        file,
        [
            "method.sabma.rho=0.3",
            "data.augment=true",
            "data.root=null",
            "model.backbone=tiny_cnn",
            "prior.var_floor=1e-12",
        ],
    )
    assert cfg.seed == 4 and cfg.method.sabma.rho == 0.3 and cfg.method.sabma.perturb == ["mean"]
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
        (["method.sabma.rhoo=1"], "unknown config key 'method.sabma.rhoo'; valid keys here"),
        (["method.sabma=1"], "config section 'method.sabma' must be a mapping"),
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


# An old run folder's config.yaml: the flat method keys and prior.swag_* of earlier versions, with
# non-default values, and the place each must land.
OLD_FLAT = {
    "method": {
        "name": "fswag",
        "rank": 3,
        "rho": 0.7,
        "variance": "gradient",
        "temperature": 0.01,
        "beta": 0.5,
        "sam_rho": 0.02,
        "perturb_every": 4,
        "csgld_cycles": 2,
        "csgld_temperature": 0.5,
        "swag_start": 6,
        "swag_lr_ratio": 0.25,
        "ivon_ess": 1000.0,
        "dropout_p": 0.2,
    },
    "prior": {"kind": "swag", "swag_epochs": 8, "swag_lr": 0.02, "swag_start": 2, "swag_rank": 4},
}
EXPECTED = {
    "method.name": "fswag",
    "method.sabma.rank": 3,
    "method.swag.rank": 3,
    "method.fswag.rank": 3,
    "method.sabma.rho": 0.7,
    "method.variance.kind": "gradient",
    "method.variance.temperature": 0.01,
    "method.ivon.temperature": 0.01,
    "method.variance.beta": 0.5,
    "method.bsam.beta": 0.5,
    "method.sam.rho": 0.02,
    "method.fsam.rho": 0.02,
    "method.fswag.rho": 0.02,
    "method.sabma.perturb_every": 4,
    "method.sam.perturb_every": 4,
    "method.fswag.perturb_every": 4,
    "method.csgld.cycles": 2,
    "method.emcmc.cycles": 2,
    "method.csgld.temperature": 0.5,
    "method.emcmc.temperature": 0.5,
    "method.swag.start": 6,
    "method.fswag.start": 6,
    "method.fswag.lr_ratio": 0.25,
    "method.ivon.ess": 1000.0,
    "method.mcdropout.p": 0.2,
    "prior.kind": "swag",
    "prior.swag.epochs": 8,
    "prior.swag.lr": 0.02,
    "prior.swag.start": 2,
    "prior.swag.rank": 4,
}


def _at(cfg: Config, path: str) -> object:
    node: object = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def test_an_old_flat_config_file_loads_into_the_sections(tmp_path: Path) -> None:
    import yaml

    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(OLD_FLAT))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an old run folder loads silently
        cfg = load_config(file)
    for path, value in EXPECTED.items():
        assert _at(cfg, path) == value, path
    assert load_config(_write(tmp_path, dump_config(cfg))) == cfg  # written back in sections
    assert "sam_rho" not in dump_config(cfg) and "swag_epochs" not in dump_config(cfg)


def test_old_flat_overrides_warn_and_land_in_the_sections() -> None:
    overrides = [
        f"{section}.{key}={value}"
        for section, values in OLD_FLAT.items()
        for key, value in values.items()
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = config_from_dict({}, overrides)
    messages = [str(w.message) for w in caught if w.category is FutureWarning]
    assert len(messages) == len(overrides) - 2  # method.name and prior.kind are current keys
    assert (
        "method.sam_rho is now method.sam.rho and method.fsam.rho and method.fswag.rho" in messages
    )
    for path, value in EXPECTED.items():
        assert _at(cfg, path) == value, path


def test_a_section_value_wins_over_an_old_key_in_the_same_file() -> None:
    cfg = config_from_dict({"method": {"rho": 0.3, "sabma": {"rho": 0.9}, "variance": {}}})
    assert cfg.method.sabma.rho == 0.9 and cfg.method.variance.kind == "natural"
    later = config_from_dict({"method": {"rho": 0.3}}, ["method.sabma.rho=0.8"])
    assert later.method.sabma.rho == 0.8  # an override wins over the file


def test_every_old_key_has_a_place_that_exists() -> None:
    for table, section in ((METHOD_KEYS, "method"), (PRIOR_KEYS, "prior")):
        for places in table.values():
            for place in places:
                _at(Config(), f"{section}.{place}")  # AttributeError if it does not exist


def test_every_method_section_is_read_by_a_method() -> None:
    """Each method declares the sections it reads; every section of ``method`` belongs to one."""
    sections = set(MethodConfig().to_dict()) - {"name", "frozen", "frozen_std"}
    claimed = {s for cls in METHODS.values() for s in cls.sections}
    assert claimed == sections
    for name, cls in METHODS.items():
        assert not cls.sections or name in cls.sections
