"""The in-place path of a :class:`~sabma.posterior.gaussian.GaussianPosterior`: the user's own
``model(x)`` runs at the sample, with the subset's tensors of the model holding w during a pass
and μ between steps; the gradient reaching those tensors is moved to θ by the chain rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn


class InPlaceModel:
    """Mixed into :class:`~sabma.posterior.gaussian.GaussianPosterior`."""

    names: list[str]
    mean: nn.Parameter
    log_std: nn.Parameter
    factor: nn.Parameter
    noise_diag: Tensor
    noise_factor: Tensor
    factor_grad: bool
    log_std_grad: bool

    if TYPE_CHECKING:  # the posterior's own

        @property
        def model(self) -> nn.Module: ...

        @property
        def rank(self) -> int: ...

        @property
        def std(self) -> Tensor: ...

        def unflatten(self, w: Tensor) -> dict[str, Tensor]: ...

        def _detached_std(self) -> Tensor: ...

    @torch.no_grad()
    def load_into_model(self, w: Tensor | None = None) -> None:
        """Copy ``w`` (default: the mean μ) into the model's own parameters, in place."""
        w = self.mean if w is None else w
        params = dict(self.model.named_parameters())
        for name, value in self.unflatten(w.detach()).items():
            params[name].copy_(value)

    def subset_parameters(self) -> list[nn.Parameter]:
        """The model's own tensors of the Bayesian subset, in subset order."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.names]

    def enable_model_gradients(self) -> None:
        """Let backward passes through the model's own forward reach the subset's tensors (the
        rest stays as ``freeze_rest`` left it)."""
        for p in self.subset_parameters():
            p.requires_grad_(True)

    @torch.no_grad()
    def gradient_from_model(self) -> None:
        """Move ∇_w L from the model's subset tensors (filled by a backward pass through the
        model's own forward at w = μ + σ⊙z₁ + D z₂, see :meth:`load_into_model`) to θ, by the
        chain rule of the reparameterisation: ∇_μ = g, ∇_s = g ⊙ σ ⊙ z₁, ∇_D = g z₂ᵀ (D only
        when :attr:`factor_grad`; log σ only when :attr:`log_std_grad`). Gradients add to what
        θ holds; the model's are cleared."""
        params = self.subset_parameters()
        if all(p.grad is None for p in params):
            return
        g = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        ).to(self.mean.dtype)
        for p in params:
            p.grad = None
        parts = [(self.mean, g)]
        if self.log_std_grad:
            parts.append((self.log_std, torch.mul(g, self._detached_std()).mul_(self.noise_diag)))
        if self.rank and self.factor_grad:  # stored as Dᵀ's transpose: (K, d) rows, contiguous
            parts.append((self.factor, (self.noise_factor.unsqueeze(1) * g.unsqueeze(0)).T))
        for theta, grad in parts:
            if theta.grad is None:
                theta.grad = grad  # g is this pass's own (torch.cat made it)
            else:
                theta.grad.add_(grad)
