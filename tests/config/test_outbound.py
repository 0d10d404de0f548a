"""Outbound calls to URLs users give (config/outbound.py): a judge's endpoint and a model
version's server reach public addresses only unless OUTBOUND_ALLOW_PRIVATE, checked when
stored and again right before connecting, and nothing a remote answers reaches a log."""

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from annotation.judges import jobs, services
from annotation.judges.backends import BackendError, RemoteBackend
from annotation.models import Judge, JudgeJob, Role
from config.outbound import OutboundRefused, check_outbound_url, checked_address
from models_registry.endpoints import generator_for, serving_endpoint_set
from models_registry.engine import ml
from models_registry.engine.backends import GenerationBackendError, OpenAIServerGenerator
from models_registry.models import ModelVersion
from tests.annotation.judges.fake_endpoint import Answer, FakeEndpoint, completion
from tests.factories import make_member, make_task, make_version

KEY = "sk-outbound-secret-key-0123456789"
SECRET_BODY = "internal-db-password=hunter2-do-not-leak"
GREEDY = ml.GenerationParams(max_new_tokens=4, temperature=1.0, top_p=1.0, do_sample=False)


@pytest.fixture(autouse=True)
def _private_refused(settings):
    # tests/conftest.py allows private addresses for the suite's fake servers; not here.
    settings.OUTBOUND_ALLOW_PRIVATE = False


# --- the check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/v1",
        "http://127.8.9.10/v1",
        "http://[::1]:8000/v1",
        "http://10.0.0.5/v1",
        "http://172.16.3.4/v1",
        "http://192.168.1.1/v1",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/v1",
        "http://[fc00::1]/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://[::ffff:10.0.0.1]/v1",
        "http://0.0.0.0:8000/v1",
        "http://[::]/v1",
        "http://224.0.0.1/v1",
        "http://240.0.0.1/v1",
        "http://100.64.0.1/v1",
        "http://localhost:8000/v1",
    ],
)
def test_loopback_link_local_private_and_reserved_addresses_are_refused(url):
    with pytest.raises(OutboundRefused, match="OUTBOUND_ALLOW_PRIVATE"):
        check_outbound_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["https://8.8.8.8/v1", "http://[2001:4860:4860::8888]/v1"])
def test_a_public_address_is_allowed(url):
    check_outbound_url(url, allow_private=False)


def test_private_addresses_are_allowed_when_the_operator_says_so():
    check_outbound_url("http://127.0.0.1:9/v1", allow_private=True)
    assert checked_address("localhost", 80, allow_private=True) in ("127.0.0.1", "::1")


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time():
    with pytest.raises(OutboundRefused, match="loopback"):
        checked_address("localhost", 80, allow_private=False)


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///v1", "http://[::1/v1", "x"])
def test_what_is_not_an_http_url_is_refused(url):
    with pytest.raises(OutboundRefused):
        check_outbound_url(url, allow_private=True)


# --- judges -------------------------------------------------------------------------------


def test_the_api_refuses_a_judge_on_a_loopback_endpoint_and_stores_nothing(
    login, admin_member, project
):
    constitution = services.ensure_default_constitution()

    answer = login(admin_member).post(
        f"/api/projects/{project.slug}/judges/",
        {
            "name": "sneaky",
            "backend": "remote",
            "constitution": constitution.pk,
            "endpoint_url": "http://127.0.0.1:9/v1",
            "endpoint_model": "m",
        },
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert "loopback" in answer.json()["detail"]
    assert "OUTBOUND_ALLOW_PRIVATE" in answer.json()["detail"]
    assert not Judge.objects.exists()


def test_a_judge_whose_name_resolves_to_loopback_later_is_refused_before_connecting():
    # Stored while allowed (or while its name pointed elsewhere); checked again per request.
    backend = RemoteBackend("http://localhost:9/v1", "m", KEY, max_retries=0)

    with pytest.raises(BackendError, match="loopback") as raised:
        backend.complete([{"role": "user", "content": "hi"}])

    assert raised.value.retryable is False


def test_a_judge_does_not_follow_a_redirect(settings):
    with FakeEndpoint(lambda n, p: Answer(302, {"to": "elsewhere"})) as endpoint:
        backend = RemoteBackend(endpoint.url, "m", KEY, max_retries=0, allow_private=True)
        with pytest.raises(BackendError, match="HTTP 302") as raised:
            backend.complete([{"role": "user", "content": "hi"}])

    assert len(endpoint.hits) == 1
    assert "redirect" in raised.value.message


def test_a_failing_endpoints_body_never_reaches_the_job_log_or_error(
    settings, project, admin_member
):
    settings.OUTBOUND_ALLOW_PRIVATE = True  # the fake endpoint listens on loopback
    settings.AI_JUDGE_MAX_RETRIES = 1
    settings.AI_JUDGE_BACKOFF_S = 0.01
    for i in range(2):
        make_task(project, texts=(f"good {i}", f"bad {i}"))
    constitution = services.ensure_default_constitution()

    body = f"{SECRET_BODY} Authorization: Bearer {KEY}".encode()
    with FakeEndpoint(lambda n, p: Answer(500, body)) as endpoint:
        judge = services.judge_create(
            workspace=project.workspace,
            name="leaky",
            backend="remote",
            constitution=constitution,
            endpoint_url=endpoint.url,
            endpoint_model="m",
            api_key=KEY,
        )
        job = jobs.judge_job_start(
            project=project, judge=judge, kind="pairwise", options={}, max_requests=50
        )
        jobs.judge_job_execute(job_id=job.pk)

    job = JudgeJob.objects.get(pk=job.pk)
    assert job.status == "failed"
    assert "HTTP 500" in job.error
    for text in (job.error, job.log):
        assert SECRET_BODY not in text
        assert KEY not in text


# --- model servers ------------------------------------------------------------------------


def test_a_version_cannot_be_served_from_a_private_address(db):
    version = make_version("policy", kind=ModelVersion.Kind.POLICY)

    for url in ("http://127.0.0.1:8000/v1", "http://169.254.169.254/v1", "http://[::1]/v1"):
        with pytest.raises(Exception, match="refused") as raised:
            serving_endpoint_set(version=version, url=url, served_model_name="m")
        assert "OUTBOUND_ALLOW_PRIVATE" in str(raised.value)

    version.refresh_from_db()
    assert version.serving_url == ""


def test_a_model_server_whose_name_resolves_to_loopback_is_refused_before_connecting(db):
    version = make_version("policy", kind=ModelVersion.Kind.POLICY)
    version.serving_url, version.served_model_name = "http://localhost:9/v1", "m"

    with pytest.raises(GenerationBackendError, match="loopback"):
        generator_for(version, timeout_s=2).generate([[{"role": "user", "content": "hi"}]], GREEDY)


class _Redirecting(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        self.send_response(307)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", str(len(SECRET_BODY)))
        self.end_headers()
        self.wfile.write(SECRET_BODY.encode())

    def log_message(self, *args):
        pass


def test_a_checked_model_server_follows_no_redirect_and_echoes_no_body():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        generator = OpenAIServerGenerator(
            url,
            "m",
            KEY,
            timeout_s=5,
            connect_check=lambda host, port: checked_address(host, port, allow_private=True),
        )
        with pytest.raises(GenerationBackendError) as raised:
            generator.generate([[{"role": "user", "content": "hi"}]], GREEDY)
    finally:
        server.shutdown()
        server.server_close()

    assert str(raised.value) == f"model server {url} answered HTTP 307 (a redirect, not followed)"


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    """The name is looked up once per connection, by the check, and the connection goes to
    the address the check passed: a second lookup (which a rebinding DNS server could
    answer with another address) never happens."""
    lookups = []
    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            lookups.append(host)  # a name: a DNS question
        else:
            return real(host, port, *args, **kwargs)  # a literal: no DNS
        if host == "pinned.example" and len(lookups) == 1:
            return real("127.0.0.1", port, *args, **kwargs)
        raise socket.gaierror("a second lookup: a rebinding server could answer anything")

    reply = completion("(A) is better")
    with FakeEndpoint(lambda n, p: Answer(body=reply)) as endpoint:
        port = endpoint.url.split(":")[2].split("/")[0]
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        backend = RemoteBackend(
            f"http://pinned.example:{port}/v1", "m", KEY, max_retries=0, allow_private=True
        )
        text = backend.complete([{"role": "user", "content": "hi"}])

    assert text == "(A) is better"
    assert lookups == ["pinned.example"]
    assert len(endpoint.hits) == 1


def test_a_member_cannot_point_a_judge_at_the_metadata_service(login, project):
    admin = make_member(project, Role.ADMIN, "judge-admin")
    constitution = services.ensure_default_constitution()

    answer = login(admin).post(
        f"/api/projects/{project.slug}/judges/",
        {
            "name": "metadata",
            "backend": "remote",
            "constitution": constitution.pk,
            "endpoint_url": "http://169.254.169.254/latest/",
            "endpoint_model": "m",
        },
        content_type="application/json",
    )

    assert answer.status_code == 400
    assert "link-local" in answer.json()["detail"]
    assert not Judge.objects.exists()
