"""`GaussianPosterior`: a diagonal + low-rank Gaussian over a subset of a network's parameters.

q_θ(w) = N(μ, Σ),  Σ = diag(σ²) + D Dᵀ,  σ = exp(s),  θ = (μ, s, D),  D ∈ R^{d×K}.

The posterior wraps a model without changing it: a forward pass builds the flat weight vector
w = μ + σ ⊙ z₁ + D z₂ (reparameterisation; the noise z is drawn by :meth:`resample` and kept
until the next draw, so a SAM-style second pass reuses it) and runs the model with those weights
plugged in through :func:`torch.func.functional_call`. Parameters outside the subset and all
buffers stay the model's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sabma.posterior.factor_products import factor_times
from sabma.posterior.in_place import InPlaceModel
from sabma.posterior.lowrank import LowRankGaussian, kl_divergence
from sabma.posterior.noise import standard_normal_
from sabma.posterior.sample import sample_weights
from sabma.posterior.subset import Subset, select_parameters
from sabma.posterior.substitute import ParameterSlots, channels_last_names, logits_of
from sabma.running_stats import running_stat_buffers, updates_running_stats


class GaussianPosterior(InPlaceModel, nn.Module):
    """Gaussian posterior q_θ over the flattened Bayesian subset of ``model``.

    Args:
        model: the network. It is *not* registered as a sub-module: ``parameters()`` and
            ``state_dict()`` hold θ (and the kept noise) only. ``.to()``, ``.double()``,
            ``.train()`` and ``.eval()`` are forwarded to the model.
        subset: which parameters are Bayesian (see :func:`sabma.select_parameters`).
        rank: K, the number of low-rank columns (0 gives a diagonal Gaussian).
        init_std: initial σ for every coordinate (a float or a (d,) tensor).
        head: the classifier module or its name, where it cannot be found automatically.
        norm_types: extra module types to treat as normalization layers.
        freeze_rest: set ``requires_grad=False`` on the model's own parameters (the subset's own
            copies are never used, and the rest stays at its values), so backward passes skip
            their gradients. Pass False to train other parameters with an optimiser of your own.

    The mean starts at the model's current values of the subset; the factor starts at 0.
    """

    noise_diag: Tensor
    noise_factor: Tensor

    def __init__(
        self,
        model: nn.Module,
        subset: Subset = "norm+head",
        rank: int = 0,
        init_std: float | Tensor = 1e-3,
        head: str | nn.Module | None = None,
        *,
        norm_types: Sequence[type[nn.Module]] = (),
        freeze_rest: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be a non-negative integer, got {rank!r}")
        self._model = (model,)  # a tuple hides it from nn.Module's registry
        self.names = select_parameters(model, subset, head, norm_types=norm_types)
        params = dict(model.named_parameters())
        if freeze_rest:
            model.requires_grad_(False)
        chosen = [params[n] for n in self.names]
        dtypes = {p.dtype for p in chosen}
        if len(dtypes) != 1:
            raise ValueError(
                f"the Bayesian subset mixes dtypes {sorted(map(str, dtypes))}; "
                "cast the model to one dtype first"
            )
        self.shapes = [tuple(p.shape) for p in chosen]
        self.numels = [p.numel() for p in chosen]
        mean = torch.cat([p.detach().reshape(-1) for p in chosen]).clone()
        log_std = _initial_log_std(init_std, mean)
        self.mean = nn.Parameter(mean)
        self.log_std = nn.Parameter(log_std)
        # D is (d, K) with column-major storage (D.T is contiguous): every product with D then
        # runs along contiguous rows of length d, and D's gradient z₂ gᵀ is written in place.
        self.factor = nn.Parameter(mean.new_zeros(rank, mean.numel()).T)
        # this step's noise (z₁, z₂): part of the state, so a resumed run continues bit for bit
        self.register_buffer("noise_diag", torch.zeros_like(mean))
        self.register_buffer("noise_factor", mean.new_zeros(rank))
        #: When False, forward passes leave normalization running statistics untouched (set by
        #: the SA-BMA optimiser for its perturbed pass).
        self.update_running_stats = True
        #: When False, :meth:`weights` does not differentiate through D (set by the SA-BMA
        #: optimiser for a pass whose gradient only forms the perturbation of μ and log σ).
        self.factor_grad = True
        #: When False, :meth:`weights` does not differentiate through log σ (set by the SA-BMA
        #: optimiser for a pass whose log σ gradient nobody reads: the natural-gradient variance
        #: sets σ by its rule, so only the perturbation's first pass needs it).
        self.log_std_grad = True
        # D z₂ of the kept noise, reused while neither D nor z₂ changes (a pass that does not
        # differentiate through D): (key, vector)
        self._factor_noise: tuple[tuple[int, ...], Tensor] | None = None
        self._kept_std: tuple[tuple[int, ...], Tensor] | None = None
        #: When False, a σ computed for a pass is not kept (set by the SA-BMA optimiser for its
        #: perturbed pass, whose log σ is put back after it).
        self.keep_std = True
        #: Run the network under ``torch.autocast`` with this dtype (bf16, fp16); θ, w and the
        #: outputs stay in the parameters' dtype. None: no autocast.
        self.autocast_dtype: torch.dtype | None = None
        self.resample()

    # --- shape and model ----------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self._model[0]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dim(self) -> int:
        """d, the number of Bayesian parameters."""
        return int(self.mean.numel())

    @property
    def rank(self) -> int:
        """K, the number of low-rank columns."""
        return int(self.factor.shape[1])

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, tensors={len(self.names)}"

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GaussianPosterior:
        super()._apply(fn, recurse)
        self.model._apply(fn, recurse)
        self._factor_noise = None
        self._kept_std = None
        return self

    def train(self, mode: bool = True) -> GaussianPosterior:
        super().train(mode)
        self.model.train(mode)
        return self

    # --- the distribution --------------------------------------------------------------------
    def gaussian(self) -> LowRankGaussian:
        """q_θ as a :class:`LowRankGaussian` (differentiable in θ)."""
        return LowRankGaussian(self.mean, torch.exp(2.0 * self.log_std), self.factor)

    def distribution(self) -> torch.distributions.LowRankMultivariateNormal:
        """The equivalent ``torch.distributions.LowRankMultivariateNormal``."""
        return self.gaussian().to_torch()

    def kl_to(self, other: GaussianPosterior | LowRankGaussian) -> Tensor:
        """KL(q_θ ‖ other) in closed form (O(d K²)), differentiable in θ."""
        target = other.gaussian() if isinstance(other, GaussianPosterior) else other
        return kl_divergence(self.gaussian(), target)

    @torch.no_grad()
    def set_to(self, gaussian: LowRankGaussian) -> None:
        """Make q_θ equal to ``gaussian`` (its factor's columns in the first ones, the rest 0)."""
        if gaussian.dim != self.dim or gaussian.rank > self.rank:
            raise ValueError(
                f"cannot hold a Gaussian of dimension {gaussian.dim} and rank {gaussian.rank} "
                f"in a posterior of dimension {self.dim} and rank {self.rank}"
            )
        self.mean.copy_(gaussian.mean)
        self.log_std.copy_(0.5 * torch.log(gaussian.var))
        self.factor.zero_()
        self.factor[:, : gaussian.rank] = gaussian.factor

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw and keep this step's noise z₁ ~ N(0, I_d), z₂ ~ N(0, I_K)."""
        with torch.no_grad():
            standard_normal_(self.noise_diag, generator)
            self.noise_factor.normal_(generator=generator)

    def weights(self) -> Tensor:
        """The weights at the kept noise: w = μ + σ ⊙ z₁ + D z₂ (differentiable in θ; not twice:
        :func:`~sabma.posterior.sample.sample_weights`).

        Computed in the parameters' dtype even inside an autocast region (a bf16 D z₂ would
        round w to three significant digits)."""
        with torch.autocast(self.mean.device.type, enabled=False):
            log_std = self.log_std if self.log_std_grad else self.log_std.detach()
            factor_grad = bool(self.rank) and self.factor_grad and torch.is_grad_enabled()
            shift = self._kept_factor_noise() if self.rank and not factor_grad else None
            w = sample_weights(self.mean, log_std, self._detached_std(), self.noise_diag, shift)
            return w + self.noise_factor @ self.factor.T if factor_grad else w

    def _detached_std(self) -> Tensor:
        """σ without gradient, computed once per value of log σ (the natural variance changes
        it only at a refresh; the step's two passes and the steps between refreshes share it).
        While :attr:`keep_std` is False (a perturbed pass) a σ is computed but not kept."""
        key = content_key(self.log_std)
        if self._kept_std is not None and self._kept_std[0] == key:
            return self._kept_std[1]
        with torch.no_grad():
            std = self.log_std.detach().exp()
        if self.keep_std:
            self._kept_std = (key, std)
        return std

    def log_std_restored(self, key: tuple[int, ...]) -> None:
        """log σ holds again, value for value, what it held under ``key`` (its
        :func:`content_key` before a step moved it to θ + ε and copied it back): a σ kept under
        that key is kept on."""
        if self._kept_std is not None and self._kept_std[0] == key:
            self._kept_std = (content_key(self.log_std), self._kept_std[1])

    def _kept_factor_noise(self) -> Tensor:
        """D z₂ (no gradient) for the kept z₂, computed once per (D, z₂): the two passes of a
        step share it (at d = 2·10⁶, K = 5 a product with D reads 40 MB). For d ≥ 2²⁰ on the
        CPU it is the blocked product of :mod:`sabma.posterior.factor_products`, which may round
        otherwise than the differentiable ``z₂ @ Dᵀ`` of a pass that trains D."""
        key = content_key(self.factor, self.noise_factor)
        if self._factor_noise is None or self._factor_noise[0] != key:
            with torch.no_grad():
                self._factor_noise = (key, factor_times(self.factor, self.noise_factor))
        return self._factor_noise[1]

    def sample_weights(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n independent draws of w, shape (n, d), differentiable in θ."""
        if n < 1:
            raise ValueError(f"number of samples must be at least 1, got {n}")
        return self.gaussian().sample(n, generator)

    # --- running the model ---------------------------------------------------------------------
    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """Split a flat (d,) weight vector into the model's named parameter tensors (views)."""
        if w.shape != (self.dim,):
            raise ValueError(
                f"expected a weight vector of shape ({self.dim},), got {tuple(w.shape)}"
            )
        pieces = torch.split(w, self.numels)
        return {n: t.view(s) for n, t, s in zip(self.names, pieces, self.shapes, strict=True)}

    @property
    def slots(self) -> ParameterSlots:
        """Where the model keeps each parameter and buffer (resolved once)."""
        slots: ParameterSlots | None = getattr(self, "_slots", None)
        if slots is None or slots.model is not self.model:
            slots = self._slots = ParameterSlots(self.model)
        return slots

    def forward_with(self, w: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the model with the Bayesian subset set to the flat weights ``w``; its logits
        (:func:`logits_of`: a Hugging Face model's output object gives its ``logits``)."""
        tensors = self.unflatten(w)
        for name in channels_last_names(self.model, self.names, self.shapes):
            tensors[name] = tensors[name].contiguous(memory_format=torch.channels_last)
        if not self.update_running_stats and updates_running_stats(self.model):
            # let the pass update throw-away copies of the running statistics
            tensors |= {n: b.clone() for n, b in running_stat_buffers(self.model).items()}
        if self.autocast_dtype is None:
            return logits_of(self.slots.call(tensors, args, kwargs))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            out = logits_of(self.slots.call(tensors, args, kwargs))
        return (
            out.to(self.mean.dtype) if isinstance(out, Tensor) and out.is_floating_point() else out
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model at the sample w(θ, z) with the kept noise z."""
        return self.forward_with(self.weights(), *args, **kwargs)

    def mean_forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model at the posterior mean μ."""
        return self.forward_with(self.mean, *args, **kwargs)


def content_key(*tensors: Tensor) -> tuple[int, ...]:
    """A key that changes whenever one of ``tensors`` is written in place or replaced (their
    version counters and storages): for values derived from them and kept between calls."""
    return (*(t._version for t in tensors), *(t.data_ptr() for t in tensors))


def _initial_log_std(init_std: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(init_std, Tensor):
        if init_std.shape not in ((), like.shape) or bool((init_std <= 0).any()):
            raise ValueError(f"init_std must be positive and of shape () or {tuple(like.shape)}")
        return torch.log(init_std.to(like)).expand_as(like).clone()
    if not init_std > 0 or not math.isfinite(init_std):
        raise ValueError(f"init_std must be a positive finite number, got {init_std!r}")
    return torch.full_like(like, math.log(init_std))
