"""gunicorn settings for pneumo (``gunicorn -c python:adapters.flask_app.gunicorn_conf``).

Environment overrides: PNEUMO_WORKERS, PNEUMO_THREADS, PNEUMO_BIND, PNEUMO_TIMEOUT, and the
slow-client limits PNEUMO_CLIENT_IDLE_S and PNEUMO_REQUEST_READ_S (see ``slow_clients.py``).
No preload: each worker loads the model itself after the fork (safe with torch threads).
"""
import os
import tempfile

bind = os.environ.get("PNEUMO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("PNEUMO_WORKERS", "1"))
threads = int(os.environ.get("PNEUMO_THREADS", "4"))
worker_class = "adapters.flask_app.slow_clients.GuardedThreadWorker"  # gthread + read timeouts
timeout = int(os.environ.get("PNEUMO_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
accesslog = "-"
errorlog = "-"
# gunicorn >= 25 opens a control socket at one fixed path per user, so two servers on a host
# would share it; pneumo does not use gunicornc.
control_socket_disable = True

_own_metrics_dir = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pneumo-prom-")


def post_fork(server, worker):  # noqa: ARG001 - gunicorn hook signature
    """Split the CPU cores between workers so they do not oversubscribe each other."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def post_worker_init(worker):  # noqa: ARG001
    """The app and its model are loaded: keep them out of later garbage collections."""
    from pneumo_core.inference.serving_process import freeze_after_load

    freeze_after_load()


def child_exit(server, worker):  # noqa: ARG001
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ARG001
    """Remove the metrics folder this config created (a user-given one is left alone)."""
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
