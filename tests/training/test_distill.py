"""Knowledge distillation (train.distill): a teacher artifact's probabilities train the student."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness import REPO, run_cli
from pneumo_core.training.distill import distilled_loss

SMOKE = str(REPO / "configs" / "smoke.yaml")
# a teacher with skill; min_val_images above the dataset's own 64 val images, so the seeds draw the split
SETS = ["train.bootstrap=20", "train.epochs=6", "data.params.n_train=256", "data.min_val_images=100"]


def _train(run_dir, *extra):
    from pneumo_core.config import load_config
    from pneumo_core.training import train

    return train(load_config(SMOKE, [*SETS, *extra]), run_dir, resume=False, progress=False)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    art = _train(tmp_path_factory.mktemp("teacher"))
    assert json.loads((art / "model.json").read_text())["metrics"]["val"]["auc"] > 0.8, "a teacher with skill"
    return art


def _liar(teacher, folder):
    """The teacher with its two output rows swapped: it says the opposite of what it learned."""
    from pneumo_core.artifact.store import write_checksums

    shutil.copytree(teacher, folder)
    weights = load_file(folder / "model.safetensors")
    for key in ("fc.weight", "fc.bias"):
        weights[key] = weights[key].flip(0).contiguous()
    save_file(weights, folder / "model.safetensors")
    write_checksums(folder)
    return folder


def test_with_one_hot_targets_the_loss_is_the_label_loss():
    logits, labels = torch.randn(8, 2), torch.tensor([0, 1] * 4)
    weight = torch.tensor([2.0, 0.5])
    hard = distilled_loss(logits, labels, None, 0.0, weight, 0.0)
    mixed = distilled_loss(logits, labels, torch.nn.functional.one_hot(labels, 2).float(), 0.7, weight, 0.0)
    torch.testing.assert_close(mixed, hard)


def test_with_weight_one_the_loss_is_smallest_at_the_teachers_probabilities():
    teacher_logits = torch.randn(16, 2)
    soft = torch.softmax(teacher_logits, 1)
    labels = torch.ones(16, dtype=torch.long)  # ignored at weight 1
    at_teacher = distilled_loss(teacher_logits, labels, soft, 1.0, None, 0.0)
    for _ in range(5):
        elsewhere = distilled_loss(teacher_logits + torch.randn(16, 2), labels, soft, 1.0, None, 0.0)
        assert elsewhere.sum() > at_teacher.sum()


def test_a_student_learns_what_its_teacher_says(teacher, tmp_path):
    """A teacher that inverts the classes, at weight 1, makes the student invert them too: the
    teacher's probabilities, not the labels, trained it. The artifact records the teacher."""
    liar = _liar(teacher, tmp_path / "liar")
    student = _train(tmp_path / "student", f"train.distill={{teacher: {liar}, weight: 1.0}}")
    meta = json.loads((student / "model.json").read_text())
    # selection keeps the best epoch by val AUC (an early, unskilled one): the last epochs show what it learned
    assert max(e["val_auc"] for e in meta["training"]["history"][-2:]) < 0.2
    info = meta["training"]["distilled_from"]
    assert info["teacher"].startswith("smoke") and info["weight"] == 1.0 and info["members"] == 1
    from pneumo_core.hashing import sha256_file
    assert info["weights_sha256"] == sha256_file(liar / "model.safetensors")
    assert "Distilled from `smoke" in (student / "report.md").read_text()


def test_a_teacher_from_other_splits_or_inputs_is_refused_before_training(teacher, tmp_path):
    other = run_cli("train", SMOKE, "--run-dir", str(tmp_path / "a"), *[f"--set={s}" for s in SETS],
                    "--set", "data.split_seed=5", "--set", f"train.distill={{teacher: {teacher}}}")
    assert other.returncode == 2 and "fitted on other splits" in other.stderr and "Traceback" not in other.stderr
    assert "data.split_seed" in other.stderr
    size = run_cli("train", SMOKE, "--run-dir", str(tmp_path / "b"), *[f"--set={s}" for s in SETS],
                   "--set", "data.image_size=48", "--set", f"train.distill={{teacher: {teacher}}}")
    assert size.returncode == 2 and "image size" in size.stderr and "Traceback" not in size.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_teacher_path_is_read_from_the_config_folder(teacher, tmp_path):
    shutil.copytree(teacher, tmp_path / "models" / "teacher")
    config = tmp_path / "configs" / "student.yaml"
    config.parent.mkdir()
    text = (REPO / "configs" / "smoke.yaml").read_text()
    config.write_text(text.replace("train:\n", "train:\n  distill: {teacher: ../models/teacher, weight: 0.5}\n", 1))
    from pneumo_core.config import load_config

    rc = load_config(config)
    assert rc.distill.teacher == tmp_path / "models" / "teacher"
    assert str(rc.config.train.distill.teacher) == "../models/teacher", "the config as written is kept"
    shutil.rmtree(tmp_path / "models")
    out = run_cli("config", "validate", str(config))
    assert out.returncode == 2 and "train.distill.teacher" in out.stderr and "does not exist" in out.stderr
