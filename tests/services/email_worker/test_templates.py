"""What each email says: every template the contract allows renders, money reads as dollars, nothing is guessed."""

from typing import get_args

import pytest

from email_worker.templates import render
from libs.contracts import SendEmail

TEMPLATES = get_args(SendEmail.model_fields["template"].annotation)


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_the_contract_allows_renders_a_subject_and_a_body(template: str) -> None:
    subject, body = render(template, {})
    assert subject
    assert body


def test_a_new_lead_names_the_lead_and_the_price() -> None:
    subject, body = render("new_lead", {"lead_id": "lead-7", "price_cents": 2500})
    assert subject == "New lead assigned to you"
    assert body == "A new lead (lead-7) is in your inbox. Charged: $25.00."


def test_a_low_balance_warning_shows_the_balance() -> None:
    assert render("low_balance", {"balance_cents": 950})[1].startswith("Your balance is $9.50.")


def test_a_refund_shows_the_amount_the_lead_and_the_new_balance() -> None:
    _, body = render("refund_approved", {"amount_cents": 2500, "lead_id": "lead-7", "balance_cents": 10_000})
    assert body == "We refunded $25.00 for lead lead-7. New balance: $100.00."


def test_an_export_shows_its_id_and_row_count() -> None:
    assert (
        render("export_ready", {"export_id": "e-1", "row_count": 3})[1] == "Export e-1 (3 rows) is ready to download."
    )


def test_a_reactivation_names_the_subscription() -> None:
    assert "Subscription s-1 receives leads again." in render("subscription_reactivated", {"subscription_id": "s-1"})[1]


@pytest.mark.parametrize(
    ("cents", "shown"),
    [(0, "$0.00"), (5, "$0.05"), (123_456_789, "$1,234,567.89"), (-150, "-$1.50"), ("2500", "$25.00")],
)
def test_cents_read_as_dollars_with_thousands_separators(cents: int | str, shown: str) -> None:
    assert (
        render("low_balance", {"balance_cents": cents})[1]
        == f"Your balance is {shown}. Top up to keep receiving leads."
    )


@pytest.mark.parametrize("cents", ["12.5", "a lot", "", "--5", "\u00b2", " 7"])
def test_an_amount_that_is_not_whole_cents_shows_as_zero(cents: str) -> None:
    assert render("low_balance", {"balance_cents": cents})[1].startswith("Your balance is $0.00.")


def test_a_missing_parameter_shows_as_a_question_mark() -> None:
    assert render("new_lead", {})[1] == "A new lead (?) is in your inbox. Charged: $0.00."


def test_an_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown template"):
        render("password_reset", {})
