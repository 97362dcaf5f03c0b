"""``pneumo serve``: run the REST API and web page under gunicorn (needs pneumo[serve]).

Registered by this adapter through the ``pneumo.cli`` entry-point group, so the core launches
no adapter by name.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from adapters.flask_app.background import gunicorn_command
from pneumo_core.cli.argtypes import positive_int
from pneumo_core.config.schema import BACKENDS


def _artifact_problem(artifact: str, backend: str) -> str | None:
    """Why the workers could not load this artifact with this backend, or None."""
    from pneumo_core.artifact import load_artifact
    from pneumo_core.artifact.store import ONNX_FILES
    from pneumo_core.errors import PneumoError
    from pneumo_core.inference.backends import installed, require_onnx_file

    try:
        load_artifact(artifact)
        if backend == "onnx-int8":  # the others need no file the artifact lacks
            require_onnx_file(Path(artifact) / ONNX_FILES[backend])
        if backend == "openvino" and not installed("openvino"):
            return "the openvino backend needs OpenVINO: pip install 'pneumo[openvino]'"
    except PneumoError as exc:
        return str(exc)
    return None


def _port_busy(host: str, port: int) -> str | None:
    """Why gunicorn could not bind ``host:port`` (e.g. another server holds it), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unknown host ({exc})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            return "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def _run(args) -> int:
    import importlib.util

    if importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("flask_restx") is None:
        print("error: serving needs the serve extra: pip install 'pneumo[serve]'", file=sys.stderr)
        return 2
    problem = _artifact_problem(args.artifact, args.backend)
    if problem:  # say it once here rather than as a traceback from every gunicorn worker
        print(f"error: {problem}", file=sys.stderr)
        return 2
    busy = _port_busy(args.host, args.port)
    if busy:
        print(f"error: cannot listen on {args.host}:{args.port}: {busy}. Pick another port with --port "
              f"(with make: make demo PORT={args.port + 1}).", file=sys.stderr)
        return 2
    env = dict(os.environ, PNEUMO_ARTIFACT=args.artifact, PNEUMO_BACKEND=args.backend)
    if args.config:
        env["PNEUMO_CONFIG"] = args.config
    cmd = gunicorn_command(f"{args.host}:{args.port}")
    if args.workers:  # through the env, so gunicorn_conf splits threads and sets up multiprocess metrics
        env["PNEUMO_WORKERS"] = str(args.workers)
    print(f"pneumo: web page  http://{args.host}:{args.port}/\n"
          f"pneumo: Swagger UI http://{args.host}:{args.port}/api/v1/docs", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def add_cli(sub) -> None:
    p = sub.add_parser("serve", help="serve the REST API and web page with gunicorn")
    from pneumo_core import BUNDLED_ARTIFACT

    p.add_argument("--artifact", default=os.environ.get("PNEUMO_ARTIFACT", BUNDLED_ARTIFACT),
                   help="model artifact folder (default: $PNEUMO_ARTIFACT or the bundled model)")
    p.add_argument("--config", help="config whose serve section sets limits and auth")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): the fastest backend that matches torch fp32 on this machine, measured "
                        "at start-up; onnx and openvino export the model on demand; onnx-int8 needs "
                        "`pneumo export --format onnx-int8` first")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--workers", type=positive_int, help="gunicorn worker processes, each with its own model "
                   "(default: $PNEUMO_WORKERS or 1; one per core for throughput)")
    p.set_defaults(handler=_run)
