# syntax=docker/dockerfile:1
# One image for every Switchyard role; the role is the command:
#   docker run IMAGE ingress | router | worker --connector slack | topics apply
# Kafka and Vault are external (on Kubernetes: the Helm chart in deploy/helm/switchyard).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels for Switchyard and every dependency, installed into a venv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here: a dependency without a wheel for this platform builds in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY schemas ./schemas
COPY core ./core
COPY ingress ./ingress
COPY router ./router
COPY workers ./workers
COPY switchyard ./switchyard
COPY bench ./bench
RUN pip wheel -c constraints.txt --wheel-dir /wheels . \
 && python -m venv /opt/switchyard \
 && /opt/switchyard/bin/pip install --no-index --find-links /wheels switchyard \
 && /opt/switchyard/bin/pip uninstall -y pip setuptools wheel \
 && /opt/switchyard/bin/switchyard --help > /dev/null

# --- runtime: the venv alone on a slim Python, as an unprivileged user --------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Multitenant command layer for AI agents on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/switchyard --create-home \
      --shell /usr/sbin/nologin switchyard
COPY --from=builder /opt/switchyard /opt/switchyard
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHYARD_HOME=/tmp/switchyard \
    SWITCHYARD_INGRESS_HOST=0.0.0.0
USER 10001:10001
# Relative paths (a library's scratch files) land in /tmp, writable even when the root
# filesystem is read-only (the Helm chart mounts an emptyDir there).
WORKDIR /tmp
EXPOSE 8080 9464
ENTRYPOINT ["switchyard"]
CMD ["--help"]
