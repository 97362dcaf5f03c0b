"""``pneumo train``: the training loop, from a resolved config to a model artifact.

:class:`Trainer` runs one training in named steps (data, model, restore, then per epoch: train,
validate, checkpoint; finally finalize); :func:`train` is the entry point the CLI calls.
"""
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
from timm.utils.model_ema import ModelEmaV3
from tqdm.auto import tqdm

from pneumo_core.config.loader import ResolvedConfig
from pneumo_core.data.cache import decode_all, fingerprint
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.data.splits import config_splits
from pneumo_core.device import autocast, cpu_has_bf16, cpu_info, cpu_vector_units, pick_device, pick_precision
from pneumo_core.errors import PneumoError
from pneumo_core.records import RunInfo
from pneumo_core.training.checkpoint import load_checkpoint, save_checkpoint
from pneumo_core.training.distill import Teacher, distilled_loss
from pneumo_core.training.finalize import finalize
from pneumo_core.training.loader import CachedImages, EpochBatchSampler, make_loader
from pneumo_core.training.runtime import init_distributed
from pneumo_core.training.schedule import make_optimizer, make_scheduler
from pneumo_core.training.state import TrainState
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
    for section, key in (("data", "split_seed"), ("train", "distill")):  # added later: unset, old checkpoints still match
        if parts[section][key] is None:
            del parts[section][key]
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
        artifact = Trainer(rc, Path(run_dir), resume, progress, flag, trackers).run()
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


class Trainer:
    """One training run. Construction reads the checkpoint (a finished run or a different config is
    decided before any data loads); :meth:`run` then calls the steps in order. Rank 0 alone writes
    files, prints and feeds the trackers; every rank trains."""

    def __init__(self, rc: ResolvedConfig, run_dir: Path, resume: bool, progress: Optional[bool],
                 flag: _StopFlag, trackers: Trackers) -> None:
        self.rc, self.cfg, self.tc = rc, rc.config, rc.config.train
        self.run_dir, self.artifact_dir, self.flag, self.trackers = run_dir, run_dir / "artifact", flag, trackers
        self.dinfo = init_distributed(self.tc.device)
        self.device = pick_device(self.tc.device)
        self.precision = pick_precision(self.tc.precision, self.device)
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)
        progress = sys.stderr.isatty() if progress is None else progress
        self.progress = progress and self.dinfo.is_main
        self.saved = load_checkpoint(run_dir) if resume else None
        self.fingerprint = config_fingerprint(rc)
        if self.saved is not None and self.saved.get("config_fingerprint", self.fingerprint) != self.fingerprint:
            raise PneumoError(f"{run_dir} holds a checkpoint of a different config; resume it with the same "
                              "config and overrides, or pass --no-resume or another --run-dir")
        self.state = TrainState.from_checkpoint(self.saved) if self.saved is not None else TrainState()

    # ---- the steps, in the order run() calls them
    def run(self) -> Path:
        """Train (or resume) to the end and write the artifact; return its folder."""
        if self.saved is not None and self.state.finished and (self.artifact_dir / "model.json").exists():
            log.info("run already finished: %s", self.artifact_dir)
            return self.artifact_dir
        _seed_everything(self.tc.seed, self.tc.deterministic)
        self.every = _progress_every_s()  # checked before any data is loaded
        self.load_data()
        self.build_model()
        start_epoch, start_batch = self.restore()
        self.start()
        epoch = start_epoch
        for epoch in range(start_epoch, self.tc.epochs):
            first = start_batch if epoch == start_epoch else 0
            carried = self.state.epoch_losses if epoch == start_epoch and first else []
            losses, seen, elapsed = self.train_epoch(epoch, first, list(carried))
            self.validate(epoch, losses, seen, elapsed)
            self.state.stopped_early = (self.tc.early_stopping_patience is not None
                                        and self.state.stale >= self.tc.early_stopping_patience)
            self.checkpoint(epoch + 1, 0)
            if self.state.stopped_early:
                if self.dinfo.is_main:
                    print(f"early stopping: no {self.cfg.data.select_on} AUC gain for {self.state.stale} epochs",
                          file=sys.stderr)
                break
            if _all_agree_stop(self.flag, self.dinfo.world_size):
                raise TrainingInterrupted(f"signal {self.flag.signum}: checkpoint saved after epoch {epoch + 1}; "
                                          "run the same command again to resume")
        self.finalize()
        history = self.state.history
        self.checkpoint(len(history) if history else epoch, 0, finished=True)
        return self.artifact_dir

    def load_data(self) -> None:
        """Split the dataset by patient, decode each split once, and build the training loader."""
        cfg, tc, rc = self.cfg, self.tc, self.rc
        self.table = rc.pm.dataset(cfg.data.name).build(rc.data_params)
        if len(self.table.classes) != 2:
            raise PneumoError(f"pneumo trains binary classifiers; dataset gives {len(self.table.classes)} classes "
                              f"{self.table.classes}")
        self.splits = config_splits(self.table, cfg)
        self.data_fp = fingerprint(self.splits, self.table.classes)
        self.prep = Preprocessing(image_size=cfg.data.image_size, in_chans=cfg.model.in_chans)
        distill = self.rc.distill  # checked before the images are decoded
        self.teacher = Teacher.load(distill.teacher, distill.weight, self.prep, self.table.classes, self.data_fp,
                                    self.device, tc.channels_last) if distill is not None else None
        self.train_images = decode_all(self.splits["train"], self.prep.image_size, "decode train", self.progress)
        self.train_labels = np.array([s.label for s in self.splits["train"]])
        # every validation split, the selecting one (data.select_on) first
        self.val_sets = {name: (decode_all(self.splits[name], self.prep.image_size, f"decode {name}", self.progress),
                                np.array([s.label for s in self.splits[name]]))
                         for name in dict.fromkeys([cfg.data.select_on, "val", "temporal"]) if self.splits[name]}
        augment = rc.pm.augmentation(cfg.augment.name).build(rc.augment_params, self.prep.image_size, True)
        self.dataset = CachedImages(self.train_images, self.train_labels, self.prep, augment, tc.seed)
        self.sampler = EpochBatchSampler(len(self.dataset), tc.batch_size, tc.seed, self.dinfo.rank,
                                         self.dinfo.world_size)
        if len(self.sampler) == 0:
            raise PneumoError(f"train.batch_size {tc.batch_size} is larger than the {len(self.dataset)} training images")
        self.loader = make_loader(self.dataset, self.sampler, cfg.data.num_workers)
        self.steps_per_epoch = min(len(self.sampler), tc.max_train_batches or len(self.sampler))

    def build_model(self) -> None:
        """The network (DDP-wrapped with synchronised batch norm on several ranks), the class
        weights, optimizer, schedule, loss scaler and weight EMA."""
        cfg, tc, device = self.cfg, self.tc, self.device
        model = self.rc.pm.model(cfg.model.name).build(self.rc.model_params, cfg.model.in_chans, 2, True).to(device)
        if tc.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.net = model
        if self.dinfo.world_size > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" \
                else convert_to_cpu_sync_bn(model)
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = model
        counts = np.bincount(self.train_labels, minlength=2)
        self.weight = torch.tensor(len(self.train_labels) / (2 * counts), dtype=torch.float32, device=device) \
            if tc.class_weighting == "balanced" else None
        self.opt = make_optimizer(model, tc)
        self.sched = make_scheduler(self.opt, tc, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.ema = ModelEmaV3(model, decay=tc.ema_decay, use_warmup=True) if tc.ema_decay else None
        self.evaluated = self.ema.module if self.ema is not None else model  # what validation, selection and the artifact use

    def restore(self) -> tuple[int, int]:
        """Load the checkpoint's weights, optimizer, schedule and RNG; return (epoch, batch) to start at."""
        saved = self.saved
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            if self.ema is not None:
                self.ema.module.load_state_dict(saved["ema"])
            self.opt.load_state_dict(saved["optimizer"])
            self.sched.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            teacher = self.teacher.info["weights_sha256"] if self.teacher is not None else None
            if saved.get("teacher_sha256") != teacher:
                raise PneumoError(f"{self.run_dir}: train.distill.teacher holds other weights than when this run "
                                  "started; restore that teacher, or pass --no-resume or another --run-dir")
        start_epoch, start_batch = self.state.epoch, self.state.batch
        if self.state.stopped_early:
            start_epoch = self.tc.epochs  # the early-stopping decision survives a crash during finalize
        if saved is not None and self.dinfo.is_main:
            log.info("resuming from checkpoint: epoch %d, batch %d", start_epoch + 1, start_batch)
        return start_epoch, start_batch

    def start(self) -> None:
        """Create the run folder, print the start-up summary, start the trackers and the hooks."""
        dinfo, splits = self.dinfo, self.splits
        if dinfo.is_main:  # only now: a run that fails while loading data or model leaves no empty folder
            self.run_dir.mkdir(parents=True, exist_ok=True)
            sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "val", "temporal", "test")
                              if splits[name])
            print(f"pneumo train: {self.cfg.model.name} at {self.prep.image_size} px on "
                  f"{_device_summary(self.device, self.precision)}, {dinfo.world_size} process(es); images: {sizes}; "
                  f"{self.steps_per_epoch} steps of {self.tc.batch_size} per epoch", file=sys.stderr, flush=True)
        self.run_info = RunInfo(run_dir=self.run_dir, config=self.cfg, rank=dinfo.rank, world_size=dinfo.world_size,
                                history=self.state.history)
        if dinfo.is_main:
            self.trackers.open(self.rc, self.run_info, resumed=self.saved is not None)
        self.rc.pm.hook.pneumo_train_start(run=self.run_info)

    def train_epoch(self, epoch: int, first: int, losses: list[float]) -> tuple[list[float], int, float]:
        """Train one epoch from batch ``first`` (``losses``: those of its batches before ``first``).
        Returns the epoch's losses, the images seen on all ranks and the seconds taken. A stop
        signal saves a checkpoint at the next batch and raises :class:`TrainingInterrupted`."""
        tc, dinfo, device = self.tc, self.dinfo, self.device
        self.net.train()
        self.dataset.epoch = epoch
        self.sampler.set_epoch(epoch, first)
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{tc.epochs}",
                   disable=not self.progress, leave=False, unit="batch")
        next_line = time.monotonic() + self.every  # without a progress bar (Slurm logs): a line now and then
        for step, (x, y) in enumerate(self.loader, start=first):
            if step >= self.steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            losses.append(self._step(x, y, epoch * self.steps_per_epoch + step + 1))
            seen += len(x) * dinfo.world_size
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if not self.progress and dinfo.is_main and time.monotonic() >= next_line:
                next_line = time.monotonic() + self.every
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                left = (self.steps_per_epoch - step - 1) * tc.batch_size * dinfo.world_size / max(rate, 1e-9)
                print(f"epoch {epoch + 1}/{tc.epochs} step {step + 1}/{self.steps_per_epoch} "
                      f"loss={np.mean(losses[-20:]):.4f} {rate:.1f} img/s, epoch ends in {left / 60:.1f} min",
                      file=sys.stderr, flush=True)
            if _all_agree_stop(self.flag, dinfo.world_size):
                bar.close()
                self.checkpoint(epoch, step + 1, epoch_losses=losses)
                raise TrainingInterrupted(
                    f"signal {self.flag.signum}: checkpoint saved at epoch {epoch + 1}, batch {step + 1}; "
                    f"run the same command again to resume")
        bar.close()
        return losses, seen, time.perf_counter() - t0

    def _step(self, x: torch.Tensor, y: torch.Tensor, global_step: int) -> float:
        """One optimizer step on a batch; returns its loss."""
        tc = self.tc
        with autocast(self.device, self.precision):
            soft = self.teacher.probabilities(x) if self.teacher is not None else None
            # per-sample weighted mean (not divided by the weight sum), so the average over
            # DDP ranks equals the loss of one process holding the whole batch
            loss = distilled_loss(self.net(x).float(), y, soft, self.teacher.weight if soft is not None else 0.0,
                                  self.weight, tc.label_smoothing).mean()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tc.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model, step=global_step)
        return loss.item()

    def validate(self, epoch: int, losses: list[float], seen: int, elapsed: float) -> dict[str, Any]:
        """Score every validation split, record the epoch (keeping the best weights by
        ``data.select_on``), report it to the trackers and hooks; return its metrics."""
        val_scores = {}
        for name, (images, labels) in self.val_sets.items():
            logits = predict_logits(self.evaluated, images, self.prep, self.device, self.precision,
                                    channels_last=self.tc.channels_last)
            val_scores[f"{name}_loss"], val_scores[f"{name}_auc"] = loss_and_auc(logits, labels)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if self.dinfo.world_size > 1:  # report the mean over ranks
            t = torch.tensor([train_loss])
            dist.all_reduce(t)
            train_loss = float(t) / self.dinfo.world_size
        metrics = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
                   **{k: round(v, 6) for k, v in val_scores.items()}, "lr": self.opt.param_groups[0]["lr"],
                   "images_per_s": round(seen / max(elapsed, 1e-9), 2), "seconds": round(elapsed, 2)}
        self.state.record_epoch(metrics, val_scores[f"{self.cfg.data.select_on}_auc"], self.evaluated.state_dict())
        if self.dinfo.is_main:
            self.trackers.log_metrics(metrics)
            self.rc.pm.hook.pneumo_epoch_end(run=self.run_info, metrics=dict(metrics))
            scores = " ".join(f"{k}={v:.4f}" for k, v in val_scores.items())
            print(f"epoch {epoch + 1}/{self.tc.epochs} train_loss={train_loss:.4f} {scores} "
                  f"{metrics['images_per_s']:.1f} img/s", file=sys.stderr, flush=True)
        return metrics

    def checkpoint(self, epoch: int, batch: int, finished: bool = False,
                   epoch_losses: Optional[list[float]] = None) -> None:
        """Save the run at (``epoch``, ``batch``) on rank 0; every rank waits for it.
        ``epoch_losses``: the losses of a part-done epoch, so its train_loss is whole on resume."""
        state = self.state
        state.epoch, state.batch, state.finished, state.epoch_losses = epoch, batch, finished, list(epoch_losses or [])
        if self.dinfo.is_main:
            save_checkpoint(self.run_dir, {
                **state.to_checkpoint(), "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "torch_rng": torch.get_rng_state(), "config_fingerprint": self.fingerprint,
                "teacher_sha256": self.teacher.info["weights_sha256"] if self.teacher is not None else None})
        if self.dinfo.world_size > 1:
            dist.barrier()

    def finalize(self) -> None:
        """On rank 0: load the best epoch's weights, calibrate, choose the threshold and write the
        artifact, then tell the trackers and hooks."""
        state = self.state
        if state.best_model is not None:
            self.evaluated.load_state_dict(state.best_model)
        if not self.dinfo.is_main:
            return
        test_samples = self.splits["test"]
        test_images = decode_all(test_samples, self.prep.image_size, "decode test", self.progress) \
            if test_samples else None
        test = (test_images, np.array([s.label for s in test_samples])) if test_samples else None
        finalize(self.rc, self.artifact_dir, model=self.evaluated, prep=self.prep, device=self.device,
                 precision=self.precision, val_sets=self.val_sets, test=test, history=state.history,
                 table=self.table, splits=self.splits, data_fp=self.data_fp,
                 training={"epochs_run": len(state.history), "best_epoch": state.best_epoch,
                           "best_val_auc": state.best_auc, "ema_decay": self.tc.ema_decay,
                           "precision": self.precision, "device": str(self.device),
                           "world_size": self.dinfo.world_size, "batch_size": self.tc.batch_size,
                           "distilled_from": self.teacher.info if self.teacher is not None else None},
                 train_images=self.train_images)
        self.trackers.log_artifact(self.artifact_dir)
        self.rc.pm.hook.pneumo_train_end(run=self.run_info, artifact=self.artifact_dir)
