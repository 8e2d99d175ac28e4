# syntax=docker/dockerfile:1
# The scoring service's images (README "Operations"). Targets:
#   runtime    (default) CPU: python slim, onnxruntime, the app, the default model; no torch, no training
#   gpu        the same on a CUDA runtime base with onnxruntime-gpu and ANOMALY_PROVIDER=cuda
#   simulator  the plant simulator (factory_anomaly/plant/simulate.py: numpy + the client, no torch) on the runtime's venv
# Every install step is deploy/install-serving.sh, which `make serving-install` runs outside Docker; the
# dependencies are exactly those of deploy/requirements-serving[-gpu].lock, hash-checked (`make lock`).
# The images run as user 10001 and work with a read-only root filesystem (docker run --read-only
# --tmpfs /tmp; docker-compose.yml does so): the service writes nothing but its logs to stderr.
#
#   docker build -t factory-anomaly/api:0.1.0 .
#   docker build --target gpu -t factory-anomaly/api-gpu:0.1.0 .
#   docker run -p 8000:8000 factory-anomaly/api:0.1.0                  # the baked-in default model
#   docker run -p 8000:8000 -v "$PWD/model_store:/models:ro" ...       # the models of a volume instead

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# onnxruntime-gpu from PyPI is built for CUDA 12 and cuDNN 9 (ORT >= 1.19): keep this base on the CUDA
# major the installed onnxruntime-gpu release names.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- CPU: install -------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/install-serving.sh deploy/requirements-serving.lock deploy/
COPY pyproject.toml ./
RUN sh deploy/install-serving.sh deps /src /opt/anomaly cpu
COPY factory_anomaly/__init__.py factory_anomaly/
COPY factory_anomaly/artifact/ factory_anomaly/artifact/
COPY factory_anomaly/alarms/ factory_anomaly/alarms/
COPY factory_anomaly/explain/ factory_anomaly/explain/
COPY factory_anomaly/app/ factory_anomaly/app/
RUN sh deploy/install-serving.sh app /src /opt/anomaly
COPY model_store/factory-ae/ model_store/factory-ae/
RUN sh deploy/install-serving.sh model /src /models factory-ae

# --- GPU: install on the CUDA base (its Python builds the venv the GPU runtime runs) ---------------------------
FROM ${CUDA_IMAGE} AS gpu-base
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin anomaly

FROM gpu-base AS gpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/install-serving.sh deploy/requirements-serving-gpu.lock deploy/
COPY pyproject.toml ./
RUN sh deploy/install-serving.sh deps /src /opt/anomaly gpu
COPY factory_anomaly/__init__.py factory_anomaly/
COPY factory_anomaly/artifact/ factory_anomaly/artifact/
COPY factory_anomaly/alarms/ factory_anomaly/alarms/
COPY factory_anomaly/explain/ factory_anomaly/explain/
COPY factory_anomaly/app/ factory_anomaly/app/
RUN sh deploy/install-serving.sh app /src /opt/anomaly

FROM gpu-base AS gpu
COPY --from=gpu-build /opt/anomaly /opt/anomaly
COPY --from=build /models /models
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    ANOMALY_MODEL_STORE=/models ANOMALY_MODEL_NAME=factory-ae ANOMALY_PROVIDER=cuda \
    ANOMALY_ALARM_DB=/data/alarms.sqlite3
# the alarm journal's directory, owned by the service's user (a named volume mounted there inherits it)
RUN mkdir -p /data && chown 10001 /data
VOLUME /data
WORKDIR /opt/anomaly
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/anomaly/venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
# One uvicorn process per container (docs/metrics.md): never --workers.
CMD ["/opt/anomaly/venv/bin/python", "-m", "uvicorn", "factory_anomaly.app.main:app", "--host", "0.0.0.0", "--port", "8000"]

# --- CPU: what the runtime and the simulator share ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS serving-base
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin anomaly
COPY --from=build /opt/anomaly /opt/anomaly
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/anomaly
USER 10001

# --- the plant simulator ------------------------------------------------------------------------------------
# It calls the service through the Python client (client/, its own distribution): the package alone is
# copied beside the plant, its dependencies (httpx, numpy, orjson) are already in the serving venv.
FROM serving-base AS simulator
COPY client/factory_anomaly_client/ /opt/anomaly/factory_anomaly_client/
COPY factory_anomaly/plant/ /opt/anomaly/factory_anomaly/plant/
ENTRYPOINT ["/opt/anomaly/venv/bin/python", "-m", "factory_anomaly.plant.simulate"]
CMD ["--url", "http://api:8000", "--rate", "5", "--anomaly-rate", "0.05"]

# --- CPU runtime: the default target ---------------------------------------------------------------------------
FROM serving-base AS runtime
COPY --from=build /models /models
ENV ANOMALY_MODEL_STORE=/models ANOMALY_MODEL_NAME=factory-ae ANOMALY_PROVIDER=cpu \
    ANOMALY_ALARM_DB=/data/alarms.sqlite3
# the alarm journal's directory, owned by the service's user (a named volume mounted there inherits it)
USER root
RUN mkdir -p /data && chown 10001 /data
USER 10001
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/anomaly/venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
# One uvicorn process per container (docs/metrics.md): never --workers.
CMD ["/opt/anomaly/venv/bin/python", "-m", "uvicorn", "factory_anomaly.app.main:app", "--host", "0.0.0.0", "--port", "8000"]
