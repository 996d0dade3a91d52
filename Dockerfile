# Worker image for the `ops-docker` work pool: Prefect, this project and its locked environment, plus the
# PostgreSQL 15 client tools, git, ssh, age and zstd the flows call. Runs as the unprivileged user `ops`.
#   docker build -t odoo-stack-ops-worker:latest .          # or: podman build …
# The base is a build argument: the official Python image by default; any Debian bookworm image with python3
# and pip works (the tests build on a local Debian base, since no registry can be pulled there):
#   podman build --build-arg BASE=localhost/debian:bookworm -t odoo-stack-ops-worker:latest .
ARG BASE=python:3.11-slim-bookworm

# Build stage: uv installs the locked environment; neither uv nor its downloads reach the final image.
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m pip install --no-cache-dir --break-system-packages "uv==${UV_VERSION}"
# The interpreter is the base's python3 (never a downloaded one); bytecode compiled at build time, since the
# non-root user cannot write it next to the code and every flow run would compile Prefect again.
ENV UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
WORKDIR /opt/odoo-stack-ops
# Dependencies first: a change to the project's code rebuilds only the layers below.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY odoo_stack_ops ./odoo_stack_ops
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
RUN uv sync --frozen --no-dev

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
# Skipped when the base already has the packages (apt-get update alone downloads the package lists).
RUN pkgs="postgresql-client-15 git openssh-client age zstd ca-certificates passwd"; \
    dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update && apt-get install -y --no-install-recommends $pkgs \
    && rm -rf /var/lib/apt/lists/*; }
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ops --shell /usr/sbin/nologin ops
COPY --from=build /opt/odoo-stack-ops /opt/odoo-stack-ops
WORKDIR /opt/odoo-stack-ops
USER ops
ENV PATH=/opt/odoo-stack-ops/.venv/bin:$PATH HOME=/home/ops PREFECT_LOGGING_EXTRA_LOGGERS=odoo_stack_ops
CMD ["prefect", "worker", "start", "--pool", "ops-docker"]
