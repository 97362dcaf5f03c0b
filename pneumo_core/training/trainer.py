"""``pneumo train``: the training loop, from a resolved config to a model artifact."""
from __future__ import annotations

import logging
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils.model_ema import ModelEmaV3
from tqdm.auto import tqdm

from pneumo_core.config.loader import ResolvedConfig
from pneumo_core.data.cache import decode_all, fingerprint
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.data.splits import assign_splits
from pneumo_core.device import autocast, cpu_has_bf16, cpu_info, cpu_vector_units, pick_device, pick_precision
from pneumo_core.errors import PneumoError
from pneumo_core.records import RunInfo
from pneumo_core.training.checkpoint import load_checkpoint, save_checkpoint
from pneumo_core.training.finalize import finalize
from pneumo_core.training.loader import CachedImages, EpochBatchSampler, make_loader
from pneumo_core.training.runtime import init_distributed
from pneumo_core.training.schedule import make_optimizer, make_scheduler
from pneumo_core.training.sync_batchnorm import convert_to_cpu_sync_bn
from pneumo_core.training.tracking import Trackers
from pneumo_core.training.validation import loss_and_auc, predict_logits

log = logging.getLogger("pneumo.train")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint saved after SIGTERM/SIGUSR1; requeue and run again


def _progress_every_s() -> float:
    """Seconds between progress lines without a terminal (PNEUMO_PROGRESS_EVERY_S, default 60)."""
    raw = os.environ.get("PNEUMO_PROGRESS_EVERY_S", "60")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise PneumoError(f"PNEUMO_PROGRESS_EVERY_S must be a number of seconds, not {raw!r}") from None


def _device_summary(device: torch.device, precision: str) -> str:
    """e.g. "cpu (AMD EPYC, AVX2, 2 threads, native bf16: no), fp32"."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {precision}"
    name = cpu_info()[0] or platform.processor() or "CPU"
    return (f"cpu ({name}, {cpu_vector_units()}, {torch.get_num_threads()} threads, native bf16: "
            f"{'yes' if cpu_has_bf16() else 'no'}), {precision}")


class TrainingInterrupted(PneumoError):
    """Raised after a signal-triggered checkpoint; the CLI exits with EXIT_PREEMPTED."""


class _StopFlag:
    """Set by SIGTERM/SIGUSR1; the loop checkpoints at the next batch boundary."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def install(self) -> None:
        """Take over SIGTERM/SIGUSR1 (main thread only); ``restore`` gives them back."""
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = signum


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _all_agree_stop(flag: _StopFlag, world: int) -> bool:
    stop = torch.tensor([1 if flag.signum else 0])
    if world > 1:
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    return bool(stop.item())


def config_fingerprint(rc: ResolvedConfig) -> str:
    """Hash of what determines the training run (model, data, augment, train sections)."""
    import hashlib
    import json

    parts = rc.config.model_dump(mode="json", include={"model", "data", "augment", "train"})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def train(rc: ResolvedConfig, run_dir: Path, resume: bool = True, progress: Optional[bool] = None) -> Path:
    """Train the configured model in ``run_dir`` and write ``run_dir/artifact``; return its path.

    Resumes from ``run_dir/checkpoint.pt`` when present (unless ``resume`` is False). On SIGTERM or
    SIGUSR1 it saves a checkpoint at the next batch and raises :class:`TrainingInterrupted`.
    """
    flag = _StopFlag()
    flag.install()
    trackers = Trackers()
    try:
        artifact = _train(rc, Path(run_dir), resume, progress, flag, trackers)
    except TrainingInterrupted:
        trackers.close("interrupted")
        raise
    except BaseException:
        trackers.close("failed")
        raise
    finally:
        flag.restore()
    trackers.close("finished")
    return artifact


def _train(rc: ResolvedConfig, run_dir: Path, resume: bool, progress: Optional[bool], flag: _StopFlag,
           trackers: Trackers) -> Path:
    cfg, tc = rc.config, rc.config.train
    dinfo = init_distributed(tc.device)
    device = pick_device(tc.device)
    precision = pick_precision(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    progress = sys.stderr.isatty() if progress is None else progress
    progress = progress and dinfo.is_main
    artifact_dir = run_dir / "artifact"
    state = load_checkpoint(run_dir) if resume else None
    fingerprint_now = config_fingerprint(rc)
    if state is not None and state.get("config_fingerprint", fingerprint_now) != fingerprint_now:
        raise PneumoError(f"{run_dir} holds a checkpoint of a different config; resume it with the same "
                          "config and overrides, or pass --no-resume or another --run-dir")
    if state is not None and state.get("finished") and (artifact_dir / "model.json").exists():
        log.info("run already finished: %s", artifact_dir)
        return artifact_dir
    _seed_everything(tc.seed, tc.deterministic)
    every = _progress_every_s()  # checked before any data is loaded

    # ---- data
    table = rc.pm.dataset(cfg.data.name).build(rc.data_params)
    if len(table.classes) != 2:
        raise PneumoError(f"pneumo trains binary classifiers; dataset gives {len(table.classes)} classes {table.classes}")
    splits = assign_splits(table, cfg.data.val_fraction, cfg.data.min_val_images, tc.seed,
                           cfg.data.temporal_fraction)
    prep = Preprocessing(image_size=cfg.data.image_size, in_chans=cfg.model.in_chans)
    train_images = decode_all(splits["train"], prep.image_size, "decode train", progress)
    train_labels = np.array([s.label for s in splits["train"]])
    # every validation split, the selecting one (data.select_on) first
    val_sets = {name: (decode_all(splits[name], prep.image_size, f"decode {name}", progress),
                       np.array([s.label for s in splits[name]]))
                for name in dict.fromkeys([cfg.data.select_on, "val", "temporal"]) if splits[name]}
    augment = rc.pm.augmentation(cfg.augment.name).build(rc.augment_params, prep.image_size, True)
    dataset = CachedImages(train_images, train_labels, prep, augment, tc.seed)
    sampler = EpochBatchSampler(len(dataset), tc.batch_size, tc.seed, dinfo.rank, dinfo.world_size)
    if len(sampler) == 0:
        raise PneumoError(f"train.batch_size {tc.batch_size} is larger than the {len(dataset)} training images")
    loader = make_loader(dataset, sampler, cfg.data.num_workers)
    steps_per_epoch = min(len(sampler), tc.max_train_batches or len(sampler))

    # ---- model
    model = rc.pm.model(cfg.model.name).build(rc.model_params, cfg.model.in_chans, 2, True).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if dinfo.world_size > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = convert_to_cpu_sync_bn(model)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    counts = np.bincount(train_labels, minlength=2)
    weight = torch.tensor(len(train_labels) / (2 * counts), dtype=torch.float32, device=device) \
        if tc.class_weighting == "balanced" else None
    opt = make_optimizer(model, tc)
    sched = make_scheduler(opt, tc, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = ModelEmaV3(model, decay=tc.ema_decay, use_warmup=True) if tc.ema_decay else None
    evaluated = ema.module if ema is not None else model  # what validation, selection and the artifact use

    history: list[dict[str, Any]] = []
    start_epoch, start_batch, best_auc, best_epoch, best_state, stale = 0, 0, -1.0, -1, None, 0
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, best_auc, best_epoch = list(state["history"]), state["best_auc"], state["best_epoch"]
        best_state, stale = state.get("best_model"), state.get("stale", 0)
        start_epoch, start_batch = state["epoch"], state["batch"]
        if state.get("stopped_early"):
            start_epoch = tc.epochs  # the early-stopping decision survives a crash during finalize
        torch.set_rng_state(state["torch_rng"])
        if dinfo.is_main:
            log.info("resuming from checkpoint: epoch %d, batch %d", start_epoch + 1, start_batch)
    if dinfo.is_main:  # only now: a run that fails while loading data or model leaves no empty folder
        run_dir.mkdir(parents=True, exist_ok=True)
    if dinfo.is_main:
        sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "temporal", "test") if splits[name])
        print(f"pneumo train: {cfg.model.name} at {prep.image_size} px on {_device_summary(device, precision)}, "
              f"{dinfo.world_size} process(es); images: {sizes}; {steps_per_epoch} steps of {tc.batch_size} per epoch",
              file=sys.stderr, flush=True)
    run = RunInfo(run_dir=run_dir, config=cfg, rank=dinfo.rank, world_size=dinfo.world_size, history=history)
    if dinfo.is_main:
        trackers.open(rc, run, resumed=state is not None)
    rc.pm.hook.pneumo_train_start(run=run)

    def checkpoint(epoch: int, batch: int, finished: bool = False, epoch_losses: Optional[list] = None) -> None:
        """Save the run; ``epoch_losses``: the losses of a part-done epoch, so its train_loss is whole on resume."""
        if dinfo.is_main:
            save_checkpoint(run_dir, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "epoch": epoch, "batch": batch, "history": history, "best_auc": best_auc,
                "best_epoch": best_epoch, "best_model": best_state, "stale": stale,
                "torch_rng": torch.get_rng_state(), "finished": finished, "stopped_early": stopped_early,
                "epoch_losses": list(epoch_losses or []),
                "config_fingerprint": fingerprint_now})
        if dinfo.world_size > 1:
            dist.barrier()

    epoch, stopped_early = start_epoch, False
    for epoch in range(start_epoch, tc.epochs):
        net.train()
        dataset.epoch = epoch
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first)
        losses = list(state.get("epoch_losses", [])) if state is not None and epoch == start_epoch and first else []
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{tc.epochs}",
                   disable=not progress, leave=False, unit="batch")
        next_line = time.monotonic() + every  # without a progress bar (Slurm logs): a line now and then
        for step, (x, y) in enumerate(loader, start=first):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                # per-sample weighted mean (not divided by the weight sum), so the average over
                # DDP ranks equals the loss of one process holding the whole batch
                loss = F.cross_entropy(net(x).float(), y, weight=weight, label_smoothing=tc.label_smoothing,
                                       reduction="none").mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model, step=epoch * steps_per_epoch + step + 1)
            losses.append(loss.item())
            seen += len(x) * dinfo.world_size
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if not progress and dinfo.is_main and time.monotonic() >= next_line:
                next_line = time.monotonic() + every
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                left = (steps_per_epoch - step - 1) * tc.batch_size * dinfo.world_size / max(rate, 1e-9)
                print(f"epoch {epoch + 1}/{tc.epochs} step {step + 1}/{steps_per_epoch} "
                      f"loss={np.mean(losses[-20:]):.4f} {rate:.1f} img/s, epoch ends in {left / 60:.1f} min",
                      file=sys.stderr, flush=True)
            if _all_agree_stop(flag, dinfo.world_size):
                bar.close()
                checkpoint(epoch, step + 1, epoch_losses=losses)
                raise TrainingInterrupted(
                    f"signal {flag.signum}: checkpoint saved at epoch {epoch + 1}, batch {step + 1}; "
                    f"run the same command again to resume")
        bar.close()
        elapsed = time.perf_counter() - t0
        val_scores = {}
        for name, (images, labels) in val_sets.items():
            logits = predict_logits(evaluated, images, prep, device, precision, channels_last=tc.channels_last)
            val_scores[f"{name}_loss"], val_scores[f"{name}_auc"] = loss_and_auc(logits, labels)
        val_auc = val_scores[f"{cfg.data.select_on}_auc"]
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if dinfo.world_size > 1:  # report the mean over ranks
            t = torch.tensor([train_loss])
            dist.all_reduce(t)
            train_loss = float(t) / dinfo.world_size
        metrics = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
                   **{k: round(v, 6) for k, v in val_scores.items()}, "lr": opt.param_groups[0]["lr"],
                   "images_per_s": round(seen / max(elapsed, 1e-9), 2), "seconds": round(elapsed, 2)}
        history.append(metrics)
        if val_auc > best_auc:
            best_auc, best_epoch, stale = val_auc, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        else:
            stale += 1
        if dinfo.is_main:
            trackers.log_metrics(metrics)
            rc.pm.hook.pneumo_epoch_end(run=run, metrics=dict(metrics))
            scores = " ".join(f"{k}={v:.4f}" for k, v in val_scores.items())
            print(f"epoch {epoch + 1}/{tc.epochs} train_loss={train_loss:.4f} {scores} "
                  f"{metrics['images_per_s']:.1f} img/s", file=sys.stderr, flush=True)
        stopped_early = tc.early_stopping_patience is not None and stale >= tc.early_stopping_patience
        checkpoint(epoch + 1, 0)
        if stopped_early:
            if dinfo.is_main:
                print(f"early stopping: no {cfg.data.select_on} AUC gain for {stale} epochs", file=sys.stderr)
            break
        if _all_agree_stop(flag, dinfo.world_size):
            raise TrainingInterrupted(f"signal {flag.signum}: checkpoint saved after epoch {epoch + 1}; "
                                      "run the same command again to resume")

    if best_state is not None:
        evaluated.load_state_dict(best_state)
    if dinfo.is_main:
        test_samples = splits["test"]
        test_images = decode_all(test_samples, prep.image_size, "decode test", progress) if test_samples else None
        finalize(rc, artifact_dir, model=evaluated, prep=prep, device=device, precision=precision,
                 val_sets=val_sets, test=(test_images, np.array([s.label for s in test_samples])) if test_samples else None,
                 history=history, table=table, splits=splits, data_fp=fingerprint(splits, table.classes),
                 training={"epochs_run": len(history), "best_epoch": best_epoch, "best_val_auc": best_auc,
                           "ema_decay": tc.ema_decay,
                           "precision": precision, "device": str(device), "world_size": dinfo.world_size,
                           "batch_size": tc.batch_size}, train_images=train_images)
        trackers.log_artifact(artifact_dir)
        rc.pm.hook.pneumo_train_end(run=run, artifact=artifact_dir)
    checkpoint(len(history) if history else epoch, 0, finished=True)
    return artifact_dir
