"""One member's epochs of the shared training loop: batches, the non-finite guard, evaluation."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from sabma import distributed
from sabma.config import Config
from sabma.data.preprocess import augment
from sabma.data.tasks import TrainData
from sabma.device import amp_dtype
from sabma.methods import Method
from sabma.methods.failures import NonFiniteLoss, abandon_step
from sabma.models import inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.runs.checkpoint import rng_state, set_rng_state
from sabma.runs.stopping import Stopped, requested
from sabma.training.checkpointing import BestState, Checkpointing, LoopState
from sabma.training.frozen import FrozenRest
from sabma.training.selection import (
    load_buffers,
    model_buffers,
    patience_spent,
    restore,
    snapshot,
    val_nll,
)

log = logging.getLogger(__name__)

#: Non-finite losses in a row after which training stops (each one's step is skipped).
MAX_NONFINITE_IN_A_ROW = 5


def saved_lr(state: LoopState, cfg: Config) -> float:
    """The learning rate the checkpoint was written with (``cfg``'s for older checkpoints)."""
    if not state.config:
        return cfg.optim.lr
    return float(yaml.safe_load(state.config)["optim"]["lr"])


def rescale_lr(schedule: torch.optim.lr_scheduler.LRScheduler, factor: float) -> None:
    """Multiply the schedule's base rates and its optimiser's current ones by ``factor``: the
    schedule goes on from where it was, at the new learning rate (a resume that lowers
    ``optim.lr``)."""
    if factor == 1.0:
        return
    schedule.base_lrs = [lr * factor for lr in schedule.base_lrs]
    for group in schedule.optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor


class MemberLoop:
    """The epochs of one member (the whole run for every method but ensembles)."""

    def __init__(
        self,
        posterior: GaussianPosterior,
        data: TrainData,
        cfg: Config,
        prior: LowRankGaussian | None,
        method: Method,
        member: int,
        checkpoint: Checkpointing | None,
        earlier: list[dict[str, Any]],
    ) -> None:
        self.posterior, self.data, self.cfg, self.method = posterior, data, cfg, method
        self.member, self.checkpoint, self.earlier = member, checkpoint, earlier
        self.n = inputs.count(data.x_train)
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919 * member)
        self.optimizer = method.build_optimizer(posterior, prior, cfg, self.n, data.x_train)
        steps_per_epoch = math.ceil(self.n / cfg.optim.batch_size)
        self.schedule = method.schedule(self.optimizer, steps_per_epoch, cfg)
        self.scaler = None
        if amp_dtype(cfg.optim.amp) is torch.float16:
            self.scaler = torch.amp.GradScaler(posterior.device.type)
        self.frozen = None
        if cfg.method.frozen == "prior":
            self.frozen = FrozenRest(posterior.model, posterior.names, cfg.method.frozen_std)
        self.history: list[dict[str, Any]] = []
        self.best: BestState | None = None
        self.first_epoch, self.position, self.steps = 0, 0, 0
        self.order: Tensor | None = None
        self.losses: list[float] = []
        self.skipped, self.bad_in_a_row = 0, 0

    def resume(self, state: LoopState) -> None:
        assert state.optimizer is not None and state.schedule is not None
        assert state.generator is not None and state.rng is not None
        self.posterior.load_state_dict(state.posterior)
        load_buffers(self.posterior, state.buffers)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.schedule)
        rescale_lr(self.schedule, self.cfg.optim.lr / saved_lr(state, self.cfg))
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        self.method.load_state_dict(state.method)
        self.gen.set_state(state.generator)
        set_rng_state(state.rng)
        self.first_epoch, self.position, self.steps = state.epoch, state.position, state.steps
        self.order, self.losses, self.skipped = state.order, list(state.losses), state.skipped
        self.history = list(state.member_history)
        self.best = state.best

    def state(self, epoch: int) -> LoopState:
        assert self.checkpoint is not None
        return LoopState(
            done=False,
            names=self.posterior.names,
            member=self.member,
            history=self.earlier,
            posterior=self.posterior.state_dict(),
            buffers=model_buffers(self.posterior),
            method=self.method.state_dict(),
            elapsed=self.checkpoint.elapsed(),
            config=self.checkpoint.config,
            member_history=self.history,
            epoch=epoch,
            position=self.position,
            steps=self.steps,
            order=self.order,
            losses=self.losses,
            skipped=self.skipped,
            optimizer=self.optimizer.state_dict(),
            schedule=self.schedule.state_dict(),
            scaler=None if self.scaler is None else self.scaler.state_dict(),
            generator=self.gen.get_state(),
            rng=rng_state(),
            best=self.best,
        )

    def run(self, log_path: Path | None, progress: bool) -> list[dict[str, Any]]:
        cfg, method = self.cfg, self.method
        bar = tqdm(
            range(self.first_epoch, cfg.optim.epochs),
            desc=f"train {method.name}",
            disable=not progress,
            leave=False,
        )
        for epoch in bar:
            entry = self._epoch(epoch)
            self.history.append(entry)
            self.order = None
            stop = patience_spent(self.history, cfg.eval.patience) if method.select_best else False
            shown = {"loss": f"{entry['loss']:.3f}"}
            if self.best is not None:
                shown["best_val_nll"] = f"{self.best.val_nll:.3f}"
            bar.set_postfix(shown)
            if log_path is not None:
                with log_path.open("a") as handle:
                    handle.write(json.dumps(entry) + "\n")
            if stop:
                log.info(
                    "%s: early stop at epoch %d (patience %d)",
                    method.name,
                    epoch + 1,
                    cfg.eval.patience,
                )
                break
        if self.best is not None:
            restore(self.posterior, self.best)
            log.info("%s: best validation NLL %.4f", method.name, self.best.val_nll)
        return self.history

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (from the resumed position), then evaluate; the log entry."""
        cfg, method, posterior = self.cfg, self.method, self.posterior
        method.train_mode(posterior, cfg)
        start = time.perf_counter()
        if self.order is None:
            self.order = torch.randperm(self.n, generator=self.gen)
            self.position, self.losses, self.skipped = 0, [], 0
        batches = self.order.split(cfg.optim.batch_size)
        while self.position < len(batches):
            self._step(batches[self.position], epoch)
            if posterior.model.training:
                distributed.broadcast_buffers(posterior.model)
            self.schedule.step()
            self.position, self.steps = self.position + 1, self.steps + 1
            checkpoint = self.checkpoint
            every = checkpoint.every if checkpoint is not None and checkpoint.write else 0
            if every and self.steps % every == 0:
                assert checkpoint is not None
                self.state(epoch).save(checkpoint.path)
            self._stop_if_asked(epoch)
        if self.frozen is not None:
            self.frozen.restore()
        if not self.losses:
            raise FloatingPointError(
                f"every step of epoch {epoch + 1} was skipped (non-finite loss or fp16 "
                "overflow); lower optim.lr, or use optim.amp=bf16 or none"
            )
        method.on_epoch_end(posterior, epoch + 1, cfg)
        entry: dict[str, Any] = {
            "member": self.member,
            "epoch": epoch + 1,
            "loss": sum(self.losses) / len(self.losses),
            "lr": self.schedule.get_last_lr()[0],
            "epoch_s": time.perf_counter() - start,
        }
        if self.scaler is not None or self.skipped:
            entry["skipped_steps"] = self.skipped
        if (epoch + 1) % cfg.eval.eval_every == 0 or epoch + 1 == cfg.optim.epochs:
            entry["val_nll"] = val_nll(posterior, self.data, cfg, method.trains_at_mean)
            if method.select_best and (self.best is None or entry["val_nll"] < self.best.val_nll):
                self.best = snapshot(posterior, entry["val_nll"])
        return entry

    def _radius(self) -> str:
        """`` or method.<name>.rho`` for the methods with a perturbation radius."""
        name = self.cfg.method.name
        return f" or method.{name}.rho" if name in ("sabma", "sam", "fsam", "bsam", "fswag") else ""

    def _stop_if_asked(self, epoch: int) -> None:
        """After a step: on SIGINT/SIGTERM write the checkpoint here and stop."""
        signum = requested()
        if signum is None:
            return
        checkpoint = self.checkpoint
        path = checkpoint.path if checkpoint is not None and checkpoint.write else None
        if path is not None:
            self.state(epoch).save(path)
        raise Stopped(signum, epoch + 1, self.steps, path)

    def _step(self, idx: Tensor, epoch: int) -> None:
        """One update on the batch ``idx``, skipped (θ unchanged) when its loss is not finite."""
        cfg, method, posterior = self.cfg, self.method, self.posterior
        xb, yb = inputs.take(self.data.x_train, idx), self.data.y_train[idx]
        if cfg.data.augment and isinstance(xb, Tensor):
            xb = augment(xb, self.gen)  # on the global batch: the same draws in every process
        mine, method.batch_weight = distributed.shard(torch.arange(len(idx)))
        xb = inputs.to_device(inputs.take(xb, mine), posterior.device)
        yb = yb[mine].to(posterior.device)
        if self.frozen is not None:
            self.frozen.resample(self.gen)
        try:
            if self.scaler is not None:
                loss = method.step_scaled(posterior, self.optimizer, xb, yb, self.scaler)
                if math.isnan(loss):  # fp16 overflow: step skipped, the scale lowered
                    self.skipped += 1
                else:
                    self.losses.append(loss)
            else:
                self.losses.append(method.step(posterior, self.optimizer, xb, yb))
            self.bad_in_a_row = 0
        except NonFiniteLoss:
            abandon_step(self.optimizer)
            self.skipped, self.bad_in_a_row = self.skipped + 1, self.bad_in_a_row + 1
            log.warning(
                "%s: non-finite loss at epoch %d, step %d: step skipped",
                method.name,
                epoch + 1,
                self.position + 1,
            )
            if self.bad_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                saved = self.checkpoint
                lower = f"optim.lr={self.cfg.optim.lr / 10:g}"
                if saved is not None and saved.path.is_file():
                    advice = (
                        f"`sabma train --out {saved.path.parent} --resume --set {lower}` "
                        "continues from the last checkpoint at a lower learning rate (it may "
                        "hold weights already on their way out: if that diverges too, start a "
                        f"new run with a lower optim.lr{self._radius()})"
                    )
                else:
                    advice = (
                        "no checkpoint was written yet, and nothing of this run was kept: start "
                        f"again with a lower learning rate (e.g. --set {lower}){self._radius()}"
                    )
                raise FloatingPointError(
                    f"training diverged: {self.bad_in_a_row} non-finite losses in a row at epoch "
                    f"{epoch + 1}; {advice}"
                ) from None
