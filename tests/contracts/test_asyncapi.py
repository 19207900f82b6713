"""The AsyncAPI documents say what the services do on the broker: the queues their real brokers consume, each
message's schema, and a consumer for every event published."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from faststream.rabbit import RabbitBroker
from litestar import Litestar

from dlq_service.capture_consumer import CaptureConsumer
from libs.contracts import ALL_MESSAGES
from libs.runtime import SERVICES, Service
from tests.contracts.render import load_renderer

Document = dict[str, Any]


@pytest.fixture(scope="module")
def renderer() -> ModuleType:
    return load_renderer()


@pytest.fixture(scope="module")
def documents(renderer: ModuleType) -> dict[str, Document]:
    return {service.name: renderer.asyncapi_document(service.name) for service in SERVICES}


def started_broker(app: Litestar) -> RabbitBroker:
    """The broker a built service starts, found where libs/runtime/assembly.py puts it: in a startup hook."""
    for hook in app.on_startup:
        for cell in getattr(hook, "__closure__", None) or ():
            if isinstance(cell.cell_contents, RabbitBroker):
                return cell.cell_contents
    raise AssertionError("no startup hook starts a RabbitBroker")


def directly_consumed(app: Litestar) -> set[str]:
    """Queues a service consumes with aio-pika itself rather than through FastStream (the dlq-service's capture):
    their consumers are started by a startup hook."""
    owners = (getattr(hook, "__self__", None) for hook in app.on_startup)
    return {owner.queue_name for owner in owners if isinstance(owner, CaptureConsumer)}


def operations(document: Document, action: str) -> list[Document]:
    return [operation for operation in document["operations"].values() if operation["action"] == action]


def channel(document: Document, operation: Document) -> Document:
    channels: dict[str, Document] = document["channels"]
    return channels[operation["channel"]["$ref"].rsplit("/", 1)[1]]


def payload(document: Document, operation: Document) -> Document:
    [reference] = [item["$ref"] for item in channel(document, operation)["messages"].values()]
    message: Document = document["components"]["messages"][reference.rsplit("/", 1)[1]]
    schema_ref: str = message["payload"].get("$ref", "")
    schemas: dict[str, Document] = document["components"]["schemas"]
    fallback: Document = message["payload"]
    return schemas.get(schema_ref.rsplit("/", 1)[-1]) or fallback


def payloads(document: Document, action: str) -> list[Document]:
    return [payload(document, operation) for operation in operations(document, action)]


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_the_document_shows_exactly_the_queues_the_services_broker_consumes(
    service: Service, renderer: ModuleType, documents: dict[str, Document]
) -> None:
    app = renderer.built_app(service)
    broker = started_broker(app)
    consumed = {subscriber.queue.name for subscriber in broker.subscribers}  # type: ignore[attr-defined]
    consumed |= directly_consumed(app)

    document = documents[service.name]
    documented = {channel(document, op)["bindings"]["amqp"]["queue"]["name"] for op in operations(document, "receive")}
    assert documented == consumed


def test_every_message_contract_is_documented_with_its_schema_where_it_is_published_and_consumed(
    documents: dict[str, Document],
) -> None:
    for contract in ALL_MESSAGES:
        found = [(action, schema) for document in documents.values() for action in ("send", "receive")
                 for schema in payloads(document, action) if schema.get("title") == contract.__name__]  # fmt: skip
        assert {action for action, _ in found} == {"send", "receive"}, contract.__name__
        # FastStream moves a nested model's definition (pydantic's `$defs`) to the document's components.
        expected = contract.model_json_schema(ref_template="#/components/schemas/{model}")
        nested = expected.pop("$defs", {})
        assert all(schema == expected for _, schema in found), contract.__name__
        for name, definition in nested.items():
            documented = [document["components"]["schemas"].get(name) for document in documents.values()]
            assert definition in documented, (contract.__name__, name)
            assert all(schema in (None, definition) for schema in documented), (contract.__name__, name)


def test_every_event_published_on_the_events_exchange_reaches_a_documented_consumer(
    documents: dict[str, Document],
) -> None:
    published = {
        channel(document, op)["address"]
        for document in documents.values()
        for op in operations(document, "send")
        if channel(document, op)["bindings"]["amqp"].get("exchange", {}).get("name") == "fmhl.events"
    }
    consumed = {channel(document, op).get("address") for document in documents.values()
                for op in operations(document, "receive")}  # fmt: skip
    assert published - consumed == set()
