"""`pneumo predict` over many files: folders, batches, and bad files that do not stop the rest."""
from __future__ import annotations

import json

import pytest

from harness import run_cli


def test_folder_in_batches_skips_bad_files_and_reports_them(smoke_artifact, phantom_png, tmp_path):
    folder = tmp_path / "xrays"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png", "d.PNG"):
        (folder / name).write_bytes(phantom_png)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    out = run_cli("predict", str(smoke_artifact), str(folder), str(tmp_path / "missing.png"),
                  "--batch-size", "2", "--json")
    assert out.returncode == 2, out.stderr
    body = json.loads(out.stdout)
    assert sorted(r["name"] for r in body["results"]) == [str(folder / n) for n in ("a.png", "b.png", "d.PNG", "sub/c.png")]
    assert body["model"]["name"] == "smoke" and body["request_id"]
    assert "broken.jpg" in out.stderr and "missing.png: file not found" in out.stderr
    assert "4 classified, 2 failed" in out.stderr and "Traceback" not in out.stderr


def test_text_output_lists_each_image(smoke_artifact, phantom_png, tmp_path):
    for name in ("one.png", "two.png", "three.png"):
        (tmp_path / name).write_bytes(phantom_png)
    out = run_cli("predict", str(smoke_artifact), *(str(tmp_path / n) for n in ("one.png", "two.png", "three.png")),
                  "--batch-size", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [str(tmp_path / n) for n in ("one.png", "two.png", "three.png")]
    assert all(" p=" in line for line in lines)


def test_empty_folder_is_an_error(smoke_artifact, tmp_path):
    out = run_cli("predict", str(smoke_artifact), str(tmp_path))
    assert out.returncode == 2 and "no .jpg, .jpeg, .png or .dcm files" in out.stderr


def test_same_stem_heatmaps_do_not_overwrite_each_other(smoke_artifact, phantom_png, tmp_path):
    for name in ("a/x.png", "b/x.png", "x.png", "x_2.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(phantom_png)
    cams = tmp_path / "cams"
    single = str(tmp_path / "in" / "x.png")
    out = run_cli("predict", str(smoke_artifact), str(tmp_path / "in"), single, "--heatmap-dir", str(cams))
    assert out.returncode == 0, out.stderr
    assert len(list(cams.glob("*_gradcam.png"))) == 5  # four files, one of them given twice


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_batch_size_must_be_positive(smoke_artifact, phantom_png, tmp_path, bad):
    (tmp_path / "x.png").write_bytes(phantom_png)
    out = run_cli("predict", str(smoke_artifact), str(tmp_path / "x.png"), "--batch-size", bad)
    assert out.returncode == 2 and "must be 1 or more" in out.stderr


def test_unusable_heatmap_dir_is_a_clear_error(smoke_artifact, phantom_png, tmp_path):
    (tmp_path / "x.png").write_bytes(phantom_png)
    (tmp_path / "taken").write_text("a file, not a folder")
    out = run_cli("predict", str(smoke_artifact), str(tmp_path / "x.png"), "--heatmap-dir", str(tmp_path / "taken"))
    assert out.returncode == 2 and "--heatmap-dir" in out.stderr and "Traceback" not in out.stderr
