"""Settling a lead: its outcome and every charge, in one statement that is its own transaction.

One statement, sent without BEGIN or COMMIT, so the providers' rows are locked only inside the server, for the
rest of that statement and its commit: never across a round trip to this process, which may be descheduled or
stopped at any moment. In that statement, in this order:

1. the lead's row, locked, and only if it still has the status the worker read (else nothing happens);
2. the chosen providers' rows, locked in id order (every lead locks in the same order, so two leads sharing
   providers wait for each other but never deadlock), and whether every one still covers its price: if one no
   longer does, nothing is written and the worker chooses again;
3. the processed-message record, the first time only (a redelivered message changes nothing);
4. each charge, the ledger's rule: a conditional debit that never overdraws, the assignment it pays for (its id
   time-ordered, given by the worker), one ledger row per charged assignment, the subscription's round-robin
   mark;
5. the lead's status, and the pause of the subscriptions whose provider could not pay.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    String,
    Uuid,
    bindparam,
    column,
    exists,
    func,
    insert,
    inspect,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from distribution_worker.assignment import Choice
from libs.db.ids import time_ordered_uuid
from libs.db.tables import (
    Assignment,
    Lead,
    LeadStatus,
    LedgerKind,
    PausedReason,
    ProcessedMessage,
    Provider,
    Subscription,
    SubscriptionStatus,
)
from libs.db.tables import LedgerEntry as Ledger

CONSUMER = "distribution-worker"

LEAD = (
    select(col(Lead.id))
    .where(col(Lead.id) == bindparam("lead_id"), col(Lead.status) == bindparam("read_status"))
    .with_for_update()
    .cte("lead")
)
_LEAD_UNCHANGED = exists(select(LEAD.c.id))

_WANTED_ROWS = func.unnest(
    bindparam("provider_ids", type_=ARRAY(Uuid)),
    bindparam("subscription_ids", type_=ARRAY(Uuid)),
    bindparam("prices", type_=ARRAY(BigInteger)),
    bindparam("assignment_ids", type_=ARRAY(Uuid)),
).table_valued(
    column("provider_id", Uuid),
    column("subscription_id", Uuid),
    column("price_cents", BigInteger),
    column("assignment_id", Uuid),
    name="wanted",
)
WANTED = select(_WANTED_ROWS.render_derived()).where(_LEAD_UNCHANGED).cte("wanted")

# Every lock wait on a provider happens here, in id order: what follows reads all of it before writing.
LOCKED = (
    select(col(Provider.id), col(Provider.balance_cents))
    .where(col(Provider.id).in_(select(WANTED.c.provider_id)))
    .order_by(col(Provider.id))
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE: what the debit's UPDATE takes anyway
    .cte("locked")
)
PAYABLE = (
    select(
        (
            func.coalesce(func.bool_and(LOCKED.c.balance_cents >= WANTED.c.price_cents), true())
            & (func.count(LOCKED.c.id) == func.count())
        ).label("ok")
    )
    .select_from(WANTED)
    .outerjoin(LOCKED, LOCKED.c.id == WANTED.c.provider_id)
    .cte("payable")
)

FIRST_DELIVERY = (
    upsert(ProcessedMessage)
    .from_select(
        ["consumer", "message_id"],
        select(literal(CONSUMER), bindparam("delivery_id", type_=String))
        .select_from(PAYABLE)
        .where(PAYABLE.c.ok, _LEAD_UNCHANGED),
    )
    .on_conflict_do_nothing()
    .returning(col(ProcessedMessage.message_id))
    .cte("first_delivery")
)
_RECORDED = exists(select(FIRST_DELIVERY.c.message_id))

# The ledger's debit: the price is taken only while the balance covers it (never read, then written).
DEBITED = (
    update(Provider)
    .where(col(Provider.id) == WANTED.c.provider_id, col(Provider.balance_cents) >= WANTED.c.price_cents, _RECORDED)
    .values(balance_cents=col(Provider.balance_cents) - WANTED.c.price_cents)
    .returning(col(Provider.id).label("provider_id"), col(Provider.balance_cents).label("balance_after_cents"))
    .cte("debited")
)
ASSIGNED = (
    insert(Assignment)
    .from_select(
        ["id", "lead_id", "provider_id", "subscription_id", "price_cents"],
        select(
            WANTED.c.assignment_id,
            bindparam("lead_id", type_=Uuid),
            WANTED.c.provider_id,
            WANTED.c.subscription_id,
            WANTED.c.price_cents,
        ).join_from(WANTED, DEBITED, DEBITED.c.provider_id == WANTED.c.provider_id),
        include_defaults=False,
    )
    .returning(
        col(Assignment.id), col(Assignment.provider_id), col(Assignment.subscription_id), col(Assignment.price_cents)
    )
    .cte("assigned")
)
# One ledger row per charged assignment (unique per assignment in the table too).
RECORDED = (
    insert(Ledger)
    .from_select(
        ["provider_id", "kind", "amount_cents", "assignment_id"],
        select(
            ASSIGNED.c.provider_id,
            literal(LedgerKind.lead_charge, inspect(Ledger).columns["kind"].type),
            -ASSIGNED.c.price_cents,
            ASSIGNED.c.id,
        ),
    )
    .cte("recorded")
)
# clock_timestamp(), not now(): it moves on row by row, so two providers served by one lead do not tie in the
# round-robin order.
TOUCHED = (
    update(Subscription)
    .where(col(Subscription.id) == ASSIGNED.c.subscription_id)
    .values(last_assigned_at=func.clock_timestamp())
    .cte("touched")
)
# A trusted source's lead is approved and distributed at once: its decision time is now.
SET_STATUS = (
    update(Lead)
    .where(col(Lead.id) == bindparam("lead_id"), _RECORDED)
    .values(status=bindparam("new_status"), decided_at=func.coalesce(col(Lead.decided_at), func.now()))
    .cte("set_status")
)
PAUSE_UNPAID = (
    update(Subscription)
    .where(
        col(Subscription.id) == func.any(bindparam("unpaid", type_=ARRAY(Uuid))),
        col(Subscription.status) == SubscriptionStatus.active,
        _RECORDED,
    )
    .values(status=SubscriptionStatus.paused, paused_reason=PausedReason.insufficient_balance)
    .cte("pause_unpaid")
)

_CHARGED = (
    select(ASSIGNED.c.id.label("assignment_id"), ASSIGNED.c.provider_id, DEBITED.c.balance_after_cents)
    .join_from(ASSIGNED, DEBITED, DEBITED.c.provider_id == ASSIGNED.c.provider_id)
    .subquery("charged")
)
# One row when nothing was charged, else one per charge; `paid` and `recorded` are on every row.
SETTLE = (
    select(
        PAYABLE.c.ok.label("paid"),
        _RECORDED.label("recorded"),
        _CHARGED.c.assignment_id,
        _CHARGED.c.provider_id,
        _CHARGED.c.balance_after_cents,
    )
    .select_from(PAYABLE)
    .outerjoin(_CHARGED, true())
    .add_cte(RECORDED, TOUCHED, SET_STATUS, PAUSE_UNPAID)
)


@dataclass(frozen=True)
class Settled:
    recorded: bool
    """The outcome was written: the lead still had the status read, every chosen provider could pay, and this
    was the message's first delivery."""
    paid: bool
    """Every chosen provider still covered its price (when not, nothing was written)."""
    balances_after: dict[uuid.UUID, tuple[uuid.UUID, int]]
    """By provider: its assignment and balance after the charge."""


async def settle(
    connection: AsyncConnection,
    lead_id: uuid.UUID,
    *,
    read_status: LeadStatus,
    message_id: str,
    choice: Choice,
) -> Settled:
    """Runs on a connection in autocommit: the statement is its own transaction."""
    in_lock_order = sorted(choice.chosen, key=lambda subscription: subscription.provider_id)
    # No parameter is named after a column of an updated table: SQLAlchemy would add it to that UPDATE's SET.
    params = {
        "lead_id": lead_id,
        "read_status": read_status,
        "delivery_id": message_id,
        "new_status": LeadStatus.distributed if choice.chosen else LeadStatus.unassigned,
        "provider_ids": [subscription.provider_id for subscription in in_lock_order],
        "subscription_ids": [subscription.id for subscription in in_lock_order],
        "prices": [subscription.price_cents for subscription in in_lock_order],
        "assignment_ids": [time_ordered_uuid() for _ in in_lock_order],
        "unpaid": [subscription.id for subscription in choice.unpaid],
    }
    rows = (await connection.execute(SETTLE, params)).all()
    charged = {
        row.provider_id: (row.assignment_id, row.balance_after_cents) for row in rows if row.assignment_id is not None
    }
    return Settled(recorded=bool(rows[0].recorded), paid=bool(rows[0].paid), balances_after=charged)
