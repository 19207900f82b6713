"""What routes receive by name: the process's engine, outbox relay, tokens and metrics, and the caller's identity.

`principal` is a provider's user or an admin with MFA (the route then applies its ownership rule); `provider` is
a provider's user only; `admin` is an admin with MFA (`otp` in `amr`), the one rule for every admin route, read
or write. Each answers 401 or 403 before the route reads its body.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.accounts import AuthenticatedSource, SourceKeys
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay
from ingest_gateway.settings import Settings
from ingest_gateway.submissions import MAX_BATCH, GroupCommit, Intake
from libs.auth import Tokens, TotpSecrets, admin_principal, provider_principal, user_principal
from libs.auth.login import THROTTLE_SCOPE, Lockout
from libs.ratelimit import RateLimiter
from libs.web import constant


def build_dependencies(
    settings: Settings, engine: AsyncEngine, relay: Relay, tokens: Tokens, metrics: GatewayMetrics
) -> dict[str, Provide]:
    # A lead waits to be taken into a batch as long as a checkout waits for a pooled connection (libs.db).
    commits = GroupCommit(
        engine, max_batch=MAX_BATCH, wait_s=settings.health_check_timeout_s * 2, stored=metrics.leads_submitted
    )
    intake = Intake(commits, SourceKeys(engine, settings.api_key_cache_ttl_s), relay, metrics)

    # The intake comes in as the source's own dependency: Litestar resolves the dependencies of one level in a
    # task group per request, and two levels of one each in turn (measured: the task group of the lead route's
    # four dependencies was 7% of the gateway's CPU per lead).
    async def lead_source(request: Request[Any, Any, Any], intake: NamedDependency[Intake]) -> AuthenticatedSource:
        api_key = request.headers.get("x-api-key")
        if not api_key:
            raise NotAuthorizedException("missing X-API-Key header")
        source = await intake.keys.source_for(api_key)
        if source is None:
            raise NotAuthorizedException("unknown API key")
        return source

    return {
        "settings": constant(settings),
        "engine": constant(engine),
        "relay": constant(relay),
        "tokens": constant(tokens),
        "metrics": constant(metrics),
        "intake": constant(intake),
        "totp": constant(TotpSecrets.from_settings(settings)),
        "lockout": constant(Lockout.from_settings(settings)),
        "throttle": constant(RateLimiter(engine, THROTTLE_SCOPE, settings.login_attempts_per_minute)),
        "principal": Provide(user_principal(tokens)),
        "admin": Provide(admin_principal(tokens)),
        "provider": Provide(provider_principal(tokens)),
        "lead_source": Provide(lead_source),
    }
