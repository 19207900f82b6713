"""What every service process is made of, assembled once: database engine, broker with the topology declared,
confirmed publisher, readiness checks, and the start/stop order. A service's `main.py` adds its own parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faststream.rabbit import RabbitBroker
from litestar import Litestar
from litestar.types import ControllerRouterHandler, LifespanHook
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import QueueDepthGauge, broker_check, broker_lifecycle, create_broker, queue_check
from libs.messaging.consumer import pause_on_outages
from libs.messaging.outage import Outages
from libs.messaging.permissions import broker_grant
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.runtime.collector import tune_for_serving
from libs.settings import ServiceSettings, Settings, load_or_exit
from libs.telemetry import Telemetry, telemetry_for
from libs.web import create_app, serve


@dataclass
class ServiceRuntime:
    settings: ServiceSettings
    telemetry: Telemetry
    engine: AsyncEngine
    broker: RabbitBroker
    publisher: Publisher
    readiness: Readiness
    outages: Outages
    """A breaker per consumed queue, which every ConsumerPolicy on this broker reports to (`pause_on_outages`):
    an outage pauses consumption, and readiness answers 503 while a consumer is paused."""
    on_startup: list[LifespanHook] = field(default_factory=list)
    on_shutdown: list[LifespanHook] = field(default_factory=list)

    @classmethod
    def create(
        cls, settings: ServiceSettings, telemetry: Telemetry, *, consumes: str | None = None, prefetch: int = 10
    ) -> ServiceRuntime:
        """`consumes`: the queue this service's readiness and `fmhl_queue_depth` watch."""
        engine = create_engine(settings)
        broker = create_broker(
            settings.rabbitmq_url.get_secret_value(), telemetry, service=settings.service_name, prefetch=prefetch
        )
        checks = {"database": database_check(engine), "broker": broker_check(broker)}
        # The breakers probe the same dependencies readiness checks.
        outages = Outages(dict(checks), telemetry)
        pause_on_outages(broker, outages)
        if consumes is not None:
            checks["queue"] = queue_check(broker, consumes)
            checks["consumers"] = outages.check()
        start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY, _own_queues(settings.service_name))
        runtime = cls(
            settings=settings,
            telemetry=telemetry,
            engine=engine,
            broker=broker,
            publisher=Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s),
            readiness=Readiness(checks, timeout_s=settings.health_check_timeout_s),
            outages=outages,
            on_startup=[start_broker],
            # Deliveries held for an outage go back to their queue first, so the broker's drain does not wait on them.
            on_shutdown=[outages.stop, stop_broker, engine.dispose],
        )
        if consumes is not None:
            depth = QueueDepthGauge(broker, consumes, telemetry)
            runtime.on_startup.append(depth.start)
            runtime.on_shutdown.insert(0, depth.stop)
        return runtime

    def app(
        self,
        *,
        route_handlers: Sequence[ControllerRouterHandler] = (),
        on_startup: Sequence[LifespanHook] = (),
        on_shutdown: Sequence[LifespanHook] = (),
        **litestar_options: Any,
    ) -> Litestar:
        """The broker starts first and stops last: the service's own parts start after it and stop before it."""
        return create_app(
            self.settings,
            self.telemetry,
            self.readiness,
            route_handlers=route_handlers,
            on_startup=[*self.on_startup, *on_startup],
            on_shutdown=[*on_shutdown, *self.on_shutdown],
            **litestar_options,
        )


def run_service(
    settings_cls: type[Settings], build: Callable[[Settings, Telemetry], tuple[Litestar, Readiness]]
) -> None:
    """`__main__`: settings (or exit naming the bad variable), logging, telemetry, the app, serve until SIGTERM; the
    garbage collector set for serving once the app has started (in a service process only: a test process that
    starts apps by the hundred keeps Python's defaults)."""
    settings = load_or_exit(settings_cls)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = telemetry_for(settings)
    app, readiness = build(settings, telemetry)
    app.on_startup.append(tune_for_serving)
    serve(app, settings, telemetry, readiness)


def _own_queues(service_name: str) -> frozenset[str] | None:
    """One of the six declares only its own queues: its broker user may configure nothing else (the provisioning
    step declared the rest). Any other name (a test's own) declares everything, as the administrator it runs as."""
    try:
        return frozenset(broker_grant(service_name).queues())
    except KeyError:
        return None
