"""Drives the running stack once, as an operator would, and prints what happened.

Creates an admin (logging in with a real TOTP code), a lead source, three providers (one that runs out of
balance, one whose email address the SMTP sink refuses), submits and approves leads, then shows the
assignments and balances, the mails in the sink, the dead letter, and the plan's counters from /metrics.
Each run uses fresh names, so it can be run again.

Where the services answer comes from the environment, `<SERVICE>_URL` (INGEST_GATEWAY_URL, DLQ_SERVICE_URL,
DISTRIBUTION_WORKER_URL, EMAIL_WORKER_URL), by default their declared ports on 127.0.0.1 as `stack.sh up`
serves them; DATABASE_URL and TOTP_ENCRYPTION_KEY are the operator's (the tables' owner), MAIL_DIR the SMTP
sink's folder when it is on this machine (under compose the mails stay in the sink's volume).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import pyotp
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from ingest_gateway.cli import create_lead_source, create_user
from libs.auth import TotpSecrets
from libs.db.tables import Assignment, Lead, LeadStatus, Provider, Subscription
from libs.runtime import service


def service_url(name: str, path: str = "") -> str:
    """Where that service answers: `<SERVICE>_URL` (INGEST_GATEWAY_URL, ...), else its declared port here."""
    base = os.environ.get(name.upper().replace("-", "_") + "_URL") or f"http://127.0.0.1:{service(name).port}"
    return base.rstrip("/") + path


GATEWAY = service_url("ingest-gateway")
DLQ_API = service_url("dlq-service", "/api/v1/admin/queues")
COUNTERS = {
    "ingest-gateway": ["fmhl_leads_submitted_total", "fmhl_leads_approved_total"],
    "distribution-worker": ["fmhl_assignments_created_total", "fmhl_assignments_skipped_insufficient_balance_total",
                            "fmhl_distribution_duration_ms_count"],
    "email-worker": ["fmhl_emails_sent_total", "fmhl_jobs_failed_total"],
    "dlq-service": ["fmhl_dead_letters_received_total"],
}  # fmt: skip
SETTLED = {LeadStatus.distributed, LeadStatus.unassigned}
LEAD_STATUS = select(col(Lead.status)).where(col(Lead.id) == bindparam("id"))
PROVIDER_SUMMARY = (
    select(
        col(Provider.balance_cents),
        func.count(col(Assignment.id)).label("leads"),
        col(Subscription.status),
        col(Subscription.paused_reason),
    )
    .select_from(Provider)
    .join(Subscription, col(Subscription.provider_id) == col(Provider.id))
    .outerjoin(Assignment, col(Assignment.provider_id) == col(Provider.id))
    .where(col(Provider.id) == bindparam("id"))
    .group_by(col(Provider.balance_cents), col(Subscription.status), col(Subscription.paused_reason))
)


def counter_lines(url: str, names: list[str]) -> list[str]:
    body = httpx.get(url, timeout=5).text
    return [line for line in body.splitlines() if any(line.startswith(name) for name in names)]


async def main() -> None:
    run = uuid.uuid4().hex[:6]
    engine = create_async_engine(os.environ["DATABASE_URL"])
    password = secrets.token_urlsafe(16)
    admin_email = f"admin-{run}@demo.example"
    _, totp_secret = await create_user(
        engine,
        admin_email,
        "admin",
        password,
        None,
        True,
        totp=TotpSecrets.from_keys(os.environ["TOTP_ENCRYPTION_KEY"]),
    )
    assert totp_secret is not None
    # To the terminal only (stderr, never a file or a log): the console's login for whoever ran `up`.
    print(
        f"demo admin: email {admin_email}  password {password}  TOTP secret {totp_secret}",
        file=sys.stderr,
        flush=True,
    )
    _, api_key = await create_lead_source(engine, f"demo-forms-{run}", trusted=False)
    client = httpx.AsyncClient(base_url=GATEWAY, timeout=10)
    login = await client.post(
        "/api/v1/auth/token",
        json={"email": admin_email, "password": password, "totp_code": pyotp.TOTP(totp_secret).now()},
    )
    login.raise_for_status()
    admin = {"Authorization": f"Bearer {login.json()['access_token']}", "X-Correlation-ID": f"demo-{run}"}
    print(f"admin {admin_email} logged in with password + TOTP (amr={login.json()['amr']})")

    category = f"roofing-{run}"
    providers = {
        "Acme Roofing": ("acme-{}@demo.example", 10_000),
        "Budget Roofs (runs out)": ("budget-{}@demo.example", 2_500),
        "Bounce Co (mail refused)": ("bounce-{}@refused.example", 10_000),
    }
    ids = {}
    for name, (email, balance) in providers.items():
        created = await client.post(
            "/api/v1/providers", json={"name": name, "email": email.format(run), "low_balance_threshold_cents": 3000},
            headers=admin,
        )  # fmt: skip
        created.raise_for_status()
        provider_id = created.json()["id"]
        ids[name] = provider_id
        await client.post(
            f"/api/v1/providers/{provider_id}/subscriptions",
            json={"category": category, "zip_codes": ["94107"], "price_cents": 2500}, headers=admin,
        )  # fmt: skip
        await client.post(f"/api/v1/providers/{provider_id}/top-ups", json={"amount_cents": balance}, headers=admin)
    print(f"3 providers subscribed to {category} in 94107 at $25.00 a lead")

    leads = []
    for index in range(3):
        lead = {"external_id": f"demo-{run}-{index}", "category": category, "zip": "94107",
                "contact": {"name": f"Homeowner {index}", "email": f"home{index}@example.com",
                            "phone": "+1 415 555 0100"}}  # fmt: skip
        submitted = await client.post("/api/v1/leads", json=lead, headers={"X-API-Key": api_key})
        submitted.raise_for_status()
        lead_id = submitted.json()["lead_id"]
        (await client.post(f"/api/v1/leads/{lead_id}/approve", headers=admin)).raise_for_status()
        leads.append(lead_id)
        # One at a time, so the round-robin order is easy to follow.
        if not await _eventually(partial(_settled, engine, lead_id), within_s=30):
            raise SystemExit(f"demo: lead {lead_id} was not distributed within 30s")
    print(f"submitted and approved {len(leads)} leads\n")

    async with engine.connect() as connection:
        print("assignments and balances")
        for name, provider_id in ids.items():
            row = (await connection.execute(PROVIDER_SUMMARY, {"id": provider_id})).one()
            state = row.status + (f" ({row.paused_reason})" if row.paused_reason else "")
            print(f"  {name:<26} leads={row.leads}  balance=${row.balance_cents / 100:>7.2f}  subscription={state}")
    await engine.dispose()

    dlq = httpx.AsyncClient(base_url=DLQ_API, timeout=10, headers=admin)

    async def dead_letters() -> list[dict[str, str]]:
        return list((await dlq.get("/dlq", params={"q": run, "limit": 20})).json()["items"])

    async def refused_mail_recorded() -> bool:
        return bool(await dead_letters())

    # The refused mail goes through the email-worker and into the DLQ store; the other mails go before it.
    if not await _eventually(refused_mail_recorded, within_s=30):
        print("(the refused mail has not reached the DLQ store within 30 s)")
    if mail_dir := os.environ.get("MAIL_DIR"):
        listing = Path(mail_dir) / "index.jsonl"
        mails = [json.loads(line) for line in listing.read_text().splitlines()] if listing.exists() else []
        mine = [m for m in mails if any(run in to for to in m["to"])]
        print(f"\nmails in the SMTP sink ({mail_dir}):")
        for mail in mine:
            print(f"  to {', '.join(mail['to']):<32} {mail['subject']}")
    else:
        print("\nmails: in the SMTP sink's own folder (compose: docker compose exec smtp-sink cat /mail/index.jsonl)")
    listed = await dead_letters()
    print("\ndead letters in the DLQ store (GET /api/v1/admin/queues/dlq, contact details masked):")
    for entry in listed:
        print(f"  {entry['id']}  queue={entry['queue']} reason={entry['reason']} status={entry['status']} "
              f"{entry['error_type']}: {entry['error_message']}")  # fmt: skip
    overview = (await dlq.get("")).json()["queues"]
    print("\nqueues (GET /api/v1/admin/queues):")
    for queue in overview:
        known = {key: "?" if queue.get(key) is None else queue[key] for key in ("depth", "active", "consumers")}
        print(f"  {queue['name']:<14} depth={known['depth']} active={known['active']} "
              f"consumers={known['consumers']} dlq_size={queue['dlq_size']} "
              f"failed_last_hour={queue['failed_last_hour']}")  # fmt: skip
    unknown = next((queue["error"] for queue in overview if queue.get("error")), None)
    if unknown:
        print(f"  (? = unknown: {unknown})")
    if listed:
        first = listed[0]["id"]
        print(f"\nretry one:   curl -X POST -H 'Authorization: Bearer <token>' {DLQ_API}/dlq/{first}/retry")
    await dlq.aclose()
    # A service with HTTP_WORKERS > 1 answers /metrics summed from each worker's latest dump (written every
    # second): wait one out, so the counters include what a sibling worker did just now.
    await asyncio.sleep(1.5)
    print("\ncounters from /metrics:")
    for name, counters in COUNTERS.items():
        for line in counter_lines(service_url(name, "/metrics"), counters):
            print(f"  {name:<20} {line}")


async def _settled(engine: AsyncEngine, lead_id: str) -> bool:
    async with engine.connect() as connection:
        return await connection.scalar(LEAD_STATUS, {"id": lead_id}) in SETTLED


async def _eventually(condition: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.2)
    return False


if __name__ == "__main__":
    asyncio.run(main())
