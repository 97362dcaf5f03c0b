"""`pneumo hpc render|submit --dry-run`: the batch scripts, without a Slurm cluster (fast)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness import REPO, require, run_cli
from pneumo_core.cli.main import main

KERMANY = str(REPO / "configs" / "kermany_resnet18.yaml")
SMOKE = str(REPO / "configs" / "smoke.yaml")
SWEEP2 = "hpc.sweep=[[train.lr=0.001], [train.lr=0.003, train.seed=1]]"


def render(capsys, *args: str) -> str:
    code = main(["hpc", "render", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def fails(capsys, *args: str) -> str:
    """Run pneumo with args that must fail; return its one-line error message."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    return err


def sbatch_options(script: str) -> dict[str, str]:
    opts = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].partition("=")
            opts[key] = value
    return opts


def shellcheck(script: str, tmp_path) -> None:
    exe = shutil.which("shellcheck")
    require(exe is not None, "shellcheck not installed (apt-get install shellcheck)")
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    proc = subprocess.run([exe, "--shell=bash", "--severity=style", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"shellcheck:\n{proc.stdout}{proc.stderr}\n---- script ----\n{script}"


CASES = {
    "single-cpu": [SMOKE],
    "single-1gpu": [SMOKE, "--gpus-per-node", "1"],
    "single-4gpu": [SMOKE, "--gpus-per-node", "4"],
    "single-cpu-ddp": [SMOKE, "--procs-per-node", "2"],
    "multi": [KERMANY, "--nodes", "2", "--gpus-per-node", "4"],
    "multi-cpu-1node": [SMOKE, "--template", "multi", "--procs-per-node", "2"],
    "array": [SMOKE, "--set", SWEEP2, "--array"],
    "array-multi": [SMOKE, "--set", SWEEP2, "--array", "--nodes", "2", "--gpus-per-node", "2"],
    "everything": [KERMANY, "--partition", "gpu", "--account", "proj-1", "--qos", "high", "--no-requeue",
                   "--sbatch=--constraint=a100", "--set", "hpc.extra_sbatch=['#SBATCH --exclusive']",
                   "--activate", "eval \"$(conda shell.bash hook)\" && conda activate pneumo"],
    "awkward-paths": [SMOKE, "--run-dir", "my runs/it's $HOME", "--output-dir", "log dir",
                      "--set", "serve.api_key_env=A 'B' \"C\" $D `e`",
                      "--pneumo", "'/opt/my env/bin/pneumo' --verbose"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_scripts_pass_shellcheck(case, capsys, tmp_path):
    script = render(capsys, *CASES[case])
    assert script.startswith("#!/bin/bash\n")
    shellcheck(script, tmp_path)


def test_multi_node_script_from_the_kermany_config():
    proc = run_cli("hpc", "render", "configs/kermany_resnet18.yaml", "--nodes", "2", "--gpus-per-node", "4")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for text in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --time=08:00:00",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --output=runs/%x-%j.out",
                 "srun ", "torchrun", "--nnodes=\"$SLURM_NNODES\"", "--nproc_per_node=4",
                 "--rdzv_backend=c10d", "--rdzv_endpoint=\"$head_node:29500\"", "--rdzv_id=\"$SLURM_JOB_ID\"",
                 'nodes="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"',
                 "set -euo pipefail", 'cd "${SLURM_SUBMIT_DIR', "export NO_ALBUMENTATIONS_UPDATE=1",
                 "source .venv/bin/activate", "train configs/kermany_resnet18.yaml", 'scontrol requeue "$SLURM_JOB_ID"',
                 "trap 'forward_signal USR1' USR1", "trap 'forward_signal TERM' TERM", "trainer_pid=$!"):
        assert text in script, text
    assert "| head" not in script  # SIGPIPE under pipefail
    assert "--standalone" not in script
    # every #SBATCH line comes before the first command, or sbatch ignores it
    lines = script.splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    first_command = min(i for i, line in enumerate(lines[1:], 1) if line.strip() and not line.startswith("#"))
    assert last_sbatch < first_command
    # sections a Slurm user can find, with comments
    for heading in ("Resources", "Log", "Preemption and time limit", "Environment", "The run", "Signals", "Outcome"):
        assert re.search(rf"^# ---- {heading}\b.* -+$", script, re.M), heading


def test_single_node_runs_pneumo_train_or_torchrun_standalone(capsys):
    cpu = render(capsys, SMOKE)
    assert "torchrun" not in cpu and "srun" not in cpu
    assert "--gpus-per-node" not in cpu
    assert re.search(r"^\s+\S*pneumo train \S*configs/smoke.yaml$", cpu, re.M)
    assert 'kill -s "$1" "$trainer_pid"' in cpu  # USR1/TERM go to pneumo train as they are

    one_gpu = render(capsys, SMOKE, "--gpus-per-node", "1")
    assert "#SBATCH --gpus-per-node=1" in one_gpu and "torchrun" not in one_gpu

    four = render(capsys, SMOKE, "--gpus-per-node", "4")
    assert "#SBATCH --gpus-per-node=4" in four
    assert "--standalone --nnodes=1 --nproc_per_node=4" in four
    assert "srun" not in four.split("# ---- The run")[1]
    assert 'kill -s TERM "$trainer_pid"' in four  # torchrun stops its workers gracefully on TERM


def test_cpu_ddp_processes_per_node(capsys):
    script = render(capsys, SMOKE, "--template", "multi", "--procs-per-node", "2", "--cpus-per-task", "2")
    assert "#SBATCH --nodes=1" in script and "--gpus-per-node" not in script
    assert "--nproc_per_node=2" in script and "--rdzv_backend=c10d" in script
    assert "export OMP_NUM_THREADS=1" in script
    err = fails(capsys, "hpc", "render", SMOKE, "--gpus-per-node", "2", "--procs-per-node", "3")
    assert "one process per GPU" in err


def test_flags_override_the_config(capsys):
    base = sbatch_options(render(capsys, SMOKE))
    assert base["--time"] == "00:10:00" and base["--cpus-per-task"] == "2" and base["--mem"] == "2G"
    assert "--partition" not in base and "--account" not in base and "--qos" not in base

    script = render(capsys, SMOKE, "--time", "01:30:00", "--cpus-per-task", "1", "--mem", "1G",
                    "--partition", "gpu", "--account", "proj", "--qos", "high", "--job-name", "mine",
                    "--output-dir", "logs", "--signal-seconds", "300", "--no-requeue", "--run-dir", "elsewhere/run")
    opts = sbatch_options(script)
    assert opts["--time"] == "01:30:00" and opts["--cpus-per-task"] == "1" and opts["--mem"] == "1G"
    assert opts["--partition"] == "gpu" and opts["--account"] == "proj" and opts["--qos"] == "high"
    assert opts["--job-name"] == "mine" and opts["--output"] == "logs/%x-%j.out"
    assert opts["--signal"] == "B:USR1@300" and "--no-requeue" in opts and "--requeue" not in opts
    assert "run_dir=elsewhere/run" in script
    assert "scontrol requeue" not in script

    # --set hpc.* changes the resources too, and is passed on to the trainer
    script = render(capsys, SMOKE, "--set", "hpc.time=00:20:00", "--set", "hpc.gpus_per_node=2")
    opts = sbatch_options(script)
    assert opts["--time"] == "00:20:00" and opts["--gpus-per-node"] == "2"
    assert "--set hpc.time=00:20:00" in script


def test_config_and_overrides_are_passed_through_quoted(capsys):
    script = render(capsys, SMOKE, "--set", "train.epochs=1", "--set", "serve.api_key_env=A B $C")
    assert f"train {SMOKE}" in script
    assert "--set train.epochs=1" in script
    assert "--set 'serve.api_key_env=A B $C'" in script


def test_array_job_over_the_sweep(capsys):
    script = render(capsys, SMOKE, "--set", SWEEP2, "--array")
    opts = sbatch_options(script)
    assert opts["--array"] == "0-1"
    assert opts["--output"] == "runs/%x-%A_%a.out"
    assert 'run_dir=runs/smoke/sweep-"$task"' in script
    assert "cmd+=(--set train.lr=0.001)" in script
    assert "cmd+=(--set train.lr=0.003 --set train.seed=1)" in script
    assert "SLURM_ARRAY_TASK_ID" in script
    # a sweep in the config without --array: one run, and a warning
    code = main(["hpc", "render", SMOKE, "--set", SWEEP2])
    captured = capsys.readouterr()
    assert code == 0 and "--array" not in sbatch_options(captured.out)
    assert "pass --array" in captured.err


def test_custom_pneumo_command(capsys):
    script = render(capsys, SMOKE, "--pneumo", "python -m pneumo_core.cli.main")
    assert "    python -m pneumo_core.cli.main train " in script
    # with an environment to activate, the job uses whatever pneumo it provides
    script = render(capsys, SMOKE, "--activate", "conda activate pneumo")
    assert "\nconda activate pneumo\n" in script
    assert re.search(r"^    pneumo train ", script, re.M)


@pytest.mark.parametrize("args, message", [
    (["--template", "mpi"], "unknown template 'mpi': choose one of single, multi, array"),
    (["--array"], "an array job needs hpc.sweep"),
    (["--template", "array"], "an array job needs hpc.sweep"),
    (["--template", "single", "--nodes", "2"], "single-node template cannot run on 2 nodes"),
    (["--array", "--template", "multi", "--set", SWEEP2], "cannot be combined with --template multi"),
    (["--time", "tomorrow"], "expected a Slurm time limit"),
    (["--mem", "lots"], "expected memory per node"),
    (["--set", "train.epochs=zero"], "train.epochs"),
    (["--set", "hpc.sweep=[[train.nope=1]]", "--array"], "hpc.sweep[0]"),
    (["--job-name", 'a"b'], "double quote"),
    (["--pneumo", "'unclosed"], "--pneumo"),
])
def test_bad_input_fails_with_a_clear_message(args, message, capsys):
    err = fails(capsys, "hpc", "render", SMOKE, *args)
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_bad_numbers_and_missing_config_fail(capsys, tmp_path):
    assert "must be at least 1" in fails(capsys, "hpc", "render", SMOKE, "--nodes", "0")
    assert "config file not found" in fails(capsys, "hpc", "render", str(tmp_path / "nope.yaml"))


def test_submit_dry_run_prints_script_and_command(tmp_path):
    proc = run_cli("hpc", "submit", SMOKE, "--dry-run", "--run-dir", "runs/x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/bin/bash\n")
    assert proc.stdout.rstrip().splitlines()[-1] == (
        "# dry run: would write runs/x/single.sbatch and run: sbatch --parsable runs/x/single.sbatch")
    assert not (tmp_path / "runs").exists()


def test_submit_without_sbatch_is_a_one_line_error(tmp_path):
    proc = run_cli("hpc", "submit", SMOKE, cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: sbatch not found on PATH: submit from a Slurm login node, or write the script with "
        "`pneumo hpc render` and submit it there"]


def test_submit_reports_sbatch_failure_and_prints_the_job_id(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text('#!/bin/bash\nif [ -n "${FAKE_SBATCH_FAIL:-}" ]; then\n'
                    '  echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1\nfi\n'
                    'echo "$@" > "$FAKE_SBATCH_ARGS"\necho "4242;cluster"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_SBATCH_ARGS": str(tmp_path / "args")}
    proc = run_cli("hpc", "submit", SMOKE, "--set", SWEEP2, "--array", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4242"
    assert "log runs/smoke-4242_<task>.out" in proc.stderr
    assert (tmp_path / "args").read_text().split() == ["--parsable", "runs/smoke/array.sbatch"]
    assert (tmp_path / "runs" / "smoke" / "array.sbatch").read_text().startswith("#!/bin/bash\n")

    proc = run_cli("hpc", "submit", SMOKE, cwd=tmp_path, env={**env, "FAKE_SBATCH_FAIL": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: sbatch refused runs/smoke/single.sbatch (exit 1): sbatch: error: Batch job submission failed: "
        "Invalid account"]


def test_submit_dry_run_warns_about_data_this_machine_does_not_see(tmp_path):
    config = tmp_path / "configs" / "exp.yaml"
    config.parent.mkdir()
    config.write_text("data:\n  name: imagefolder\n  params: {root: ../data/absent}\n")
    proc = run_cli("hpc", "submit", str(config), "--dry-run", "--run-dir", "runs/x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {config}: data.params.root: {tmp_path / 'data' / 'absent'} does not exist here" in proc.stderr


def test_a_path_with_a_line_break_is_refused_not_run(tmp_path):
    folder = tmp_path / "runs\ntouch pwned"
    folder.mkdir()
    config = folder / "exp.yaml"
    config.write_text((REPO / "configs" / "smoke.yaml").read_text())
    proc = run_cli("hpc", "render", str(config), cwd=tmp_path)
    assert proc.returncode == 2 and "line break cannot go into a batch script" in proc.stderr, proc.stderr
    assert "#!/bin/bash" not in proc.stdout
