"""Node configuration: keyword-only frozen data, passed down. Only the CLI reads files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aitbc_p2p.chain.models import Genesis
from aitbc_p2p.crypto import PrivateKey
from aitbc_p2p.node.cheats import CHEATS
from aitbc_p2p.types import MAX_AMOUNT

ACCEL_MODES = ("auto", "gpu", "cpu")


@dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    """Selling compute. Names follow the seed miner guide (MINER_ID, ACCEL_MODE, ...)."""

    miner_id: str
    """A stable label for this provider (the seed's ``MINER_ID``)."""
    price_per_s: int = 20_000_000
    """Base units charged per second of compute; 0.02 AITBC/s as in the seeds."""
    accel_mode: str = "auto"
    """``auto`` | ``gpu`` | ``cpu`` (the seed's ``ACCEL_MODE``)."""
    max_concurrency: int = 1
    """Job slots (the seed's ``MAX_CONCURRENCY``)."""
    max_queue: int = 8
    """Accepted jobs that may wait for a slot; with that many waiting it stops bidding and
    refuses more (specs/market.md, "Load")."""
    max_runtime_s: int = 300
    """The longest job this provider accepts."""
    announce_interval_s: float = 10.0
    """How often the signed capability record is gossiped."""
    benchmark: bool = True
    """Measure throughput at start-up (a short seeded matmul per dtype, cached per device)."""
    max_ram_mb: int | None = None
    """Kill a job's worker process when its resident memory passes this (None: no cap)."""
    models: dict[str, str] = field(default_factory=dict)
    """``llm_gen`` models: name -> local directory of a causal LM (never downloaded)."""
    ollama_url: str | None = None
    """An Ollama server for ``llm_gen`` (e.g. ``http://127.0.0.1:11434``)."""
    cheat: str = ""
    """A test fixture only: this provider cheats this way (node/cheats.py); empty: honest."""

    def __post_init__(self) -> None:
        """Raises ValueError naming the first field out of its range."""
        if not self.miner_id or len(self.miner_id) > 64:
            raise ValueError(f"miner_id must be 1 to 64 characters, not {self.miner_id!r}")
        if self.accel_mode not in ACCEL_MODES:
            raise ValueError(f"accel_mode must be one of {', '.join(ACCEL_MODES)}, not {self.accel_mode!r}")
        if not 0 <= self.price_per_s <= MAX_AMOUNT:
            raise ValueError(f"price_per_s must be 0 to {MAX_AMOUNT} base units, not {self.price_per_s}")
        for name in ("max_concurrency", "max_runtime_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.max_queue <= 4096:
            raise ValueError(f"max_queue must be 0 to 4096, not {self.max_queue}")
        if not self.announce_interval_s > 0:
            raise ValueError(f"announce_interval_s must be above 0, not {self.announce_interval_s}")
        if self.cheat and self.cheat not in CHEATS:
            raise ValueError(f"cheat must be one of {', '.join(CHEATS)} (a test fixture), not {self.cheat!r}")
        if self.max_ram_mb is not None and self.max_ram_mb < 1:
            raise ValueError(f"max_ram_mb must be at least 1, not {self.max_ram_mb}")


MINER_WORKLOADS = ("echo", "torch_bench", "embed", "llm_gen", "sd_infer")
MIN_MINER_KEY = 16


@dataclass(frozen=True, kw_only=True)
class MinersConfig:
    """External miners (the seed miner guide's ``miner.sh``) that sell their compute
    through this peer over the v1 miner API (specs/rpc.md, "Miner API")."""

    keys: dict[str, str]
    """MINER_ID -> its API_KEY, the Bearer key of its ``/v1/miner/*`` requests."""
    workloads: tuple[str, ...] = ("torch_bench",)
    """What their compute is sold for: the workloads a heartbeat that names none runs, and
    the most a heartbeat's ``workloads`` can claim."""
    heartbeat_timeout_s: float = 60.0
    """A miner not heard for this long is not offered until it heartbeats again."""
    payout_percent: int = 100
    """Of what each settled job paid this peer, transferred to the miner's ``wallet``
    (the peer pays the transfer's fee). 0: no payouts (the operator's own rigs)."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("[miners] keys must name at least one miner")
        for miner, key in self.keys.items():
            if not miner or len(miner) > 64:
                raise ValueError(f"a miner id must be 1 to 64 characters, not {miner!r}")
            if len(key) < MIN_MINER_KEY or not key.isascii() or not key.isprintable() or " " in key:
                raise ValueError(f"the API key of miner {miner!r} must be {MIN_MINER_KEY}+ printable ASCII characters")
        if len(set(self.keys.values())) != len(self.keys):
            raise ValueError("[miners] keys must differ: a key names its miner")
        unknown = sorted(set(self.workloads) - set(MINER_WORKLOADS))
        if not self.workloads or unknown:
            raise ValueError(f"[miners] workloads must be some of {', '.join(MINER_WORKLOADS)}, not {unknown or '[]'}")
        if not self.heartbeat_timeout_s > 0:
            raise ValueError(f"heartbeat_timeout_s must be above 0, not {self.heartbeat_timeout_s}")
        if not 0 <= self.payout_percent <= 100:
            raise ValueError(f"payout_percent must be 0 to 100, not {self.payout_percent}")


@dataclass(frozen=True, kw_only=True)
class ApiClient:
    """A local client that may spend from the peer's wallet with ``X-Api-Key``."""

    api_key: str
    max_spend: int
    """Base units its jobs' escrows may lock, in all (the key's spending cap)."""

    def __post_init__(self) -> None:
        key = self.api_key
        if len(key) < MIN_MINER_KEY or not key.isascii() or not key.isprintable() or " " in key:
            raise ValueError(f"an api_key must be {MIN_MINER_KEY}+ printable ASCII characters without spaces")
        if not 0 < self.max_spend <= MAX_AMOUNT:
            raise ValueError(f"max_spend must be above 0 and at most {MAX_AMOUNT} base units")


@dataclass(frozen=True, kw_only=True)
class WalletConfig:
    """A wallet the peer holds unlocked for local clients (the seeds' wallet daemon): they
    submit jobs with ``X-Api-Key`` and the peer signs the offer and escrow for them
    (specs/rpc.md, "Client API"). Off unless configured; the key never leaves the peer."""

    key: PrivateKey
    clients: dict[str, ApiClient]
    max_price: int = 5 * 10**9
    """Most a job may cost when its request names no ``max_price`` (base units)."""
    max_runtime_s: int = 120
    """A job's runtime cap when its request names none."""

    def __post_init__(self) -> None:
        if not self.clients:
            raise ValueError("[wallet] needs at least one client under [wallet.clients]")
        if len({c.api_key for c in self.clients.values()}) != len(self.clients):
            raise ValueError("[wallet.clients] api keys must differ: a key names its client")
        if not 0 < self.max_price <= MAX_AMOUNT:
            raise ValueError("[wallet] max_price must be above 0")
        if self.max_runtime_s < 1:
            raise ValueError("[wallet] max_runtime_s must be at least 1")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    key: PrivateKey
    """The peer's secp256k1 key: libp2p identity, block signer, provider wallet."""
    genesis: Genesis
    data_dir: Path | None = None
    """LevelDB lives in ``data_dir/chain``; ``None`` keeps the chain in memory (tests)."""
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    """Full multiaddrs (``.../p2p/<peer id>``) dialled at start and whenever disconnected."""
    announce: tuple[str, ...] = ()
    """Addresses told to peers in place of the listen addresses (a host behind NAT, or one
    listening on 0.0.0.0, which no one can dial). ``/p2p/<peer id>`` is appended."""
    peer_floor: int = 8
    """Below this many connected peers, dial peers learnt by exchange and mDNS."""
    peer_ceiling: int = 50
    """At most this many connections, inbound and outbound together; the next is refused."""
    mdns: bool = False
    """Announce and find peers of this chain on the LAN by mDNS."""
    provider: ProviderConfig | None = None
    miners: MinersConfig | None = None
    """Sell external miners' compute (needs ``provider``, whose price and limits apply)."""
    wallet: WalletConfig | None = None
    """Hold a wallet for local clients that send ``X-Api-Key``."""
    max_block_txs: int = 1000
    bid_window_s: float = 1.5
    """How long a client node collects bids for an offer before reporting them."""
    job_deadline_blocks: int = 120
    """Escrow deadline suggested to clients, in blocks after the current head."""
    peer_interval_s: float = 1.0
    """Cadence of the peer manager: reconnects, status exchange, sync."""
    bundle_interval_s: float = 0.1
    """Outgoing transactions wait at most this long to be gossiped together in a bundle.
    Each gossip message costs every peer a fixed amount of CPU in py-libp2p whatever its
    size: 100 ms rather than 50 halves that cost and lets eight peers on two cores carry
    2,000 tx/s (bench/README.md), for 25 ms more latency on average."""
    reannounce_s: float = 30.0
    """Pending transactions are gossiped again at this cadence, closing gossip's gaps."""
    verify_in_workers: bool = True
    """Check big batches of signatures in worker processes, on every core (a peer alone
    on its host). ``False``: in a thread, for peers that share a host's cores (a devnet),
    whose workers would compete for the same cores (node/verify.py)."""
    models: dict[str, str] = field(default_factory=dict)
    """Local model directories (name -> path, relative to the config file) this peer checks
    ``llm_gen`` generations with, found by the content hash a job names; a provider's
    ``[provider] models`` serve as well (specs/market.md, "Checks per workload")."""
    audit_rate: float = 0.0
    """The share of other peers' receipted jobs this peer audits as a third party (0:
    none), each drawn from the block after its receipt: a result its checks refute is
    disputed (challenged, once the job is settled, within the genesis ``challenge_blocks``)
    at the risk of the dispute bond (specs/market.md, "Third-party audits")."""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit_rate must be 0 to 1, not {self.audit_rate}")
        if not 1 <= self.peer_ceiling <= 10_000:
            raise ValueError(f"peer_ceiling must be 1 to 10000, not {self.peer_ceiling}")
        if not 0 <= self.peer_floor <= self.peer_ceiling:
            raise ValueError(f"peer_floor must be 0 to peer_ceiling ({self.peer_ceiling}), not {self.peer_floor}")
        if self.miners is not None and self.provider is None:
            raise ValueError("[miners] needs [provider]: the price and limits its miners' compute is sold at")
