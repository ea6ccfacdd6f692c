"""Network namespaces for multi-peer tests and the chaos bench: each peer on its own
address behind a veth pair, bridged in the root namespace, so that a link can be cut
(a partition) and a peer's TCP connections killed (``ss -K``). Needs root and iproute2;
:func:`unavailable` says why not where they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """None if network namespaces can be made here, else the reason."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 to make network namespaces"
    probe = f"aitbc-probe-{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


class Namespaces:
    """``n`` namespaces with one veth each, bridged in the root namespace on 10.88.x.0/24.
    ``tag`` keeps two sets apart (default: this process's id)."""

    def __init__(self, n: int, tag: int | None = None) -> None:
        tag = (os.getpid() if tag is None else tag) % 100_000
        self.names = [f"aitbc-{tag}-{i}" for i in range(n)]
        self.links = [f"av{tag}r{i}" for i in range(n)]  # root-side ends (15 characters at most)
        self.bridge = f"ab{tag}"
        subnet = 16 + tag % 200
        self.hosts = [f"10.88.{subnet}.{i + 1}" for i in range(n)]
        self.gateway = f"10.88.{subnet}.254"

    @property
    def wrap(self) -> list[tuple[str, ...]]:
        """The command prefix that runs a program in each namespace."""
        return [("ip", "netns", "exec", ns) for ns in self.names]

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for ns, link, host in zip(self.names, self.links, self.hosts, strict=True):
            inner = f"{link[:-2]}i{link[-1]}"
            ip("netns", "add", ns)
            ip("link", "add", link, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", link, "master", self.bridge)
            ip("link", "set", link, "up")
            ip("-n", ns, "addr", "add", f"{host}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, i: int, *, off: bool) -> None:
        """Take peer ``i``'s link down (``off``) or up again."""
        ip("link", "set", self.links[i], "down" if off else "up")

    def drop_connections(self, i: int) -> int:
        """Kill every TCP connection in peer ``i``'s namespace (both ends see a reset or
        an abort); how many there were."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.names[i], "ss", "-K", "-t", "state", "established"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return max(0, len(done.stdout.splitlines()) - 1)

    def down(self) -> None:
        for ns in self.names:
            ip("netns", "del", ns, check=False)
        for link in self.links:
            ip("link", "del", link, check=False)
        ip("link", "del", self.bridge, check=False)


__all__ = ["Namespaces", "ip", "unavailable"]
