"""The Hugging Face ``Trainer`` with SA-BMA: both passes in ``training_step``, BMA in prediction.

    trainer = SABMATrainer(model=model, args=TrainingArguments(...), train_dataset=train,
                           sabma={"rho": 1.0})
    trainer.train()
    probs = trainer.predict(test).predictions     # the BMA predictive, (n, classes)

The optimiser is the drop-in :class:`~sabma.SABMA` on the model (the Bayesian subset, default
norm+head; ``args.learning_rate`` and ``args.weight_decay`` for the mean; the Fisher streamed from
the training dataloader, λ its dataset's size; any other argument through ``sabma=``). The
Trainer's schedule, logging, checkpoints and mixed precision see an ordinary optimiser.

Gradient accumulation spans both passes exactly: the Trainer hands ``training_step`` the k
micro-batches of an update one by one; each runs the pass at θ, and the last one then runs the
perturbed pass over all k again (the same posterior noise), so the update equals one over their
union. (The model's loss is taken as its micro-batch mean and divided by k — the Trainer's own
rule for models that do not count tokens — even where a model's forward accepts
``num_items_in_batch``: a classifier's mean loss ignores it, and plain ``Trainer`` accumulation
then doubles the gradient at k = 2.) ``max_grad_norm`` clips the model's tensors, which hold
no gradient after a pass (it is moved to θ): it has no effect here.

Prediction and evaluation average softmax over ``bma_samples`` posterior draws (the same draws
for every batch of a call); the predictions are those probabilities, the loss the BMA's NLL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from sabma.config.sections import DEFAULT_BMA_SAMPLES
from sabma.models.inputs import LABEL_KEYS
from sabma.predict.bma import bma_log_probs
from sabma.step.sabma import SABMA

try:
    from transformers import Trainer
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "sabma.integrations.hf needs transformers and accelerate: pip install 'sabma[hf]'"
    ) from err


def unwrapped(optimizer: Any) -> SABMA:
    """The :class:`~sabma.SABMA` inside an accelerate ``AcceleratedOptimizer`` (or itself)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, SABMA):
        raise TypeError(f"expected the SABMA optimiser, found {type(inner).__name__}")
    return inner


class SABMATrainer(Trainer):  # type: ignore[misc]
    """A ``transformers.Trainer`` that trains with SA-BMA and predicts with the BMA.

    Args:
        sabma: keyword arguments for :class:`~sabma.SABMA` (``rho``, ``subset``, ``rank``,
            ``variance``, …).
        bma_samples: S, the posterior draws of the predictive.
        *args, **kwargs: the ``Trainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        sabma: dict[str, Any] | None = None,
        bma_samples: int = DEFAULT_BMA_SAMPLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # a classifier's loss is its micro-batch's mean, whatever its forward accepts: the
        # Trainer then divides it by the accumulation steps, so k micro-batches equal their union
        self.model_accepts_loss_kwargs = False
        self.sabma_kwargs = dict(sabma or {})
        self.bma_samples = bma_samples
        self._passes: Iterator[int] | None = None
        self._window: list[tuple[Any, Any]] = []
        self._bma_weights: Tensor | None = None

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            options = {
                "lr": self.args.learning_rate,
                "weight_decay": self.args.weight_decay,
                **self.sabma_kwargs,
            }
            target = self.model if model is None else model
            if target is None:
                raise ValueError("SABMATrainer needs a model")
            self.optimizer = SABMA(target, data=self.get_train_dataloader(), **options)
        return self.optimizer

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> Tensor:
        """The pass at θ on this micro-batch; after the update's last micro-batch, the pass at
        θ + ε over all of them."""
        optimizer = unwrapped(self.optimizer)
        self._bma_weights = None
        if self._passes is None:
            self._passes = optimizer.passes()
            next(self._passes)
            self._window = []
        self._window.append((inputs, num_items_in_batch))
        loss: Tensor = super().training_step(model, inputs, num_items_in_batch)
        if len(self._window) >= self.current_gradient_accumulation_steps:
            if next(self._passes, None) is not None:
                for saved, count in self._window:
                    super().training_step(model, saved, count)
                next(self._passes, None)
            self._passes, self._window = None, []
        return loss

    @torch.no_grad()
    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """(BMA NLL, BMA probabilities, labels) for one batch."""
        if self.optimizer is None:
            raise RuntimeError("SABMATrainer predicts with the posterior: train() first")
        posterior = unwrapped(self.optimizer).posterior
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        features = {k: v for k, v in inputs.items() if k not in LABEL_KEYS}
        if self._bma_weights is None:
            self._bma_weights = posterior.sample_weights(self.bma_samples).detach()
        was_training = posterior.model.training
        posterior.eval()
        try:
            log_probs = bma_log_probs(posterior, features, weights=self._bma_weights)
        finally:
            posterior.train(was_training)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.nll_loss(log_probs, labels).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, log_probs.exp(), labels
