"""A trained run's predictive, whatever the method: one object for evaluation and shift."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sabma import __version__ as sabma_version
from sabma.config import Config, dump_config
from sabma.data.tasks import Task
from sabma.methods import Method
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.bma import check_samples
from sabma.predict.dataset import predict_log_probs, predict_summary
from sabma.predict.summary import Predictions
from sabma.runs.folder import POSTERIOR

log = logging.getLogger(__name__)


@dataclass
class RunPredictive:
    """The method's predictive over a dataset: the mean (point methods), BMA over ``samples``
    draws of the Gaussian, BMA over the method's finite ``weight_set``, or its ``own`` predictive
    (Laplace)."""

    cfg: Config
    posterior: GaussianPosterior
    method: Method
    samples: int
    weight_set: Tensor | None = None
    own: Callable[[Inputs], Tensor] | None = None

    def __post_init__(self) -> None:
        check_samples(self.samples, "the number of BMA samples")

    @property
    def samples_used(self) -> int:
        """S: 1 for a point estimate, 0 for a closed-form predictive (Laplace's probit)."""
        if self.method.point:
            return 1
        if self.own is not None:
            return 0
        weights = self.weights
        return len(weights) if weights is not None else self.samples

    @property
    def weights(self) -> Tensor | None:
        """The finite set of subset weights the BMA averages over (None: S draws of the
        Gaussian): the stored weight set, or S copies of the mean for stochastic passes."""
        if self.method.passes_at_mean:
            return self.posterior.mean.detach().expand(self.samples, -1)
        return self.weight_set

    def mean(self, x: Inputs) -> Tensor:
        """log p(y | x) at the posterior mean, shape (n, classes)."""
        self.posterior.eval()
        return predict_log_probs(self.posterior, x, point=True, batch_size=self.cfg.eval.batch_size)

    def __call__(
        self,
        x: Inputs,
        generator: torch.Generator | None = None,
        progress: bool = False,
        desc: str = "BMA",
    ) -> Tensor:
        """log p̄(y | x) of the method's predictive, shape (n, classes)."""
        if self.method.point:
            return self.mean(x)
        if self.own is not None:
            self.posterior.eval()
            device = self.posterior.device
            return torch.cat(
                [
                    self.own(inputs.to_device(b, device)).to(inputs.device_of(x))
                    for b in inputs.batches(x, self.cfg.eval.batch_size)
                ]
            )
        return self._over_draws(predict_log_probs, x, generator, progress, desc)

    def summary(
        self,
        x: Inputs,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        desc: str = "BMA",
        at_mean: bool = False,
    ) -> Predictions:
        """The predictive's per-input figures for uncertainty scores
        (:func:`~sabma.predict.dataset.predict_summary`), from the same draws as
        :meth:`__call__` for the same generator; ``at_mean``: the posterior mean's. A
        closed-form predictive (Laplace's) has its probabilities only."""
        if self.method.point or at_mean:
            self.posterior.eval()
            return predict_summary(
                self.posterior,
                x,
                point=True,
                temperature=temperature,
                batch_size=self.cfg.eval.batch_size,
            )
        if self.own is not None:
            return Predictions(self(x))
        return self._over_draws(
            predict_summary, x, generator, progress, desc, temperature=temperature
        )

    def _over_draws(
        self,
        predict: Callable[..., Any],
        x: Inputs,
        generator: torch.Generator | None,
        progress: bool,
        desc: str,
        **extra: Any,
    ) -> Any:
        """``predict`` (:func:`predict_log_probs` or :func:`predict_summary`) over the method's
        draws or weight set, in the method's prediction mode (eval mode after)."""
        self.method.predict_mode(self.posterior, self.cfg)
        try:
            return predict(
                self.posterior,
                x,
                self.samples,
                weights=self.weights,
                batch_size=self.cfg.eval.batch_size,
                generator=generator,
                progress=progress,
                desc=desc,
                **extra,
            )
        finally:
            self.posterior.eval()

    def identity(self, out: Path, samples: int | None = None) -> str:
        """What an evaluation's saved sets (shift, OOD) belong to: the posterior (its file in
        ``out``, or its tensors and weight set), the configuration, the number of BMA draws
        (``samples``, None: the run's), and the versions and device that computed them."""
        digest = hashlib.sha256()
        if (out / POSTERIOR).is_file():
            with (out / POSTERIOR).open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        else:
            tensors = [*self.posterior.state_dict().values()]
            if self.weight_set is not None:
                tensors.append(self.weight_set)
            for tensor in tensors:
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(dump_config(self.cfg).encode())
        draws = self.samples_used if samples is None else samples
        device = self.posterior.device.type
        digest.update(f"{draws} {sabma_version} {torch.__version__} {device}".encode())
        return digest.hexdigest()


#: S above which ``evaluate`` first estimates how long the BMA will take
LONG_SAMPLES = 1000


@torch.no_grad()
def warn_if_long(posterior: GaussianPosterior, task: Task, samples: int, batch_size: int) -> None:
    """Say before it starts when S draws over the validation and test sets would take over an
    hour: one batch at the mean is timed (memory stays bounded: the draws are streamed)."""
    first = inputs.take(task.x_test, slice(0, batch_size))
    posterior.eval()
    batch = inputs.to_device(first, posterior.device)
    inputs.call(posterior.mean_forward, batch)  # warm-up
    start = time.perf_counter()
    inputs.call(posterior.mean_forward, batch)
    per_pass = time.perf_counter() - start
    batches = math.ceil((inputs.count(task.x_val) + inputs.count(task.x_test)) / batch_size)
    hours = per_pass * samples * batches / 3600
    if hours > 1:
        log.warning(
            "%d samples: about %.1f h of BMA passes on this machine (%.3f s per batch and draw, "
            "%d batches); Ctrl-C stops it",
            samples,
            hours,
            per_pass,
            batches,
        )
