"""After the faults heal: wait until every queue is empty, then check from PostgreSQL (and the SMTP sink) that
the pipeline kept its promises for one workload run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import (
    Assignment,
    DeadLetter,
    DeadLetterReason,
    EmailLog,
    EmailStatus,
    Lead,
    LeadStatus,
    LedgerEntry,
    LedgerKind,
    Provider,
)
from tests.faults.mail import MailSink
from tests.faults.workload import Run, Workload

MAX_PROVIDERS_PER_LEAD = 3
FINAL = {LeadStatus.distributed, LeadStatus.unassigned}
TRANSIENT = "transient"


async def wait_until_drained(management_url: str, vhost: str, timeout: float = 300.0) -> float:
    """Every queue of the vhost holds no message, ready or unacked, three readings in a row a second apart (the
    management numbers are refreshed every second); answers how long that took."""
    started = time.monotonic()
    empty_readings = 0
    async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(timeout):
        while empty_readings < 3:
            try:
                response = await client.get(f"{management_url}/api/queues/{vhost}", params={"columns": "name,messages"})
                queues = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                queues = None
            busy = queues is None or any(queue.get("messages", 1) for queue in queues)
            empty_readings = 0 if busy else empty_readings + 1
            await asyncio.sleep(1.0)
    return time.monotonic() - started


async def database_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as connection:
        now = await connection.scalar(select(func.now()))
    assert isinstance(now, datetime)
    return now


async def deadlocks(engine: AsyncEngine) -> int:
    """Deadlocks PostgreSQL detected in this database since its statistics began."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
    return int(count or 0)


# What the checker can find, named once: a test that meets a known defect names the finding it tolerates.
MAILS_SENT_TWICE = "mails sent more than once"
MAILS_NEVER_SENT = "expected mails never sent"


@dataclass
class Findings:
    problems: dict[str, str] = field(default_factory=dict)
    """What went wrong -> how often, with up to five examples."""
    figures: dict[str, Any] = field(default_factory=dict)

    def expect_none(self, what: str, found: Any) -> None:
        found = list(found)
        if found:
            self.problems[what] = f"{len(found)}: {', '.join(map(str, found[:5]))}"

    def __str__(self) -> str:
        figures = ", ".join(f"{key}={value}" for key, value in self.figures.items())
        return "\n".join([f"figures: {figures}", *(f"PROBLEM {what}: {n}" for what, n in self.problems.items())])


def expected_mails(
    run: Run, assignments: Iterable[Any], charges: dict[uuid.UUID, list[Any]], prices: dict[uuid.UUID, int]
) -> set[str]:
    """A new-lead mail per assignment; a low-balance mail for the charge that took a provider's balance from at or
    above its threshold to below it (charges replayed in ledger order, which is each provider's debit order)."""
    jobs = {f"email:new_lead:{assignment.id}" for assignment in assignments}
    thresholds = {provider.id: provider.low_balance_threshold_cents for provider in run.providers}
    for provider_id, entries in charges.items():
        balance = 0
        for entry in entries:
            balance += entry.amount_cents
            threshold = thresholds[provider_id]
            if entry.kind == LedgerKind.lead_charge and threshold > 0:
                price = prices[entry.assignment_id]
                if balance + price >= threshold > balance:
                    jobs.add(f"email:low_balance:{entry.assignment_id}")
    return jobs


async def check(
    engine: AsyncEngine,
    sink: MailSink,
    workload: Workload,
    *,
    since: datetime,
    deadlocks_before: int,
    duplicates_allowed: frozenset[str] = frozenset(),
) -> Findings:
    """`since`: the database's clock when the run began (dead letters after it count).
    `duplicates_allowed`: jobs whose mail the SMTP server accepted just before its sender was killed, before the
    sender could record it: the one place where email is at-least-once."""
    run = workload.run
    findings = Findings()
    provider_ids = [provider.id for provider in run.providers]
    async with engine.connect() as connection:
        leads = (
            await connection.execute(
                select(col(Lead.id), col(Lead.external_id), col(Lead.status)).where(
                    col(Lead.source_id) == run.source_id
                )
            )
        ).all()
        assignments = (
            await connection.execute(
                select(col(Assignment.id), col(Assignment.lead_id), col(Assignment.provider_id),
                       col(Assignment.price_cents))
                .join(Lead, col(Lead.id) == col(Assignment.lead_id))
                .where(col(Lead.source_id) == run.source_id)
            )
        ).all()  # fmt: skip
        ledger = (
            await connection.execute(
                select(col(LedgerEntry.provider_id), col(LedgerEntry.kind), col(LedgerEntry.amount_cents),
                       col(LedgerEntry.assignment_id))
                .where(col(LedgerEntry.provider_id).in_(provider_ids))
                .order_by(col(LedgerEntry.id))
            )
        ).all()  # fmt: skip
        balances = {
            row.id: row.balance_cents
            for row in await connection.execute(
                select(col(Provider.id), col(Provider.balance_cents)).where(col(Provider.id).in_(provider_ids))
            )
        }
        dead_letters = (
            await connection.execute(
                select(col(DeadLetter.queue_name), col(DeadLetter.reason), col(DeadLetter.message_id),
                       col(DeadLetter.error_type), col(DeadLetter.error_message),
                       col(DeadLetter.headers)["fmhl-error-class"].astext.label("error_class"))
                .where(col(DeadLetter.created_at) >= since)
            )
        ).all()  # fmt: skip
        recorded_mails = set(
            (
                await connection.scalars(
                    select(col(EmailLog.job_id)).where(
                        col(EmailLog.to_address).in_(run.emails), col(EmailLog.status) == EmailStatus.sent
                    )
                )
            ).all()
        )

    # Every accepted lead has exactly one outcome.
    by_id = {lead.id: lead for lead in leads}
    accepted = {s.lead_id for s in workload.submissions if s.lead_id is not None}
    assigned_to: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for assignment in assignments:
        assigned_to[assignment.lead_id].append(assignment)
    findings.expect_none("requests refused", [s.refused for s in workload.submissions if s.refused])
    findings.expect_none(
        "leads never accepted (the client gave up)",
        [s.external_id for s in workload.submissions if not s.accepted and not s.refused],
    )
    findings.expect_none("accepted leads not stored", [lead for lead in accepted if lead not in by_id])
    undecided = [
        f"{lead}={by_id[lead].status}" for lead in accepted if lead in by_id and by_id[lead].status not in FINAL
    ]
    findings.expect_none("accepted leads without an outcome", undecided)
    findings.expect_none(
        "more than one lead for one submission",
        [external for external, n in Counter(lead.external_id for lead in leads).items() if n > 1],
    )
    findings.expect_none("distributed leads without an assignment", [lead.id for lead in leads
                     if lead.status == LeadStatus.distributed and not assigned_to[lead.id]])  # fmt: skip
    findings.expect_none("unassigned leads with an assignment", [lead.id for lead in leads
                     if lead.status == LeadStatus.unassigned and assigned_to[lead.id]])  # fmt: skip
    findings.expect_none("leads with too many assignments", [lead for lead, these in assigned_to.items()
                     if len(these) > MAX_PROVIDERS_PER_LEAD])  # fmt: skip

    # No assignment charged twice (nor left uncharged), every balance equal to its ledger and never negative.
    prices = {assignment.id: assignment.price_cents for assignment in assignments}
    charges_of: dict[uuid.UUID, list[int]] = defaultdict(list)
    entries_of: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for entry in ledger:
        entries_of[entry.provider_id].append(entry)
        if entry.kind == LedgerKind.lead_charge:
            charges_of[entry.assignment_id].append(entry.amount_cents)
    findings.expect_none("assignments charged more than once", [a for a, c in charges_of.items() if len(c) > 1])
    findings.expect_none("assignments never charged", [a for a in prices if not charges_of.get(a)])
    findings.expect_none("charges of another amount than the price", [a for a, c in charges_of.items()
                     if a in prices and any(amount != -prices[a] for amount in c)])  # fmt: skip
    findings.expect_none("charges without an assignment of this run", [a for a in charges_of if a not in prices])
    differing, negative = [], []
    for provider_id in provider_ids:
        running, lowest = 0, 0
        for entry in entries_of[provider_id]:
            running += entry.amount_cents
            lowest = min(lowest, running)
        if balances[provider_id] != running:
            differing.append(f"{provider_id}: balance {balances[provider_id]}, ledger {running}")
        if lowest < 0:
            negative.append(f"{provider_id}: down to {lowest}")
    findings.expect_none("balances that differ from their ledger", differing)
    findings.expect_none("balances that went below zero", negative)

    # No dead letter with a transient cause. The workload sends only valid leads, so any dead letter is a defect;
    # those from the broker itself (delivery limit after crashes) are transient by nature.
    transient = [
        f"{letter.queue_name}/{letter.message_id}: {letter.reason} {letter.error_type}: {letter.error_message}"
        for letter in dead_letters
        if letter.reason != DeadLetterReason.error or letter.error_class == TRANSIENT
    ]
    findings.expect_none("dead letters with a transient cause", transient)
    permanent = [
        f"{letter.queue_name}/{letter.message_id}: {letter.error_type}: {letter.error_message}"
        for letter in dead_letters
        if letter.reason == DeadLetterReason.error and letter.error_class != TRANSIENT
    ]
    findings.expect_none("dead letters with a permanent cause", permanent)

    # Mails in the SMTP sink equal the expected set, each once.
    expected = expected_mails(run, assignments, entries_of, prices)
    received = sink.jobs(run.emails)
    findings.expect_none(MAILS_NEVER_SENT, sorted(expected - received.keys()))
    findings.expect_none("mails nobody asked for", sorted(received.keys() - expected))
    findings.expect_none("mails sent but not recorded as sent", sorted(received.keys() - recorded_mails))
    duplicates = {job: n for job, n in received.items() if n > 1}
    findings.expect_none(MAILS_SENT_TWICE, [f"{job} x{n}" for job, n in duplicates.items()
                     if job not in duplicates_allowed or n > 2])  # fmt: skip

    findings.figures.update(
        leads=len(workload.submissions),
        accepted=len(accepted),
        requests=sum(len(s.attempts) for s in workload.submissions),
        retried_requests=sum(len(s.attempts) - 1 for s in workload.submissions if s.attempts),
        distributed=sum(lead.status == LeadStatus.distributed for lead in leads),
        unassigned=sum(lead.status == LeadStatus.unassigned for lead in leads),
        assignments=len(assignments),
        mails=sum(received.values()),
        duplicate_mails=sum(n - 1 for n in duplicates.values()),
        dead_letters=len(dead_letters),
        deadlocks=await deadlocks(engine) - deadlocks_before,
    )
    return findings


def conclude(name: str, findings: Findings, results: Path, known: Mapping[str, str] | None = None) -> None:
    """Appends the run's figures and problems to `results`, prints them, and fails on any problem but the `known`
    ones (each with the defect that causes it: reported, never hidden)."""
    tolerated = {what: reason for what, reason in (known or {}).items() if what in findings.problems}
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as lines:
        lines.write(json.dumps({"fault": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "figures": findings.figures,
                                "problems": findings.problems, "known_defects": tolerated}) + "\n")  # fmt: skip
    print(f"\n{name}: {findings}" + "".join(f"\nKNOWN DEFECT {w}: {r}" for w, r in tolerated.items()))
    unexpected = {what: detail for what, detail in findings.problems.items() if what not in tolerated}
    assert not unexpected, str(findings)
