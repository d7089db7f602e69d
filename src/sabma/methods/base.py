"""The contract every training method follows, so that one loop trains them all alike.

A method trains the Bayesian subset of a network held by a :class:`GaussianPosterior` and leaves
its predictive there: a point estimate in ``mean`` (``point = True``: predictions at the mean), a
Gaussian in ``(mean, log_std, factor)`` (BMA over draws), or a finite weight set returned by
:meth:`Method.samples` (BMA over the set: ensembles, SGLD samples, MC-dropout passes).
The shared loop (:func:`sabma.training.loop.fit`) gives every method the same data, batches,
schedule, budget and model-selection rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType
from typing import Any, ClassVar, cast

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma import distributed
from sabma.config import Config
from sabma.config.method import register_sections
from sabma.methods.failures import finite
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.amp import scaled_step
from sabma.step.schedule import warmup_cosine
from sabma.step.two_step import TwoStepOptimizer


def set_network_mode(posterior: GaussianPosterior, bn_mode: str) -> None:
    """Training mode of the network: ``"train"`` (batch statistics, dropout) or ``"eval"``."""
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"model.bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    posterior.train(bn_mode == "train")


def section_types(**sections: type) -> Mapping[str, type]:
    """A method's ``sections``: ``section_types(sabma=SABMAOptions, variance=VarianceOptions)``
    makes ``method.sabma`` and ``method.variance`` sections of the configuration."""
    return MappingProxyType(sections)


class Method:
    """Base class: subclasses set the class attributes and override what differs."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_sections(cls.sections)

    name: ClassVar[str]
    summary: ClassVar[str]
    #: the final predictive is the posterior mean alone
    point: ClassVar[bool] = True
    #: the training forward pass runs at the mean (False: at the posterior's sample)
    trains_at_mean: ClassVar[bool] = True
    #: the predictive averages S stochastic forward passes at the mean (MC dropout): S is the
    #: evaluation's number of samples (``eval.samples``, ``--samples``, ``--shift-samples``),
    #: whatever weight set the run stored
    passes_at_mean: ClassVar[bool] = False
    #: keep the state with the best validation NLL (False: the method's own final state)
    select_best: ClassVar[bool] = True
    #: the sections of ``cfg.method`` this method reads, name → options dataclass (declared in
    #: the method's module; defining the class registers them, :func:`section_types`)
    sections: ClassVar[Mapping[str, type]] = MappingProxyType({})
    #: the method's main setting besides the learning rate (a configuration key), which
    #: ``optim.knob_grid`` searches on validation ("": none); ``knob_grid`` is the grid
    #: ``sabma benchmark`` gives it (:mod:`sabma.pipeline.search`)
    knob: ClassVar[str] = ""
    knob_grid: ClassVar[tuple[float, ...]] = ()
    #: the setting that narrows the predictive's noise, named by the under-confident advice of a
    #: run's report ("": none; :mod:`sabma.runs.diagnostics`)
    less_noise: ClassVar[str] = ""

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        """(key, value, lower bound, strict) of the numbers of the method's own sections. The
        configuration checks gather them from every registered method (a bad value is refused
        even in a section the run does not read); an override adds to ``super().bounds``."""
        return []

    @staticmethod
    def knob_unused(cfg: Config) -> str:
        """Why :attr:`knob` has no effect under ``cfg`` ("" when it has one): searching it would
        train identical candidates, so ``optim.knob_grid`` is refused and the benchmark skips
        the knob search for this configuration."""
        return ""

    @staticmethod
    def check(cfg: Config) -> None:
        """Refuse settings of the method's own section that cannot work together (one-line
        ValueError); run with the configuration checks, before anything is written."""

    def rank(self, cfg: Config) -> int:
        """K of the posterior's low-rank factor this method needs."""
        return 0

    def lr_floor(self, cfg: Config) -> float:
        """The cosine schedule decays to ``lr_floor × lr`` (0 by default)."""
        return 0.0

    def schedule(
        self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: Config
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule, stepped once per batch: warm-up, then cosine decay."""
        o = cfg.optim
        return warmup_cosine(
            optimizer,
            o.epochs * steps_per_epoch,
            o.warmup_epochs * steps_per_epoch,
            self.lr_floor(cfg),
        )

    def initialise(
        self, posterior: GaussianPosterior, start: LowRankGaussian, is_head: Tensor, cfg: Config
    ) -> None:
        """Set the posterior before training to ``start``, the initial posterior of
        ``cfg.init`` (:mod:`sabma.priors.initial`)."""
        posterior.set_to(start)

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        """Take from the run what training needs beyond the optimiser (the prior, N, settings),
        after checks; called before :meth:`optimizer`, once per member."""

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        """The optimiser over the posterior's parameters (built only: state goes in
        :meth:`setup`)."""
        raise NotImplementedError

    def build_optimizer(
        self,
        posterior: GaussianPosterior,
        prior: LowRankGaussian | None,
        cfg: Config,
        n: int,
        inputs: Inputs | None = None,
    ) -> torch.optim.Optimizer:
        """:meth:`setup`, then :meth:`optimizer`: what the training loop calls. ``inputs``: the
        run's training inputs (:attr:`train_inputs`, for optimisers that measure curvature on
        the training split)."""
        self.train_inputs = inputs
        self.setup(posterior, prior, cfg, n)
        return self.optimizer(posterior, prior, cfg, n)

    def loss(self, posterior: GaussianPosterior, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(objective, data loss)`` on the batch: the backward pass runs on the objective (the
        data loss plus whatever the method adds: a prior term, a potential), the data loss is what
        the training log records. Default: the cross-entropy at the mean, or at the posterior's
        current draw (``trains_at_mean = False``)."""
        forward = posterior.mean_forward if self.trains_at_mean else posterior
        value = cross_entropy(inputs.call(forward, x), y)
        return value, value

    def pass_context(self, optimizer: torch.optim.Optimizer) -> AbstractContextManager[Any]:
        """The context each forward/backward pass runs in (IVON's weight sampling); none by
        default."""
        return nullcontext()

    def after_update(self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        """Called after every update that was applied (Langevin noise, σ read back from the
        optimiser, counters)."""

    def step(
        self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer, x: Inputs, y: Tensor
    ) -> float:
        """One update on the batch (x, y); returns the data loss before it. The same sequence for
        every method — zero the gradients; per pass (two for SAM-type optimisers) the objective of
        :meth:`loss`, refused when not finite, its backward, the gradients summed over processes;
        the update; :meth:`after_update`. Methods change :meth:`loss`, :meth:`pass_context` and
        :meth:`after_update`, not this."""
        optimizer.zero_grad()
        data_losses: list[Tensor] = []

        def closure() -> Tensor:
            with self.pass_context(optimizer):
                objective, data_loss = self.loss(posterior, x, y)
                finite(objective).backward()
                self.sync_gradients(optimizer)
            data_losses.append(data_loss.detach())
            return objective

        optimizer.step(cast(Callable[[], float], closure))  # two-step: twice; others: once
        self.after_update(posterior, optimizer)
        return data_losses[0].item()

    #: this process's share n_r / n of the global batch (multi-process training)
    batch_weight: float = 1.0
    #: the run's training inputs, given to :meth:`build_optimizer` (methods whose optimiser
    #: measures curvature on the training split use them)
    train_inputs: Inputs | None = None

    def sync_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """After every backward pass: sum the processes' gradients, weighted by their share of
        the global batch (nothing in a single process). Methods with their own :meth:`step` call
        it between ``backward`` and the update."""
        if distributed.world_size() > 1:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            distributed.sum_gradients(params, self.batch_weight)

    def supports_loss_scaling(self, cfg: Config) -> bool:
        """Whether :meth:`step_scaled` (fp16 loss scaling) is supported: False for methods whose
        optimiser is a package's own (IVON), which a gradient scaler cannot step."""
        return True

    def step_scaled(
        self,
        posterior: GaussianPosterior,
        optimizer: torch.optim.Optimizer,
        x: Inputs,
        y: Tensor,
        scaler: torch.amp.GradScaler,
    ) -> float:
        """:meth:`step` with fp16 loss scaling; an overflowing step is skipped (and returns
        NaN, which the training loop counts as skipped, not as divergence)."""
        optimizer.zero_grad()
        data_losses: list[Tensor] = []

        def loss_fn() -> Tensor:
            with self.pass_context(optimizer):
                objective, data_loss = self.loss(posterior, x, y)
            data_losses.append(data_loss.detach())
            return objective

        if isinstance(optimizer, TwoStepOptimizer):
            _, updated = scaled_step(optimizer, scaler, loss_fn)
        else:
            scaler.scale(loss_fn()).backward()
            scaler.step(optimizer)
            before = scaler.get_scale()
            scaler.update()
            updated = scaler.get_scale() >= before
        if not updated:
            return float("nan")
        self.after_update(posterior, optimizer)
        return data_losses[0].item()

    def train_mode(self, posterior: GaussianPosterior, cfg: Config) -> None:
        """Put the network in its training mode (every epoch)."""
        set_network_mode(posterior, cfg.model.bn_mode)

    def predict_mode(self, posterior: GaussianPosterior, cfg: Config) -> None:
        """Put the network in the mode of the method's BMA predictive (eval by default)."""
        posterior.eval()

    def state_dict(self) -> dict[str, Any]:
        """What the method carries between steps beyond the posterior and the optimiser
        (collected samples, counters), for checkpoints; tensors and plain values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after :meth:`optimizer` and :meth:`schedule` ran)."""

    def members(self, cfg: Config) -> int:
        """How many times the whole training loop runs (ensembles: one run per member)."""
        return 1

    def start_member(self, posterior: GaussianPosterior, member: int, cfg: Config) -> None:
        """Called before member ``member``'s loop when ``members(cfg) > 1``."""

    def end_member(self, posterior: GaussianPosterior, member: int, cfg: Config) -> None:
        """Called after member ``member``'s loop (and its model selection)."""

    def samples(self) -> Tensor | None:
        """A finite set of subset weights (M, d) to average over, for sample-based predictives;
        None for point and Gaussian predictives."""
        return None

    def evaluation_needs_prior(self, cfg: Config) -> bool:
        """Whether :meth:`predictive` uses the prior (it is then rebuilt to re-evaluate a run)."""
        return False

    def predictive(
        self,
        posterior: GaussianPosterior,
        x_train: Inputs,
        y_train: Tensor,
        prior: LowRankGaussian | None,
        head: str,
        cfg: Config,
    ) -> Callable[[Inputs], Tensor] | None:
        """The method's own predictive x ↦ log p(y | x), built after training (Laplace's GLM
        predictive); None for the standard ones (the mean, BMA over draws or a weight set)."""
        return None

    def on_epoch_end(self, posterior: GaussianPosterior, epoch: int, cfg: Config) -> None:
        """Called after every epoch (1-based ``epoch``)."""

    def finish(self, posterior: GaussianPosterior, cfg: Config) -> None:
        """Called once after training (and after model selection)."""
