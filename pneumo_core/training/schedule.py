"""Optimizers and per-step learning-rate schedules."""
from __future__ import annotations

import math

import torch

from pneumo_core.config.schema import TrainSection


def make_optimizer(model: torch.nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov); no weight decay on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainSection, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle" and total >= 4:  # OneCycleLR needs >= 2 steps per phase
        pct = min(0.5, max(cfg.warmup_epochs * steps_per_epoch / total, 2 / total))
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=pct)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
