"""Mixed precision for SAM-type steps: autocast forward passes and fp16 loss scaling.

bf16 (CPU and CUDA) needs no loss scaling: run the closure's forward under ``torch.autocast``.
fp16 needs a ``torch.amp.GradScaler``, and a two-pass step needs it handled with care:

* the first pass's gradient is unscaled *before* ε is formed from it (ε is then the same as
  without scaling, whatever the scale);
* an overflow (inf/NaN) in either pass skips the whole step: θ is restored, nothing is
  updated, the posterior keeps its noise, and the scaler backs off;
* the scaler's own ``unscale_`` (which records overflows for ``update``) is used once per
  step, on the gradient that updates θ; the first pass is unscaled by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sabma.step.scaling import all_finite, parameter_grads, unscale_first_pass
from sabma.step.two_step import TwoStepOptimizer


def scaled_step(
    optimizer: TwoStepOptimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: Callable[[], Tensor],
) -> tuple[Tensor, bool]:
    """One step of a SAM-type optimiser with fp16 loss scaling.

    Args:
        optimizer: SAM, SA-BMA, … (lazy ``perturb_every`` steps take one pass).
        scaler: an enabled or disabled ``GradScaler``; disabled, this is ``optimizer.step``.
        loss_fn: runs the forward pass (under the caller's autocast) and returns the loss,
            without calling ``backward``. Called twice (once on a lazy step).

    Returns:
        ``(loss of the first pass, whether θ was updated)``. Gradients should be zero (or None)
        on entry, as for ``optimizer.step``.
    """
    if not scaler.is_enabled():

        def closure() -> Tensor:
            loss = loss_fn()
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        assert loss is not None  # a closure's step returns its loss
        return loss, True

    if optimizer.reuse_due:
        optimizer.reuse_first_step()
        with torch.enable_grad():
            loss = loss_fn()
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all_finite(parameter_grads(optimizer))
        optimizer.second_step(update=finite)
        return _finish(optimizer, scaler, loss, finite)

    with torch.enable_grad():
        loss = loss_fn()
        scaler.scale(loss).backward()
    if not unscale_first_pass(optimizer, scaler):  # overflow: let the scaler record it, skip
        scaler.unscale_(optimizer)
        return _finish(optimizer, scaler, loss, False)
    optimizer.first_step(zero_grad=True)
    with torch.enable_grad():
        scaler.scale(loss_fn()).backward()
    scaler.unscale_(optimizer)
    finite = all_finite(parameter_grads(optimizer))
    optimizer.second_step(update=finite)
    return _finish(optimizer, scaler, loss, finite)


def _finish(
    optimizer: TwoStepOptimizer, scaler: torch.amp.GradScaler, loss: Tensor, updated: bool
) -> tuple[Tensor, bool]:
    if not updated:
        optimizer.zero_grad()
    scaler.update()
    return loss.detach(), updated
