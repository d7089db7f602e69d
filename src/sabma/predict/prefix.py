"""Run the frozen part of a network once per input, and only the Bayesian part once per sample.

A BMA prediction runs the network S times with S draws of the Bayesian subset. Every operation
that depends on no Bayesian parameter gives the same result in all S runs: the *prefix*. The
network is traced with ``torch.fx`` and split into

* a prefix graph: every node that depends on the inputs and frozen parameters only; it returns
  the *boundary* values (those the Bayesian part reads), computed once per batch;
* a suffix graph: every node that depends, directly or through its inputs, on a Bayesian
  parameter; it takes the boundary values and runs once per sample.

With subset "head" the prefix is the whole feature extractor and S = 30 draws cost little more
than one forward pass. The split is only used in eval mode (the trace specialises on the
training flags) and is built once per posterior; a network that ``torch.fx`` cannot trace
(data-dependent control flow) falls back to S full passes, with one log message.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

from sabma.posterior.substitute import ParameterSlots

log = logging.getLogger(__name__)


@dataclass
class PrefixSplit:
    """The two graphs of a split network (see the module docstring)."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    suffix_names: list[str]
    """The Bayesian parameter names the suffix reads (in the posterior's order)."""
    prefix_nodes: int
    suffix_nodes: int

    def __post_init__(self) -> None:
        self.slots = ParameterSlots(self.suffix)

    def boundary(self, *inputs: Any) -> tuple[Any, ...]:
        out = self.prefix(*inputs)
        return tuple(out)

    def run(self, tensors: dict[str, Tensor], boundary: tuple[Any, ...]) -> Any:
        """The network's output for the Bayesian parameters ``tensors`` (name → tensor)."""
        used = {name: tensors[name] for name in self.suffix_names}
        return self.slots.call(used, boundary)


def split_network(model: nn.Module, bayesian: list[str]) -> PrefixSplit | None:
    """Trace ``model`` (in its current mode) and split it at the Bayesian parameters ``bayesian``.

    Returns None when the network cannot be traced.
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as err:
        log.info(
            "BMA prefix caching off: %s is not traceable by torch.fx (%s)",
            type(model).__name__,
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
        return None
    chosen = set(bayesian)
    graph = traced.graph
    depends: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if _owns_bayesian(traced, node, chosen) or any(i in depends for i in node.all_input_nodes):
            depends.add(node)
    boundary = [
        node
        for node in graph.nodes
        if node not in depends
        and node.op != "output"
        and any(user in depends or user.op == "output" for user in node.users)
    ]

    prefix_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node not in depends and node.op != "output":
            env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[b] for b in boundary))

    suffix_graph = fx.Graph()
    env = {b: suffix_graph.placeholder(f"boundary_{i}") for i, b in enumerate(boundary)}
    for node in graph.nodes:
        if node in depends or node.op == "output":
            env[node] = suffix_graph.node_copy(node, lambda n: env[n])

    prefix = fx.GraphModule(traced, prefix_graph)
    prefix.graph.eliminate_dead_code()
    prefix.recompile()
    suffix = fx.GraphModule(traced, suffix_graph)
    suffix_params = {name for name, _ in suffix.named_parameters()}
    return PrefixSplit(
        prefix,
        suffix,
        [name for name in bayesian if name in suffix_params],
        sum(1 for n in prefix_graph.nodes if n.op not in ("placeholder", "output")),
        len(depends),
    )


def _owns_bayesian(traced: fx.GraphModule, node: fx.Node, chosen: set[str]) -> bool:
    if node.op == "get_attr":
        return str(node.target) in chosen
    if node.op == "call_module":
        module = traced.get_submodule(str(node.target))
        return any(f"{node.target}.{name}" in chosen for name, _ in module.named_parameters())
    return False


_SPLITS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], PrefixSplit | None]] = (
    weakref.WeakKeyDictionary()
)


def cached_split(model: nn.Module, bayesian: list[str]) -> PrefixSplit | None:
    """The split of ``model`` at ``bayesian``, traced once and reused; None in training mode
    (batch statistics, dropout) or when the network cannot be traced."""
    if any(m.training for m in model.modules()):
        return None
    key = tuple(bayesian)
    hit = _SPLITS.get(model)
    if hit is None or hit[0] != key:
        hit = (key, split_network(model, bayesian))
        _SPLITS[model] = hit
    return hit[1]


def sample_outputs(
    split: PrefixSplit,
    unflatten: Callable[[Tensor], dict[str, Tensor]],
    weights: Tensor,
    *inputs: Any,
) -> list[Any]:
    """The network's outputs for each row of ``weights``, the prefix computed once."""
    boundary = split.boundary(*inputs)
    return [split.run(unflatten(w), boundary) for w in weights]


def vectorised_outputs(
    split: PrefixSplit | None,
    forward_with: Callable[..., Any],
    unflatten: Callable[[Tensor], dict[str, Tensor]],
    weights: Tensor,
    *inputs: Any,
    chunk_size: int | None = None,
) -> Tensor:
    """The outputs for all rows of ``weights`` at once, by ``torch.func.vmap`` over the sample
    dimension (normalization layers must be in eval mode); shape (S, …)."""
    if split is not None:
        boundary = split.boundary(*inputs)
        fn: Callable[[Tensor], Any] = lambda w: split.run(unflatten(w), boundary)  # noqa: E731
    else:
        fn = lambda w: forward_with(w, *inputs)  # noqa: E731
    out: Tensor = torch.func.vmap(fn, chunk_size=chunk_size, randomness="error")(weights)
    return out
