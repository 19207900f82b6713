"""The operations console in Debian's headless Chromium (driven by Selenium through Debian's chromedriver: no browser
download) against running service processes: dlq-service, email-worker and scheduler on the test vhost and
database, and a real SMTP server in the test process."""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from aiosmtpd.controller import Controller
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from ingest_gateway.accounts import create_user
from libs.auth import TotpSecrets
from libs.db.tables import DeadLetter, DeadLetterReason, DeadLetterStatus, Provider
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY, ServiceProcess, ServiceProcesses
from tests.services.conftest import MailSink

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DLQ_PORT, EMAIL_PORT, SCHEDULER_PORT = 18401, 18402, 18404
# Only a run that asks for it replaces the committed screenshots:
#   FMHL_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest tests/browser
SCREENSHOTS = Path(os.environ.get("FMHL_SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "fmhl-console-screenshots")
PASSWORD = "a console password for tests only"
# Without the networking flags Chromium keeps calling Google's hosts, which this machine's closed network refuses.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1440,1000",
)  # fmt: skip


@dataclass
class Admin:
    email: str
    totp_secret: str | None
    user_id: uuid.UUID

    def code(self) -> str:
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).now()


@dataclass
class ConsoleStack:
    url: str
    engine: AsyncEngine
    env: dict[str, str]
    mail: MailSink
    processes: list[ServiceProcess]

    def page(self, path: str) -> str:
        return self.url + path

    async def user(self, role: str = "admin", *, with_totp: bool = True) -> Admin:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        provider_id = None
        if role == "provider":
            provider_id = await self._provider()
        user_id, secret = await create_user(
            self.engine,
            email,
            role,
            PASSWORD,
            provider_id,
            with_totp,
            totp=TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY),
        )
        return Admin(email=email, totp_secret=secret, user_id=user_id)

    async def _provider(self) -> uuid.UUID:
        async with self.engine.begin() as connection:
            provider_id: uuid.UUID = (
                await connection.execute(
                    insert(Provider).returning(col(Provider.id)),
                    {"name": "Console test provider", "email": f"p-{uuid.uuid4().hex[:6]}@example.com"},
                )
            ).scalar_one()
        return provider_id

    async def dead_letters(self, count: int, **overrides: Any) -> list[uuid.UUID]:
        """Entries as capture stores them (a failed SendEmail to a valid address by default), inserted at once."""
        rows = [dead_letter_row(**overrides) for _ in range(count)]
        async with self.engine.begin() as connection:
            await connection.execute(insert(DeadLetter), rows)
        return [row["id"] for row in rows]


STACK = (
    'Traceback (most recent call last):\n  File "/srv/services/email-worker/email_worker/mailer.py", line 1, in send\n'
)


def dead_letter_row(**overrides: Any) -> dict[str, Any]:
    payload = overrides.pop("payload", {"template": "new_lead", "to": f"ok-{uuid.uuid4().hex[:6]}@example.com",
                                         "params": {}})  # fmt: skip
    now = datetime.now(UTC)
    message_id = str(uuid.uuid4())
    row: dict[str, Any] = {
        "id": uuid.uuid4(), "queue_name": "email", "payload": payload, "raw_body": orjson.dumps(payload),
        "error_message": "550 5.1.1 mailbox unavailable", "error_type": "SMTPRecipientRefused",
        "stack_trace": STACK, "attempts": 1, "failed_at": now,
        "first_failed_at": now, "last_failed_at": now, "original_exchange": "fmhl.events",
        "original_routing_key": "email.send", "message_id": message_id, "correlation_id": message_id,
        "headers": {"fmhl-service": "email-worker"}, "reason": DeadLetterReason.error, "fingerprint": "fp-default",
        "service": "email-worker", "status": DeadLetterStatus.failed, "message_type": "email.send",
        "content_type": "application/json",
    }  # fmt: skip
    return row | overrides


@pytest.fixture(scope="module")
def mail() -> Iterator[MailSink]:
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=int(os.environ.get("TEST_SMTP_PORT", "2626")))
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture(scope="module")
async def console(
    service_processes: ServiceProcesses, service_env: dict[str, str], database_url: str, mail: MailSink
) -> AsyncIterator[ConsoleStack]:
    """The scheduler and the email-worker first (the console reads the one and retries into the other)."""
    shared = {"DLQ_RETRY_SIGNING_KEY": secrets.token_urlsafe(40), "HEALTH_CHECK_TIMEOUT_S": "1"}
    started = [
        service_processes.start("scheduler", SCHEDULER_PORT, **shared),
        service_processes.start("email-worker", EMAIL_PORT, **shared),
        service_processes.start(
            "dlq-service", DLQ_PORT, **shared, SCHEDULER_URL=f"http://127.0.0.1:{SCHEDULER_PORT}",
            QUEUE_STATS_CACHE_S="1", DLQ_SIZE_POLL_S="1", LOGIN_ATTEMPTS_PER_MINUTE="100",
        ),
    ]  # fmt: skip
    for process in started:
        process.wait_ready()
    engine = create_async_engine(database_url)
    yield ConsoleStack(f"http://127.0.0.1:{DLQ_PORT}", engine, service_env, mail, started)
    await engine.dispose()


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver: WebDriver, timeout: float = 20.0) -> WebDriverWait[WebDriver]:
    """Polls until a condition holds; a part of the page swapped by its own refresh while read is read again."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])


def log_in(driver: WebDriver, console: ConsoleStack, email: str, password: str, code: str | None) -> None:
    driver.get(console.page("/console/login"))
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    if code is not None:
        driver.find_element(By.NAME, "totp_code").send_keys(code)
    submit(driver, driver.find_element(By.NAME, "email"))


def refusal(driver: WebDriver) -> str | None:
    found = driver.find_elements(By.ID, "refusal")
    return found[0].text if found else None


# The page being left carries this mark; the next document cannot. Asking the browser whether an element of the old
# page is stale races with the navigation (Chromium may answer that the node "does not belong to the document").
LEAVING = "data-test-leaving"


def click_through(driver: WebDriver, element: WebElement) -> None:
    """Clicks and waits for the page it leads to (a click returns before the next page is there)."""
    driver.execute_script(f"document.documentElement.setAttribute('{LEAVING}', '')")
    element.click()
    WebDriverWait(driver, 20.0, poll_frequency=0.1, ignored_exceptions=[WebDriverException]).until(arrived)


def arrived(driver: WebDriver) -> bool:
    """A new document, fully loaded (a script run mid-navigation may fail: the wait ignores that and asks again)."""
    return bool(
        driver.execute_script(
            f"return document.readyState === 'complete' && !document.documentElement.hasAttribute('{LEAVING}')"
        )
    )


def submit(driver: WebDriver, form_member: WebElement) -> None:
    """Submits the form the element belongs to, with its button, and waits for the answer."""
    form = form_member.find_element(By.XPATH, "./ancestor-or-self::form")
    click_through(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
