"""Training: the pure step, the compilable program, and the loop with checkpoints and resume."""

from genjax.train.step import TrainState, make_train_step
from genjax.train.trainer import Trainer, TrainProgram, TrainResult

__all__ = ["TrainProgram", "TrainResult", "TrainState", "Trainer", "make_train_step"]
