"""Counts the SQL statements a service process sends, from outside its code: Python imports this module at start
when its folder is on PYTHONPATH, and it does something only when FMHL_BENCH_STATEMENTS names a file.

Counted: every statement SQLAlchemy executes, and the transaction control and pings asyncpg sends on its own
(BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, pool_pre_ping's empty query), which SQLAlchemy does not report as
statements. Written to the file as JSON every WRITE_EVERY_S (uvicorn ends a stopped service by raising its SIGTERM
again, so exit handlers do not run): a benchmark waits that long after its work is done before it stops the
service. Not more often: the writer thread's wake-ups were 9% of a measured worker's CPU at 100 ms.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START")
COUNTS = {"statements": 0, "control": 0}
WRITE_EVERY_S = 1.0


def _count_control(record: Any) -> None:
    query = str(record.query).strip().rstrip(";").upper()
    if query == "" or query.startswith(CONTROL):
        COUNTS["control"] += 1


def _install(path: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    def on_statement(*_: Any) -> None:
        COUNTS["statements"] += 1

    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(_count_control)

    event.listen(Engine, "before_cursor_execute", on_statement)
    event.listen(Pool, "connect", on_connect)

    def write() -> None:
        path.write_text(json.dumps(COUNTS))

    def keep_writing() -> None:
        while True:
            write()
            time.sleep(WRITE_EVERY_S)

    threading.Thread(target=keep_writing, name="statement-probe", daemon=True).start()
    atexit.register(write)


if os.environ.get("FMHL_BENCH_STATEMENTS"):
    _install(Path(os.environ["FMHL_BENCH_STATEMENTS"]))
