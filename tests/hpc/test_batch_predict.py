"""`pneumo hpc predict|predict-shard|merge` without a Slurm cluster: sharding, shard files and
their markers, skipping done shards, merging, the rendered scripts, and what is submitted (a
fake sbatch records it)."""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from harness import require, run_cli
from hpc.batch.inputs import InputEntry, list_inputs, shard_bounds, shard_entries
from hpc.batch.merge import BatchPredictions, MissingShardsError, merge
from hpc.batch.plan import BatchDir, build_plan, pending_shards, shard_state, write_plan
from hpc.batch.rows import ShardRow
from hpc.batch.shard import score_shard
from hpc.render import HpcError
from pneumo_core.cli.main import main
from pneumo_core.errors import PneumoError
from plugins.datasets.synthetic.phantom import render_phantom

SIZE = 64  # the smoke artifact's image size


def write_xrays(folder: Path, count: int, start: int = 0) -> list[Path]:
    """``count`` distinct phantom PNGs under ``folder`` (in two subfolders)."""
    paths = []
    for i in range(start, start + count):
        path = folder / ("NORMAL" if i % 2 else "PNEUMONIA") / f"x{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_phantom(i % 2 == 0, SIZE, i)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def predictor(smoke_artifact):
    """One loaded Predictor for the tests that score shards in this process."""
    from pneumo_core.inference import Predictor

    p = Predictor(smoke_artifact, backend="torch", batching=False)
    yield p
    p.close()


@pytest.fixture
def xrays(tmp_path) -> Path:
    folder = tmp_path / "xrays"
    write_xrays(folder, 12)
    (folder / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "NORMAL" / "notes.txt").write_text("not an image, not listed")
    return folder


def rows_of(path: Path) -> list[ShardRow]:
    return [ShardRow.model_validate_json(line) for line in path.read_text().splitlines()]


def plan_in(out: Path, artifact: Path, source: Path, shards: int, **kw):
    plan = build_plan(artifact, source, shards, backend="torch", **kw)
    write_plan(BatchDir(out), plan)
    return plan


# ---- inputs and shards ---------------------------------------------------------------------

@pytest.mark.parametrize("count,shards", [(10, 3), (7, 7), (101, 8), (5, 1), (240, 4)])
def test_shards_are_contiguous_balanced_and_cover_every_input_once(count, shards):
    entries = [InputEntry(path=f"/x/{i:04d}.png", size=i, mtime_ns=i) for i in range(count)]
    parts = [list(shard_entries(entries, shards, i)) for i in range(shards)]
    assert [e for part in parts for e in part] == entries  # every input once, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert parts == [list(shard_entries(entries, shards, i)) for i in range(shards)]  # deterministic
    with pytest.raises(HpcError, match=f"numbered 0 to {shards - 1}"):
        shard_bounds(count, shards, shards)


def test_folder_inputs_are_the_images_sorted_recursively(xrays):
    entries = list_inputs(xrays)
    paths = [e.path for e in entries]
    expected = sorted(p for p in xrays.rglob("*") if p.suffix == ".png")
    assert paths == [str(p) for p in expected] and len(paths) == 13
    assert all(Path(p).is_absolute() for p in paths) and not any(p.endswith(".txt") for p in paths)
    assert entries[0].size == (xrays / "NORMAL" / "broken.png").stat().st_size
    assert list_inputs(xrays) == entries  # stable when nothing changed


def test_csv_manifest_rows_keep_their_order_and_resolve_from_the_csv_folder(tmp_path):
    images = write_xrays(tmp_path / "imgs", 3)
    manifest = tmp_path / "lists" / "batch.csv"
    manifest.parent.mkdir()
    rel = [os.path.relpath(p, manifest.parent) for p in reversed(images)]
    manifest.write_text("id,file\n" + "".join(f"{i},{r}\n" for i, r in enumerate(rel)) + "9,../imgs/gone.png\n")
    entries = list_inputs(manifest, path_column="file")
    assert [e.path for e in entries] == [str(p) for p in reversed(images)] + [str(tmp_path / "imgs" / "gone.png")]
    assert entries[-1].size is None and entries[0].size is not None
    with pytest.raises(HpcError, match=r"no column 'path' \(columns: id, file\).*--path-column"):
        list_inputs(manifest)


def test_planning_refuses_what_would_fail_in_the_queue(smoke_artifact, xrays, tmp_path):
    with pytest.raises(HpcError, match="more tasks than there are images \\(13\\): use --array 13 or fewer"):
        build_plan(smoke_artifact, xrays, 14)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HpcError, match="no .jpg, .jpeg, .png or .dcm files"):
        build_plan(smoke_artifact, empty, 1)
    with pytest.raises(PneumoError, match="unknown site 'nowhere'"):
        build_plan(smoke_artifact, xrays, 2, site="nowhere")
    with pytest.raises(PneumoError, match="model artifact folder not found"):
        build_plan(tmp_path / "no-model", xrays, 2)


# ---- scoring shards ------------------------------------------------------------------------

def test_bad_files_become_error_rows_and_the_shard_completes(smoke_artifact, predictor, tmp_path):
    good = write_xrays(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nimgs/broken.png\n" + "".join(f"{p.relative_to(tmp_path)}\n" for p in good)
                        + "imgs/missing.png\n")
    out = tmp_path / "out"
    plan_in(out, smoke_artifact, manifest, 1)
    outcome = score_shard(out, 0, predictor=predictor)
    rows = rows_of(outcome.rows)
    assert [r.path for r in rows] == [e.path for e in list_inputs(manifest)]
    assert rows[0].error.code == "unreadable_image" and "broken.png" in rows[0].error.message
    assert [r.result.name for r in rows[1:3]] == [str(p) for p in good] and rows[1].error is None
    assert rows[3].error.code == "file_not_found" and rows[3].result is None
    assert (outcome.marker.classified, outcome.marker.failed, outcome.marker.inputs) == (2, 2, 4)


def test_done_shards_are_skipped_and_changed_inputs_are_scored_again(smoke_artifact, predictor, xrays, tmp_path):
    out = tmp_path / "out"
    plan = plan_in(out, smoke_artifact, xrays, 3)
    first = [score_shard(out, i, predictor=predictor) for i in range(3)]
    assert not any(o.skipped for o in first)
    mtimes = [o.rows.stat().st_mtime_ns for o in first]

    again = [score_shard(out, i, predictor=predictor) for i in range(3)]
    assert all(o.skipped for o in again)
    assert [o.rows.stat().st_mtime_ns for o in again] == mtimes
    assert pending_shards(BatchDir(out), plan) == []

    # one image of the last shard is replaced: only that shard is stale
    last = Path(plan.shard_inputs(2)[-1].path)
    Image.fromarray(render_phantom(1, SIZE, 999)).save(last)
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))
    plan = plan_in(out, smoke_artifact, xrays, 3)
    state = shard_state(BatchDir(out), plan, 2)
    assert not state.done and "stale" in state.problem
    assert pending_shards(BatchDir(out), plan) == [2]
    redo = [score_shard(out, i, predictor=predictor) for i in range(3)]
    assert [o.skipped for o in redo] == [True, True, False]

    # another out-of-distribution policy is another result: nothing is reused
    plan = plan_in(out, smoke_artifact, xrays, 3, ood_policy="reject")
    assert pending_shards(BatchDir(out), plan) == [0, 1, 2]


def test_an_interrupted_shard_leaves_no_shard_file(smoke_artifact, predictor, xrays, tmp_path):
    class Crashing:
        """The real predictor, until its second batch."""

        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def predict(self, request):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("node lost")
            return self.inner.predict(request)

    out = tmp_path / "out"
    plan = plan_in(out, smoke_artifact, xrays, 1, batch_size=4)
    batch = BatchDir(out)
    rows = batch.shard_rows(0, 1)
    with pytest.raises(RuntimeError, match="node lost"):
        score_shard(out, 0, predictor=Crashing(predictor))
    assert sorted(p.name for p in batch.shards.iterdir()) == []  # no partial file, no temporary file

    done = score_shard(out, 0, predictor=predictor)
    before = rows.read_bytes()
    with pytest.raises(RuntimeError, match="node lost"):  # scoring a done shard again, forced, and crashing
        score_shard(out, 0, predictor=Crashing(predictor), force=True)
    assert rows.read_bytes() == before  # the complete old file is untouched ...
    assert "not complete" in shard_state(batch, plan, 0).problem  # ... but no longer counts as done
    assert len(rows_of(done.rows)) == 13


# ---- merging -------------------------------------------------------------------------------

def test_merge_equals_pneumo_predict_json(smoke_artifact, predictor, xrays, tmp_path, capsys):
    out = tmp_path / "out"
    plan = plan_in(out, smoke_artifact, xrays, 3)
    for i in range(3):
        score_shard(out, i, predictor=predictor)
    assert main(["hpc", "merge", str(out)]) == 0
    assert "merged 13 images (12 classified, 1 failed" in capsys.readouterr().err

    merged = BatchPredictions.model_validate_json((out / "predictions.json").read_text())
    assert [r.path for r in merged.results] == [e.path for e in plan.inputs]
    assert (merged.count, merged.classified, merged.failed) == (13, 12, 1)
    assert merged.model.name == "smoke" and [s.rows for s in merged.shards] == [4, 4, 5]
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [row["path"] for row in table] == [e.path for e in plan.inputs]
    broken = next(row for row in table if row["path"].endswith("broken.png"))
    assert broken["error"] == "unreadable_image" and broken["label"] == ""

    picks = [str(p) for p in sorted(xrays.rglob("x*.png"))[:: 4]]
    cli = run_cli("predict", str(smoke_artifact), *picks, "--json", "--backend", "torch")
    assert cli.returncode == 0, cli.stderr
    expected = {r["name"]: r for r in json.loads(cli.stdout)["results"]}
    by_path = {r.path: r.result.model_dump(mode="json") for r in merged.results if r.result}
    for path in picks:
        got, want = by_path[path], expected[path]
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        assert {k: v for k, v in got.items() if not k.startswith("probabilit")} == \
            {k: v for k, v in want.items() if not k.startswith("probabilit")}
        row = next(r for r in table if r["path"] == path)
        assert float(row["probability"]) == pytest.approx(want["probability"], abs=1e-5)
        assert row["label"] == want["label"] and row["error"] == ""


def test_merge_names_missing_and_damaged_shards(smoke_artifact, predictor, xrays, tmp_path, capsys):
    out = tmp_path / "out"
    plan_in(out, smoke_artifact, xrays, 3)
    score_shard(out, 0, predictor=predictor)
    last = score_shard(out, 2, predictor=predictor)
    with pytest.raises(MissingShardsError) as info:
        merge(out)
    assert [s.index for s in info.value.missing] == [1]
    assert "1 of 3 shards" in str(info.value) and "shard-00001-of-00003.jsonl" in str(info.value)

    with open(last.rows, "a") as fh:  # a shard altered after its marker was written
        fh.write('{"path": "/extra.png", "error": {"code": "x", "message": "y"}}\n')
    assert main(["hpc", "merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 shards" in err and "shard 1 (" in err and "missing" in err
    assert "shard 2 (" in err and "damaged" in err
    assert "Submit the same `pneumo hpc predict` command again" in err
    assert not (out / "predictions.csv").exists() and not (out / "predictions.json").exists()


def test_without_slurm_plan_then_score_shards_with_the_commands(smoke_artifact, xrays, tmp_path, capsys):
    out = tmp_path / "out"
    plan = run_cli("hpc", "predict", str(smoke_artifact), str(xrays), "--array", "2", "--out", str(out),
                   "--backend", "torch", "--no-submit")
    assert plan.returncode == 0, plan.stderr
    assert f"--array=0-1 {out}/predict-array.sbatch" in plan.stderr and "predict-shard" in plan.stderr
    assert (out / "batch.json").is_file() and (out / "predict-array.sbatch").is_file()
    assert (out / "predict-merge.sbatch").is_file() and list((out / "shards").iterdir()) == []
    nowhere = run_cli("hpc", "predict", str(smoke_artifact), str(xrays), "--array", "2", "--out", str(tmp_path / "o2"),
                      env={"PATH": str(tmp_path / "no-bin")})
    assert nowhere.returncode == 2 and "sbatch not found on PATH" in nowhere.stderr and "--no-submit" in nowhere.stderr
    assert not (tmp_path / "o2").exists()

    first = run_cli("hpc", "predict-shard", str(out), "--shard", "1")
    assert first.returncode == 0, first.stderr
    assert "shard 1 of 2: 7 images" in first.stderr and "shard 1 of 2 scored: 7 classified, 0 failed" in first.stderr
    assert len(rows_of(BatchDir(out).shard_rows(1, 2))) == 7
    again = run_cli("hpc", "predict-shard", str(out), "--shard", "1")
    assert again.returncode == 0 and "shard 1 of 2 already done" in again.stderr

    assert main(["hpc", "predict-shard", str(out), "--shard", "2"]) == 2
    assert "has 2 shards, numbered 0 to 1" in capsys.readouterr().err
    assert main(["hpc", "merge", str(out)]) == 2
    assert "1 of 2 shards" in capsys.readouterr().err


def test_an_artifact_changed_after_planning_is_refused(smoke_artifact, xrays, tmp_path):
    from pneumo_core.artifact import load_artifact
    from pneumo_core.artifact.store import update_metadata

    copy = tmp_path / "model"
    shutil.copytree(smoke_artifact, copy)
    out = tmp_path / "out"
    plan_in(out, copy, xrays, 1)
    update_metadata(load_artifact(copy), "threshold", 0.3)
    with pytest.raises(HpcError, match="changed since this batch was planned"):
        score_shard(out, 0)
    assert not BatchDir(out).shard_rows(0, 1).exists()


# ---- scripts and submission ----------------------------------------------------------------

FAKE_SBATCH = r"""#!/bin/bash
printf '%s\n' "$*" >> "$FAKE_DIR/sbatch.calls"
echo $(( 500 + $(wc -l < "$FAKE_DIR/sbatch.calls") ))
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}

    def calls() -> list[str]:
        path = tmp_path / "sbatch.calls"
        lines = path.read_text().splitlines() if path.exists() else []
        path.unlink(missing_ok=True)
        return lines
    return env, calls


def test_submission_runs_only_pending_shards_then_the_merge(smoke_artifact, predictor, xrays, tmp_path, fake_sbatch):
    env, calls = fake_sbatch
    out = tmp_path / "out"
    args = ("hpc", "predict", str(smoke_artifact), str(xrays), "--array", "3", "--out", str(out), "--backend", "torch")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "502"  # the merge job's id
    assert calls() == [f"--parsable --array=0-2 {out}/predict-array.sbatch",
                       f"--parsable --dependency=afterany:501 {out}/predict-merge.sbatch"]
    assert "submitted array job 501 (tasks 0-2), then merge job 502" in first.stderr
    assert (out / "batch.json").is_file() and (out / "logs").is_dir()
    assert "#SBATCH --array=0-2" in (out / "predict-array.sbatch").read_text()

    score_shard(out, 0, predictor=predictor)
    score_shard(out, 2, predictor=predictor)
    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert calls() == [f"--parsable --array=1 {out}/predict-array.sbatch",
                       f"--parsable --dependency=afterany:501 {out}/predict-merge.sbatch"]
    assert "2 already done, skipped; tasks 1 to run" in second.stderr

    score_shard(out, 1, predictor=predictor)
    third = run_cli(*args, env=env)
    assert third.returncode == 0, third.stderr
    assert calls() == [f"--parsable {out}/predict-merge.sbatch"]
    assert "every shard done: merge only" in third.stderr


def dry_run(capsys, *args: str) -> tuple[str, str, list[str]]:
    """(array script, merge script, the '#     sbatch ...' command lines) of a dry run."""
    assert main(["hpc", "predict", *args, "--dry-run"]) == 0
    parts: dict[str, list[str]] = {}
    current = None
    for line in capsys.readouterr().out.splitlines(keepends=True):
        if line.startswith("# ---- ") and line.rstrip().endswith(".sbatch ----"):
            current = line.rstrip()[len("# ---- "):-len(" ----")].rsplit("/", 1)[1]
            parts[current] = []
        elif line.startswith("# dry run: "):
            current = "tail"
            parts[current] = [line]
        else:
            parts[current].append(line)
    commands = [line.strip()[len("#     "):] for line in parts["tail"] if line.startswith("#     ")]
    return "".join(parts["predict-array.sbatch"]), "".join(parts["predict-merge.sbatch"]), commands


def sbatch_lines(script: str) -> dict[str, str]:
    return dict(line[len("#SBATCH "):].partition("=")[::2] for line in script.splitlines()
                if line.startswith("#SBATCH "))


def shellcheck(script: str, path: Path) -> None:
    exe = shutil.which("shellcheck")
    require(exe is not None, "shellcheck not installed (apt-get install shellcheck)")
    path.write_text(script)
    proc = subprocess.run([exe, "--shell=bash", "--severity=style", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"shellcheck:\n{proc.stdout}{proc.stderr}\n---- script ----\n{script}"


def test_rendered_scripts_have_the_array_range_and_the_dependency(smoke_artifact, xrays, tmp_path, capsys):
    out = tmp_path / "out"
    array, merge_script, commands = dry_run(
        capsys, str(smoke_artifact), str(xrays), "--array", "4", "--out", str(out), "--partition", "cpu",
        "--account", "proj-1", "--time", "00:30:00", "--mem", "2G", "--cpus-per-task", "2", "--max-running", "2")
    a, m = sbatch_lines(array), sbatch_lines(merge_script)
    assert a["--array"] == "0-3%2" and "--array" not in m
    assert a["--partition"] == m["--partition"] == "cpu" and a["--account"] == m["--account"] == "proj-1"
    assert a["--time"] == "00:30:00" and a["--mem"] == "2G" and a["--cpus-per-task"] == "2"
    assert m["--cpus-per-task"] == "1" and m["--job-name"] == "pneumo-predict-merge"
    assert a["--output"] == f"{out}/logs/%x-%A_%a.out" and m["--output"] == f"{out}/logs/%x-%j.out"
    assert "hpc predict-shard \"$out\" --shard \"$task\"" in array and "hpc merge \"$out\"" in merge_script
    assert commands == [f"sbatch --parsable --array=0-3%2 {out}/predict-array.sbatch",
                        f"sbatch --parsable '--dependency=afterany:<array job id>' {out}/predict-merge.sbatch"]
    assert not out.exists()  # a dry run writes nothing


def test_rendered_scripts_pass_shellcheck_with_awkward_paths(smoke_artifact, xrays, tmp_path, capsys):
    out = tmp_path / "my out" / "it's $HOME"
    array, merge_script, _ = dry_run(capsys, str(smoke_artifact), str(xrays), "--array", "2", "--out", str(out),
                                     "--activate", "source '/opt/my env/bin/activate'", "--no-requeue",
                                     "--sbatch=--constraint=fast")
    assert "#SBATCH --no-requeue" in array and "#SBATCH --constraint=fast" in merge_script
    shellcheck(array, tmp_path / "array.sbatch")
    shellcheck(merge_script, tmp_path / "merge.sbatch")


FAKE_PNEUMO = r"""#!/bin/bash
printf '%s\n' "$@" > "$FAKE_DIR/pneumo.args"
exit "${FAKE_RC:-0}"
"""


@pytest.mark.parametrize("rc", [0, 3])
def test_array_task_runs_its_shard_and_passes_on_failure(smoke_artifact, xrays, tmp_path, capsys, rc):
    require(shutil.which("bash") is not None, "bash not installed")
    fake = tmp_path / "fake pneumo"
    fake.write_text(FAKE_PNEUMO)
    fake.chmod(0o755)
    out = tmp_path / "out $x"
    array, merge_script, _ = dry_run(capsys, str(smoke_artifact), str(xrays), "--array", "3", "--out", str(out),
                                     "--pneumo", shlex.quote(str(fake)))
    env = {**os.environ, "FAKE_DIR": str(tmp_path), "FAKE_RC": str(rc), "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "8", "SLURM_ARRAY_TASK_ID": "2"}
    for script, expected in ((array, ["hpc", "predict-shard", str(out), "--shard", "2"]),
                             (merge_script, ["hpc", "merge", str(out)])):
        (tmp_path / "job.sbatch").write_text(script)
        proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == rc, proc.stdout + proc.stderr
        assert (tmp_path / "pneumo.args").read_text().splitlines() == expected
        assert ("failed with exit code 3" in proc.stdout) == (rc == 3)
    no_task = {k: v for k, v in env.items() if k != "SLURM_ARRAY_TASK_ID"}
    (tmp_path / "job.sbatch").write_text(array)
    proc = subprocess.run(["bash", str(tmp_path / "job.sbatch")], env=no_task, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "submit this script as an array job" in proc.stderr
