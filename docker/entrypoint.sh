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
fi

exec "$@"
