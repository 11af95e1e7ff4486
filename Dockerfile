# syntax=docker/dockerfile:1
#
# tocsin container image: the `tocsin` command, talking to an external NATS JetStream
# server given by TOCSIN_NATS_URL. The image carries no nats-server (no `embedded` extra).
#
# Build, from the repository root:
#   docker build -t tocsin:0.1.0 .
#
# Run everything in one container (router + delivery workers + HTTP API on :8080):
#   docker run -d --name tocsin -p 8080:8080 \
#     -e TOCSIN_NATS_URL=nats://nats:4222 \
#     -v tocsin-data:/var/lib/tocsin \
#     tocsin:0.1.0
#   add a config file with:
#     -v "$PWD/tocsin.toml:/etc/tocsin/tocsin.toml:ro" -e TOCSIN_CONFIG=/etc/tocsin/tocsin.toml
#
# Components apart (deploy/README.md): the same image with another command, e.g.
#   docker run -d -e TOCSIN_NATS_URL=nats://nats:4222 -e TOCSIN_HEALTH=0.0.0.0:8080 \
#     -v tocsin-router:/var/lib/tocsin tocsin:0.1.0 router
#   docker run -d -e TOCSIN_NATS_URL=nats://nats:4222 -e TOCSIN_HEALTH=0.0.0.0:8080 \
#     tocsin:0.1.0 deliver
# (`router` and `deliver` serve no API; TOCSIN_HEALTH gives them /healthz, /readyz and
# /metrics on 8080, which the HEALTHCHECK below reads. Without it, use --no-healthcheck.)
#
# TOCSIN_NATS_URL is required: without it `tocsin serve` tries to start an embedded
# nats-server, which this image does not have, and exits 1 saying so.

# --- builder: the project's wheel and the wheels of its runtime dependencies ------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# README.md* : the readme pyproject names, copied when present (the glob may match nothing).
COPY pyproject.toml README.md* ./
COPY requirements/service.txt ./requirements/service.txt
COPY service ./service
# The dependencies exactly as locked (versions and hashes), then tocsin's own wheel.
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements/service.txt \
 && pip wheel --wheel-dir /wheels --no-deps .

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Install from the builder's wheels only (no index): exactly what the builder resolved.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels tocsin

# A fixed non-root uid/gid, so volume ownership and Kubernetes runAsUser are predictable.
RUN groupadd --system --gid 10001 tocsin \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tocsin --no-create-home \
        --shell /usr/sbin/nologin tocsin \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/tocsin

# The data dir holds the SQLite event log (the source of truth): keep it on a volume.
# A new named volume takes this directory's ownership (uid 10001).
ENV TOCSIN_DATA_DIR=/var/lib/tocsin \
    TOCSIN_HTTP=0.0.0.0:8080
VOLUME ["/var/lib/tocsin"]
WORKDIR /var/lib/tocsin
USER 10001:10001

EXPOSE 8080
# /healthz answers 200 while the process runs (/readyz is the readiness probe).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["tocsin"]
CMD ["serve"]
