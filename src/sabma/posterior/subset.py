"""Choosing the Bayesian subset of a network's parameters.

The default subset of SA-BMA is every affine parameter of the normalization layers plus the
classification head. Normalization layers are found by *module type*, never by a substring of
parameter names (name matching silently missed ResNet's downsample BatchNorms in the research code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from torch import nn

#: Module types whose affine parameters count as "norm". Subclasses count too (timm's
#: BatchNormAct2d, LayerNorm2d, …). Pass ``norm_types=`` to add your own.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)

#: Keywords accepted as ``subset``; any other string is a regular expression over parameter names.
SUBSET_KEYWORDS = ("head", "norm", "norm+head", "lora", "all")

ParameterFilter = Callable[[str, nn.Parameter], bool]
Subset = str | re.Pattern[str] | ParameterFilter


def find_head(model: nn.Module, head: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the classification head.

    Resolution order: ``head`` (a module name or the module itself); the model's own classifier
    accessor (timm's ``get_classifier()``, a Hugging Face ``classifier`` attribute); the last
    ``nn.Linear`` registered in the model.
    """
    modules = dict(model.named_modules())
    if isinstance(head, str):
        if head not in modules:
            raise ValueError(
                f"head={head!r} is not a module of {type(model).__name__}; "
                f"some module names: {_some_names(modules)}"
            )
        return head, modules[head]
    if isinstance(head, nn.Module):
        return _name_of(model, head), head
    if head is not None:
        raise TypeError(
            f"head must be a module name, an nn.Module or None, not {type(head).__name__}"
        )
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        candidate = getter()
        if isinstance(candidate, nn.Module) and any(True for _ in candidate.parameters()):
            return _name_of(model, candidate), candidate
    candidate = getattr(model, "classifier", None)
    if isinstance(candidate, nn.Module) and any(True for _ in candidate.parameters()):
        return _name_of(model, candidate), candidate
    linears = [(name, m) for name, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"could not find a classification head in {type(model).__name__}: "
            "it has no nn.Linear and no classifier accessor; pass head='module.name'"
        )
    return linears[-1]


def select_parameters(
    model: nn.Module,
    subset: Subset = "norm+head",
    head: str | nn.Module | None = None,
    *,
    norm_types: Sequence[type[nn.Module]] = (),
) -> list[str]:
    """Names of the parameters in the Bayesian subset, in ``model.named_parameters()`` order.

    Args:
        model: the network.
        subset: ``"head"`` (the classifier, see :func:`find_head`), ``"norm"`` (affine parameters of
            every normalization layer, by module type), ``"norm+head"`` (both; the default),
            ``"lora"`` (every peft LoRA layer's ``lora_A``/``lora_B`` and the head),
            ``"all"``, a regular expression searched in each parameter name (string or compiled),
            or a callable ``(name, parameter) -> bool``.
        head: the classifier module or its name, when it cannot be found automatically.
        norm_types: extra module types to treat as normalization layers.

    Raises:
        ValueError: if the subset matches no parameter (the message says which subset).
    """
    named = list(model.named_parameters())
    chosen: set[str]
    if isinstance(subset, str) and subset in SUBSET_KEYWORDS:
        chosen = set()
        if subset in ("norm", "norm+head"):
            chosen |= _norm_parameter_names(model, NORM_TYPES + tuple(norm_types))
        if subset == "lora":
            chosen |= _lora_parameter_names(model)
        if subset in ("head", "norm+head", "lora"):
            head_name, head_module = find_head(model, head)
            prefix = f"{head_name}." if head_name else ""
            chosen |= {prefix + n for n, _ in head_module.named_parameters()}
        if subset == "all":
            chosen = {n for n, _ in named}
    elif isinstance(subset, str | re.Pattern):
        try:
            pattern = re.compile(subset)
        except re.error as err:
            raise ValueError(
                f"subset {subset!r} is neither one of {SUBSET_KEYWORDS} "
                f"nor a valid regular expression ({err})"
            ) from None
        chosen = {n for n, _ in named if pattern.search(n)}
    elif callable(subset):
        chosen = {n for n, p in named if subset(n, p)}
    else:
        raise TypeError(
            f"subset must be a string, a compiled regex or a callable, not {type(subset).__name__}"
        )
    names = [n for n, _ in named if n in chosen]
    if not names:
        raise ValueError(
            f"subset {_describe(subset)} matched no parameters of {type(model).__name__}"
        )
    return names


def _lora_parameter_names(model: nn.Module) -> set[str]:
    """The ``lora_A`` / ``lora_B`` tensors of every peft LoRA layer (by module type)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        raise ValueError("subset 'lora' needs peft (pip install 'sabma[lora]')") from None
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for part in ("lora_A", "lora_B"):
                adapters = getattr(module, part)
                names |= {f"{mod_name}.{part}.{n}" for n, _ in adapters.named_parameters()}
    if not names:
        raise ValueError(
            f"subset 'lora' found no LoRA adapters in {type(model).__name__}: add them with peft "
            "first (sabma.models.lora.add_lora; on the command line: model.subset=lora and the "
            "model.lora settings)"
        )
    return names


def _norm_parameter_names(model: nn.Module, types: tuple[type[nn.Module], ...]) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, types):
            prefix = f"{mod_name}." if mod_name else ""
            names |= {prefix + n for n, _ in module.named_parameters(recurse=False)}
    return names


def _name_of(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return str(name)
    raise ValueError(
        f"the head module {type(target).__name__} is not part of {type(model).__name__}"
    )


def _some_names(modules: dict[str, nn.Module], limit: int = 8) -> str:
    names = [n for n in modules if n]
    shown = ", ".join(names[-limit:])
    return shown + (" …" if len(names) > limit else "")


def _describe(subset: Subset) -> str:
    if isinstance(subset, re.Pattern):
        return repr(subset.pattern)
    if isinstance(subset, str):
        return repr(subset)
    return getattr(subset, "__name__", "callable")
