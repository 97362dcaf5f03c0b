"""Training: the loop, checkpoints, distributed setup, precision and schedules."""
from pneumo_core.training.trainer import EXIT_PREEMPTED, TrainingInterrupted, train

__all__ = ["EXIT_PREEMPTED", "TrainingInterrupted", "train"]
