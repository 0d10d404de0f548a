"""The API's OpenAPI schema (/api/schema/) and its Swagger UI page (/api/docs/): signed-in
users only, every /api and /v1 operation described, valid, and the page's assets served
from our static files. tests/test_api_fuzz.py checks the API against it."""

import json

from django.core.management import call_command


def test_the_schema_and_docs_need_a_signed_in_user(client):
    assert client.get("/api/schema/").status_code == 401
    assert client.get("/api/schema.json").status_code == 401
    docs = client.get("/api/docs/")
    assert docs.status_code == 302
    assert docs["Location"].startswith("/login/")


def test_any_signed_in_user_reads_the_schema(client, outsider):
    client.force_login(outsider)

    yaml = client.get("/api/schema/")
    as_json = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    schema = client.get("/api/schema.json").json()

    assert yaml.status_code == 200
    assert yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    assert json.loads(as_json.content) == schema
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Loop API"
    assert {"/api/projects/", "/v1/chat/completions", "/v1/rewards"} <= set(schema["paths"])
    assert "/v1/{rest}" not in schema["paths"]  # the catch-all 404 is no operation
    assert {"bearerAuth", "tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_errors_are_described_in_each_apis_shape(client, outsider):
    client.force_login(outsider)
    paths = client.get("/api/schema.json").json()["paths"]

    v1 = paths["/v1/chat/completions"]["post"]["responses"]["400"]
    api = paths["/api/projects/{slug}/battles/"]["post"]["responses"]["403"]

    assert v1["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert api["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")


def test_the_docs_page_loads_swagger_ui_from_our_static_files(client, outsider):
    client.force_login(outsider)

    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr" not in html
    assert "/api/schema/" in html


def test_an_api_path_no_route_matches_answers_json(client, outsider):
    client.force_login(outsider)

    answer = client.get("/api/projects/x/battles/-1/")

    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not found."}
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")


def test_the_schema_is_valid_and_every_view_is_described(tmp_path):
    """Every API view states its request and answers (no guessing, no warning)."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
