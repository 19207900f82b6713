"""The console against hostile content and hostile callers, in a real browser: markup a publisher put in a dead
letter stays text, a form without its CSRF token is refused, only admins with MFA get in, and a session cookie
copied elsewhere dies with logout."""

from __future__ import annotations

import uuid

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select
from sqlmodel import col

from libs.db.tables import DeadLetter, DeadLetterStatus
from tests.browser.conftest import PASSWORD, ConsoleStack, click_through, log_in, refusal, submit

SCRIPT = "<script>alert('script')</script>"
IMAGE = "<img src=x onerror=alert('img')>"
LINK = "javascript:alert('link')"
HOSTILE = f"{SCRIPT} {IMAGE} {LINK}"


@pytest.fixture(scope="module")
async def browser(chrome: WebDriver, console: ConsoleStack) -> WebDriver:
    admin = await console.user()
    log_in(chrome, console, admin.email, PASSWORD, admin.code())
    assert chrome.current_url == console.page("/console")
    return chrome


def assert_inert(driver: WebDriver) -> None:
    """No dialog opened, no element was made from the hostile text, and the text itself is on the page."""
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [script.get_attribute("src") for script in scripts] == [driver.current_url.split("/console")[0]
                                                                    + "/console/static/console.js"]  # fmt: skip
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert driver.find_elements(By.CSS_SELECTOR, "[onerror], [onload], [onclick]") == []
    assert driver.find_elements(By.CSS_SELECTOR, "a[href^='javascript'], a[href*='alert']") == []
    assert "<script>alert('script')</script>" in driver.find_element(By.TAG_NAME, "body").text


async def test_markup_in_payload_headers_and_error_renders_as_inert_text(
    browser: WebDriver, console: ConsoleStack
) -> None:
    fingerprint = f"fp-{uuid.uuid4().hex[:12]}"
    [entry_id] = await console.dead_letters(
        1, fingerprint=fingerprint, error_type=SCRIPT, error_message=HOSTILE, stack_trace=HOSTILE,
        payload={"template": HOSTILE, "to": LINK, "params": {IMAGE: SCRIPT}},
        headers={"fmhl-error-message": HOSTILE, SCRIPT: LINK}, service=IMAGE,
    )  # fmt: skip
    pages = [
        f"/console/dead-letters?fingerprint={fingerprint}", "/console/dead-letters/groups",
        f"/console/redrives/new?group=1&queue=email&fingerprint={fingerprint}", f"/console/dead-letters/{entry_id}",
        f"/console/dead-letters/{entry_id}?reveal=1", f"/console/dead-letters/{entry_id}/edit",
    ]  # fmt: skip
    for page in pages:
        browser.get(console.page(page))
        assert_inert(browser)
    # The edit is refused by the contract, and the refusal shows the hostile text as text again.
    submit(browser, browser.find_element(By.ID, "body"))
    assert browser.find_element(By.ID, "field-errors")
    assert_inert(browser)


async def test_a_note_with_markup_shows_as_text_in_the_audit_log(browser: WebDriver, console: ConsoleStack) -> None:
    [entry_id] = await console.dead_letters(1)
    browser.get(console.page(f"/console/dead-letters/{entry_id}"))
    browser.find_element(By.NAME, "note").send_keys(HOSTILE)
    click_through(browser, browser.find_element(By.ID, "resolve"))
    browser.get(console.page(f"/console/audit?entity_type=dead_letter&entity_id={entry_id}"))
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-action='dlq.entry_noted']")
    assert_inert(browser)


async def test_a_form_posted_without_its_csrf_token_is_refused(browser: WebDriver, console: ConsoleStack) -> None:
    [entry_id] = await console.dead_letters(1)
    browser.get(console.page(f"/console/dead-letters/{entry_id}"))
    resolve = browser.find_element(By.ID, "resolve")
    browser.execute_script(
        "arguments[0].form.querySelector('input[name=_csrf_token]').remove()", resolve
    )  # as a forged form on another site would be: without the token
    click_through(browser, resolve)
    assert browser.find_element(By.TAG_NAME, "h1").text == "403"
    assert "CSRF" in browser.find_element(By.CSS_SELECTOR, ".problem").text
    async with console.engine.connect() as connection:
        status = await connection.scalar(select(col(DeadLetter.status)).where(col(DeadLetter.id) == entry_id))
    assert status == DeadLetterStatus.failed


async def test_a_providers_login_is_refused(chrome: WebDriver, console: ConsoleStack) -> None:
    provider = await console.user("provider", with_totp=False)
    chrome.delete_all_cookies()
    log_in(chrome, console, provider.email, PASSWORD, None)
    assert refusal(chrome) == "The console is for administrators only."
    assert chrome.get_cookie("fmhl_console_session") is None


async def test_an_admin_without_mfa_is_refused(chrome: WebDriver, console: ConsoleStack) -> None:
    admin = await console.user(with_totp=False)
    chrome.delete_all_cookies()
    log_in(chrome, console, admin.email, PASSWORD, None)
    assert "TOTP code" in (refusal(chrome) or "")
    log_in(chrome, console, admin.email, PASSWORD, "123456")
    assert refusal(chrome) == "Wrong email, password or code."
    assert chrome.get_cookie("fmhl_console_session") is None


async def test_a_copied_session_cookie_stops_working_after_logout(chrome: WebDriver, console: ConsoleStack) -> None:
    admin = await console.user()
    chrome.delete_all_cookies()
    log_in(chrome, console, admin.email, PASSWORD, admin.code())
    stolen = chrome.get_cookie("fmhl_console_session")
    assert stolen is not None
    cookies = {"fmhl_console_session": stolen["value"]}
    async with httpx.AsyncClient(base_url=console.url, cookies=cookies) as thief:
        assert (await thief.get("/console/dead-letters")).status_code == 200
        click_through(chrome, chrome.find_element(By.CSS_SELECTOR, "form.logout button"))
        assert "Logged out" in chrome.find_element(By.CSS_SELECTOR, ".notice").text
        after = await thief.get("/console/dead-letters")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/console/login")
