"""The health check: can this process reach its database and its broker, and does a worker
answer for every queue?

It belongs to the deployment, not to any feature, so it lives beside the settings and the
Celery app it checks.

Status semantics: 503 only when this process cannot do its own work (the database or the
broker is unreachable), so a load balancer takes it out of rotation; a queue that no worker
answered for is reported in the body ("status": "degraded") with 200, since restarting the
web server would not bring a worker back.

The broker and worker checks run in a daemon thread that the request waits for at most
LIMIT_S seconds: a broker that accepts connections and never answers (a paused Redis) makes
healthz say so, not hang. Socket timeouts end that thread soon after.
"""

import threading

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET
from kombu.pidbox import Mailbox

from config.celery import app as celery_app

QUEUES = ("gpu", "interactive", "default")
BROKER_TIMEOUT_S = 2.0  # connecting, and each read or write on the broker's socket
WORKER_REPLY_S = 1.0  # how long workers get to answer the broadcast
LIMIT_S = 4.0  # healthz answers within this (plus the database check), whatever the broker does


@require_GET
def healthz(request):
    broker_check = _BrokerCheck()
    broker_check.start()  # runs while the database is checked here
    problems = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        problems["database"] = f"{type(error).__name__}: {error}"
    broker_check.join(timeout=LIMIT_S)
    body = {}
    if broker_check.is_alive():
        problems["broker"] = f"The broker did not answer within {LIMIT_S:g}s."
    elif broker_check.error is not None:
        problems["broker"] = broker_check.error
    else:
        body["queues"] = broker_check.workers
        missing = [queue for queue, workers in broker_check.workers.items() if not workers]
        if missing:
            body["warnings"] = {
                queue: f"No worker consuming this queue answered within {WORKER_REPLY_S:g}s."
                for queue in missing
            }
    if problems:
        return JsonResponse({"status": "unavailable", "problems": problems, **body}, status=503)
    return JsonResponse({"status": "degraded" if "warnings" in body else "ok", **body})


class _BrokerCheck(threading.Thread):
    """Connect to the broker, then ask every worker which queues it consumes.

    Afterwards either ``error`` holds why the broker could not be used, or ``workers`` maps
    each of QUEUES to the sorted names of the workers that answered for it.
    """

    def __init__(self):
        super().__init__(name="healthz-broker", daemon=True)  # never holds up shutdown
        self.error: str | None = None
        self.workers: dict[str, list[str]] = {}

    def run(self):
        try:
            with celery_app.connection_for_write(
                connect_timeout=BROKER_TIMEOUT_S, transport_options=_socket_timeouts()
            ) as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
                replies = _ask_workers(conn, "active_queues")
        except Exception as error:  # kombu raises several unrelated types for "no broker"
            self.error = f"{type(error).__name__}: {error}"
            return
        consumers = {queue: [] for queue in QUEUES}
        for worker, queues in replies.items():
            for queue in queues:
                if queue.get("name") in consumers:
                    consumers[queue["name"]].append(worker)
        self.workers = {queue: sorted(workers) for queue, workers in consumers.items()}


def _ask_workers(conn, command: str) -> dict:
    """Broadcast a control command on ``conn`` and collect the replies for WORKER_REPLY_S,
    as ``app.control.inspect(...)`` does, but publishing on this connection: inspect goes
    through the app's shared producer pool, whose connections have no socket timeouts, so a
    silent broker would leave a pooled producer stuck for every later task send."""
    mailbox = Mailbox(
        celery_app.conf.control_exchange,
        type="fanout",
        accept=celery_app.conf.accept_content,
        serializer=celery_app.conf.task_serializer,
        producer_pool=None,
        queue_ttl=celery_app.conf.control_queue_ttl,
        reply_queue_ttl=celery_app.conf.control_queue_ttl,
        queue_expires=celery_app.conf.control_queue_expires,
        reply_queue_expires=celery_app.conf.control_queue_expires,
    )
    replies = mailbox(conn)._broadcast(command, reply=True, timeout=WORKER_REPLY_S)
    return {worker: answer for reply in replies or () for worker, answer in reply.items()}


def _socket_timeouts() -> dict:
    """Transport options that stop a silent broker from blocking a read forever."""
    url = celery_app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        return {"socket_timeout": BROKER_TIMEOUT_S, "socket_connect_timeout": BROKER_TIMEOUT_S}
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return {"read_timeout": BROKER_TIMEOUT_S, "write_timeout": BROKER_TIMEOUT_S}
    return {}
