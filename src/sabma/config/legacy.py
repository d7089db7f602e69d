"""The flat, method-prefixed keys of configurations written before per-method sections
(``method.sam_rho``, ``prior.swag_epochs``, …), read into their sections.

Run folders written by earlier versions keep loading: their ``config.yaml`` holds every old key,
and each old key goes to every section that used to read it (``method.rank`` was the K of both
SA-BMA and SWAG), so an old run rebuilds exactly. An old key typed in ``--set`` works too, with a
``FutureWarning`` that names its new place.
"""

from __future__ import annotations

import warnings
from typing import Any

_SAM_TYPE = ("sam", "fsam", "fswag")
_SWAG_TYPE = ("swag", "fswag")

#: old key under ``method`` → its places under ``method``
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "rank": ("sabma.rank", *(f"{m}.rank" for m in _SWAG_TYPE)),
    "rho": ("sabma.rho",),
    "metric": ("sabma.metric",),
    "perturb": ("sabma.perturb",),
    "perturb_every": ("sabma.perturb_every", *(f"{m}.perturb_every" for m in _SAM_TYPE)),
    "variance": ("variance.kind",),
    "temperature": ("variance.temperature", "ivon.temperature"),
    **{
        key: (f"variance.{key}",)
        for key in (
            "ess",
            "curvature",
            "curvature_source",
            "curvature_beta2",
            "refresh_epochs",
            "fisher_samples",
            "fisher_examples",
            "log_std_lr_scale",
            "factor_lr_scale",
        )
    },
    "beta": ("variance.beta", "bsam.beta"),
    "sam_rho": tuple(f"{m}.rho" for m in _SAM_TYPE),
    "fsam_eta": ("fsam.eta",),
    "bsam_rho": ("bsam.rho",),
    "bsam_beta2": ("bsam.beta2",),
    "bsam_gamma": ("bsam.gamma",),
    "moped_delta": ("vi.moped_delta",),
    "ivon_ess": ("ivon.ess",),
    "ivon_hess_init": ("ivon.hess_init",),
    "ivon_beta2": ("ivon.beta2",),
    "ivon_weight_decay": ("ivon.weight_decay",),
    "ptl_weight": ("ptl.weight",),
    "ensemble_size": ("ensemble.size",),
    "csgld_cycles": ("csgld.cycles", "emcmc.cycles"),
    "csgld_sample_fraction": ("csgld.sample_fraction", "emcmc.sample_fraction"),
    "csgld_temperature": ("csgld.temperature", "emcmc.temperature"),
    "emcmc_eta": ("emcmc.eta",),
    "emcmc_keep": ("emcmc.keep",),
    "laplace_subset": ("laplace.subset",),
    "laplace_hessian": ("laplace.hessian",),
    "dropout_p": ("mcdropout.p",),
    "swag_start": tuple(f"{m}.start" for m in _SWAG_TYPE),
    "swag_every": tuple(f"{m}.every" for m in _SWAG_TYPE),
    "swag_lr_ratio": tuple(f"{m}.lr_ratio" for m in _SWAG_TYPE),
}

#: old key under ``prior`` → its place under ``prior``
PRIOR_KEYS: dict[str, tuple[str, ...]] = {
    f"swag_{key}": (f"swag.{key}",) for key in ("epochs", "lr", "start", "every", "rank")
}

_SECTIONS = {"method": METHOD_KEYS, "prior": PRIOR_KEYS}


def _new_places(section: str, key: str, value: Any) -> tuple[str, ...] | None:
    table = _SECTIONS.get(section)
    if table is None or key not in table:
        return None
    if section == "method" and key == "variance" and isinstance(value, dict):
        return None  # the new section of that name
    return table[key]


def _put(node: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def upgrade_flat_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (nested mappings, as read from YAML) with every old flat key moved to its
    sections; a key given both ways keeps the section's value. Returns a new mapping."""
    upgraded = dict(values)
    for section in _SECTIONS:
        part = values.get(section)
        if not isinstance(part, dict):
            continue
        new: dict[str, Any] = {}
        moved: dict[str, Any] = {}
        for key, value in part.items():
            places = _new_places(section, key, value)
            if places is None:
                new[key] = value
            else:
                for place in places:
                    _put(moved, place, value)
        for name, options in moved.items():
            given = new.get(name)
            new[name] = {**options, **given} if isinstance(given, dict) else options
        upgraded[section] = new
    return upgraded


def legacy_override(key: str, value: Any) -> list[str]:
    """The key paths an override ``key=value`` sets: its new places when ``key`` is an old flat
    key (with a ``FutureWarning``), else ``[key]``."""
    section, _, rest = key.partition(".")
    places = _new_places(section, rest, value) if rest and "." not in rest else None
    if places is None:
        return [key]
    new = [f"{section}.{place}" for place in places]
    warnings.warn(f"{key} is now {' and '.join(new)}", FutureWarning, stacklevel=3)
    return new
