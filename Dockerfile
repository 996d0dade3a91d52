# Worker image for the `ops-docker` work pool: Python, Prefect and this project, plus the PostgreSQL 15
# client tools that pg_dump/pg_restore on the worker need.
#   docker build -t odoo-stack-ops-worker:latest .
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client-15 git openssh-client age zstd \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv
WORKDIR /opt/odoo-stack-ops
COPY pyproject.toml uv.lock README.md ./
COPY odoo_stack_ops ./odoo_stack_ops
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY prefect.yaml ./
# bytecode compiled into the image: each flow run is a fresh container and would otherwise compile Prefect again
RUN UV_COMPILE_BYTECODE=1 uv sync --frozen --no-dev && ln -s /opt/odoo-stack-ops/.venv/bin/* /usr/local/bin/ 2>/dev/null || true
ENV PATH=/opt/odoo-stack-ops/.venv/bin:$PATH PREFECT_LOGGING_EXTRA_LOGGERS=odoo_stack_ops
CMD ["prefect", "worker", "start", "--pool", "ops-docker"]
