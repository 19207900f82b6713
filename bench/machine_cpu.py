"""Where the machine's cores went over a measured window: busy and idle core-seconds (/proc/stat) and the CPU time
of each group of processes (/proc/<pid>/stat), the measured services, PostgreSQL, RabbitMQ, this benchmark process
and "other" (busy minus the named groups: other helpers' load, the kernel's own threads, processes that ended).

A figure is CPU-bound when the machine was busy throughout (idle share near 0) and its busy CPU per item, spread
over the cores, allows no more than the measured rate; it is waiting when the cores had idle time left.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
POSTGRESQL = "postgresql"
RABBITMQ = "rabbitmq"
BENCH = "load_generator"
"""This benchmark process (publishing, polling, a raw client) and what it started that no other group claims (wrk)."""
OTHER = "other"
RABBITMQ_PROGRAMS = frozenset({"beam.smp", "epmd"})
SATURATED_IDLE_SHARE = 0.05
"""Idle share at or under which the cores were busy the whole window (a scheduler tick here and there)."""


@dataclass(frozen=True)
class Process:
    parent: int
    program: str
    title: str
    """A PostgreSQL process's command line, NULs as spaces (a backend's names its user and database); else empty."""
    cpu_s: float
    """User + system time of the process, all its threads and (but for PostgreSQL) its children ended and waited
    for."""


def _processes() -> dict[tuple[int, int], Process]:
    """Every process now, keyed by (pid, start time) so that a reused pid is a different process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            program, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            # Only a PostgreSQL process's title is read (which database it serves): a snapshot stays cheap.
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode() if program == "postgres" else ""
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Fields after the name, from 0: 1 ppid, 11-14 utime, stime, cutime, cstime, 19 starttime (proc(5): 4,
        # 14-17, 22). The children's times are those of children ended and waited for (wrk ended before the window
        # closed), counted with their parent rather than lost; not the postmaster's, whose ended children are every
        # database's sessions.
        key = (int(entry.name), int(rest[19]))
        ended_children = 0 if program == "postgres" else int(rest[13]) + int(rest[14])
        found[key] = Process(int(rest[1]), program, title, (int(rest[11]) + int(rest[12]) + ended_children) * TICK_S)
    return found


def _thread_cpu_s(thread: int) -> float:
    try:
        stat = Path(f"/proc/self/task/{thread}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _machine_s() -> tuple[float, float]:
    """Busy and idle core-seconds since boot (/proc/stat's cpu line; guest time is already in user)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) * TICK_S, (idle + iowait) * TICK_S


def postgresql_database(title: str) -> str | None:
    """The database a PostgreSQL process serves, from its title: `postgres: [cluster: ]user db host(port) state`
    for a backend, `postgres: [cluster: ]autovacuum worker db`; None for the cluster's shared processes."""
    if not title.startswith("postgres: "):
        return None
    words = title.removeprefix("postgres: ").split()
    if words and words[0].endswith(":"):
        words = words[1:]  # cluster_name, as Debian sets it (15/main:)
    if words[:2] == ["autovacuum", "worker"] and len(words) > 2:
        return words[2]
    if len(words) > 2 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


@dataclass(frozen=True)
class Groups:
    """Which process counts where: each service by the pids it was started as (and their descendants), PostgreSQL's
    backends of `database` and its shared processes (other databases' backends are other load), RabbitMQ, this
    process; `threads` names threads of this process that are a group of their own (an in-process SMTP sink)."""

    database: str
    services: Mapping[str, Sequence[int]] = field(default_factory=dict)
    threads: Mapping[str, Sequence[int]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [*self.services, POSTGRESQL, RABBITMQ, BENCH, *self.threads]

    def classify(self, processes: Mapping[tuple[int, int], Process]) -> dict[tuple[int, int], str]:
        by_pid = {key[0]: key for key in processes}
        roots = {pid: name for name, pids in self.services.items() for pid in pids}
        roots.setdefault(os.getpid(), BENCH)
        groups: dict[tuple[int, int], str] = {}
        for key, process in processes.items():
            pid, seen = key[0], set()
            while pid not in roots and pid in by_pid and pid not in seen:
                seen.add(pid)
                pid = processes[by_pid[pid]].parent
            if pid in roots:
                groups[key] = roots[pid]
            elif process.program == "postgres":
                database = postgresql_database(process.title)
                if database is None or database == self.database:
                    groups[key] = POSTGRESQL
            elif process.program in RABBITMQ_PROGRAMS or self._under_rabbitmq(process, processes, by_pid):
                groups[key] = RABBITMQ
        return groups

    @staticmethod
    def _under_rabbitmq(
        process: Process, processes: Mapping[tuple[int, int], Process], by_pid: Mapping[int, tuple[int, int]]
    ) -> bool:
        parent, seen = process.parent, set()
        while parent in by_pid and parent not in seen:
            seen.add(parent)
            if processes[by_pid[parent]].program == "beam.smp":
                return True
            parent = processes[by_pid[parent]].parent
        return False


@dataclass(frozen=True)
class Snapshot:
    busy_s: float
    idle_s: float
    cpu_s: Mapping[tuple[int, int], tuple[str, float]]
    """Each grouped process's group and CPU seconds so far."""
    thread_cpu_s: Mapping[str, float]


def snapshot(groups: Groups) -> Snapshot:
    busy, idle = _machine_s()
    processes = _processes()
    grouped = groups.classify(processes)
    threads = {name: sum(_thread_cpu_s(thread) for thread in ids) for name, ids in groups.threads.items()}
    return Snapshot(busy, idle, {key: (name, processes[key].cpu_s) for key, name in grouped.items()}, threads)


@dataclass(frozen=True)
class CpuUse:
    """Core-seconds spent over a window: the machine's busy and idle, and each group's (other: the rest of busy)."""

    busy_s: float
    idle_s: float
    groups: Mapping[str, float]

    @property
    def idle_share(self) -> float:
        total = self.busy_s + self.idle_s
        return self.idle_s / total if total else 0.0

    @property
    def named_s(self) -> float:
        return sum(seconds for name, seconds in self.groups.items() if name != OTHER)

    def details(self, items: int, prefix: str = "") -> dict[str, float]:
        """Each group's CPU ms per item, the machine's busy CPU ms per item and its idle share."""
        per_item = {f"{prefix}cpu_{name.replace('-', '_')}_ms": 1000 * seconds / items
                    for name, seconds in self.groups.items()}  # fmt: skip
        return per_item | {
            f"{prefix}cpu_machine_busy_ms": 1000 * self.busy_s / items,
            f"{prefix}machine_idle_share": round(self.idle_share, 3),
        }

    def ceiling(self, items: int, target_rate: float) -> dict[str, float]:
        """The rate the target needs beside the rates the cores allow at this window's CPU per item: all of the
        machine's busy time, and only the named groups' (what a machine with no other load would spend). Below
        the target on a saturated machine, the target is out of reach until the CPU per item falls."""
        allow = CORES * items / self.busy_s if self.busy_s else float("inf")
        allow_named = CORES * items / self.named_s if self.named_s else float("inf")
        saturated = self.idle_share <= SATURATED_IDLE_SHARE
        return {
            "rate_target_needs": round(target_rate, 1),
            "rate_cores_allow": round(allow, 1),
            "rate_cores_allow_without_other": round(allow_named, 1),
            "cpu_ceiling_below_target": float(saturated and allow_named < target_rate),
        }


def since(start: Snapshot, groups: Groups) -> CpuUse:
    """What the cores did from `start` to now. A process started within the window counts all its CPU; one that
    ended within it counts in its parent's group once the parent has waited for it (wrk in this process's), else
    nothing (its time stays in other: a PostgreSQL session closed within the window)."""
    end = snapshot(groups)
    spent = dict.fromkeys(groups.names(), 0.0)
    for key, (name, cpu_s) in end.cpu_s.items():
        before = start.cpu_s.get(key)
        spent[name] += cpu_s - (before[1] if before else 0.0)
    for name, cpu_s in end.thread_cpu_s.items():
        moved = cpu_s - start.thread_cpu_s.get(name, 0.0)
        spent[name] += moved
        spent[BENCH] -= moved
    busy = end.busy_s - start.busy_s
    spent[OTHER] = max(0.0, busy - sum(spent.values()))
    return CpuUse(busy, end.idle_s - start.idle_s, spent)


def database_name(database_url: str) -> str:
    return database_url.rsplit("/", 1)[1].split("?", 1)[0]


def own_threads() -> set[int]:
    """This process's thread ids now: the threads a library starts are the ones new after its start."""
    return {int(task.name) for task in Path("/proc/self/task").iterdir()}


def cpu_details(use: CpuUse | None, items: int, prefix: str = "", target_rate: float | None = None) -> dict[str, float]:
    """A window's account as a Measurement's details (`prefix` names a baseline's window); with `target_rate`,
    the ceiling reading beside it."""
    if use is None or not items:
        return {}
    return use.details(items, prefix) | (use.ceiling(items, target_rate) if target_rate is not None else {})
