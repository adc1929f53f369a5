# The inventory daemon: `inventory run`, its store on the /data volume and its
# endpoints (/healthz, /readyz, /metrics) on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY alembic ./alembic
COPY inventory ./inventory
# The install command the README gives, unchanged.
RUN pip install '.[postgres]'

RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /data --shell /usr/sbin/nologin inventory \
    && mkdir /data \
    && chown inventory:inventory /data

ENV INVENTORY_DATABASE_URL=sqlite:////data/inventory.db \
    INVENTORY_HTTP_HOST=0.0.0.0 \
    INVENTORY_HTTP_PORT=8000 \
    INVENTORY_LOG_FORMAT=json

VOLUME ["/data"]
WORKDIR /data
USER inventory
EXPOSE 8000

# Exit 0 while the last completed run succeeded within the readiness age. The
# start period covers a first sync; `docker stop -t` must exceed daemon.grace_s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=60s --timeout=15s --start-period=15m --retries=3 \
    CMD ["inventory", "status", "--limit", "1"]

ENTRYPOINT ["inventory", "run"]
