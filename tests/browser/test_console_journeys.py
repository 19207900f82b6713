"""What an on-call admin does in the console, in a real browser against running services: log in with a TOTP
code, find a failed email, reveal, retry and see it resolve; fix an invalid payload; redrive a group with live
progress, cancel another; pause and resume a job; find every one of these actions in the audit log.

The tests share one logged-in browser and one admin, in file order: the last one reads the audit trail the
others left."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import func, select, update
from sqlmodel import col

from libs.contracts import SendEmail
from libs.db.tables import DeadLetter, DeadLetterStatus, RedriveItem, RedriveItemState, ScheduledJob
from libs.messaging.broker import EVENTS
from tests.browser.conftest import (
    PASSWORD,
    Admin,
    ConsoleStack,
    click_through,
    log_in,
    refusal,
    screenshot,
    submit,
    wait,
)
from tests.services.conftest import publisher_for


@pytest.fixture(scope="module")
async def admin(console: ConsoleStack) -> Admin:
    return await console.user()


@pytest.fixture(scope="module")
def browser(chrome: WebDriver, console: ConsoleStack, admin: Admin) -> WebDriver:
    """Logged in as the module's admin, with a real code from its authenticator secret."""
    log_in(chrome, console, admin.email, PASSWORD, admin.code())
    return chrome


def notice(driver: WebDriver) -> str:
    """What the page says about the action that led to it."""
    found = driver.find_elements(By.CSS_SELECTOR, ".notice, .problem")
    return found[0].text if found else ""


def status_of(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "h1 .badge").text


def reloaded(driver: WebDriver, url: str) -> WebDriver:
    driver.get(url)
    return driver


def open_until(driver: WebDriver, url: str, css: str, timeout: float = 30.0) -> None:
    """Reloads `url` until an element matches `css` (the entry a worker is about to dead-letter, say)."""
    wait(driver, timeout).until(lambda page: reloaded(page, url).find_elements(By.CSS_SELECTOR, css))


async def test_a_login_without_a_totp_code_is_refused(chrome: WebDriver, console: ConsoleStack) -> None:
    someone = await console.user()
    log_in(chrome, console, someone.email, PASSWORD, None)
    assert "TOTP code" in (refusal(chrome) or "")
    chrome.get(console.page("/console/dead-letters"))
    assert "/console/login" in chrome.current_url


async def test_an_admin_logs_in_with_password_and_a_real_totp_code(
    browser: WebDriver, console: ConsoleStack, admin: Admin
) -> None:
    assert browser.current_url == console.page("/console")
    assert browser.find_element(By.CSS_SELECTOR, "header .who").text == admin.email
    cookie = browser.get_cookie("fmhl_console_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"


async def test_a_failed_email_is_found_by_free_text_revealed_retried_and_resolved(
    browser: WebDriver, console: ConsoleStack
) -> None:
    marker = uuid.uuid4().hex[:10]
    domain = f"{marker}.example"
    address = f"ann@{domain}"
    console.mail.refused_domains.add(domain)
    publisher, broker = await publisher_for(console.env["RABBITMQ_URL"])
    await publisher.publish(SendEmail(template="new_lead", to=address, params={"lead": marker}))
    await broker.stop()

    open_until(browser, console.page(f"/console/dead-letters?q={marker}"), "tr[data-entry]")
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-entry]")
    assert address not in row.text
    click_through(browser, row.find_element(By.CSS_SELECTOR, "a"))
    assert address not in browser.find_element(By.ID, "payload").text
    screenshot(browser, "entry-detail")
    click_through(browser, browser.find_element(By.ID, "reveal"))
    assert address in browser.find_element(By.ID, "payload").text

    console.mail.refused_domains.discard(domain)
    click_through(browser, browser.find_element(By.ID, "retry"))
    assert "Sent back to its queue" in notice(browser)
    entry_url = browser.current_url.split("?")[0]
    wait(browser, 30).until(lambda page: status_of(reloaded(page, entry_url)) == "resolved")
    assert len(console.mail.to(address)) == 1
    assert "succeeded" in browser.find_element(By.ID, "retries").text


async def test_an_invalid_payload_shows_its_field_error_and_once_fixed_is_processed(
    browser: WebDriver, console: ConsoleStack
) -> None:
    marker = uuid.uuid4().hex[:10]
    publisher, broker = await publisher_for(console.env["RABBITMQ_URL"])
    body = {"template": "new_lead", "to": f"not-an-address-{marker}", "params": {"lead": marker}}
    await publisher.publish_raw(
        json.dumps(body).encode(), exchange=EVENTS, routing_key="email.send", message_id=str(uuid.uuid4()),
        correlation_id=None, headers={}, message_type="email.send",
    )  # fmt: skip
    await broker.stop()

    open_until(browser, console.page(f"/console/dead-letters?q={marker}"), "tr[data-entry] a")
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "tr[data-entry] a"))
    click_through(browser, browser.find_element(By.ID, "edit"))
    editor = browser.find_element(By.ID, "body")
    submit(browser, editor)
    errors = browser.find_element(By.ID, "field-errors").text
    assert "to" in errors
    assert "Not sent" in errors

    fixed = f"fixed-{marker}@example.com"
    editor = browser.find_element(By.ID, "body")
    editor.clear()
    editor.send_keys(json.dumps(body | {"to": fixed}))
    submit(browser, editor)
    assert "kept beside the original" in notice(browser)
    masked_diff = browser.find_element(By.CSS_SELECTOR, "pre.diff").text
    assert fixed not in masked_diff
    assert '-  "to":' in masked_diff
    click_through(browser, browser.find_element(By.ID, "reveal"))
    diff = browser.find_element(By.CSS_SELECTOR, "pre.diff").text
    assert f'-  "to": "not-an-address-{marker}"' in diff
    assert f'+  "to": "{fixed}"' in diff
    entry_url = browser.current_url.split("?")[0]
    wait(browser, 30).until(lambda page: status_of(reloaded(page, entry_url)) == "resolved")
    assert len(console.mail.to(fixed)) == 1


async def test_a_group_of_200_redriven_at_50_per_second_shows_its_progress_up_to_100_percent(
    browser: WebDriver, console: ConsoleStack
) -> None:
    fingerprint = f"fp-{uuid.uuid4().hex[:12]}"
    await console.dead_letters(200, fingerprint=fingerprint, error_message=f"550 refused ({fingerprint})")
    browser.get(console.page("/console/dead-letters/groups"))
    group = browser.find_element(By.CSS_SELECTOR, f"tr[data-group='email/{fingerprint}']")
    assert "200" in group.text
    screenshot(browser, "grouped-dead-letters")
    click_through(browser, group.find_element(By.PARTIAL_LINK_TEXT, "Retry this group"))
    assert browser.find_element(By.ID, "dry-run-count").text == "200"
    rate = browser.find_element(By.ID, "rate")
    rate.clear()
    rate.send_keys("50")
    click_through(browser, browser.find_element(By.ID, "start-redrive"))

    def done() -> int:
        # Read in one step: the progress block is swapped by the page's own refresh every second.
        return int(browser.execute_script("return document.getElementById('bar').value"))

    def midway(_: WebDriver) -> int | None:
        count = done()
        return count if 0 < count < 200 else None

    first = wait(browser, 10).until(midway)
    assert first is not None
    screenshot(browser, "redrive-in-progress")
    wait(browser, 10).until(lambda _: first < done() < 200)
    wait(browser, 30).until(
        lambda page: page.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-status") == "completed"
    )
    assert browser.find_element(By.ID, "percent").text == "100.0%"
    assert browser.find_element(By.ID, "sent").text == "200"
    assert browser.find_element(By.ID, "remaining").text == "0"


async def test_a_redrive_cancelled_midway_sends_nothing_more(browser: WebDriver, console: ConsoleStack) -> None:
    fingerprint = f"fp-{uuid.uuid4().hex[:12]}"
    await console.dead_letters(200, fingerprint=fingerprint)
    browser.get(console.page(f"/console/redrives/new?group=1&queue=email&fingerprint={fingerprint}&rate=10"))
    click_through(browser, browser.find_element(By.ID, "start-redrive"))
    wait(browser, 10).until(lambda page: int(page.find_element(By.ID, "done").text) >= 5)
    click_through(browser, browser.find_element(By.ID, "cancel"))
    assert "Cancelled" in notice(browser)
    progress = browser.find_element(By.CSS_SELECTOR, ".progress")
    assert progress.get_attribute("data-status") == "cancelled"
    redrive_id = uuid.UUID(browser.current_url.split("/console/redrives/")[1].split("?")[0])
    async with console.engine.connect() as connection:
        pending = await connection.scalar(
            select(func.count()).where(
                col(RedriveItem.redrive_id) == redrive_id, col(RedriveItem.state) == RedriveItemState.pending
            )
        )
        still_failed = await connection.scalar(
            select(func.count()).where(
                col(DeadLetter.fingerprint) == fingerprint, col(DeadLetter.status) == DeadLetterStatus.failed
            )
        )
    assert pending is not None
    assert pending > 100
    assert still_failed == pending


async def test_a_scheduled_job_is_paused_then_resumed(browser: WebDriver, console: ConsoleStack) -> None:
    job = "[data-job='dlq-cleanup']"
    async with console.engine.begin() as connection:
        await connection.execute(
            update(ScheduledJob).where(col(ScheduledJob.job) == "dlq-cleanup").values(paused=False)
        )
    browser.get(console.page("/console/jobs"))
    click_through(browser, browser.find_element(By.CSS_SELECTOR, f"{job} button[data-action=pause]"))
    assert browser.find_element(By.CSS_SELECTOR, f"{job} [data-state]").get_attribute("data-state") == "paused"
    click_through(browser, browser.find_element(By.CSS_SELECTOR, f"{job} button[data-action=resume]"))
    assert browser.find_element(By.CSS_SELECTOR, f"{job} [data-state]").get_attribute("data-state") == "active"
    assert "Resumed" in notice(browser)


async def test_the_overview_refreshes_itself_and_flags_a_queue_nobody_consumes(
    browser: WebDriver, console: ConsoleStack
) -> None:
    browser.get(console.page("/console"))
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-queue='email']")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    assert not browser.find_elements(By.CSS_SELECTOR, ".banner[data-queue='report-export']")
    connection = await aio_pika.connect(console.env["RABBITMQ_URL"])
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key="report-export")
        # No export-worker runs here: the banner appears on the page as it is, by its own refresh.
        wait(browser, 30).until(lambda page: page.find_elements(By.CSS_SELECTOR, ".banner[data-queue='report-export']"))
        screenshot(browser, "overview")
        await (await channel.get_queue("report-export", ensure=False)).purge()
    finally:
        await connection.close()


async def test_each_action_is_in_the_audit_log_linked_to_its_entity(
    browser: WebDriver, console: ConsoleStack, admin: Admin
) -> None:
    for action in ("dlq.entry_viewed", "dlq.job_retried", "dlq.entry_edited_and_retried", "dlq.redrive_started",
                   "dlq.redrive_cancelled", "job.paused", "job.resumed"):  # fmt: skip
        browser.get(console.page(f"/console/audit?actor={admin.user_id}&action={action}"))
        assert browser.find_elements(By.CSS_SELECTOR, f"tr[data-action='{action}']"), action
    browser.get(console.page(f"/console/audit?actor={admin.user_id}&action=dlq.entry_viewed"))
    revealed = browser.find_elements(By.XPATH, "//tr[contains(., '\"reveal\":true')]")
    assert revealed
    browser.get(console.page(f"/console/audit?actor={admin.user_id}&action=dlq.job_retried"))
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "tr[data-action='dlq.job_retried'] a.entity"))
    assert "/console/dead-letters/" in browser.current_url
    assert browser.find_element(By.ID, "payload")
