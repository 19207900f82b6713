"""The pipeline on a three-node RabbitMQ cluster: a node killed, frozen or cut off mid-run costs no lead and no
double charge, the distribution queue gets a new leader, and the services on that node reconnect to another."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from tests.cluster.conftest import WORK_QUEUE, ClusterRun
from tests.cluster.instances import ClusterNode, Network, RabbitMQCluster

FREEZE_S = 20
PARTITION_S = 30


async def services_on(run: ClusterRun, node: ClusterNode) -> set[str]:
    services = await asyncio.to_thread(run.services_on, node, run.observer(node))
    run.figures["services_on_the_node"] = sorted(services)
    return services


async def moved_away(run: ClusterRun, node: ClusterNode, services: set[str], since: float, timeout: float) -> float:
    """Until each of `services` (connected to `node` before the fault) has a connection to another node; how long
    after `since` that was."""
    observer = run.observer(node)

    def elsewhere() -> bool:
        others = [other for other in run.cluster.nodes if other is not node and other.running]
        return services <= set().union(*(run.services_on(other, observer) for other in others))

    return await run.seconds_until(elsewhere, since, timeout, f"{sorted(services)} to reconnect to another node")


async def new_leader(run: ClusterRun, old: ClusterNode, since: float, timeout: float = 90) -> float:
    observer = run.observer(old)
    others = {node.node for node in run.cluster.nodes if node is not old}
    seconds = await run.seconds_until(lambda: run.leader(observer) in others, since, timeout, "a new leader")
    run.figures["leader_after"] = await asyncio.to_thread(run.leader, observer)
    return seconds


def test_every_quorum_queue_has_a_replica_on_each_node(cluster: RabbitMQCluster) -> None:
    queues = cluster.queues(cluster.nodes[0])
    quorum = {str(queue["name"]): sorted(queue["members"]) for queue in queues if queue["type"] == "quorum"}
    assert WORK_QUEUE in quorum
    assert {name: members for name, members in quorum.items() if members != sorted(cluster.names)} == {}


async def test_the_distribution_queues_leader_killed_mid_run(cluster_run: ClusterRun) -> None:
    run, cluster = cluster_run, cluster_run.cluster
    workload = await run.workload()
    driving = asyncio.create_task(workload.run_all())
    await workload.accepted_at_least(workload.leads // 3)
    leader = cluster.by_name(await asyncio.to_thread(run.leader, run.observer()))
    run.figures["leader_before"] = leader.node
    # The premise: the services are on the leader (they connect to the first node, where the topology was declared).
    on_leader = await services_on(run, leader)
    assert on_leader, "no service is connected to the leader"
    killed, killed_at = time.monotonic(), datetime.now(UTC)
    await asyncio.to_thread(leader.kill)
    run.figures["election_s"] = await new_leader(run, leader, killed)
    run.figures["reconnect_s"] = await moved_away(run, leader, on_leader, killed, timeout=90)
    run.figures["reconnect_s_by_service"] = run.reconnects(leader, killed_at)
    # The node comes back while the workload still runs, and rejoins as a follower.
    await asyncio.to_thread(leader.start)
    run.figures["node_back_s"] = round(time.monotonic() - killed, 1)
    await driving
    await run.verify(workload)


async def test_a_node_frozen_for_twenty_seconds_mid_run(cluster_run: ClusterRun) -> None:
    run, cluster = cluster_run, cluster_run.cluster
    workload = await run.workload()
    driving = asyncio.create_task(workload.run_all())
    await workload.accepted_at_least(workload.leads // 3)
    # The node most services use: their connections go silent, and only the heartbeat can tell.
    observer = run.observer()
    counts = {node.node: len(await asyncio.to_thread(run.services_on, node, observer)) for node in cluster.nodes}
    frozen = cluster.by_name(max(counts, key=lambda name: counts[name]))
    run.figures.update(frozen_node=frozen.node, was_leader=await asyncio.to_thread(run.leader, observer) == frozen.node)
    on_frozen = await services_on(run, frozen)
    assert on_frozen, "no service is connected to the node to freeze"
    since, since_at = time.monotonic(), datetime.now(UTC)
    frozen.freeze()
    try:
        await asyncio.sleep(FREEZE_S)
        # Before the thaw: each service noticed the silence on its own (heartbeat) and moved to another node.
        moved = run.figures["reconnect_s_by_service"] = run.reconnects(frozen, since_at)
        assert on_frozen <= moved.keys(), f"still on the frozen node at its thaw: {sorted(on_frozen - moved.keys())}"
    finally:
        frozen.thaw()
    thawed = time.monotonic()
    run.figures["reconnect_s"] = await moved_away(run, frozen, on_frozen, since, timeout=90)
    await asyncio.to_thread(cluster.heal)
    run.figures["rejoined_s"] = round(time.monotonic() - thawed, 1)
    await driving
    await run.verify(workload)


async def test_the_leaders_node_partitioned_away_for_thirty_seconds_mid_run(cluster_run: ClusterRun) -> None:
    run, cluster = cluster_run, cluster_run.cluster
    if cluster.network is None:
        pytest.skip(f"the nodes share the loopback address, so none can be cut off: {Network.why_unavailable()}")
    workload = await run.workload()
    driving = asyncio.create_task(workload.run_all())
    await workload.accepted_at_least(workload.leads // 3)
    leader = cluster.by_name(await asyncio.to_thread(run.leader, run.observer()))
    run.figures["partitioned_node"] = leader.node
    on_leader = await services_on(run, leader)
    since, since_at = time.monotonic(), datetime.now(UTC)
    cluster.network.cut(cluster.nodes.index(leader))
    # Seen through the majority's management API, which may wait on the cut-off member until the link is back.
    elected = asyncio.create_task(new_leader(run, leader, since, timeout=PARTITION_S + 90))
    try:
        await asyncio.sleep(PARTITION_S)
        # Before the link is back: the services on the cut-off node noticed the silence (heartbeat) and moved.
        moved = run.figures["reconnect_s_by_service"] = run.reconnects(leader, since_at)
        assert on_leader <= moved.keys(), (
            f"still on the cut-off node when it came back: {sorted(on_leader - moved.keys())}"
        )
    finally:
        cluster.network.heal(cluster.nodes.index(leader))
    healed = time.monotonic()
    run.figures["election_s"] = await elected
    run.figures["reconnect_s"] = await moved_away(run, leader, on_leader, since, timeout=90)
    await asyncio.to_thread(cluster.heal)
    run.figures["rejoined_s"] = round(time.monotonic() - healed, 1)
    await driving
    await run.verify(workload)
