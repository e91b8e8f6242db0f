# syntax=docker/dockerfile:1
# One image for both services: `sesguard sender` (default) or `sesguard worker`.
# The builder makes a venv with the project and its runtime dependencies (no dev extras);
# the final stage copies only that venv onto the same slim base: no compiler, no pip cache.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sesguard/ sesguard/
COPY sender/ sender/
COPY worker/ worker/
RUN pip install --no-cache-dir .


FROM python:3.11-slim-bookworm

# tini is PID 1: it forwards SIGTERM (ECS stop, `docker stop`) to the service, which
# drains, and reaps any child processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 sesguard \
    && useradd --system --uid 10001 --gid sesguard --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sesguard

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SESGUARD_LOG_FORMAT=json \
    SESGUARD_HEARTBEAT_FILE=/tmp/sesguard-heartbeat

USER 10001:10001
WORKDIR /app

# The service loop refreshes the heartbeat on every receive (long polls last <= 20 s);
# `sesguard health` fails once it is older than --max-age: the loop is stuck, not just up.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["sesguard", "health", "--max-age", "90"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sesguard", "sender"]
