"""REST API authentication: DRF's API tokens, sent as `Token <key>` or, like robots send theirs, `Bearer <key>`."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.authentication import get_authorization_header


class TokenOrBearerAuthentication(authentication.TokenAuthentication):
    """DRF's TokenAuthentication that also accepts the `Bearer` keyword.

    Robots authenticate with `Authorization: Bearer`, so people try it on the API too; DRF would
    ignore that header and answer "credentials were not provided", which misleads. `Token` stays
    the advertised keyword (WWW-Authenticate, the API docs).
    """

    keywords = ("Token", "Bearer")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in {keyword.lower().encode() for keyword in self.keywords}:
            return None
        if len(auth) == 1:
            raise exceptions.AuthenticationFailed("Invalid token header. No credentials provided.")
        if len(auth) > 2:
            raise exceptions.AuthenticationFailed("Invalid token header. Token string should not contain spaces.")
        try:
            key = auth[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                "Invalid token header. Token string should not contain invalid characters."
            ) from None
        return self.authenticate_credentials(key)
