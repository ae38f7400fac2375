# syntax=docker/dockerfile:1
# shopapi: gunicorn + Falcon. Build: `docker build -t shopapi .`; run with docker-compose.yml.
# One image, two process types: the API (the default command) and the background worker
# (`python -m shopapi.cli worker`, its /metrics on 9101).

# ---- build: a virtualenv holding only the runtime dependencies ----------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml ./
# The dependencies come straight from pyproject.toml's [project] table. The project itself is
# not installed: the app finds sql/ next to its package (shopapi/config.py ROOT), so the source
# tree stays as it is in /app and PYTHONPATH points there.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt

# ---- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    PORT=8000
RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin shopapi
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY shopapi/ shopapi/
COPY sql/ sql/
COPY bin/ bin/
COPY gunicorn.conf.py yoyo.ini ./
# bytecode compiled once here (the app user cannot write to /app): faster worker boot
RUN python -m compileall -q shopapi
# the code stays root-owned and read-only to the process
USER shopapi
EXPOSE 8000 9101
# slim has no curl: ask /healthz (liveness, no database) with the standard library
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "shopapi.asgi:app"]
