"""Readiness names the failing dependency; each check has its own timeout."""

import asyncio
from collections.abc import Mapping
from typing import Any

from libs.health import Readiness


async def healthy() -> Mapping[str, Any]:
    return {"depth": 3}


async def refused() -> Mapping[str, Any]:
    raise ConnectionRefusedError("connection refused")


async def hangs() -> Mapping[str, Any]:
    await asyncio.sleep(10)
    return {}


async def test_all_up_is_healthy_in_the_plan_shape() -> None:
    ok, body = await Readiness({"database": healthy, "queue": healthy}).report()
    assert ok
    assert body["status"] == "healthy"
    assert body["checks"]["queue"]["status"] == "up"
    assert body["checks"]["queue"]["depth"] == 3
    assert "latency_ms" in body["checks"]["database"]


async def test_a_failing_check_is_named() -> None:
    ok, body = await Readiness({"database": refused, "broker": healthy}).report()
    assert not ok
    assert body["status"] == "unhealthy"
    assert body["failing"] == ["database"]
    assert "connection refused" in body["checks"]["database"]["error"]


async def test_a_hanging_check_times_out_without_holding_the_others() -> None:
    started = asyncio.get_running_loop().time()
    ok, body = await Readiness({"broker": hangs, "database": healthy}, timeout_s=0.2).report()
    assert not ok
    assert body["checks"]["broker"]["error"] == "timed out after 0.2s"
    assert body["checks"]["database"]["status"] == "up"
    assert asyncio.get_running_loop().time() - started < 2


async def test_shutting_down_is_unready() -> None:
    readiness = Readiness({"database": healthy})
    readiness.shutting_down = True
    ok, body = await readiness.report()
    assert not ok
    assert body["failing"] == ["shutdown"]
