"""Fixtures for tests that run jobs on a real one-node Slurm cluster.

``slurm_cluster`` (session scope) starts the cluster with ``.ci/slurm/start.sh``
unless one is already up in the same state dir, points ``SLURM_CONF`` at it, and
stops it at the end of the session only if it started it.

Without the Slurm/munge binaries the tests are skipped, except on CI
(``CI=true``), where a missing cluster is a failure: CI must exercise them.

Environment:
    PNEUMO_SLURM_DIR   state dir of the cluster (default /tmp/pneumo-slurm)
    PNEUMO_SLURM_KEEP  if "1", leave a cluster this session started running

There is no slurmdbd, hence no ``sacct``: job states come from
``scontrol show job`` while slurmctld still holds the job (MinJobAge=120 s
after it ends) and from the job-completion log (jobcomp/filetxt) after that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_SH = REPO / ".ci" / "slurm" / "start.sh"
STOP_SH = REPO / ".ci" / "slurm" / "stop.sh"
DEFAULT_STATE_DIR = "/tmp/pneumo-slurm"
START_TIMEOUT_S = 150
STOP_TIMEOUT_S = 90

# Job states after which a job will not run again by itself.
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
# A terminal state that is not the awaited one must hold this long before
# wait_for_job gives up (a --requeue job can leave PREEMPTED/NODE_FAIL).
_SETTLE_S = 3.0

_JOB_ID = re.compile(r"(?:^|\s)JobId=(\d+)")
_ARRAY_JOB_ID = re.compile(r"\sArrayJobId=(\d+)")
_ARRAY_TASK_ID = re.compile(r"\sArrayTaskId=(\S+)")
_JOB_STATE = re.compile(r"\sJobState=([A-Z_]+)")
_RESTARTS = re.compile(r"\sRestarts=(\d+)")


class SlurmJobError(AssertionError):
    """A job did not reach the awaited state in time (message has the details)."""


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _skip_or_fail(reason: str) -> None:
    if _is_ci():
        pytest.fail(f"CI=true but the Slurm test cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _which(tool: str) -> str | None:
    # Daemons live in sbin, which a non-root PATH often lacks.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(tool, path=path)


def _run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read: {exc}>"


def _aggregate(states: Mapping[str, str]) -> str:
    """One state for a job or a whole array: the common state, else the least final."""
    values = list(states.values())
    if not values:
        return "UNKNOWN"
    if len(set(values)) == 1:
        return values[0]
    for value in values:
        if value not in TERMINAL_STATES:
            return value
    return next(v for v in values if v != "COMPLETED")


@dataclass
class SlurmCluster:
    """Handle on the running test cluster. All waits are bounded."""

    conf: Path
    state_dir: Path
    started_here: bool = False
    env: dict[str, str] = field(default_factory=dict)

    # ---- submitting -------------------------------------------------------
    def sbatch(
        self,
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> str:
        """Run ``sbatch --parsable *args`` and return the job id.

        ``env`` is added to the submitting environment, which sbatch exports to
        the job (--export=ALL is the default).
        """
        full_env = {**os.environ, **self.env, **(env or {})}
        proc = _run(["sbatch", "--parsable", *args], timeout=timeout, cwd=cwd, env=full_env)
        if proc.returncode != 0:
            raise SlurmJobError(f"sbatch {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout.strip().split(";")[0]

    def pneumo(self, cwd: str | os.PathLike[str], *args: str, timeout: float = 120) -> tuple[str, str]:
        """Run ``pneumo ARGS`` (a submitting command such as ``hpc submit``) against this cluster from
        ``cwd``; assert it succeeded and printed a job id, and return its stdout and stderr."""
        import sys

        proc = subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd,
                              env={**os.environ, **self.env, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
                                   "PYTHONWARNINGS": "ignore::FutureWarning"})
        assert proc.returncode == 0, f"pneumo {' '.join(args[:2])} failed:\n{proc.stdout}\n{proc.stderr}"
        assert proc.stdout.strip().isdigit(), f"no job id on stdout: {proc.stdout}"
        return proc.stdout.strip(), proc.stderr

    # ---- querying ---------------------------------------------------------
    def _scontrol_records(self, job_id: str) -> list[str]:
        try:
            proc = _run(["scontrol", "-o", "show", "job", str(job_id)], timeout=20, env={**os.environ, **self.env})
        except subprocess.TimeoutExpired:
            return []
        if proc.returncode != 0:
            return []
        return [line for line in proc.stdout.splitlines() if _JOB_ID.search(line)]

    def _jobcomp_states(self, job_id: str) -> dict[str, str]:
        """Final states from the job-completion log (last record per job wins)."""
        path = self.state_dir / "log" / "jobcomp.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        base, _, task = str(job_id).partition("_")
        states: dict[str, str] = {}
        for line in lines:
            jid, state = _JOB_ID.search(line), _JOB_STATE.search(line)
            if not (jid and state):
                continue
            array_jid, array_tid = _ARRAY_JOB_ID.search(line), _ARRAY_TASK_ID.search(line)
            ajid = array_jid.group(1) if array_jid else None
            atid = array_tid.group(1) if array_tid else None
            if (jid.group(1) == base and not task) or (ajid == base and (not task or atid == task)):
                states[f"{ajid}_{atid}" if ajid and atid else jid.group(1)] = state.group(1)
        return states

    def job_states(self, job_id: str | int) -> dict[str, str]:
        """State of each job (``"12"``) or array task (``"12_0"``); {} if unknown."""
        records = self._scontrol_records(str(job_id))
        if not records:
            return self._jobcomp_states(str(job_id))
        states: dict[str, str] = {}
        for line in records:
            state = _JOB_STATE.search(line)
            array_jid, array_tid = _ARRAY_JOB_ID.search(line), _ARRAY_TASK_ID.search(line)
            if array_jid and array_tid:
                key = f"{array_jid.group(1)}_{array_tid.group(1)}"
            else:
                key = _JOB_ID.search(line).group(1)
            states[key] = state.group(1) if state else "UNKNOWN"
        return states

    def job_state(self, job_id: str | int) -> str:
        """e.g. PENDING, RUNNING, COMPLETED; "UNKNOWN" if Slurm has no record.

        For an array it is the common state of all tasks, else the least final one.
        """
        return _aggregate(self.job_states(job_id))

    def requeue_count(self, job_id: str | int) -> int:
        """How many times the job was requeued (``Restarts=`` of scontrol; max over an array).

        Raises LookupError once slurmctld has purged the job (MinJobAge after it ended).
        """
        records = self._scontrol_records(str(job_id))
        counts = [int(m.group(1)) for line in records if (m := _RESTARTS.search(line))]
        if not counts:
            raise LookupError(f"job {job_id} unknown to slurmctld (purged after MinJobAge?)")
        return max(counts)

    restart_count = requeue_count

    def wait_for_job(
        self,
        job_id: str | int,
        states: Iterable[str] = frozenset({"COMPLETED"}),
        timeout: float = 60,
        poll: float = 0.5,
    ) -> str:
        """Poll until the job (every task of an array) is in one of ``states``.

        Returns that state. Raises SlurmJobError, with scontrol output and log
        tails, on timeout or when the job settles in another final state.
        """
        wanted = {s.upper() for s in states}
        deadline = time.monotonic() + timeout
        bad_since: float | None = None
        current: dict[str, str] = {}
        while True:
            current = self.job_states(job_id)
            if current and all(s in wanted for s in current.values()):
                return _aggregate(current)
            now = time.monotonic()
            if current and all(s in TERMINAL_STATES for s in current.values()):
                bad_since = bad_since if bad_since is not None else now
                if now - bad_since >= _SETTLE_S:
                    problem = f"ended in a state other than {sorted(wanted)}"
                    raise SlurmJobError(self._describe(job_id, current, problem))
            else:
                bad_since = None
            if now >= deadline:
                raise SlurmJobError(self._describe(job_id, current, f"not in {sorted(wanted)} after {timeout:g}s"))
            time.sleep(poll)

    def wait_for_state(self, job_id: str | int, states: Iterable[str], timeout: float = 60) -> str:
        """Like wait_for_job but for any state (e.g. RUNNING) and without the final-state check."""
        wanted = {s.upper() for s in states}
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            if time.monotonic() >= deadline:
                problem = f"not in {sorted(wanted)} after {timeout:g}s"
                raise SlurmJobError(self._describe(job_id, self.job_states(job_id), problem))
            time.sleep(0.5)

    # ---- diagnostics ------------------------------------------------------
    def log_tails(self, lines: int = 40) -> str:
        logs = self.state_dir / "log"
        return "\n".join(
            f"----- {path} -----\n{_tail(path, lines)}"
            for path in (logs / "slurmctld.log", logs / "slurmd.log", logs / "jobcomp.log")
        )

    def _describe(self, job_id: str | int, states: Mapping[str, str], problem: str) -> str:
        detail = "\n".join(self._scontrol_records(str(job_id))) or "<not known to scontrol>"
        return f"job {job_id} {problem}; states={dict(states)}\n{detail}\n{self.log_tails()}"


def _passwordless_sudo() -> bool:
    if not shutil.which("sudo"):
        return False
    try:
        return _run(["sudo", "-n", "true"], timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _cluster_up(conf: Path) -> bool:
    if not conf.is_file():  # scontrol retries for 60 s on a missing config
        return False
    try:
        proc = _run(["scontrol", "ping"], timeout=15, env={**os.environ, "SLURM_CONF": str(conf)})
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and "UP" in proc.stdout


def _start_cluster(env: Mapping[str, str]) -> Path:
    """Run start.sh (idempotent) and return the slurm.conf it reports."""
    try:
        proc = _run(["bash", str(START_SH)], timeout=START_TIMEOUT_S, env=dict(env))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{START_SH} did not finish in {START_TIMEOUT_S}s:\n{exc.stderr or ''}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{START_SH} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not last.startswith("export SLURM_CONF="):
        pytest.fail(f"unexpected output from {START_SH}:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return Path(last.split("=", 1)[1])


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = [t for t in ("sbatch", "scontrol", "sinfo", "slurmctld", "slurmd", "munged") if not _which(t)]
    if missing:
        _skip_or_fail(f"Slurm/munge not installed (missing: {', '.join(missing)})")

    state_dir = Path(os.environ.get("PNEUMO_SLURM_DIR", DEFAULT_STATE_DIR))
    conf = state_dir / "slurm.conf"
    was_up = _cluster_up(conf)
    env = {**os.environ, "PNEUMO_SLURM_DIR": str(state_dir)}
    # A cluster that is already up serves non-root users as it is; otherwise
    # (re)start it, which needs root (start.sh re-runs itself under sudo -n).
    if os.geteuid() == 0 or not was_up:
        if os.geteuid() != 0 and not _passwordless_sudo():
            _skip_or_fail("starting slurmd needs root or passwordless sudo")
        conf = _start_cluster(env)

    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    cluster = SlurmCluster(conf=conf, state_dir=state_dir, started_here=not was_up, env={"SLURM_CONF": str(conf)})
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if cluster.started_here and os.environ.get("PNEUMO_SLURM_KEEP") != "1":
            try:
                _run(["bash", str(STOP_SH)], timeout=STOP_TIMEOUT_S, env=env)
            except subprocess.TimeoutExpired:
                pass
