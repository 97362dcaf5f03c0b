"""Knowledge distillation: a trained artifact (often an ensemble) teaches the network in training.

The teacher sees the same augmented batch as the student: "consistent" teaching (Beyer et al.
2022, *Knowledge distillation: A good teacher is patient and consistent*). On augmented views
its calibrated probabilities carry its uncertainty; on the clean training images it was fitted
to, they would be close to the labels and teach little. The price is one teacher forward per
batch: one network forward per member and test-time view (a 3-member ensemble without views
about doubles the training time on a CPU).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from pneumo_core.artifact.store import WEIGHTS, artifact_plugins, build_model, input_difference, load_artifact
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.errors import PneumoError
from pneumo_core.hashing import sha256_file


class Teacher:
    """A frozen artifact network whose calibrated two-class probabilities are soft targets."""

    def __init__(self, model: torch.nn.Module, temperature: float, weight: float, info: dict[str, Any]) -> None:
        self.model, self.temperature, self.weight, self.info = model, temperature, weight, info  # weight: loss share

    @classmethod
    def load(cls, folder: Path, weight: float, prep: Preprocessing, classes: Sequence[str], data_fp: str,
             device: torch.device, channels_last: bool) -> "Teacher":
        """Load and check the teacher: the student's classes and input, fitted on the same splits
        (fingerprint ``data_fp``; otherwise it would have trained on the student's validation images)."""
        from pneumo_core.plugin_manager import get_plugin_manager

        art = load_artifact(folder)  # verifies the checksums
        difference = input_difference(classes, prep, art)
        if difference is not None:
            what, a, b = difference
            raise PneumoError(f"train.distill.teacher {folder}: its {what} ({b}) differs from this run's ({a}); "
                              "a teacher must read the student's input")
        theirs_fp = art.raw.get("data", {}).get("fingerprint")
        if theirs_fp is None:
            raise PneumoError(f"train.distill.teacher {folder} records no data fingerprint, so nothing shows it never "
                              "saw this run's validation images; use a teacher trained or combined by this pneumo")
        if theirs_fp != data_fp:
            raise PneumoError(f"train.distill.teacher {folder} was fitted on other splits than this run draws (data "
                              "fingerprints differ), so it has seen this run's validation images; train the teacher "
                              "with the same data section (data.split_seed) as the student")
        model = build_model(art, get_plugin_manager(artifact_plugins(art))).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.requires_grad_(False)
        info = {"teacher": f"{art.meta.name} {art.meta.version}", "weights_sha256": sha256_file(art.folder / WEIGHTS),
                "weight": weight, "members": len(art.meta.ensemble.members) if art.meta.ensemble else 1,
                "tta_views": len(art.meta.preprocessing.tta)}
        return cls(model, art.temperature, weight, info)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) calibrated class probabilities of a batch (no gradient)."""
        with torch.no_grad():
            return torch.softmax(self.model(x).float() / self.temperature, 1)


def distilled_loss(logits: torch.Tensor, labels: torch.Tensor, soft: Optional[torch.Tensor], weight: float,
                   class_weight: Optional[torch.Tensor], label_smoothing: float) -> torch.Tensor:
    """Per-sample loss: cross-entropy with the labels, mixed with cross-entropy against the
    teacher's probabilities ``soft`` in the share ``weight`` (``soft`` None: the labels alone)."""
    hard = F.cross_entropy(logits, labels, weight=class_weight, label_smoothing=label_smoothing, reduction="none")
    if soft is None:
        return hard
    return (1 - weight) * hard + weight * F.cross_entropy(logits, soft, weight=class_weight, reduction="none")
