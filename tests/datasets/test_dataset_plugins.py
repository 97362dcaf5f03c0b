"""Every built-in dataset plugin, and patient-grouped splitting without leakage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo_core import PluginError, PneumoError
from pneumo_core.config import resolve
from pneumo_core.data.splits import assign_splits, config_splits
from pneumo_core.imaging import ImageError


def _table(data: dict):
    rc = resolve({"data": data})
    return rc.pm.dataset(data["name"]).build(rc.data_params)


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(path, quality=90)


@pytest.fixture()
def kermany_tree(tmp_path) -> Path:
    """Kermany-style names: several images per patient, a tiny val split like the official one."""
    root = tmp_path / "chest_xray"
    k = 0
    for p in range(30):
        for j in range(3):
            _jpeg(root / "train" / "PNEUMONIA" / f"person{p}_{'bacteria' if j % 2 else 'virus'}_{k}.jpeg", k)
            k += 1
    for p in range(20):
        for j in range(2):
            _jpeg(root / "train" / "NORMAL" / f"IM-{p:04d}-{j:04d}.jpeg", k)
            _jpeg(root / "train" / "NORMAL" / f"NORMAL2-IM-{p:04d}-{j:04d}.jpeg", k + 1)
            k += 2
    _jpeg(root / "val" / "NORMAL" / "IM-9000-0001.jpeg", k)
    _jpeg(root / "test" / "PNEUMONIA" / "person999_bacteria_1.jpeg", k + 1)
    _jpeg(root / "test" / "NORMAL" / "IM-9999-0001.jpeg", k + 2)
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    return root


def test_imagefolder_reads_splits_and_patients(kermany_tree):
    table = _table({"name": "imagefolder", "params": {"root": str(kermany_tree)}})
    assert table.classes == ("NORMAL", "PNEUMONIA")
    by_key = {s.key: s for s in table.samples}
    assert by_key["train/PNEUMONIA/person3_virus_9.jpeg"].group == "person3"
    assert by_key["train/NORMAL/NORMAL2-IM-0004-0001.jpeg"].group == "NORMAL2-IM-0004"
    assert by_key["train/NORMAL/IM-0004-0001.jpeg"].group == "IM-0004"
    assert {s.split for s in table.samples} == {"train", "val", "test"}
    assert not any(".DS_Store" in k for k in by_key)
    img = by_key["test/NORMAL/IM-9999-0001.jpeg"].load()
    assert img.dtype == np.uint8 and img.shape == (40, 48)


def test_grouped_split_never_leaks_a_patient(kermany_tree):
    table = _table({"name": "imagefolder", "params": {"root": str(kermany_tree)}})
    splits = assign_splits(table, val_fraction=0.2, min_val_images=10, seed=1)
    train_groups = {s.group for s in splits["train"]}
    val_groups = {s.group for s in splits["val"]}
    assert train_groups.isdisjoint(val_groups)
    assert {s.label for s in splits["val"]} == {0, 1}, "validation is stratified by label"
    assert 0.1 < len(splits["val"]) / (len(splits["train"]) + len(splits["val"])) < 0.3
    assert len(splits["test"]) == 2, "the official test split is kept apart"
    # the tiny official val split (1 image) was pooled into train before splitting
    assert "val/NORMAL/IM-9000-0001.jpeg" in {s.key for s in splits["train"] + splits["val"]}
    again = assign_splits(table, val_fraction=0.2, min_val_images=10, seed=1)
    assert [s.key for s in again["val"]] == [s.key for s in splits["val"]], "deterministic by seed"
    other = assign_splits(table, val_fraction=0.2, min_val_images=10, seed=2)
    assert [s.key for s in other["val"]] != [s.key for s in splits["val"]]


def test_split_seed_keeps_the_splits_when_the_training_seed_changes(kermany_tree):
    """Ensemble members vary train.seed and share data.split_seed, so they share validation images."""
    def draw(**keys):
        rc = resolve({"data": {"name": "imagefolder", "params": {"root": str(kermany_tree)}, "val_fraction": 0.2,
                               "min_val_images": 10, **keys.get("data", {})}, "train": keys.get("train", {})})
        return [s.key for s in config_splits(rc.pm.dataset("imagefolder").build(rc.data_params), rc.config)["val"]]

    by_train_seed = draw(train={"seed": 1})
    assert draw(data={"split_seed": 1}, train={"seed": 7}) == by_train_seed
    assert draw(data={"split_seed": 2}, train={"seed": 1}) != by_train_seed


def test_imagefolder_errors(tmp_path, kermany_tree):
    with pytest.raises(PluginError, match="does not exist"):
        _table({"name": "imagefolder", "params": {"root": str(tmp_path / "nope")}})
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(PluginError, match="no images"):
        _table({"name": "imagefolder", "params": {"root": str(tmp_path / "empty")}})
    bad = kermany_tree / "train" / "NORMAL" / "IM-7777-0001.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    table = _table({"name": "imagefolder", "params": {"root": str(kermany_tree)}})
    sample = next(s for s in table.samples if s.key.endswith("IM-7777-0001.jpeg"))
    with pytest.raises(ImageError, match="IM-7777-0001.jpeg"):
        sample.load()


def _csv_table(tmp_path, rows: str):
    """Four generated images under imgs/ and a manifest ``m.csv`` of ``rows``; return (manifest, table)."""
    for i in range(4):
        _jpeg(tmp_path / "imgs" / f"{i}.png", i)
    manifest = tmp_path / "m.csv"
    manifest.write_text(rows)
    return manifest, _table({"name": "csv", "params": {"path": str(manifest)}})


def test_csv_manifest(tmp_path):
    manifest, table = _csv_table(tmp_path, "path,label,patient,split\nimgs/0.png,NORMAL,p1,train\n"
                                 "imgs/1.png,PNEUMONIA,p1,train\nimgs/2.png,PNEUMONIA,p2,\nimgs/3.png,NORMAL,,test\n")
    assert table.classes == ("NORMAL", "PNEUMONIA")
    assert [s.group for s in table.samples] == ["p1", "p1", "p2", "3"]
    assert [s.split for s in table.samples] == ["train", "train", None, "test"]
    assert table.samples[1].load().shape == (40, 48)
    manifest.write_text("path,label\nimgs/0.png,COVID\n")
    with pytest.raises(PluginError, match=r"m.csv:2: label 'COVID'"):
        _table({"name": "csv", "params": {"path": str(manifest), "classes": ["NORMAL", "PNEUMONIA"]}})
    manifest.write_text("file,label\nimgs/0.png,NORMAL\n")
    with pytest.raises(PluginError, match="no column 'path'"):
        _table({"name": "csv", "params": {"path": str(manifest)}})


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    table = _table({"name": "medmnist", "params": {"path": str(tmp_path / "pneumoniamnist.npz")}})
    assert [sum(s.split == k for s in table.samples) for k in ("train", "val", "test")] == [10, 4, 6]
    s = table.samples[3]
    assert s.label == 1 and np.array_equal(s.load(), arrays["train_images"][3])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PluginError, match="not a readable .npz"):
        _table({"name": "medmnist", "params": {"path": str(tmp_path / "bad.npz")}})


def test_synthetic_is_deterministic_and_split():
    params = {"n_train": 8, "n_val": 4, "n_test": 4, "size": 48, "seed": 5}
    a = _table({"name": "synthetic", "params": params})
    b = _table({"name": "synthetic", "params": params})
    assert len(a.samples) == 16 and sum(s.label for s in a.samples) == 8
    assert all(np.array_equal(x.load(), y.load()) for x, y in zip(a.samples, b.samples))
    c = _table({"name": "synthetic", "params": {**params, "seed": 6}})
    assert not np.array_equal(a.samples[0].load(), c.samples[0].load())
    assert len({s.group for s in a.samples}) == 16


def test_temporal_split_holds_out_the_earliest_patients_of_each_series(kermany_tree):
    table = _table({"name": "imagefolder", "params": {"root": str(kermany_tree)}})
    by_key = {s.key: s for s in table.samples}
    assert by_key["train/PNEUMONIA/person3_virus_9.jpeg"].order == ("person", 3)
    assert by_key["train/NORMAL/NORMAL2-IM-0004-0001.jpeg"].order == ("NORMAL2-IM", 4)
    assert by_key["train/NORMAL/IM-0004-0001.jpeg"].order == ("IM", 4)

    splits = assign_splits(table, val_fraction=0.2, min_val_images=10, seed=1, temporal_fraction=0.2)
    held = {s.group for s in splits["temporal"]}
    # 20% of each series: persons 0-5 of 30, IM-0000..0003 and NORMAL2-IM-0000..0003 of 20
    assert held == {f"person{p}" for p in range(6)} | {f"IM-{p:04d}" for p in range(4)} \
        | {f"NORMAL2-IM-{p:04d}" for p in range(4)}
    assert all(len([s for s in splits["temporal"] if s.group == g]) in (2, 3) for g in held), "patients stay whole"
    groups = {name: {s.group for s in splits[name]} for name in ("train", "val", "temporal")}
    assert groups["train"].isdisjoint(groups["val"]) and groups["train"].isdisjoint(groups["temporal"])
    assert groups["val"].isdisjoint(groups["temporal"])
    assert {s.label for s in splits["val"]} == {0, 1}
    assert len(splits["test"]) == 2, "the official test split is kept apart"
    assert splits["temporal"] == assign_splits(table, 0.2, 10, seed=7, temporal_fraction=0.2)["temporal"], \
        "the temporal split does not depend on the seed"
    assert assign_splits(table, 0.2, 10, seed=1)["temporal"] == []


def test_temporal_split_needs_an_order(tmp_path):
    for i in range(8):
        _jpeg(tmp_path / "imgs" / f"{i}.png", i)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"imgs/{i}.png,{'NORMAL' if i % 2 else 'PNEUMONIA'}\n"
                                                 for i in range(8)))
    table = _table({"name": "csv", "params": {"path": str(manifest)}})
    with pytest.raises(PneumoError, match="no acquisition order"):
        assign_splits(table, 0.25, 0, seed=0, temporal_fraction=0.25)


def test_csv_order_columns(tmp_path):
    manifest, table = _csv_table(tmp_path, "path,label,series,order\nimgs/0.png,NORMAL,siteA,20240105\n"
                                 "imgs/1.png,PNEUMONIA,,3\nimgs/2.png,PNEUMONIA,siteB,\nimgs/3.png,NORMAL,,\n")
    assert [s.order for s in table.samples] == [("siteA", 20240105.0), ("", 3.0), None, None]
    manifest.write_text("path,label,order\nimgs/0.png,NORMAL,soon\n")
    with pytest.raises(PluginError, match=r"m.csv:2: order 'soon' is not a number"):
        _table({"name": "csv", "params": {"path": str(manifest)}})
    manifest.write_text("path,label,order\nimgs/person7_virus_1.png,NORMAL,\n")
    assert _table({"name": "csv", "params": {"path": str(manifest)}}).samples[0].order == ("person", 7.0), \
        "without an order column the Kermany file name gives it"
