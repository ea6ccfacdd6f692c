"""Prometheus metrics of a running node, read from its services at each scrape.

A custom collector, not counters sprinkled through the services: every figure is one the
node already keeps (its head, its pool's counts, the network's verdicts, the market's
jobs, the executor's counters), read on the event loop when Prometheus asks, so a scrape
costs nothing between scrapes and cannot disagree with ``GET /v1/status``. Names are
``aitbc_*``; counters end in ``_total`` (specs/rpc.md, "Metrics").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from aitbc_p2p.chain.state import read_reputation

if TYPE_CHECKING:
    from aitbc_p2p.node.facade import Node


class NodeCollector(Collector):
    """What one node exposes to Prometheus."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        status = node.status()  # the figures /v1/status shows, derived once, in one place
        head, final, target = status.head.height, status.final_height, status.sync_target
        yield _gauge("aitbc_chain_height", "Height of this peer's head block.", head)
        yield _gauge("aitbc_chain_final_height", "Height of the last final block.", final)
        yield _gauge("aitbc_chain_finality_lag_blocks", "Blocks above the last final one.", head - final)
        yield _gauge("aitbc_sync_target_height", "Highest head a connected peer claims (or ours).", target)
        yield _gauge("aitbc_sync_behind_blocks", "Blocks between our head and the highest claimed.", target - head)

        network = node.network
        yield _gauge("aitbc_peers_connected", "Peers connected now.", len(status.peers))
        scores = getattr(network, "scores", None)
        banned = len(scores.banned_peers()) if scores is not None else 0
        yield _gauge("aitbc_peers_banned", "Peers banned now (misbehaviour; served bans are lifted).", banned)
        verdicts = CounterMetricFamily(
            "aitbc_gossip_messages", "Gossip from peers by the gate's verdict (all topics).", labels=["verdict"]
        )
        for verdict, count in sorted(getattr(network, "verdicts", {}).items()):
            verdicts.add_metric([verdict], count)
        yield verdicts

        pool = node.mempool.statistics()
        yield _gauge("aitbc_mempool_transactions", "Transactions pending in the pool.", pool.size)
        yield _gauge("aitbc_mempool_future_transactions", "Of those, waiting for a nonce gap.", pool.future)
        yield _gauge("aitbc_mempool_senders", "Senders with pending transactions.", pool.senders)
        events = CounterMetricFamily("aitbc_mempool_events", "Pool admissions and removals.", labels=["event"])
        for event in ("admitted", "evicted", "replaced", "expired"):
            events.add_metric([event], getattr(pool, event))
        yield events
        rejected = CounterMetricFamily(
            "aitbc_mempool_rejected", "Transactions the pool refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(node.mempool.rejected_by_reason.items()):
            rejected.add_metric([reason], count)
        yield rejected

        market = node.market
        phases = Counter(str(job.phase) for job in market.client_jobs.values())
        jobs = GaugeMetricFamily("aitbc_client_jobs", "Jobs this peer tracks for clients, by phase.", labels=["phase"])
        for phase, count in sorted(phases.items()):
            jobs.add_metric([phase], count)
        yield jobs
        yield _gauge("aitbc_provider_jobs_held", "Jobs this provider holds until their escrows end.", market.held_jobs)
        executor = market.executor_statistics()
        if executor:
            yield _gauge("aitbc_executor_slots", "Compute slots (worker processes).", executor["slots"])
            yield _gauge("aitbc_executor_free_slots", "Idle compute slots.", executor["free_slots"])
            yield _gauge("aitbc_executor_running", "Jobs running now.", executor["running"])
            runs = CounterMetricFamily("aitbc_executor_jobs", "Jobs the executor finished.", labels=["outcome"])
            runs.add_metric(["done"], executor["done"])
            runs.add_metric(["failed"], executor["failed"])
            yield runs
            restarts = CounterMetricFamily("aitbc_executor_worker_restarts", "Worker processes replaced.")
            restarts.add_metric([], executor["worker_restarts"])
            yield restarts
        if node.miners is not None:
            stats = node.miners.statistics()
            yield _gauge("aitbc_miners_live", "External miners heard within the heartbeat timeout.", stats["miners"])
            yield _gauge("aitbc_miners_queued_jobs", "Jobs waiting for a miner to take them.", stats["queued"])
            payouts = node.miner_payouts()
            yield _gauge("aitbc_miner_payouts_owed", "Payouts waiting for their jobs to settle.", payouts["owed"])
            paid = CounterMetricFamily("aitbc_miner_payouts", "Payouts to miners committed since start.")
            paid.add_metric([], payouts["paid_jobs"])
            yield paid
            units = CounterMetricFamily("aitbc_miner_paid_base_units", "Base units paid to miners since start.")
            units.add_metric([], payouts["paid_total"])
            yield units
        record = read_reputation(node.store.state, node.key.address)
        reputation = CounterMetricFamily(
            "aitbc_provider_escrows", "This peer's record on chain as a provider.", labels=["outcome"]
        )
        for outcome in ("settled", "failed", "lost", "slashed"):
            reputation.add_metric([outcome], getattr(record, outcome))
        yield reputation


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def node_registry(node: Node) -> CollectorRegistry:
    """A registry holding only ``node``'s metrics (not the process-wide default one, so
    several nodes in one process each expose their own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry
