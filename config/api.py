"""API plumbing shared by every app: JSON errors and their OpenAPI description (the permission classes are in
annotation.roles)."""

import logging
import re

from django.core.exceptions import SuspiciousOperation, ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiViewExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, parsers, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.web import Refusal

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # ids are 64-bit: a larger number names no row (and SQLite cannot even compare it)


def int64(text: str) -> int | None:
    """A query parameter as a whole number a 64-bit column can hold, or None (not a whole number, or too large)."""
    if not text.isdecimal() or len(text) > len(str(MAX_ID)):  # int() of thousands of digits is itself an error
        return None
    number = int(text)
    return number if number <= MAX_ID else None


MAX_JSON_DEPTH = 100  # of a request body: the deepest the API takes is a few levels (tiers, configs)
SURROGATE = re.compile(r"[\ud800-\udfff]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing with a 400 what would otherwise fail later as a 500: JSON nested deeper than
    MAX_JSON_DEPTH (Python's parser itself gives up near 1,000 levels, with a RecursionError) and text holding an
    unpaired surrogate (``"\\ud800"`` parses, but no database can store it, nor can it be encoded as UTF-8)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.") from None
        problem = json_problem(data)
        if problem:
            raise exceptions.ParseError(f"JSON parse error - {problem}.")
        return data


def json_problem(data) -> str | None:
    """Why parsed JSON cannot be taken (too deep, an unpaired surrogate), naming where; None when it can. Iterative."""
    stack = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and (match := SURROGATE.search(value)):
                return f"{path or 'the body'} contains an unpaired surrogate (\\u{ord(match.group()):04x}), which is not valid text"
        elif isinstance(value, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                return f"{path or 'the body'} is nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(value, dict):
                for key, item in value.items():
                    if not key.isascii() and SURROGATE.search(key):
                        return f"a key of {path or 'the body'} contains an unpaired surrogate, which is not valid text"
                    stack.append((item, f"{path}.{key}" if path else key, depth + 1))
            else:
                stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
    return None


def exception_handler(exc, context):
    """DRF's handler, plus the services' refusals: ValidationErrors become 400s, Refusals their own status, and
    values the database refuses (DataError) and input nested too deeply (RecursionError) 400s too."""
    if isinstance(exc, Refusal):
        return Response({"detail": str(exc)}, status=exc.status_code)
    if isinstance(exc, SuspiciousOperation):
        # E.g. a form body with more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS: Django's own 400 is an HTML page.
        logger.warning("%s: %s", context["request"].path, exc)
        return Response({"detail": str(exc) or "Bad request."}, status=400)
    if isinstance(exc, RecursionError):
        # A view with its own parser classes (DRF's token view) parses JSON with DRF's parser: nesting thousands
        # deep ends in Python's recursion limit. Only input does that, so it is the client's 400.
        logger.warning("%s: input nested too deeply (%s)", context["request"].path, exc)
        return Response({"detail": f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep."}, status=400)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": " ".join(exc.messages)}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DataError):
        exc = _refused_by_the_database(exc, context)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    return drf_exception_handler(exc, context)


def _refused_by_the_database(exc: DataError, context) -> exceptions.ValidationError:
    """PostgreSQL refuses some input that SQLite takes, e.g. text holding a NUL character, in a filter or in JSON.
    Such a value comes from the request, so it is the client's 400, not a 500."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
    logger.warning("%s refused by the database: %s", context["request"].path, reason)
    return exceptions.ValidationError({"detail": f"The database cannot take a value of this request ({reason})."})


# --- the errors in the OpenAPI schema ------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error other than invalid input: one message."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


class ValidationErrorSerializer(serializers.Serializer):
    """A 400: field name → messages. Described by the extension below: its keys are the request's fields."""


class _ValidationErrorSchema(OpenApiSerializerExtension):
    target_class = ValidationErrorSerializer

    def map_serializer(self, auto_schema, direction):
        return {
            "type": "object",
            "description": (
                "Invalid input. Each key names a field of the request (or query parameter) and holds its messages: a "
                "list of strings, or an object or list for nested fields. `non_field_errors` holds messages about the "
                "input as a whole; `detail` a single message (e.g. a body that is not valid JSON)."
            ),
            "additionalProperties": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {}},
                    {"type": "object", "additionalProperties": {}},
                ]
            },
            "example": {"projects": ["Object with slug=nope does not exist."], "non_field_errors": ["..."]},
        }


_ERROR_DESCRIPTIONS = {
    400: "Invalid input.",
    401: "No credentials, or wrong ones: send `Authorization: Token <key>` or a session cookie.",
    403: "Your role may not do this.",
    404: "Not found: no such object (or not yours), or no such page of a list.",
    409: "The object's state does not allow this now; the message says why.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The error responses of an endpoint that needs a role: 401 and 403, plus ``codes``."""
    return {
        code: OpenApiResponse(ValidationErrorSerializer if code == 400 else ErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in sorted({401, 403, *codes})
    }


class _ObtainAuthTokenSchema(OpenApiViewExtension):
    """The token endpoint takes no credentials but a username and password, and refuses wrong ones with a 400."""

    target_class = "rest_framework.authtoken.views.ObtainAuthToken"
    match_subclasses = True
    priority = 1  # over drf-spectacular's own extension for this view

    def view_replacement(self):
        from rest_framework.authtoken.serializers import AuthTokenSerializer

        @extend_schema(
            auth=[],
            request=AuthTokenSerializer,
            responses={
                200: AuthTokenSerializer,
                400: OpenApiResponse(ValidationErrorSerializer, description="Missing fields, or a wrong username or password."),
            },
        )
        class ObtainAuthToken(self.target):
            pass

        return ObtainAuthToken

