"""The OpenAPI schema's shared parts (drf-spectacular): the API keys' security schemes
(``Token`` on /api, ``Bearer`` on /v1), and the error answers every operation can give,
added by one postprocessing hook instead of a decorator on each view.

/api errors are DRF's: ``{"detail": "..."}``, or for a refused body the serializer's
``{"field": ["message", ...]}`` (config/api_errors.py). /v1 errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}`` (models_registry/openai_api.py)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

# Answers built from payload dicts (the views' *_payload functions), described as objects.
OBJECT = {"type": "object", "additionalProperties": {}}
OBJECT_LIST = {"type": "array", "items": OBJECT}

# Answers any operation may give besides its own: bad input, no or wrong credentials,
# a role or project the caller lacks, an unknown object, a method the route lacks, a
# conflicting state, a body the parsers refuse (too large, wrong media type), throttling,
# and the broker being down for routes that queue work.
ERROR_STATUSES = {
    "400": "The request was refused; the body says why.",
    "401": "No credentials, or wrong ones.",
    "403": "The caller may not do this (role, project membership).",
    "404": "No such object, or one the caller may not see.",
    "405": "The route does not take this method.",
    "409": "The object's state does not allow this now.",
    "413": "The body is too large.",
    "415": "The body's media type is not accepted.",
    "406": "The Accept header asks for a media type the route does not give.",
    "429": "Too many requests; retry later.",
    "503": "A service it needs (the job queue, a model) is unavailable; retry later.",
}
# /v1 also answers 502 when the inference server a version is registered on fails.
OPENAI_EXTRA_STATUSES = {"502": "The model's inference server failed."}

API_ERROR = {
    "type": "object",
    "description": '`{"detail": "..."}`, or for a refused body `{"<field>": ["<message>"]}`.',
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
OPENAI_ERROR = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """/api's ``Authorization: Token <key>`` (a key from the API key page; ``Bearer`` works
    too)."""

    target_class = "models_registry.authentication.ApiKeyAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        prefix = self.target.keyword  # "Token"
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix=prefix)


class BearerKeyScheme(OpenApiAuthenticationExtension):
    """/v1's ``Authorization: Bearer <key>``, OpenAI's way to send the same keys."""

    target_class = "models_registry.authentication.BearerApiKeyAuthentication"
    match_subclasses = True
    name = "bearerAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        prefix = self.target.keyword  # "Bearer"
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix=prefix)


# drf-spectacular leaves out a list serializer's allow_empty=False; /v1 refuses empty
# messages and inputs (400), so the schema says minItems 1 for them.
NON_EMPTY_LISTS = {
    "ChatCompletionRequest": [("messages",)],
    "RewardInputRequest": [("input",), ("input", "items")],
}


def mark_non_empty_lists(result, generator, request, public):
    schemas = result.get("components", {}).get("schemas", {})
    for component, paths in NON_EMPTY_LISTS.items():
        for path in paths:
            node = schemas.get(component, {}).get("properties", {}).get(path[0])
            for step in path[1:]:
                node = (node or {}).get(step)
            if node is not None and node.get("type") == "array":
                node["minItems"] = 1
    return result


def add_error_responses(result, generator, request, public):
    """Document the error answers of every operation, in /api's or /v1's shape."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["ApiError"] = API_ERROR
    schemas["OpenAIError"] = OPENAI_ERROR
    for path, operations in result.get("paths", {}).items():
        openai = path.startswith("/v1/")
        statuses = {**ERROR_STATUSES, **(OPENAI_EXTRA_STATUSES if openai else {})}
        ref = {"$ref": f"#/components/schemas/{'OpenAIError' if openai else 'ApiError'}"}
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in statuses.items():
                operation["responses"].setdefault(
                    status,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
    return result
