"""Who may call what, for every route of every service, read from each app's own route table.

Each service is built by its own `build` from settings and started, and every route is called as five callers:
anonymous, a lead source (`X-API-Key`), a provider (its own data), an admin without MFA, an admin with MFA.
A route with no rule in RULES fails the test, and so does a rule naming a route that no longer exists.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from distribution_worker.main import build as build_distribution
from distribution_worker.settings import Settings as DistributionSettings
from dlq_service.main import build as build_dlq
from dlq_service.settings import Settings as DlqSettings
from email_worker.main import build as build_email
from email_worker.settings import Settings as EmailSettings
from export_worker.main import build as build_export
from export_worker.settings import Settings as ExportSettings
from ingest_gateway.accounts import create_lead_source
from ingest_gateway.main import build as build_gateway
from ingest_gateway.settings import Settings as GatewaySettings
from libs.auth import Principal, Role, Tokens
from libs.runtime import SERVICES
from libs.telemetry import setup_telemetry
from scheduler.main import build as build_scheduler
from scheduler.settings import Settings as SchedulerSettings
from tests.conftest import TEST_JWT_SECRET
from tests.services.conftest import settings_for


class Rule(Enum):
    public = "anyone"
    lead_source = "a lead source's API key"
    provider = "a provider, for its own data"
    provider_or_admin = "a provider for its own data, or an admin with MFA"
    admin = "an admin with MFA"
    console_page = "a console session (its own login, with MFA): anyone else is sent to the login page"
    console_form = "a console form with its CSRF token: no token, no entry"


class Caller(Enum):
    anonymous = "anonymous"
    lead_source = "lead source"
    provider = "provider"
    admin_without_mfa = "admin without MFA"
    admin = "admin with MFA"


ALLOWED = 0  # any answer but 401 and 403 (a 404 for an id that does not exist, a 400 for a missing body)
# Who gets in under each rule; everyone else gets the status given.
EXPECTED: dict[Rule, dict[Caller, int]] = {
    Rule.public: dict.fromkeys(Caller, ALLOWED),
    Rule.lead_source: {Caller.anonymous: 401, Caller.lead_source: ALLOWED, Caller.provider: 401,
                       Caller.admin_without_mfa: 401, Caller.admin: 401},
    Rule.provider: {Caller.anonymous: 401, Caller.lead_source: 401, Caller.provider: ALLOWED,
                    Caller.admin_without_mfa: 403, Caller.admin: 403},
    Rule.provider_or_admin: {Caller.anonymous: 401, Caller.lead_source: 401, Caller.provider: ALLOWED,
                             Caller.admin_without_mfa: 403, Caller.admin: ALLOWED},
    Rule.admin: {Caller.anonymous: 401, Caller.lead_source: 401, Caller.provider: 403,
                 Caller.admin_without_mfa: 403, Caller.admin: ALLOWED},
    # No bearer token or API key opens the console: it knows only its own session cookie.
    Rule.console_page: dict.fromkeys(Caller, 303),
    Rule.console_form: dict.fromkeys(Caller, 403),
}  # fmt: skip
CONSOLE_LOGIN = "/console/login"

OPS = {
    ("GET", "/health/live"): Rule.public,
    ("GET", "/health/ready"): Rule.public,
    ("GET", "/metrics"): Rule.public,
}
SCHEMA = {
    ("GET", "/schema"): Rule.public,
    ("GET", "/schema/openapi.json"): Rule.public,
    ("GET", "/schema/openapi.yaml"): Rule.public,
    ("GET", "/schema/{path:str}"): Rule.public,
}
RULES: dict[str, dict[tuple[str, str], Rule]] = {
    "ingest-gateway": OPS | SCHEMA | {
        ("POST", "/api/v1/auth/token"): Rule.public,
        ("POST", "/api/v1/auth/unlocks"): Rule.admin,
        ("POST", "/api/v1/leads"): Rule.lead_source,
        ("POST", "/api/v1/leads/{lead_id:uuid}/approve"): Rule.admin,
        ("POST", "/api/v1/leads/{lead_id:uuid}/reject"): Rule.admin,
        ("POST", "/api/v1/providers"): Rule.admin,
        ("POST", "/api/v1/providers/{provider_id:uuid}/subscriptions"): Rule.admin,
        ("POST", "/api/v1/providers/{provider_id:uuid}/top-ups"): Rule.admin,
        ("GET", "/api/v1/providers/{provider_id:uuid}/balance"): Rule.provider_or_admin,
        ("GET", "/api/v1/providers/{provider_id:uuid}/inbox"): Rule.provider_or_admin,
        ("POST", "/api/v1/assignments/{assignment_id:uuid}/bad-lead-reports"): Rule.provider,
        ("POST", "/api/v1/bad-lead-reports/{report_id:uuid}/approve"): Rule.admin,
        ("POST", "/api/v1/bad-lead-reports/{report_id:uuid}/reject"): Rule.admin,
        ("POST", "/api/v1/reports/exports"): Rule.provider_or_admin,
        ("GET", "/api/v1/reports/exports/{export_id:uuid}"): Rule.provider_or_admin,
        ("GET", "/api/v1/reports/exports/{export_id:uuid}/download"): Rule.provider_or_admin,
    },
    "dlq-service": OPS | SCHEMA | {
        ("GET", "/api/v1/admin/queues"): Rule.admin,
        ("GET", "/api/v1/admin/queues/dlq"): Rule.admin,
        ("GET", "/api/v1/admin/queues/dlq/groups"): Rule.admin,
        ("GET", "/api/v1/admin/queues/dlq/{entry_id:uuid}"): Rule.admin,
        ("DELETE", "/api/v1/admin/queues/dlq/{entry_id:uuid}"): Rule.admin,
        ("POST", "/api/v1/admin/queues/dlq/{entry_id:uuid}/retry"): Rule.admin,
        ("POST", "/api/v1/admin/queues/dlq/retry"): Rule.admin,
        ("GET", "/api/v1/admin/queues/dlq/redrives/{redrive_id:uuid}"): Rule.admin,
        ("POST", "/api/v1/admin/queues/dlq/redrives/{redrive_id:uuid}/cancel"): Rule.admin,
        ("GET", "/api/v1/admin/queues/dlq/parked"): Rule.admin,
        ("POST", "/api/v1/admin/queues/dlq/parked/recapture"): Rule.admin,
        ("GET", "/console/login"): Rule.public,
        ("POST", "/console/login"): Rule.console_form,
        ("POST", "/console/logout"): Rule.console_form,
        ("GET", "/console/static/{file_path:path}"): Rule.public,
        ("HEAD", "/console/static/{file_path:path}"): Rule.public,
        ("GET", "/console"): Rule.console_page,
        ("GET", "/console/overview/live"): Rule.console_page,
        ("GET", "/console/audit"): Rule.console_page,
        ("GET", "/console/dead-letters"): Rule.console_page,
        ("GET", "/console/dead-letters/groups"): Rule.console_page,
        ("POST", "/console/dead-letters/groups/resolve"): Rule.console_form,
        ("GET", "/console/dead-letters/{entry_id:uuid}"): Rule.console_page,
        ("POST", "/console/dead-letters/{entry_id:uuid}/retry"): Rule.console_form,
        ("POST", "/console/dead-letters/{entry_id:uuid}/resolve"): Rule.console_form,
        ("GET", "/console/dead-letters/{entry_id:uuid}/edit"): Rule.console_page,
        ("POST", "/console/dead-letters/{entry_id:uuid}/edit"): Rule.console_form,
        ("GET", "/console/redrives"): Rule.console_page,
        ("POST", "/console/redrives"): Rule.console_form,
        ("GET", "/console/redrives/new"): Rule.console_page,
        ("GET", "/console/redrives/{redrive_id:uuid}"): Rule.console_page,
        ("GET", "/console/redrives/{redrive_id:uuid}/progress"): Rule.console_page,
        ("POST", "/console/redrives/{redrive_id:uuid}/cancel"): Rule.console_form,
        ("GET", "/console/jobs"): Rule.console_page,
        ("POST", "/console/jobs/{name:str}/{action:str}"): Rule.console_form,
    },
    "scheduler": OPS | SCHEMA | {
        ("GET", "/api/v1/admin/jobs"): Rule.admin,
        ("POST", "/api/v1/admin/jobs/{name:str}/run"): Rule.admin,
        ("POST", "/api/v1/admin/jobs/{name:str}/pause"): Rule.admin,
        ("POST", "/api/v1/admin/jobs/{name:str}/resume"): Rule.admin,
    },
    "distribution-worker": OPS,
    "email-worker": OPS,
    "export-worker": OPS,
}  # fmt: skip
# Litestar answers OPTIONS on every path by itself (which methods exist): a preflight carries no credentials.
PREFLIGHT = "OPTIONS"

Build = Callable[[Any, Any], tuple[Litestar, Any]]
BUILDS: dict[str, tuple[Build, type[Any]]] = {
    "ingest-gateway": (build_gateway, GatewaySettings),
    "dlq-service": (build_dlq, DlqSettings),
    "scheduler": (build_scheduler, SchedulerSettings),
    "distribution-worker": (build_distribution, DistributionSettings),
    "email-worker": (build_email, EmailSettings),
    "export-worker": (build_export, ExportSettings),
}
# The scheduler's jobs stay off: its ticker would otherwise run them on the test database while routes are called.
OVERRIDES: dict[str, dict[str, Any]] = {
    "scheduler": {
        "subscription_reactivation_enabled": False,
        "balance_reconciliation_enabled": False,
        "dlq_cleanup_enabled": False,
    },
}
_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")
FILLERS = {"uuid": None, "str": "nothing-by-this-name", "path": "/nothing-by-this-name.css"}


@dataclass
class Callers:
    headers: dict[Caller, dict[str, str]]
    provider_id: uuid.UUID


@pytest.fixture(scope="module")
async def callers(database_url: str) -> Callers:
    tokens = Tokens(TEST_JWT_SECRET, "fmhl-ops", "fmhl-api", 900)
    provider_id = uuid.uuid4()

    def bearer(role: Role, amr: tuple[str, ...], provider: uuid.UUID | None = None) -> dict[str, str]:
        principal = Principal(subject=str(uuid.uuid4()), role=role, provider_id=provider, amr=amr)
        return {"Authorization": f"Bearer {tokens.issue(principal)}"}

    engine = create_async_engine(database_url)
    _, api_key = await create_lead_source(engine, f"rules-{uuid.uuid4().hex[:6]}", trusted=False)
    await engine.dispose()
    return Callers(
        headers={
            Caller.anonymous: {},
            Caller.lead_source: {"X-API-Key": api_key},
            Caller.provider: bearer("provider", ("pwd",), provider_id),
            Caller.admin_without_mfa: bearer("admin", ("pwd",)),
            Caller.admin: bearer("admin", ("pwd", "otp")),
        },
        provider_id=provider_id,
    )


@pytest.fixture(scope="module")
async def apps(service_env: dict[str, str]) -> AsyncIterator[dict[str, AsyncTestClient[Litestar]]]:
    async with AsyncExitStack() as stack:
        clients = {}
        for name, (build, settings_cls) in BUILDS.items():
            settings = settings_for(settings_cls, service_env, **OVERRIDES.get(name, {}))
            app = build(settings, setup_telemetry(settings.service_name))[0]
            clients[name] = await stack.enter_async_context(AsyncTestClient(app))
        yield clients


def routes_of(app: Litestar) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method in route.methods
        if method != PREFLIGHT
    }


def concrete(path: str, provider_id: uuid.UUID) -> str:
    """The path with each parameter filled: the provider caller's own id, or an id (or name) that exists nowhere."""

    def value(match: re.Match[str]) -> str:
        name, kind = match.groups()
        if name == "provider_id":
            return str(provider_id)
        return FILLERS[kind] or str(uuid.uuid4())

    return _PARAMETER.sub(value, path)


def test_every_service_is_in_the_table() -> None:
    assert set(BUILDS) == set(RULES) == {service.name for service in SERVICES}


@pytest.mark.parametrize("service", sorted(RULES))
def test_every_route_has_a_rule_and_every_rule_a_route(
    apps: dict[str, AsyncTestClient[Litestar]], service: str
) -> None:
    served = routes_of(apps[service].app)
    assert sorted(served - RULES[service].keys()) == [], "routes without a rule"
    assert sorted(RULES[service].keys() - served) == [], "rules for routes that do not exist"


@pytest.mark.parametrize("service", sorted(RULES))
async def test_each_caller_gets_in_exactly_where_its_rule_says(
    apps: dict[str, AsyncTestClient[Litestar]], callers: Callers, service: str
) -> None:
    client = apps[service]
    wrong: list[str] = []
    for method, path in sorted(routes_of(client.app) & RULES[service].keys()):
        rule = RULES[service][(method, path)]
        url = concrete(path, callers.provider_id)
        for caller, expected in EXPECTED[rule].items():
            response = await client.request(method, url, headers=callers.headers[caller], follow_redirects=False)
            status = response.status_code
            refused = status in (401, 403) or (status == 303 and response.headers["location"].startswith(CONSOLE_LOGIN))
            if status >= 500 or (expected == ALLOWED and refused) or (expected != ALLOWED and not refused):
                wrong.append(f"{method} {path} as {caller.value}: {status} ({rule.value} may call it)")
            elif expected != ALLOWED and status != expected:
                wrong.append(f"{method} {path} as {caller.value}: {status}, not {expected}")
    assert wrong == []


@pytest.mark.parametrize("service", sorted(RULES))
async def test_a_preflight_is_never_refused_for_lack_of_credentials(
    apps: dict[str, AsyncTestClient[Litestar]], callers: Callers, service: str
) -> None:
    """Litestar answers OPTIONS with the allowed methods (204); the console sends whoever has no session to its
    login page (303). A preflight carries no credentials, so neither may be a 401, a 403 or an error."""
    client = apps[service]
    statuses = {
        path: (await client.options(concrete(path, callers.provider_id), follow_redirects=False)).status_code
        for _, path in routes_of(client.app)
    }
    assert {path: status for path, status in statuses.items() if status not in (204, 303)} == {}
