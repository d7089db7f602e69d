"""The training loop every method shares: batches, schedule, checkpoints, model selection."""

from sabma.data.tasks import TrainData
from sabma.training.checkpointing import Checkpointing, LoopState
from sabma.training.loop import fit

__all__ = ["Checkpointing", "LoopState", "TrainData", "fit"]
