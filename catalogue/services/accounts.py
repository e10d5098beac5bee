"""A person's API token: the key a script sends as ``Authorization: Token <key>``."""

from __future__ import annotations

from rest_framework.authtoken.models import Token


def api_token(user) -> str | None:
    """The user's API token, or None before one was made."""
    found = Token.objects.filter(user=user).first()
    return found.key if found else None


def make_api_token(user) -> str:
    """A new token for the user; the old one, if any, stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user).key


def revoke_api_token(user) -> None:
    """The user's token stops working; scripts need a new one."""
    Token.objects.filter(user=user).delete()
