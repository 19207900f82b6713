"""A PostgreSQL cluster and a RabbitMQ node of the fault suite's own, on their own ports and data directories.

The faults stop, kill and freeze them, so they are never the machine's shared ones: every other test, helper
or stack on the machine keeps its database and broker. Both run as their system users when the suite runs as
root (PostgreSQL refuses to run as root; the RabbitMQ node then shares the machine's Erlang cookie).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _as(user: str, command: list[str]) -> list[str]:
    """Runs `command` as `user` when we are root, as ourselves otherwise."""
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else command


def _hand_over(path: Path, user: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, user, user)


def _until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's server programs (Debian keeps them out of PATH)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server programs under /usr/lib/postgresql")
    return versions[-1]


def node_environment(node: str, root: Path, port: int, dist_port: int, *, long_name: bool = False) -> dict[str, str]:
    """A RabbitMQ node of its own on this machine (RabbitMQ's documented way: name, ports and data under `root`)."""
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(root / "beam.pid"),
    }
    if long_name:
        env["RABBITMQ_USE_LONGNAME"] = "true"
    if os.geteuid() == 0:
        # The rabbitmq user's home holds the machine's Erlang cookie, which rabbitmqctl needs too.
        env["HOME"] = "/var/lib/rabbitmq"
    return env


@dataclass
class PrivatePostgres:
    """`initdb` into `root`, served on 127.0.0.1:`port`; the role `fmhl` owns the database `fmhl_faults`."""

    root: Path
    port: int
    password: str
    database: str = "fmhl_faults"
    role: str = "fmhl"
    bin: Path = field(default_factory=postgres_bin)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.role}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = _as("postgres", [str(self.bin / "pg_ctl"), "-D", str(self.data), *args])
        return subprocess.run(command, capture_output=True, text=True, check=False)

    def create(self) -> None:
        _hand_over(self.root, "postgres")
        password_file = self.root / "superuser-password"
        password_file.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        subprocess.run(
            _as("postgres", [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                             "-A", "scram-sha-256", f"--pwfile={password_file}"]),
            capture_output=True, check=True,
        )  # fmt: skip
        self.start()
        self.sql(f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}'")
        self.sql(f"CREATE DATABASE {self.database} OWNER {self.role}")

    def start(self) -> None:
        # fsync off: a stopped or killed server still leaves its writes in the OS, and no fault here crashes the
        # OS. Every commit still waits for its WAL write (synchronous_commit stays on), so none is lost.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c fsync=off -c full_page_writes=off")  # fmt: skip
        result = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.root / "server.log"), "-o", options)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is the abrupt one: every backend killed, crash recovery at the next start."""
        self._pg_ctl("stop", "-w", "-m", mode)

    @property
    def running(self) -> bool:
        return self._pg_ctl("status").returncode == 0

    def sql(self, statement: str, database: str = "postgres") -> str:
        result = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-v",
             "ON_ERROR_STOP=1", "-qAtc", statement],
            capture_output=True, text=True, check=True, env={**os.environ, "PGPASSWORD": self.password},
        )  # fmt: skip
        return result.stdout.strip()

    def migrate(self) -> None:
        subprocess.run(
            [str(ROOT / ".venv/bin/alembic"), "upgrade", "head"],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": self.url}, capture_output=True, check=True,
        )  # fmt: skip

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivateRabbitMQ:
    """A second RabbitMQ node on this machine (RabbitMQ's documented way: its own node name, ports and data
    directories), with the management plugin on its own port and a short heartbeat."""

    root: Path
    port: int
    dist_port: int
    management_port: int
    password: str
    node: str = "faults@localhost"
    user: str = "faults"
    vhost: str = "faults"
    heartbeat_s: int = 5
    launcher: subprocess.Popen[bytes] | None = None

    def url(self, port: int | None = None) -> str:
        """`port`: where clients connect, e.g. a fault proxy in front of the node."""
        address = f"127.0.0.1:{port or self.port}"
        return f"amqp://{self.user}:{self.password}@{address}/{self.vhost}?heartbeat={self.heartbeat_s}"

    @property
    def management_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.management_port}"

    def _env(self) -> dict[str, str]:
        return node_environment(self.node, self.root, self.port, self.dist_port)

    def create(self) -> None:
        for folder in (self.root, self.root / "mnesia", self.root / "log"):
            _hand_over(folder, "rabbitmq")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            # Queue numbers in the management API once a second: the suite waits for empty queues on them.
            "collect_statistics_interval = 1000\n"
            f"heartbeat = {self.heartbeat_s}\n"
            "loopback_users = none\n"
        )
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        self.start()
        self.ctl("add_vhost", self.vhost)
        self.ctl("add_user", self.user, self.password)
        self.ctl("set_user_tags", self.user, "administrator")
        self.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")
        # As the provisioning step does: services declare only their own queues and find the exchanges.
        subprocess.run(
            [sys.executable, "-m", "libs.messaging.permissions", "declare"],
            env={**os.environ, "RABBITMQ_URL": self.url()}, check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.node, *args], env=self._env(), capture_output=True, text=True, check=check
        )

    def start(self) -> None:
        with (self.root / "log" / "launcher.log").open("ab") as output:
            self.launcher = subprocess.Popen(
                _as("rabbitmq", ["rabbitmq-server"]), env=self._env(), cwd=self.root, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        # `await_startup` fails at once on a node that has not registered with epmd yet: wait for it to answer.
        _until(lambda: self.ctl("status", check=False).returncode == 0, 90, f"{self.node} to answer")
        self.ctl("await_startup", "--timeout", "90")
        _until(self._management_answers, 60, f"{self.node}'s management API")

    def _management_answers(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.management_port}/api/overview", timeout=2).status_code in (
                200,
                401,
            )
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """The orderly stop: connections are closed by the broker (320 CONNECTION_FORCED)."""
        self.ctl("shutdown", check=False)
        self._reap()

    def kill(self) -> None:
        """SIGKILL to the Erlang VM: connections vanish without a close frame."""
        pid = int((self.root / "beam.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
            self.launcher = None

    def destroy(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
