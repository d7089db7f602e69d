"""The ``method`` section's registry: each method declares its own sections (options dataclasses
in its own module), defining the method registers them, and a configuration read before the
methods are imported is typed when read."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from dataclasses import dataclass

import pytest

import sabma.config.method as method_config
from sabma.config import Config, config_from_dict
from sabma.methods import METHODS
from sabma.methods.base import section_types
from sabma.methods.point import SGDMethod
from sabma.methods.sabma_method import SABMAMethod
from sabma.step.options import SABMAOptions


@dataclass
class _SmoothingOptions:
    smoothing: float = 0.1


def test_a_method_defined_anywhere_adds_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(method_config, "SECTIONS", dict(method_config.SECTIONS))

    class Smoothed(SGDMethod):  # defining the class is the whole registration of its options
        name = "scratch"
        sections = section_types(scratch=_SmoothingOptions)

    assert "scratch" not in METHODS  # (the registry line is what `method.name` needs)
    cfg = config_from_dict({"method": {"scratch": {"smoothing": 1}}})
    assert cfg.method.scratch == _SmoothingOptions(smoothing=1.0)
    assert isinstance(cfg.method.scratch.smoothing, float)  # typed by the method's dataclass
    assert Config().method.scratch == _SmoothingOptions()  # and defaulted
    with pytest.raises(ValueError, match=r"'method\.scratch\.smoothin'; valid keys here"):
        config_from_dict({}, ["method.scratch.smoothin=0.2"])
    assert Smoothed.sections["scratch"] is _SmoothingOptions


def test_a_section_name_is_one_dataclass_and_no_shared_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(method_config, "SECTIONS", dict(method_config.SECTIONS))
    method_config.register_sections({"sabma": SABMAOptions})  # the same twice: fine
    with pytest.raises(TypeError, match="'sabma' is declared twice"):
        method_config.register_sections({"sabma": _SmoothingOptions})
    with pytest.raises(TypeError, match=r"would hide the key method\.name"):
        method_config.register_sections({"name": _SmoothingOptions})
    with pytest.raises(TypeError, match="must be a dataclass"):
        method_config.register_sections({"plain": dict})


def test_unknown_sections_and_keys_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown config key 'method\.sabmaa'; valid keys"):
        config_from_dict({}, ["method.sabmaa.rho=1"])
    with pytest.raises(AttributeError, match=r"no method has a section method\.sabmaa"):
        _ = Config().method.sabmaa
    with pytest.raises(ValueError, match=r"'method\.sabma' must be a mapping"):
        config_from_dict({"method": {"sabma": 3}})


def test_the_method_section_copies_pickles_and_compares_by_value() -> None:
    cfg = config_from_dict({}, ["method.sabma.rho=0.3", "method.name=vi"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    twin = copy.deepcopy(cfg)
    assert twin == cfg and twin.method.sabma is not cfg.method.sabma
    twin.method.sabma.rho = 0.4
    assert twin != cfg
    assert cfg.to_dict()["method"]["sabma"]["rho"] == 0.3
    assert SABMAMethod.sections["sabma"] is SABMAOptions


def test_a_configuration_read_before_the_methods_are_imported_is_typed_when_read() -> None:
    """The configuration package knows no method: a section is kept as given until a method
    registers it, then typed and checked (``typed`` is what the run's checks call)."""
    script = """
import sys
from sabma.config import load_config
cfg = load_config(None, ["method.sabma.rho=2", "method.sabmaa.rho=1"])
assert "sabma.methods" not in sys.modules and "torch" not in sys.modules
import sabma.methods
assert cfg.method.sabma.rho == 2.0 and isinstance(cfg.method.sabma.rho, float)
try:
    cfg.method.typed()
except ValueError as err:
    print(err)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.startswith("unknown config key 'method.sabmaa'; valid keys here:")


@pytest.mark.parametrize(
    ("method", "setting", "message"),
    [
        ("sabma", "method.sabma.perturb=[mean, sigma]", r"method\.sabma\.perturb must be"),
        ("sabma", "method.variance.kind=exact", r"method\.variance\.kind must be one of"),
        ("vi", "method.variance.curvature=hutchinson", r"method\.variance\.curvature must be"),
        ("vi", "method.variance.curvature_beta2=1", r"curvature_beta2 must lie in \[0, 1\)"),
        ("mcdropout", "method.mcdropout.p=1", r"method\.mcdropout\.p must lie in \[0, 1\)"),
    ],
)
def test_each_method_refuses_bad_choices_of_its_own_sections(
    method: str, setting: str, message: str
) -> None:
    """The choices a method's sections allow are checked by the method (``Method.check``),
    not by a list in the configuration checks."""
    from sabma.pipeline.checks import check_config

    cfg = config_from_dict({}, [f"method.name={method}", setting])
    with pytest.raises(ValueError, match=message):
        check_config(cfg)
    check_config(config_from_dict({}, [f"method.name={method}"]))  # the defaults pass
