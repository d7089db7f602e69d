"""The SA-BMA optimiser: sharpness-aware training of a Gaussian posterior.

    min_θ  max_{ε : KL(q_{θ+ε} ‖ q_θ) ≤ ρ²/2}  L_data(θ + ε)

Linearising L_data and taking KL ≈ ½ εᵀ F ε gives ε* = ρ F⁻¹ g / √(gᵀ F⁻¹ g), one global norm over
all perturbed blocks (method.md §4). A step:

1. the caller runs a forward/backward pass through the posterior (noise z kept by the posterior);
2. :meth:`SABMA.first_step` moves θ to θ + ε* and tells the posterior not to update running
   statistics;
3. the caller runs the same forward/backward again (the same z);
4. :meth:`SABMA.second_step` restores θ, adds the prior's gradient (taken at θ), steps the base
   optimiser with the gradient from θ + ε*, and draws the next step's noise.

The variance is learned by the natural-gradient rule of :mod:`sabma.variance` by default
(``variance=NaturalVariance(...)``): σ² = T/(λ(h + δ)) from a curvature estimate h, the factor from
the Fisher of the training inputs, and the mean pulled toward the prior by (1/λ)·Σ_p⁻¹(μ − μ_p) —
a tempered posterior at the fixed point. ``variance="gradient"`` trains log σ and D with the base
optimiser on E_q[NLL] + ``kl_weight``·KL(q‖p) instead (the research code's path; with
``kl_weight=0`` its fixed point is σ → 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.subset import Subset
from sabma.step.dropin import base_defaults, check_runs_on, default_prior, posterior_of
from sabma.step.fisher import BLOCKS
from sabma.step.kept_geometry import KeptGeometry
from sabma.step.kl_ball import Metric, ball_perturbation
from sabma.step.natural_steps import NaturalVarianceSteps
from sabma.step.options import (
    SABMAOptions,
    checked_metric,
    checked_perturb,
    parameter_groups,
)
from sabma.step.two_step import TwoStepOptimizer
from sabma.variance.natural import (
    NaturalVariance,
    Source,
    natural_options,
)
from sabma.variance.state import VarianceState

_DEFAULTS = SABMAOptions()


class SABMA(KeptGeometry, NaturalVarianceSteps, TwoStepOptimizer):
    """Sharpness-aware Bayesian model averaging.

    Drop-in: ``SABMA(model, data=train_loader, lr=…)``, then per batch
    ``for _ in opt.passes(): loss_fn(model(x), y).backward()`` and ``opt.step()``; the defaults
    are the trainer's (:mod:`sabma.step.dropin`).

    Args:
        posterior: your network (trained in place: its Bayesian subset holds the sample during
            a pass and μ between steps), or a :class:`~sabma.GaussianPosterior` that you call as
            ``posterior(x)``.
        base_optimizer: the optimiser class for the update (SGD, Adam, …).
        rho: radius ρ of the ball (KL ≤ ρ²/2 for the Fisher metric, ‖ε‖ ≤ ρ for Euclidean).
        metric: ``"fisher"`` (default) or ``"euclidean"``.
        perturb: which blocks of θ the ascent step moves, among ``"mean"``, ``"log_std"``,
            ``"factor"``. The default ``("mean", "log_std")`` is where the second-order ball is
            accurate; with ``"factor"`` the step length is set by the exact KL.
        damping: δ of the factor block's Fisher, F_DD + δ·diag(Σ⁻¹) (see :mod:`sabma.step.fisher`).
        data: the training data (a ``DataLoader``, or in-memory inputs): the Fisher curvature
            is streamed from it (at most 256 inputs per refresh, once per ``len(data)`` steps),
            λ defaults to its dataset's size, and the head prior's α to its feature scale.
        variance: how σ and D are learned: a :class:`~sabma.variance.NaturalVariance` (the
            natural-gradient rule, with ``prior``), or ``"gradient"``: log σ and D by the
            base optimiser on the reparameterisation gradient (+ ``kl_weight``·KL). ``None`` (the
            default) means ``NaturalVariance(ess=ess, data=data)``, which needs ``data``.
        ess: λ, the effective sample size (default: the size of ``data``'s dataset).
        prior: the prior Gaussian p (default: N(w_start, ``prior_std``² I) off the head,
            N(0, α I) on it). Natural variance: it sets δ and pulls the mean with
            (1/λ)·Σ_p⁻¹(μ − μ_p). Gradient variance: with ``kl_weight`` > 0 the gradient of
            ``kl_weight · KL(q‖p)``, taken at the unperturbed θ, is added before the update.
        subset, rank, head, init_std: for a network: the Bayesian subset (default
            ``"norm+head"``; ``"lora"`` for peft adapters), K (default 5), the head module where
            it cannot be found, the initial σ (default 0.01).
        prior_std, head_prior_var: τ and α of the default prior (defaults 1 and automatic).
        kl_weight: the weight of the KL term (``variance="gradient"`` only).
        decay_covariance: apply the base optimiser's ``weight_decay`` to log σ and D too. Off by
            default: decaying them pulls the variances toward 1.
        block_lr_scale: learning-rate multipliers per block, e.g. ``{"factor": 0.1}``. The
            reparameterisation gradient of D, ∇_w L · z₂ᵀ, is as large as the mean's while its
            expectation is a second-order term, so D random-walks at the mean's learning rate;
            the gradient of log σ is O(σ²) and may want a larger one. Schedulers keep the ratios.
        resample: draw fresh posterior noise after each update, for the next step.
        perturb_every: k > 1 forms ε from a fresh gradient every k-th :meth:`step` only and
            reuses it in between (one pass instead of two; see :mod:`sabma.step.two_step`).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``momentum``, ``weight_decay``, …).
    """

    #: θ is the posterior's own: θ + ε is written into a buffer the parameters point at for the
    #: second pass (:mod:`sabma.step.displacement`; a view of μ, log σ or D taken between steps
    #: shows θ throughout a step)
    move_by_swap = True

    def __init__(
        self,
        posterior: GaussianPosterior | nn.Module,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = _DEFAULTS.rho,
        metric: str | Metric = _DEFAULTS.metric,
        perturb: Iterable[str] = tuple(_DEFAULTS.perturb),
        damping: float = 1.0,
        *,
        data: Inputs | Iterable[Any] | None = None,
        variance: NaturalVariance | str | None = None,
        ess: float | None = None,
        prior: LowRankGaussian | GaussianPosterior | None = None,
        subset: Subset | None = None,
        rank: int | None = None,
        head: str | nn.Module | None = None,
        init_std: float | None = None,
        prior_std: float | None = None,
        head_prior_var: float | None = None,
        kl_weight: float = 0.0,
        decay_covariance: bool = False,
        block_lr_scale: Mapping[str, float] | None = None,
        resample: bool = True,
        perturb_every: int = _DEFAULTS.perturb_every,
        **base_kwargs: Any,
    ) -> None:
        in_place = not isinstance(posterior, GaussianPosterior)
        if in_place:
            posterior = posterior_of(posterior, subset, rank, head, init_std)
        elif any(v is not None for v in (subset, rank, init_std)):
            raise ValueError(
                "subset=, rank= and init_std= build the posterior of a model; this "
                "GaussianPosterior already has them"
            )
        assert isinstance(posterior, GaussianPosterior)
        if not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        if kl_weight > 0 and prior is None:
            raise ValueError("kl_weight > 0 needs a prior")
        if data is not None:
            check_runs_on(posterior, data)
        natural = natural_options(variance, ess, kl_weight, data)
        if natural is not None and prior is None:
            prior = default_prior(posterior, data, head, prior_std, head_prior_var)
        base_kwargs = base_defaults(base_optimizer, base_kwargs)
        metric, perturb = checked_metric(metric), checked_perturb(perturb)
        super().__init__(
            parameter_groups(posterior, decay_covariance, block_lr_scale, base_kwargs),
            base_optimizer,
            rho,
            base_kwargs,
            perturb_every,
            stats_model=posterior.model,
            # the posterior runs its second pass on copies; the model's own forward does not
            stats_between_passes=in_place,
        )
        self.posterior = posterior
        #: the model's own forward runs at the sample: its subset tensors hold w during a pass
        #: (and μ between steps), and their gradients are moved to θ after it
        self.in_place = in_place
        self.metric = metric
        self.perturb = tuple(
            b for b in BLOCKS if b in perturb and (b != "factor" or posterior.rank)
        )
        self.damping = damping
        self.prior = prior
        self.kl_weight = kl_weight
        self.resample = resample
        self.natural: VarianceState | None = None
        if natural is not None:
            assert prior is not None
            target = prior.gaussian() if isinstance(prior, GaussianPosterior) else prior
            self.natural = VarianceState(natural, posterior, target)
        self._curvature_estimate: Tensor | None = None
        self._natural_state: dict[str, Any] = {}
        self._forget_geometry()
        # The first pass of a two-pass step only forms ε: when D is not perturbed, that pass
        # skips D's gradient (a (d, K) outer product); the posterior is told so between steps.
        self._skip_factor_in_first_pass = bool(posterior.rank) and "factor" not in self.perturb
        self._first_pass_mode()

    # --- in place: the user's model(x) ------------------------------------------------------
    def _pass_begin(self) -> None:
        if self.in_place:
            with torch.no_grad():
                self.posterior.load_into_model(self.posterior.weights())

    def _pass_end(self) -> None:
        if self.in_place:
            self.posterior.gradient_from_model()

    def _after_step(self) -> None:
        if self.in_place:  # between steps the model is the posterior mean
            self.posterior.load_into_model()
        self._keep_geometry_through_step()

    def _block_params(self) -> dict[str, nn.Parameter]:
        return {g["block"]: g["params"][0] for g in self.param_groups}

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        params = self._block_params()
        if self._observes(Source.CLEAN) and params["mean"].grad is not None:
            self._curvature_estimate = self._reparam_estimate()
        grads = {b: g for b in self.perturb if (g := params[b].grad) is not None}
        step = self.block_perturbation(grads) if grads else {}
        return [(params[b], eps) for b, eps in step.items()]

    def block_perturbation(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """ε* for the given block gradients (empty when the gradient is zero or ρ = 0)."""
        q = self._geometry() if self.metric is Metric.FISHER else None
        return ball_perturbation(self.posterior, grads, self.rho, self.metric, self.damping, q)

    def _first_pass_mode(self) -> None:
        self.posterior.factor_grad = not self._skip_factor_in_first_pass
        self.posterior.log_std_grad = self.natural is None or "log_std" in self.perturb

    def _later_pass_mode(self) -> None:
        """The pass whose gradient updates θ: D's and log σ's gradients are read only by the
        gradient variance (the natural variance sets σ and D by its rule)."""
        self.posterior.factor_grad = self.natural is None or "factor" in self.perturb
        self.posterior.log_std_grad = self.natural is None
        self.posterior.keep_std = False  # log σ is at θ + ε: its σ is for this pass only

    def _on_perturb(self) -> None:
        self.posterior.update_running_stats = False
        self._later_pass_mode()

    def _on_restore(self) -> None:
        self.posterior.update_running_stats = self.posterior.keep_std = True

    def _before_reused_pass(self) -> None:
        self._later_pass_mode()

    def _before_restore(self, update: bool) -> None:
        if not update:  # a skipped step observes nothing
            self._curvature_estimate = None
        elif self._observes(Source.PERTURBED) or (
            self._observes(Source.CLEAN) and self._curvature_estimate is None
        ):  # the perturbed pass, or a lazy step (it has no clean pass)
            self._curvature_estimate = self._reparam_estimate()

    def _before_update(self) -> None:
        if self.natural is not None:
            mean = self.posterior.mean
            pull = self.natural.prior_pull()
            mean.grad = pull if mean.grad is None else mean.grad.add_(pull)
            self.posterior.log_std.grad = None  # σ and D follow the rule, not the optimiser
            self.posterior.factor.grad = None
        elif self.kl_weight > 0 and self.prior is not None:
            self._add_kl_gradient()

    def _after_update(self) -> None:
        if self.natural is not None:
            self._variance_moved = self._update_variance()
        else:  # the base optimiser stepped log σ and D
            self._variance_moved = True
        if self.resample:
            self.posterior.resample()
        self._first_pass_mode()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._forget_geometry()

    def _add_kl_gradient(self) -> None:
        params = self._block_params()
        blocks = list(params)
        with torch.enable_grad():
            kl = self.kl_weight * self.posterior.kl_to(self.prior)  # type: ignore[arg-type]
            kl_grads = torch.autograd.grad(kl, [params[b] for b in blocks], allow_unused=True)
        for block, g in zip(blocks, kl_grads, strict=True):
            if g is not None:
                p = params[block]
                p.grad = g.clone() if p.grad is None else p.grad.add_(g)
