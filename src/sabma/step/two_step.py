"""The shared shape of SAM-type optimisers: ascend to a perturbed point, then update from there.

A subclass says *where* to go (:meth:`TwoStepOptimizer.perturbation`); this class keeps the
bookkeeping in one place: back up, perturb, restore, step the base optimiser (which shares
``param_groups`` and ``state``, so LR schedulers, gradient clipping and ``state_dict`` behave as
with any optimiser), and the closure API.

Lazy perturbation (``perturb_every=k``, in the manner of LookSAM): through :meth:`step`, ε is
computed from a fresh gradient every k-th step only; the k − 1 steps in between reuse the last ε
and cost one forward/backward pass (at θ + ε_last) instead of two, so a step costs on average
(k + 1)/k passes. LookSAM reuses the sharpness component of the gradient at θ; reusing ε itself
needs no extra hyper-parameter and keeps "the gradient at a perturbed point" as the update. ε is
kept as a vector, so it stays the same displacement while θ moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from sabma.running_stats import running_stat_buffers, updates_running_stats
from sabma.step.displacement import Displacement
from sabma.step.hooks import TwoStepHooks
from sabma.step.scaling import unscale_first_pass


class TwoStepOptimizer(Displacement, TwoStepHooks, torch.optim.Optimizer):
    """Base class of SAM-type optimisers (``first_step`` / ``second_step`` / ``step(closure)``)."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float,
        base_kwargs: dict[str, Any],
        perturb_every: int = 1,
        *,
        stats_model: nn.Module | None = None,
        stats_between_passes: bool = True,
    ) -> None:
        if not isinstance(rho, int | float) or not rho >= 0 or not math.isfinite(rho):
            raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
        if not isinstance(perturb_every, int) or perturb_every < 1:
            raise ValueError(f"perturb_every must be an integer >= 1, got {perturb_every!r}")
        super().__init__(groups, {"rho": rho, **base_kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self._link_base()
        self.perturb_every = perturb_every
        self._reset_displacement()
        self._last_eps: list[tuple[Tensor, Tensor]] | None = None  # None: no ε formed yet
        self._steps_since_fresh = 0
        # Running statistics (BatchNorm) move once per step, with the first pass: they are saved
        # after it and put back after the second (``stats_between_passes``; SA-BMA's posterior
        # runs its second pass on copies instead). step() also saves them before the first pass,
        # so that abandon_step() undoes a failed pass completely.
        self._stats_model = stats_model
        self._stat_buffers = (
            list(running_stat_buffers(stats_model).values()) if stats_model is not None else []
        )
        self._stats_between_passes = stats_between_passes
        self._first_pass_stats: list[Tensor] = []
        self._pre_step_stats: list[Tensor] = []
        self._passes_done = False  # passes() ran to its end; step() finishes the step

    def _stats_now(self) -> list[Tensor]:
        """Copies of the running statistics, if a training-mode pass would update them."""
        if self._stats_model is None or not updates_running_stats(self._stats_model):
            return []
        return [b.detach().clone() for b in self._stat_buffers]

    @staticmethod
    def _put_back(buffers: list[Tensor], values: list[Tensor]) -> None:
        for buffer, value in zip(buffers, values, strict=False):
            buffer.copy_(value)

    def _link_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)

    @property
    def rho(self) -> float:
        """The radius ρ (one value for all groups: the ball is joint)."""
        return float(self.param_groups[0]["rho"])

    @property
    def reuse_due(self) -> bool:
        """Whether the next :meth:`step` reuses the last ε (one pass) instead of forming a new
        one (two passes)."""
        return self._last_eps is not None and self._steps_since_fresh % self.perturb_every != 0

    # --- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the perturbed point θ + ε (ε from the current gradients)."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step")
        eps = self.perturbation()
        if self._stats_between_passes:
            self._first_pass_stats = self._stats_now()
        self._move(eps)
        if self.perturb_every > 1:
            self._last_eps = [(param, e.detach().clone()) for param, e in eps]
            self._steps_since_fresh = 0
        self._on_perturb()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def reuse_first_step(self) -> None:
        """Move to θ + ε_last, the ε of the last fresh step (a lazy step: see :attr:`reuse_due`)."""
        if self._perturbed:
            raise RuntimeError("reuse_first_step called twice without second_step")
        if self._last_eps is None:
            raise RuntimeError("no ε to reuse yet: the first step must be a fresh one")
        self._move(self._last_eps)
        self._before_reused_pass()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, update: bool = True) -> None:
        """Restore θ and step the base optimiser with the gradient taken at θ + ε
        (``update=False``: restore only, e.g. when that gradient overflowed)."""
        if not self._perturbed:
            raise RuntimeError("second_step called without first_step")
        self._before_restore(update)
        self._restore()
        self._put_back(self._stat_buffers, self._first_pass_stats)
        self._first_pass_stats = []
        self._on_restore()
        if update:
            self._update()
        if zero_grad:
            self.zero_grad()

    def _update(self) -> None:
        self._before_update()
        self.base_optimizer.step()
        self._opt_called = True  # tells LR schedulers that the optimiser stepped
        self._steps_since_fresh += 1
        self._after_update()

    def passes(self, scaler: torch.amp.GradScaler | None = None) -> Iterator[int]:
        """The passes of one step, for a loop that runs its own forward and backward::

            for _ in optimizer.passes():       # at θ, then at θ + ε (the same noise)
                loss_fn(model(x), y).backward()
            optimizer.step()

        Yields the pass index: 0 and 1, or 0 alone on a lazy step or when ρ = 0. Gradients are
        zeroed before each pass; inside one, any number of backward passes add up (gradient
        accumulation over micro-batches: a step over k micro-batches of mean losses divided by k
        equals one step over their union). After the loop θ is at θ + ε holding the gradient
        there, and :meth:`step` restores θ and updates. A step left unfinished (the loop broken
        off, or a gradient scaler that skipped :meth:`step` on an overflow) is abandoned when
        the next one begins: θ restored, nothing updated.

        fp16 with loss scaling: pass the ``scaler``, back-propagate ``scaler.scale(loss)`` and
        finish with ``scaler.step(optimizer); scaler.update()``. The first pass's gradient is
        unscaled before it forms ε; if it overflowed, the loop ends after it and the scaler skips
        the step."""
        if self._perturbed or self._passes_done:
            self.abandon_step()
        self.zero_grad()
        self._pre_step_stats = self._stats_now()
        if self.reuse_due:
            self.reuse_first_step()
            yield from self._one_pass(0)
        else:
            self._before_first_pass()
            yield from self._one_pass(0)
            if self.rho == 0 and self.first_pass_at_theta:  # ε = 0: the gradient at θ + ε is at θ
                self.first_step()
            elif unscale_first_pass(self, scaler):
                self.first_step(zero_grad=True)
                yield from self._one_pass(1)
        self._passes_done = True

    def _one_pass(self, index: int) -> Iterator[int]:
        self._pass_begin()
        with torch.enable_grad():
            yield index
        self._pass_end()

    def _wrap(self, closure: Callable[[], Tensor]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            self._pass_begin()
            with torch.enable_grad():
                loss = closure()
            self._pass_end()
            return loss

        return run

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One full step. ``closure`` runs forward and backward and returns the loss; it is called
        twice (at θ and at θ + ε), or once (at θ + ε_last) on a lazy step or when ρ = 0 (θ + ε is
        θ), and should not zero the gradients itself. Returns the loss of the first call.

        After :meth:`passes`, the step it prepared: restore θ and update (a closure is then
        called once and its loss returned, for frameworks that always pass one: Lightning)."""
        if self._passes_done:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            self._passes_done = False
            self.second_step()
            self._pre_step_stats = []
            self._after_step()
            return loss
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() without a closure finishes the passes of "
                "`for _ in optimizer.passes(): loss.backward()`; run that loop first, or "
                "pass a closure that runs forward and backward"
            )
        if self._perturbed:
            self.abandon_step()
        run = self._wrap(closure)
        self._pre_step_stats = self._stats_now()
        if self.reuse_due:
            self.reuse_first_step()
            loss = run()
            self.second_step()
        else:
            self._before_first_pass()
            loss = run()
            if self.rho == 0 and self.first_pass_at_theta:  # ε = 0: the gradient at θ + ε is at θ
                self.first_step()
            else:
                self.first_step(zero_grad=True)
                run()
            self.second_step()
        self._pre_step_stats = []
        self._after_step()
        return loss

    @torch.no_grad()
    def abandon_step(self) -> None:
        """Give up the step in progress (a pass failed): θ restored, nothing updated, and the
        running statistics as they were before :meth:`step` began."""
        if self._perturbed:
            self.second_step(update=False)
        self._put_back(self._stat_buffers, self._pre_step_stats)
        self._pre_step_stats = []
        self._passes_done = False
        self._after_step()

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state, plus the lazy step's counter and last ε."""
        state = self.base_optimizer.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        state["two_step"] = {
            "steps_since_fresh": self._steps_since_fresh,
            "last_eps": None
            if self._last_eps is None
            else [[index[id(p)], e] for p, e in self._last_eps],
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("two_step", None)
        self.base_optimizer.load_state_dict(state_dict)
        self._link_base()
        if extra is not None:
            params = [p for g in self.param_groups for p in g["params"]]
            self._steps_since_fresh = int(extra["steps_since_fresh"])
            self._last_eps = (
                None
                if extra["last_eps"] is None
                else [(params[int(i)], e.to(params[int(i)])) for i, e in extra["last_eps"]]
            )
