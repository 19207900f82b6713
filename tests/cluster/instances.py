"""A three-node RabbitMQ cluster on this machine, each node in its own network namespace so that one can be cut off.

RabbitMQ's documented way to run several nodes on one host: each its own node name, ports and data directories.
Here each node also gets its own network namespace on a bridge (its own address and its own epmd), so that a
network partition is one `ip link set ... down`. Where namespaces cannot be made (not root, no `ip`), the nodes
share the loopback address instead, and only the partition is out of reach. The nodes use long names (their
address as host part) and share the machine's Erlang cookie, as the fault suite's node does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.faults.instances import node_environment

BRIDGE_ADDRESS = ".254"


def _as_rabbitmq(command: list[str]) -> list[str]:
    return ["runuser", "-u", "rabbitmq", "--", *command] if os.geteuid() == 0 else command


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Network:
    """A bridge in the machine's namespace and, per node, a namespace joined to it by a veth pair. `subnet` is
    the third octet of 10.231.<subnet>.0/24; names carry it too, so two suites on one machine do not collide."""

    subnet: int
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"fmhlbr{self.subnet}"

    def address(self, index: int) -> str:
        return f"10.231.{self.subnet}.{index + 1}"

    def namespace(self, index: int) -> str:
        return f"fmhl{self.subnet}n{index + 1}"

    def _outer_end(self, index: int) -> str:
        return f"fmhl{self.subnet}v{index + 1}"

    @staticmethod
    def why_unavailable() -> str | None:
        """None when namespaces, veth pairs and bridges can be made here; otherwise why not."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "no `ip` command (iproute2)"
        probe = f"fmhlprobe{os.getpid() % 100000}"
        result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return f"`ip netns add` fails here: {result.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
        return None

    def create(self, nodes: int) -> None:
        self.destroy()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"10.231.{self.subnet}{BRIDGE_ADDRESS}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index in range(nodes):
            namespace, outer, inner = self.namespace(index), self._outer_end(index), f"fmhl{self.subnet}i{index + 1}"
            _ip("netns", "add", namespace)
            self.namespaces.append(namespace)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", namespace)
            for command in (["addr", "add", f"{self.address(index)}/24", "dev", inner], ["link", "set", inner, "up"],
                            ["link", "set", "lo", "up"]):  # fmt: skip
                _ip("-n", namespace, *command)

    def prefix(self, index: int) -> list[str]:
        """What runs a command inside the node's namespace."""
        return ["ip", "netns", "exec", self.namespace(index)]

    def cut(self, index: int) -> None:
        """The node's only link goes down: no packet in or out (established connections stay open, silent)."""
        _ip("link", "set", self._outer_end(index), "down")

    def heal(self, index: int) -> None:
        _ip("link", "set", self._outer_end(index), "up")

    def destroy(self) -> None:
        """Every process still in a namespace of ours (the nodes' epmd) is ended, then the links and namespaces."""
        for index in range(3):
            namespace = self.namespace(index)
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", self._outer_end(index)], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self.namespaces.clear()


@dataclass
class ClusterNode:
    """One RabbitMQ node: its name, address, ports and data directories, started inside `prefix` (its namespace)."""

    root: Path
    host: str
    port: int
    dist_port: int
    management_port: int
    name: str
    prefix: list[str] = field(default_factory=list)
    launcher: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@{self.host}"

    def env(self) -> dict[str, str]:
        return node_environment(self.node, self.root, self.port, self.dist_port, long_name=True)

    def configure(self, heartbeat_s: int) -> None:
        for folder in (self.root, self.root / "mnesia", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(folder, "rabbitmq", "rabbitmq")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.port}\n"
            f"management.tcp.ip = {self.host}\nmanagement.tcp.port = {self.management_port}\n"
            "collect_statistics_interval = 1000\n"
            f"heartbeat = {heartbeat_s}\n"
            "loopback_users = none\n"
            # RabbitMQ's advice for three nodes or more: the side that lost the majority stops serving until the
            # partition heals, rather than both sides serving and diverging.
            "cluster_partition_handling = pause_minority\n"
        )
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")

    def ctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-q", "-l", "-n", self.node, *args], env=self.env(), capture_output=True, text=True,
            check=check, timeout=timeout,
        )  # fmt: skip

    def start(self) -> None:
        self.launch()
        self.await_startup()

    def launch(self) -> None:
        with (self.root / "log" / "launcher.log").open("ab") as output:
            self.launcher = subprocess.Popen(
                [*self.prefix, *_as_rabbitmq(["rabbitmq-server"])], env=self.env(), cwd=self.root, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def await_startup(self) -> None:
        # `await_startup` fails at once on a node that has not registered with epmd yet: wait for it to answer.
        until(lambda: self.ctl("status", check=False, timeout=30).returncode == 0, 120, f"{self.node} to answer")
        self.ctl("await_startup", "--timeout", "120")

    @property
    def running(self) -> bool:
        return self.launcher is not None and self.launcher.poll() is None

    @property
    def pid(self) -> int:
        return int((self.root / "beam.pid").read_text().strip())

    def kill(self) -> None:
        """SIGKILL to the Erlang VM: its connections and its replicas vanish without a word."""
        os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.running:
            self.ctl("shutdown", check=False)
        self._reap()

    def _reap(self) -> None:
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
            self.launcher = None

    def log_tail(self, lines: int = 30) -> str:
        logs = sorted((self.root / "log").glob("*.log"))
        return "\n".join(
            f"{path.name}: {line}" for path in logs for line in path.read_text(errors="replace").splitlines()[-lines:]
        )


@dataclass
class RabbitMQCluster:
    """Three nodes joined into one cluster, a user and vhost of the suite's own, the topology declared once the
    cluster has formed (a quorum queue gets a replica on each node that exists when it is declared)."""

    nodes: list[ClusterNode]
    password: str
    network: Network | None = None
    user: str = "cluster"
    vhost: str = "cluster"
    heartbeat_s: int = 10

    def url(self, node: ClusterNode) -> str:
        return f"amqp://{self.user}:{self.password}@{node.host}:{node.port}/{self.vhost}?heartbeat={self.heartbeat_s}"

    @property
    def urls(self) -> str:
        """RABBITMQ_URL as a service gets it: every node, comma-separated."""
        return ",".join(self.url(node) for node in self.nodes)

    def management_url(self, node: ClusterNode) -> str:
        return f"http://{self.user}:{self.password}@{node.host}:{node.management_port}"

    def create(self, declare: Callable[[str], None]) -> None:
        """`declare(url)`: declares the topology through the given node's URL, as the provisioning step does."""
        if self.network is not None:
            self.network.create(len(self.nodes))
        for node in self.nodes:
            node.configure(self.heartbeat_s)
            node.launch()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        first.ctl("add_vhost", self.vhost)
        first.ctl("add_user", self.user, self.password)
        first.ctl("set_user_tags", self.user, "administrator")
        first.ctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")
        until(lambda: len(self.running_nodes(first)) == len(self.nodes), 60, "every node to join the cluster")
        declare(self.url(first))
        for node in self.nodes:
            until(functools.partial(self._management_answers, node), 90, f"{node.node}'s management API")

    def running_nodes(self, asked: ClusterNode) -> list[str]:
        try:
            result = asked.ctl("cluster_status", "--formatter", "json", check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return []
        if result.returncode != 0:
            return []
        status = json.loads(result.stdout)
        return list(status.get("running_nodes", []))

    def _management_answers(self, node: ClusterNode) -> bool:
        try:
            return httpx.get(f"{self.management_url(node)}/api/overview", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def by_name(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.node == name)

    def queue(self, name: str, asked: ClusterNode) -> dict[str, object]:
        """The queue as the management API of `asked` sees it: `leader`, `members`, `online`, `messages`."""
        response = httpx.get(f"{self.management_url(asked)}/api/queues/{self.vhost}/{name}", timeout=10)
        response.raise_for_status()
        queue: dict[str, object] = response.json()
        return queue

    @property
    def names(self) -> list[str]:
        return [node.node for node in self.nodes]

    def queues(self, asked: ClusterNode) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.management_url(asked)}/api/queues/{self.vhost}",
            params={"columns": "name,type,leader,members"},
            timeout=10,
        )
        response.raise_for_status()
        queues: list[dict[str, Any]] = response.json()
        return queues

    def connections(self, asked: ClusterNode) -> list[dict[str, Any]]:
        """Every client connection in the cluster: `node`, and the service in `client_properties`."""
        response = httpx.get(
            f"{self.management_url(asked)}/api/connections",
            params={"columns": "name,node,client_properties.connection_name,state"},
            timeout=10,
        )
        response.raise_for_status()
        connections: list[dict[str, Any]] = response.json()
        return connections

    def heal(self) -> None:
        """Every node running and in the cluster again, whatever a test did to it."""
        for index, node in enumerate(self.nodes):
            if self.network is not None:
                self.network.heal(index)
            if node.running:
                node.thaw()
            else:
                node.launch()
        for node in self.nodes:
            node.await_startup()
        alive = self.nodes[0]
        until(lambda: len(self.running_nodes(alive)) == len(self.nodes), 120, "every node back in the cluster")

    def destroy(self) -> None:
        for node in self.nodes:
            if node.running:
                node.thaw()
            node.stop()
        if self.network is not None:
            self.network.destroy()
        for node in self.nodes:
            shutil.rmtree(node.root, ignore_errors=True)


def build_cluster(
    root: Path, password: str, *, ports: Sequence[int], dist_ports: Sequence[int], management_ports: Sequence[int],
    subnet: int, name: str,
) -> RabbitMQCluster:  # fmt: skip
    """Namespaced nodes when namespaces can be made here, loopback ones otherwise (`network` is then None)."""
    network = Network(subnet) if Network.why_unavailable() is None else None
    nodes = [
        ClusterNode(
            root / f"node{index + 1}",
            network.address(index) if network else "127.0.0.1",
            port,
            dist_port,
            management_port,
            f"{name}-{index + 1}",
            network.prefix(index) if network else [],
        )
        for index, (port, dist_port, management_port) in enumerate(
            zip(ports, dist_ports, management_ports, strict=True)
        )
    ]
    return RabbitMQCluster(nodes, password, network)
