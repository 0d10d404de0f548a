"""Abuse limits (issue 14): sign-in lockout (django-axes), request rates on /api and /v1
(config/throttles.py), and a password reset by mail that works and is rate-limited."""

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core import mail
from django.db.models import F

from annotation.models import Role
from tests.factories import PASSWORD, make_member, make_user

WRONG = "not-the-password"


def _log_in(client, username, password):
    return client.post("/login/", {"username": username, "password": password})


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def rates(settings):
    """Set some request rates for one test (read on each request, see config/throttles.py)."""

    def _set(**scopes):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **scopes,
            },
        }

    return _set


# --- sign-in lockout ---------------------------------------------------------------------


def test_wrong_passwords_lock_the_account_here_until_the_cool_off_ends(client, db):
    make_user("victim")

    answers = [_log_in(client, "victim", WRONG) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4  # the form again, with its error
    assert _log_in(client, "victim", WRONG).status_code == 429  # the 5th: locked out

    refused = _log_in(client, "victim", PASSWORD)  # the right password, while locked out

    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "Try again in 15 minutes" in refused.content.decode()
    assert int(refused["Retry-After"]) == 15 * 60
    assert not _signed_in(client)

    # Sixteen minutes later (the recorded failures moved back in time; cool-off is 15).
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))
    answer = _log_in(client, "victim", PASSWORD)

    assert answer.status_code == 302
    assert _signed_in(client)
    assert AccessAttempt.objects.count() == 0  # a right password clears the count


def test_one_accounts_failures_do_not_lock_out_another_user_from_the_same_address(client, db):
    make_user("victim")
    make_user("colleague")
    for _ in range(6):
        _log_in(client, "victim", WRONG)
    assert _log_in(client, "victim", PASSWORD).status_code == 429

    answer = _log_in(client, "colleague", PASSWORD)

    assert answer.status_code == 302
    assert _signed_in(client)


def test_a_lockout_from_one_address_does_not_lock_the_account_elsewhere(client, db):
    make_user("victim")
    for _ in range(6):
        _log_in(client, "victim", WRONG)  # a stranger guessing from 127.0.0.1
    assert _log_in(client, "victim", PASSWORD).status_code == 429

    answer = client.post(
        "/login/", {"username": "victim", "password": PASSWORD}, REMOTE_ADDR="203.0.113.7"
    )

    assert answer.status_code == 302
    assert _signed_in(client)


def test_a_right_password_clears_earlier_typos(client, db):
    make_user("typist")
    for _ in range(4):
        _log_in(client, "typist", WRONG)
    assert _log_in(client, "typist", PASSWORD).status_code == 302
    client.logout()

    for _ in range(4):
        assert _log_in(client, "typist", WRONG).status_code == 200
    assert _log_in(client, "typist", PASSWORD).status_code == 302


# --- /api request rate -------------------------------------------------------------------


def test_the_api_answers_429_with_retry_after_past_the_users_rate(client, rates, project):
    rates(user="3/min")
    client.force_login(make_member(project, Role.LABELER, "busy"))

    answers = [client.get("/api/projects/") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 0 < int(answers[-1]["Retry-After"]) <= 60
    assert "throttled" in answers[-1].json()["detail"].lower()


def test_the_api_rate_is_per_user(client, rates, project):
    rates(user="2/min")
    client.force_login(make_member(project, Role.LABELER, "first"))
    assert [client.get("/api/projects/").status_code for _ in range(3)] == [200, 200, 429]

    client.force_login(make_member(project, Role.LABELER, "second"))

    assert client.get("/api/projects/").status_code == 200


# --- /v1 request rate: per API key and per user ------------------------------------------


def _new_api_key(client, user, project) -> str:
    """A key made the way users make one: a POST on the API key page (a named key for the
    project's workspace; the page shows the secret once)."""
    client.force_login(user)
    page = client.post(
        "/account/api-key/", {"name": "script", "workspace": getattr(project, "workspace_id", "")}
    )
    client.logout()
    assert page.status_code == 200
    shown = page.context["secret"] if "secret" in page.context else page.context["key"]
    return getattr(shown, "key", shown)


def _assert_openai_rate_limit(answer):
    assert answer.status_code == 429
    assert 0 < int(answer["Retry-After"]) <= 60
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "throttled" in error["message"].lower()


def test_v1_answers_429_in_openais_shape_past_a_keys_rate(client, rates, project):
    rates(v1_key="2/min")
    user = make_member(project, Role.LABELER, "api-user")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {_new_api_key(client, user, project)}"}

    answers = [client.get("/v1/models", **bearer) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    _assert_openai_rate_limit(answers[2])
    # The key's limit is the key's: the same user signed in on the site is not held up.
    client.force_login(user)
    assert client.get("/v1/models").status_code == 200


def test_v1_counts_a_users_key_and_session_together_against_the_users_rate(client, rates, project):
    rates(v1_user="3/min")
    user = make_member(project, Role.LABELER, "api-user")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {_new_api_key(client, user, project)}"}
    other = make_member(project, Role.LABELER, "other")
    other_bearer = {"HTTP_AUTHORIZATION": f"Bearer {_new_api_key(client, other, project)}"}

    assert client.get("/v1/models", **bearer).status_code == 200
    assert client.get("/v1/models", **bearer).status_code == 200
    client.force_login(user)
    assert client.get("/v1/models").status_code == 200
    _assert_openai_rate_limit(client.get("/v1/models"))
    client.logout()
    _assert_openai_rate_limit(client.get("/v1/models", **bearer))

    assert client.get("/v1/models", **other_bearer).status_code == 200


# --- password reset ----------------------------------------------------------------------


def _ask_for_reset(client, email):
    return client.post("/password-reset/", {"email": email}, follow=True)


def test_a_password_reset_by_mail_sets_a_new_password(client, db):
    make_user("forgetful", email="forgetful@example.com")
    assert 'href="/password-reset/"' in client.get("/login/").content.decode()

    sent = _ask_for_reset(client, "forgetful@example.com")

    assert sent.status_code == 200
    assert "Check your mail" in sent.content.decode()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["forgetful@example.com"]
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", mail.outbox[0].body)[1]

    form = client.get(link, follow=True)  # Django moves the token out of the address
    assert "Set a new password" in form.content.decode()
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-brand-new-secret-42", "new_password2": "a-brand-new-secret-42"},
        follow=True,
    )

    assert "Your new password is set" in done.content.decode()
    assert _log_in(client, "forgetful", PASSWORD).status_code == 200  # the old one: refused
    assert not _signed_in(client)
    assert _log_in(client, "forgetful", "a-brand-new-secret-42").status_code == 302
    assert _signed_in(client)
    client.logout()
    used_again = client.get(link, follow=True)
    assert "has been used already or has expired" in used_again.content.decode()


def test_an_unknown_email_gets_the_same_page_and_no_mail(client, db):
    make_user("someone", email="someone@example.com")

    answer = _ask_for_reset(client, "nobody@example.com")

    assert answer.status_code == 200
    assert "Check your mail" in answer.content.decode()
    assert mail.outbox == []


def test_reset_mails_are_rate_limited_per_address(client, rates, db):
    rates(password_reset="2/hour")
    make_user("someone", email="someone@example.com")

    answers = [_ask_for_reset(client, f"person{i}@example.com") for i in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Too many password reset requests" in answers[2].content.decode()
    assert 0 < int(answers[2]["Retry-After"]) <= 3600
    # From another address, but for the same mailbox too often: refused as well.
    for _ in range(2):
        client.post("/password-reset/", {"email": "someone@example.com"}, REMOTE_ADDR="10.0.0.9")
    refused = client.post(
        "/password-reset/", {"email": "someone@example.com"}, REMOTE_ADDR="10.0.0.8"
    )
    assert refused.status_code == 429
    assert len(mail.outbox) == 2
