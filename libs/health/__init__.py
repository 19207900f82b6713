"""Liveness and readiness: each dependency checked with its own timeout, reported in the plan's shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CheckResult = dict[str, Any]
Check = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass
class Readiness:
    """Named checks (`database`, `broker`, `queue`, ...) run concurrently; any failure makes the service unready."""

    checks: Mapping[str, Check]
    timeout_s: float = 2.0
    shutting_down: bool = field(default=False)

    async def _run(self, check: Check) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                details = dict(await check())
        except TimeoutError:
            return {"status": "down", "error": f"timed out after {self.timeout_s:g}s",
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1)}  # fmt: skip
        except Exception as error:  # any failure of a dependency is reported, not raised
            return {"status": "down", "error": f"{type(error).__name__}: {error}"[:300],
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1)}  # fmt: skip
        return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 1), **details}

    async def report(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[name]) for name in names))
        checks = dict(zip(names, results, strict=True))
        failing = [name for name, result in checks.items() if result["status"] != "up"]
        if self.shutting_down:
            failing.append("shutdown")
        body: dict[str, Any] = {"status": "unhealthy" if failing else "healthy", "checks": checks}
        if failing:
            body["failing"] = failing
        if self.shutting_down:
            body["shutting_down"] = True
        return not failing, body
