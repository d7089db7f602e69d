"""Training methods under one interface, by name (``sabma methods`` lists them)."""

from sabma.methods.base import Method
from sabma.methods.bsam_method import BSAMMethod
from sabma.methods.csgld import CSGLDMethod
from sabma.methods.emcmc import EMCMCMethod
from sabma.methods.ensemble import EnsembleMethod
from sabma.methods.fsam_method import FSAMMethod
from sabma.methods.ivon import IVONMethod
from sabma.methods.laplace import LaplaceMethod
from sabma.methods.mcdropout import MCDropoutMethod
from sabma.methods.point import SAMMethod, SGDMethod
from sabma.methods.ptl import PTLMethod
from sabma.methods.sabma_method import SABMAMethod
from sabma.methods.swag_method import FSWAGMethod, SWAGMethod
from sabma.methods.vi import VIMethod

#: name → method class; :func:`get_method` makes a fresh instance (methods may hold run state).
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        SGDMethod,
        SAMMethod,
        FSAMMethod,
        BSAMMethod,
        SABMAMethod,
        SWAGMethod,
        FSWAGMethod,
        VIMethod,
        IVONMethod,
        PTLMethod,
        EnsembleMethod,
        CSGLDMethod,
        EMCMCMethod,
        MCDropoutMethod,
        LaplaceMethod,
    )
}


def get_method(name: str) -> Method:
    """A fresh instance of method ``name``; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]()


__all__ = ["METHODS", "Method", "get_method"]
