"""Who may call what: the bearer token of a request, and the role and ownership rules of the APIs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from libs.auth.principals import Principal
from libs.auth.tokens import Tokens


def bearer_principal(connection: ASGIConnection[Any, Any, Any, Any], tokens: Tokens) -> Principal:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("missing bearer token")
    return tokens.verify(token.strip())


def require_admin(principal: Principal, *, mfa: bool = True) -> None:
    if principal.role != "admin":
        raise PermissionDeniedException("admin role required")
    if mfa and not principal.has_mfa:
        raise PermissionDeniedException("multi-factor authentication required (amr must contain otp)")


def require_provider_or_admin(principal: Principal, provider_id: uuid.UUID) -> None:
    """A provider sees only its own data; an admin sees all, under the same MFA rule as for admin writes."""
    if principal.role == "admin":
        require_admin(principal, mfa=True)
        return
    if principal.provider_id is None or principal.provider_id != provider_id:
        raise PermissionDeniedException("a provider may only access its own data")


def user_principal(tokens: Tokens) -> Callable[[Request[Any, Any, Any]], Awaitable[Principal]]:
    """A dependency for APIs that providers and admins share: any valid token, but an admin's only with MFA
    (an admin may do nothing without it, read or write); 401 or 403 otherwise. Ownership is the route's rule."""

    async def principal(request: Request[Any, Any, Any]) -> Principal:
        caller = bearer_principal(request, tokens)
        if caller.role == "admin":
            require_admin(caller, mfa=True)
        return caller

    return principal


def provider_principal(tokens: Tokens) -> Callable[[Request[Any, Any, Any]], Awaitable[Principal]]:
    """A dependency for what only a provider does (report its own leads): 401 without a valid token, 403 for
    anyone but a provider's user."""

    async def principal(request: Request[Any, Any, Any]) -> Principal:
        caller = bearer_principal(request, tokens)
        if caller.role != "provider" or caller.provider_id is None:
            raise PermissionDeniedException("only a provider's user may do this")
        return caller

    return principal


def admin_principal(tokens: Tokens) -> Callable[[Request[Any, Any, Any]], Awaitable[Principal]]:
    """A dependency for admin APIs: the caller, when an admin with MFA; 401 or 403 otherwise."""

    async def principal(request: Request[Any, Any, Any]) -> Principal:
        caller = bearer_principal(request, tokens)
        require_admin(caller, mfa=True)
        return caller

    return principal
