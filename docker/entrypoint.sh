#!/bin/sh
# Entry point for every container built from docker/Dockerfile.
#
# APP_ROLE says what the container is for:
#   web     apply database migrations, then run the command (gunicorn)
#   worker  run the command (a Celery worker) as it is
# Anything else (or unset) just runs the command, e.g.
#   docker compose -f docker/compose.yml run --rm web python manage.py createsuperuser
set -eu

: "${DATA_DIR:=/data}"
mkdir -p "$DATA_DIR"

if [ "${APP_ROLE:-}" = "web" ]; then
    echo "entrypoint: applying database migrations"
    python manage.py migrate --noinput
    # gunicorn's worker timeout and threads come from the same settings Django reads
    # (config/env.py: WEB_TIMEOUT, WEB_THREADS), so the system check that keeps /v1's
    # V1_REPLY_TIMEOUT below WEB_TIMEOUT checks the real number. Threaded workers let one
    # process batch concurrent /v1 requests and keep serving pages while some generate.
    # Options given on the command line still win over these.
    GUNICORN_CMD_ARGS="--timeout=${WEB_TIMEOUT:-60} --worker-class=gthread --threads=${WEB_THREADS:-8} ${GUNICORN_CMD_ARGS:-}"
    export GUNICORN_CMD_ARGS
fi

exec "$@"
