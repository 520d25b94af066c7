# syntax=docker/dockerfile:1
# HydroNet Cloud production image.
#
#   docker build -t hydronet-cloud .
#   docker run --env-file .env -p 8000:8000 hydronet-cloud                          # web (granian)
#   docker run --env-file .env hydronet-cloud python manage.py migrate_platform     # migrations, once per release
#   docker run --env-file .env hydronet-cloud celery -A config worker -l INFO        # worker
#   docker run --env-file .env hydronet-cloud celery -A config beat -l INFO          # scheduler (one only)
#
# Every setting comes from the environment (see .env.example); SECRET_KEY,
# FIELD_ENCRYPTION_KEYS, DATABASE_URL and REDIS_URL are required at run time.

# --- build: dependencies, compiled translations, collected static files -----
FROM python:3.12-slim-bookworm AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.prod \
    PATH=/opt/venv/bin:$PATH

# gettext provides msgfmt for compilemessages; it is not needed at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

WORKDIR /app
COPY . .
# The settings refuse to load without these; the values are dummies, used only
# by these two commands (neither opens a database or Redis connection), and
# are deliberately not baked into the image as ENV.
RUN export SECRET_KEY=build-only DATABASE_URL=postgres://unused/unused REDIS_URL=redis://unused \
        FIELD_ENCRYPTION_KEYS=YnVpbGQtb25seS1idWlsZC1vbmx5LWJ1aWxkLW9ubHk= \
    && python manage.py compilemessages --ignore=.venv \
    && python manage.py collectstatic --noinput

# --- runtime ----------------------------------------------------------------
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.prod \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# Code, compiled .mo files and staticfiles/ stay owned by root: the app only reads them.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app

USER app

EXPOSE 8000

# /healthz is answered by HealthCheckMiddleware for any Host header, before the
# HTTPS redirect and tenant routing, and does not touch PostgreSQL or Redis.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# granian with WEB_CONCURRENCY workers (default 3) × WEB_THREADS threads (default 16), and an
# access log on stdout. deploy.web execs it, so it is PID 1 and gets `docker stop`'s SIGTERM.
CMD ["python", "-m", "deploy.web", "--bind", "0.0.0.0:8000"]
