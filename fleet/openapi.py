"""The API's OpenAPI description: the shared parameters and error responses, added to every operation."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.permissions import AllowAny

from fleet.api import ErrorSerializer

SINCE_UNTIL = [
    OpenApiParameter(
        "since", OpenApiTypes.STR, description="Inclusive lower bound: ISO 8601 datetime or Unix seconds."
    ),
    OpenApiParameter(
        "until", OpenApiTypes.STR, description="Exclusive upper bound: ISO 8601 datetime or Unix seconds."
    ),
]


def error(description: str) -> OpenApiResponse:
    """An error response in the schema; say which codes it carries."""
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(SpectacularAutoSchema):
    """Documents the errors every endpoint can give (401/403 when private, 429 when throttled, 404 on ids)."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in self._common_errors():
            if code not in responses:
                responses[code] = self._get_response_for_code(error(description), code, direction=direction)
        return responses

    def _common_errors(self) -> list[tuple[str, str]]:
        errors = []
        if "{" in self.path:
            errors.append(("404", "`not_found` or a more specific code: nothing at this address."))
        if not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            errors.append(("401", "`not_authenticated` or `authentication_failed`; see `WWW-Authenticate: Token`."))
            errors.append(("403", "`permission_denied`: authenticated, but not allowed."))
        if self.view.get_throttles():
            errors.append(("429", "`throttled`; `Retry-After` says when to come back."))
        return errors
