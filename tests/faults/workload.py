"""The fault suite's workload: 50 providers whose balances run out at different points, and a client that
submits leads over HTTP at a steady rate, retrying 5xx answers and timeouts with the same idempotency key,
recording every request it makes."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import providers, top_ups
from ingest_gateway.accounts import create_lead_source
from ingest_gateway.providers import NewProvider, NewSubscription

ZIP_CODES = ("94107", "94108", "94109")
PROVIDERS = 50


@dataclass(frozen=True)
class Provider:
    id: uuid.UUID
    email: str
    price_cents: int
    top_up_cents: int
    low_balance_threshold_cents: int


@dataclass(frozen=True)
class Run:
    """What one test's workload owns: its lead source, category and providers; the checker looks at nothing else."""

    name: str
    category: str
    source_id: uuid.UUID
    api_key: str
    providers: tuple[Provider, ...]

    @property
    def emails(self) -> set[str]:
        return {provider.email for provider in self.providers}


async def seed(engine: AsyncEngine, name: str) -> Run:
    """Prices 100..300 cents; a provider can pay for 0 to 18 leads, so some charges fail from the first lead and
    the rest at different points of the run; every third provider asks for a low-balance mail."""
    actor = uuid.uuid4()
    category = f"faults-{name}"
    seeded = []
    for index in range(PROVIDERS):
        price = 100 + (index % 5) * 50
        top_up = price * (index % 7) * 3
        threshold = price * 2 if index % 3 == 0 else 0
        email = f"p{index}.{name}@faults.example"
        provider_id = await providers.create(
            engine, NewProvider(name=f"{name} provider {index}", email=email, low_balance_threshold_cents=threshold),
            actor,
        )  # fmt: skip
        await providers.subscribe(
            engine, provider_id, NewSubscription(category=category, zip_codes=list(ZIP_CODES), price_cents=price), actor
        )
        if top_up:
            await top_ups.add(engine, provider_id, top_up, actor)
        seeded.append(Provider(provider_id, email, price, top_up, threshold))
    source_id, api_key = await create_lead_source(engine, f"faults {name}", trusted=True)
    return Run(name, category, source_id, api_key, tuple(seeded))


@dataclass(frozen=True)
class Attempt:
    at_s: float
    """Since the workload started."""
    seconds: float
    status: int | None
    error: str | None


@dataclass
class Submission:
    external_id: str
    attempts: list[Attempt] = field(default_factory=list)
    lead_id: uuid.UUID | None = None
    refused: str | None = None
    """A 4xx answer: the workload only sends valid leads, so this is a defect."""

    @property
    def accepted(self) -> bool:
        return self.lead_id is not None


@dataclass
class Workload:
    gateway: str
    run: Run
    leads: int
    rate_per_s: float = 20.0
    clients: int = 20
    """Submissions in flight at most, as a pool of client workers would have: a new lead waits for a free one."""
    request_timeout_s: float = 15.0
    give_up_after_s: float = 300.0
    submissions: list[Submission] = field(default_factory=list)
    started: float = 0.0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def accepted(self) -> int:
        return sum(submission.accepted for submission in self.submissions)

    async def run_all(self) -> None:
        """Starts a submission every 1/rate seconds (later while every client is busy), each retried until
        accepted; returns when all have ended."""
        self.started = time.monotonic()
        free = asyncio.Semaphore(self.clients)
        async with httpx.AsyncClient(base_url=self.gateway, timeout=self.request_timeout_s) as client:
            tasks = []
            for index in range(self.leads):
                submission = Submission(f"{self.run.name}-{index}")
                self.submissions.append(submission)
                await free.acquire()
                task = asyncio.create_task(self._submit(client, submission, ZIP_CODES[index % len(ZIP_CODES)]))
                task.add_done_callback(lambda _: free.release())
                tasks.append(task)
                next_start = self.started + (index + 1) / self.rate_per_s
                await asyncio.sleep(max(0.0, next_start - time.monotonic()))
            await asyncio.gather(*tasks)
        self.finished.set()

    async def _submit(self, client: httpx.AsyncClient, submission: Submission, zip_code: str) -> None:
        body = {"external_id": submission.external_id, "category": self.run.category,
                "zip": zip_code,
                "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 5550100"}}  # fmt: skip
        headers = {"X-API-Key": self.run.api_key, "Idempotency-Key": submission.external_id}
        deadline = time.monotonic() + self.give_up_after_s
        backoff = 0.5
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                response = await client.post("/api/v1/leads", json=body, headers=headers)
            except httpx.TransportError as error:  # timeouts, refused and reset connections
                submission.attempts.append(self._attempt(began, None, type(error).__name__))
            else:
                submission.attempts.append(self._attempt(began, response.status_code, None))
                if response.status_code == 202:
                    submission.lead_id = uuid.UUID(response.json()["lead_id"])
                    return
                if response.status_code < 500:
                    submission.refused = f"{response.status_code} {response.text[:200]}"
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _attempt(self, began: float, status: int | None, error: str | None) -> Attempt:
        return Attempt(began - self.started, time.monotonic() - began, status, error)

    def attempts_between(self, start_s: float, end_s: float) -> list[Attempt]:
        """Requests started in that window (seconds since the workload started)."""
        return [a for s in self.submissions for a in s.attempts if start_s <= a.at_s < end_s]

    async def accepted_at_least(self, count: int, timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while self.accepted < count:
                await asyncio.sleep(0.05)
