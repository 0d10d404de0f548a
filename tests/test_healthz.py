import errno
from unittest import mock

from django.db import OperationalError, connections


def test_healthz_is_ok_when_database_and_broker_answer(client, db):
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_healthz_names_the_broker_when_it_cannot_be_reached(client, db, unreachable_broker):
    answer = client.get("/healthz")

    assert answer.status_code == 503
    refused = f"Error {errno.ECONNREFUSED} connecting to 127.0.0.1:1. Connection refused."
    assert answer.json() == {
        "status": "unavailable",
        "problems": {"broker": f"OperationalError: {refused}"},
    }


def test_healthz_names_the_database_when_a_query_fails(client, db):
    refused = OperationalError("connection refused")

    with mock.patch.object(connections["default"], "cursor", side_effect=refused):
        answer = client.get("/healthz")

    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "problems": {"database": "OperationalError: connection refused"},
    }
