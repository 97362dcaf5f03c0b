"""Write a rendered batch script next to its run and submit it with ``sbatch --parsable``."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hpc.render import HpcError, JobPlan

SBATCH_TIMEOUT_S = 120


@dataclass(frozen=True)
class Submission:
    script: Path                 # where the batch script is (or would be) written
    log: str                     # the Slurm log path, %x (job name) filled in; %j/%A/%a left
    command: tuple[str, ...]     # the sbatch command line
    job_id: Optional[str] = None  # None for a dry run

    @property
    def log_path(self) -> str:
        """The log file name with the job name and id filled in (``<task>`` for array tasks)."""
        if self.job_id is None:
            return self.log
        return self.log.replace("%A", self.job_id).replace("%j", self.job_id).replace("%a", "<task>")

    @property
    def command_line(self) -> str:
        return " ".join(shlex.quote(w) for w in self.command)


def script_path(plan: JobPlan) -> Path:
    """``<run dir>/<template>.sbatch`` (for an array, the directory above the task run dirs)."""
    return Path(plan.run_dir) / f"{plan.template}.sbatch"


def submit(plan: JobPlan, script: str, dry_run: bool = False, sbatch: str = "sbatch") -> Submission:
    """Write ``script``, create the log directory and submit; return the job id.

    A dry run writes nothing and submits nothing. Raises :class:`HpcError` when sbatch is missing
    or refuses the job.
    """
    path = script_path(plan)
    command = (sbatch, "--parsable", str(path))
    log = plan.log_pattern.replace("%x", plan.job_name)
    if dry_run:
        return Submission(path, log, command)
    exe = shutil.which(sbatch)
    if exe is None:
        raise HpcError(f"{sbatch} not found on PATH: submit from a Slurm login node, or write the script with "
                       f"`pneumo hpc render` and submit it there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Path(plan.output_dir or ".").mkdir(parents=True, exist_ok=True)  # Slurm does not create it
        path.write_text(script, encoding="utf-8")
    except OSError as exc:
        raise HpcError(f"cannot write the batch script {path}: {exc}") from None
    return Submission(path, log, command, run_sbatch(command, path))


def run_sbatch(command: Sequence[str], script: Path) -> str:
    """Run ``command`` (``sbatch --parsable ... SCRIPT``) and return the job id it prints.

    Raises :class:`HpcError` when sbatch is missing, hangs or refuses the job; the message names
    ``script`` and sbatch's own words.
    """
    exe = shutil.which(command[0])
    if exe is None:
        raise HpcError(f"{command[0]} not found on PATH: submit from a Slurm login node, or write the script with "
                       f"`pneumo hpc render` and submit it there")
    try:
        proc = subprocess.run([exe, *command[1:]], capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HpcError(f"sbatch did not answer in {SBATCH_TIMEOUT_S} s (is slurmctld up? try `sinfo`); "
                       f"script left at {script}") from None
    except OSError as exc:
        raise HpcError(f"cannot run {exe}: {exc}") from None
    if proc.returncode != 0:
        detail = " ".join(line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip())
        raise HpcError(f"sbatch refused {script} (exit {proc.returncode}): {detail or 'no message'}")
    job_id = proc.stdout.strip().split(";")[0].strip()
    if not job_id:
        raise HpcError(f"sbatch printed no job id for {script}: {proc.stdout!r}")
    return job_id
