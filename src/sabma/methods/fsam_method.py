"""Fisher SAM (Kim et al., 2022) as a point-estimate method: SAM with the Fisher ascent step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.point import SAMMethod, SAMOptions
from sabma.step.fsam import FSAM


@dataclass
class FSAMOptions(SAMOptions):
    eta: float = 1.0  # the Fisher preconditioner's range: f = 1 + η·g²/max g² ∈ [1, 1 + η]


class FSAMMethod(SAMMethod):
    name = "fsam"
    summary = (
        "Fisher SAM (Kim et al., 2022): SAM ball preconditioned by 1 + η·g²/max g² (method.fsam)"
    )
    knob = "method.fsam.eta"  # what makes it F-SAM (ρ stays SAM's default)
    knob_grid = (1.0, 10.0, 100.0)
    optimizer_class = FSAM

    sections = section_types(fsam=FSAMOptions)

    def sam_options(self, cfg: Config) -> FSAMOptions:
        return cfg.method.fsam

    def ascent_options(self, cfg: Config) -> dict[str, Any]:
        return {"eta": cfg.method.fsam.eta}
