# pneumo REST API (Flask-RESTX behind gunicorn) with the bundled Kermany ResNet-18 model.
#
# CPU (default):
#   docker build -t pneumo-api .
#   docker run --rm -p 8000:8000 pneumo-api          # then open http://localhost:8000/
#
# NVIDIA GPU: take a CUDA runtime base and the matching PyTorch wheel index, e.g.
#   docker build -t pneumo-api:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
#   docker run --rm --gpus all -p 8000:8000 pneumo-api:cuda
# The cuXYZ of TORCH_INDEX must match the CUDA major.minor of the base image (cu124 <-> 12.4).
# A base image without Python (as nvidia/cuda) gets the distribution's python3 (3.10 on
# Ubuntu 22.04; pneumo needs >= 3.10) installed below.
#
# Runtime settings (see adapters/flask_app/settings.py and gunicorn_conf.py): PNEUMO_ARTIFACT,
# PNEUMO_WORKERS, PNEUMO_THREADS, PNEUMO_TIMEOUT, PNEUMO_BACKEND, PNEUMO_API_KEYS (auth on when set).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python for bases that lack it (CUDA images); python:*-slim already has it. Versions follow the
# base image's distribution release, hence no apt pins.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --user-group pneumo

WORKDIR /app

# The package first (its dependencies are the slow layer), then the model, so a new model does
# not reinstall torch. The torch index is an extra index: everything else comes from PyPI.
COPY pyproject.toml README.md ./
COPY pneumo_core ./pneumo_core
COPY plugins ./plugins
COPY adapters ./adapters
COPY hpc ./hpc
# Versions are pyproject.toml's ranges: what is installed is the project, not a bare name.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" ".[serve]"

COPY models/pneumo-resnet18-kermany ./models/pneumo-resnet18-kermany

ENV NO_ALBUMENTATIONS_UPDATE=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PNEUMO_ARTIFACT=/app/models/pneumo-resnet18-kermany \
    PNEUMO_BIND=0.0.0.0:8000

# the "pneumo" user created above, by number so that Kubernetes' runAsNonRoot can verify it
USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "-c", "python:adapters.flask_app.gunicorn_conf", "adapters.flask_app.wsgi:app"]
