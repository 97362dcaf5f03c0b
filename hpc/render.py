"""Render Slurm batch scripts for pneumo training runs from ``hpc/templates/*.sbatch.j2``.

:func:`plan_job` reads an experiment config (its ``hpc`` section), applies command-line
:class:`JobOptions` on top and checks the result; :func:`render` turns the :class:`JobPlan`
into a batch script. Three templates:

``single``  one node: ``pneumo train``, or ``torchrun --standalone`` for several GPUs/processes
``multi``   several nodes: ``srun`` starts ``torchrun`` on each node, c10d rendezvous on the first
``array``   a sweep: one array task per ``hpc.sweep`` entry of ``--set`` overrides

All scripts run the trainer in the background, forward USR1/TERM to it so that it checkpoints,
and requeue the job when it exits with :data:`pneumo_core.training.EXIT_PREEMPTED` (75).
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pneumo_core.errors import PneumoError

TEMPLATES = ("single", "multi", "array")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_RDZV_PORT = 29500

_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                   r"|UNLIMITED|INFINITE)$", re.IGNORECASE)
_MEM = re.compile(r"^\d+[KMGT]?B?$", re.IGNORECASE)


class HpcError(PneumoError):
    """A job cannot be rendered or submitted as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class JobOptions:
    """Command-line choices; ``None`` means "take it from the config's hpc section"."""

    nodes: Optional[int] = None
    gpus_per_node: Optional[int] = None
    procs_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    time: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    job_name: Optional[str] = None
    output_dir: Optional[str] = None
    activate: Optional[str] = None
    signal_seconds: Optional[int] = None
    requeue: Optional[bool] = None
    extra_sbatch: tuple[str, ...] = ()
    array: bool = False
    template: Optional[str] = None
    run_dir: Optional[str] = None
    pneumo: Optional[str] = None
    torchrun: Optional[str] = None
    rdzv_port: int = DEFAULT_RDZV_PORT


@dataclass(frozen=True)
class JobPlan:
    """Everything a template needs, resolved and checked."""

    template: str
    name: str
    config: str
    overrides: tuple[str, ...]
    job_name: str
    partition: Optional[str]
    account: Optional[str]
    qos: Optional[str]
    time: str
    nodes: int
    gpus_per_node: int
    nproc: int
    cpus_per_task: int
    mem: Optional[str]
    output_dir: str
    run_dir: str
    activate: Optional[str]
    signal_seconds: int
    requeue: bool
    extra_sbatch: tuple[str, ...]
    sweep: tuple[tuple[str, ...], ...]
    pneumo: tuple[str, ...]
    torchrun: tuple[str, ...]
    rdzv_port: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def launcher(self) -> str:
        """pneumo (one process), torchrun (one node, several), or srun (srun + torchrun per node)."""
        if self.template == "multi" or self.nodes > 1:
            return "srun"
        return "torchrun" if self.nproc > 1 else "pneumo"

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc

    @property
    def log_pattern(self) -> str:
        name = "%x-%A_%a.out" if self.template == "array" else "%x-%j.out"
        return f"{self.output_dir.rstrip('/') or '/'}/{name}" if self.output_dir not in ("", ".") else name


def _console_script(name: str, module: str, activate: Optional[str]) -> str:
    """``name`` when an environment is activated in the job, else this interpreter's script
    (or ``python -m module`` when the script is missing)."""
    if activate:
        return name
    script = Path(os.path.abspath(sys.executable)).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m {module}"


def default_pneumo(activate: Optional[str]) -> str:
    return _console_script("pneumo", "pneumo_core.cli.main", activate)


def default_torchrun(activate: Optional[str]) -> str:
    return _console_script("torchrun", "torch.distributed.run", activate)


def _words(what: str, command: str) -> tuple[str, ...]:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise HpcError(f"{what} {command!r}: {exc}") from None
    if not words:
        raise HpcError(f"{what} is empty: give the command that runs it, e.g. 'pneumo'")
    return tuple(words)


def _one_line(what: str, value: Optional[str]) -> Optional[str]:
    if value is not None and ("\n" in value or "\r" in value):
        raise HpcError(f"{what}: must be a single line, got {value!r}")
    return value


def _sbatch_value(what: str, value: Optional[str]) -> Optional[str]:
    """A value for an #SBATCH line: one line, no double quote (sbatch's only quoting)."""
    if value is None:
        return None
    _one_line(what, value)
    if value.strip() == "":
        raise HpcError(f"{what}: must not be empty")
    if '"' in value:
        raise HpcError(f"{what}: must not contain a double quote, got {value!r}")
    return value


def _extra_line(line: str) -> str:
    _one_line("hpc.extra_sbatch", line)
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH"):].strip()
    if not text.startswith("-"):
        raise HpcError(f"hpc.extra_sbatch: {line!r} is not an sbatch option; write e.g. '--constraint=a100'")
    return text


def _pick(option, config_value):
    return config_value if option is None else option


def plan_job(config_path: str | os.PathLike[str], overrides: Sequence[str] = (),
             options: JobOptions = JobOptions()) -> JobPlan:
    """Load and validate the config (with ``overrides``), merge ``options`` and check the job."""
    from pneumo_core.config import load_config

    config = str(config_path)
    overrides = tuple(overrides)
    for item in overrides:
        _one_line("--set", item)
    rc = load_config(config, overrides)
    cfg = rc.config
    hpc = rc.section("hpc")
    # not an error: the compute nodes may mount what this login node does not
    warnings: list[str] = [f"{config}: {line} here; the job fails unless the compute nodes see it"
                           for line in rc.missing_paths()]

    nodes = _pick(options.nodes, hpc.nodes)
    gpus = _pick(options.gpus_per_node, hpc.gpus_per_node)
    cpus = _pick(options.cpus_per_task, hpc.cpus_per_task)
    if nodes < 1:
        raise HpcError(f"--nodes must be at least 1, got {nodes}")
    if gpus < 0:
        raise HpcError(f"--gpus-per-node must be 0 or more, got {gpus}")
    if cpus < 1:
        raise HpcError(f"--cpus-per-task must be at least 1, got {cpus}")
    procs = options.procs_per_node
    if procs is not None and procs < 1:
        raise HpcError(f"--procs-per-node must be at least 1, got {procs}")
    if gpus and procs is not None and procs != gpus:
        raise HpcError(f"--procs-per-node {procs} with {gpus} GPUs per node: with GPUs pneumo runs one "
                       "process per GPU; leave --procs-per-node out (it is for CPU-only DDP)")
    nproc = gpus if gpus else (procs or 1)

    template = options.template
    if template is not None and template not in TEMPLATES:
        raise HpcError(f"unknown template {template!r}: choose one of {', '.join(TEMPLATES)}")
    if template is None:
        template = "array" if options.array else ("multi" if nodes > 1 else "single")
    elif options.array and template != "array":
        raise HpcError(f"--array makes an array job; it cannot be combined with --template {template}")
    if template == "single" and nodes > 1:
        raise HpcError(f"the single-node template cannot run on {nodes} nodes: use --template multi "
                       "(or leave --template out)")
    sweep: tuple[tuple[str, ...], ...] = ()
    if template == "array":
        if not hpc.sweep:
            raise HpcError(f"{config}: an array job needs hpc.sweep, a list of --set override lists, e.g. "
                           "sweep: [[train.lr=0.001], [train.lr=0.003]]")
        sweep = tuple(tuple(entry) for entry in hpc.sweep)
        for i, entry in enumerate(sweep):
            for item in entry:
                _one_line(f"hpc.sweep[{i}]", item)
            try:  # each task's config must load too, or that task would fail in the queue
                load_config(config, overrides + entry, pm=rc.pm)
            except PneumoError as exc:
                raise HpcError(f"hpc.sweep[{i}] {list(entry)}: {exc}") from None
    elif hpc.sweep:
        warnings.append(f"{config} has an hpc.sweep of {len(hpc.sweep)} runs; pass --array to submit it "
                        "as an array job (this script trains one run without it)")

    time = _sbatch_value("--time", _pick(options.time, hpc.time))
    if not _TIME.match(time):
        raise HpcError(f"--time {time!r}: expected a Slurm time limit such as 30, 04:00:00 or 2-00:00:00")
    mem = _sbatch_value("--mem", _pick(options.mem, hpc.mem))
    if mem is not None and not _MEM.match(mem):
        raise HpcError(f"--mem {mem!r}: expected memory per node such as 16G or 32000M")
    signal_seconds = _pick(options.signal_seconds, hpc.signal_seconds)
    if signal_seconds < 1:
        raise HpcError(f"--signal-seconds must be positive, got {signal_seconds}")
    if options.rdzv_port < 1 or options.rdzv_port > 65535:
        raise HpcError(f"--rdzv-port must be a TCP port (1-65535), got {options.rdzv_port}")
    output_dir = _sbatch_value("--output-dir", _pick(options.output_dir, hpc.output_dir))
    run_dir = _one_line("--run-dir", options.run_dir) or str(Path(output_dir) / cfg.name)
    activate = _one_line("hpc.activate", _pick(options.activate, hpc.activate))
    activate = activate.strip() if activate and activate.strip() else None
    extra = tuple(_extra_line(line) for line in (*hpc.extra_sbatch, *options.extra_sbatch))

    return JobPlan(
        template=template, name=cfg.name, config=config, overrides=overrides,
        job_name=_sbatch_value("--job-name", _pick(options.job_name, hpc.job_name) or rc.config.name),
        partition=_sbatch_value("--partition", _pick(options.partition, hpc.partition)),
        account=_sbatch_value("--account", _pick(options.account, hpc.account)),
        qos=_sbatch_value("--qos", _pick(options.qos, hpc.qos)),
        time=time, nodes=nodes, gpus_per_node=gpus, nproc=nproc, cpus_per_task=cpus, mem=mem,
        output_dir=output_dir, run_dir=run_dir, activate=activate, signal_seconds=signal_seconds,
        requeue=_pick(options.requeue, hpc.requeue), extra_sbatch=extra, sweep=sweep,
        pneumo=_words("--pneumo", options.pneumo or default_pneumo(activate)),
        torchrun=_words("--torchrun", options.torchrun or default_torchrun(activate)),
        rdzv_port=options.rdzv_port, warnings=tuple(warnings))


def _sb(value) -> str:
    """Filter: an #SBATCH value, double-quoted when it has spaces (sbatch's quoting)."""
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _count(n: int, word: str) -> str:
    """Filter: ``3|count('node')`` -> "3 nodes"."""
    plural = word + ("es" if word.endswith(("s", "sh", "ch")) else "s")
    return f"{n} {word if n == 1 else plural}"


_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x85\u2028\u2029]")


def _one_line_value(value: object) -> object:
    """Every value a template prints: a line break in it would end a ``#`` comment or an
    ``#SBATCH`` line and run the rest as a command, so it is refused."""
    if isinstance(value, str) and _LINE_BREAKS.search(value):
        raise HpcError(f"{value!r}: a path or option with a line break cannot go into a batch script; rename it")
    return value


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
                             finalize=_one_line_value)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    env.filters["sb"] = _sb
    env.filters["count"] = _count
    return env


_KIND_TITLES = {"single": "single-node training job", "multi": "multi-node DDP training job",
                "array": "sweep (array job)"}


def render(plan: JobPlan) -> str:
    """The batch script for ``plan``."""
    array = f"0-{len(plan.sweep) - 1}" if plan.template == "array" else None
    values = (plan.config, plan.run_dir, *plan.overrides, *plan.pneumo, *plan.torchrun,
              *(item for entry in plan.sweep for item in entry))
    literal_dollar = any("$" in v or "`" in v for v in values)
    context = dict(
        template=plan.template, kind_title=_KIND_TITLES[plan.template], name=plan.name, config=plan.config,
        overrides=list(plan.overrides), job_name=plan.job_name, partition=plan.partition, account=plan.account,
        qos=plan.qos, time=plan.time, nodes=plan.nodes, gpus_per_node=plan.gpus_per_node, nproc=plan.nproc,
        world_size=plan.world_size, cpus_per_task=plan.cpus_per_task, mem=plan.mem,
        omp_threads=max(1, plan.cpus_per_task // plan.nproc), log_dir=plan.output_dir or ".",
        output=plan.log_pattern, run_dir=plan.run_dir, activate=plan.activate,
        signal_seconds=plan.signal_seconds, requeue=plan.requeue, extra_sbatch=list(plan.extra_sbatch),
        array=array, sweep=[list(e) for e in plan.sweep], launcher=plan.launcher,
        pneumo=[shlex.quote(w) for w in plan.pneumo], torchrun=[shlex.quote(w) for w in plan.torchrun],
        rdzv_port=plan.rdzv_port, literal_dollar=literal_dollar)
    return _environment().get_template(f"{plan.template}.sbatch.j2").render(**context)


def render_job(config_path: str | os.PathLike[str], overrides: Sequence[str] = (),
               options: JobOptions = JobOptions()) -> tuple[JobPlan, str]:
    """:func:`plan_job` then :func:`render`."""
    plan = plan_job(config_path, overrides, options)
    return plan, render(plan)
