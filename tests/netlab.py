"""A network lab for tests: hosts, routers, NAT boxes and delayed links built from Linux
network namespaces (root only), with real processes inside them.

Every namespace and interface lives only inside the lab: nothing is attached to the
machine's own namespace, so no test traffic can leave it. Addresses come from the
benchmarking range 198.18.0.0/15 ("the Internet" of the lab) and 10.0.0.0/8 (sites
behind NAT); they exist only in the lab's namespaces.

Usage::

    with Lab() as lab:
        a = lab.host("a")
        r = lab.router("r")
        lab.cable(a, "eth0", "198.18.1.2/24", r, "a", "198.18.1.1/24")
        lab.default_route(a, "198.18.1.1")
        with lab.inside(a):
            sock = socket.socket(...)   # a socket of host a, usable from any thread
        proc = lab.popen(a, ["twistd", ...])

The kernel here has no netem, so a delayed link is a namespace in the middle of the
cable where ``tests/delay_bridge.py`` forwards Ethernet frames between its two ends
after the delay (:meth:`Lab.delayed_cable`).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from empty_dns import EmptyDnsServer

CLONE_NEWNET = 0x40000000
BRIDGE = Path(__file__).with_name("delay_bridge.py")
_libc = ctypes.CDLL(None, use_errno=True)
_labs = itertools.count(1)


def unavailable() -> str | None:
    """Why a lab cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"p2plabprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def run(*argv: str) -> str:
    """Run a command; raise with its error output when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class Lab:
    """The namespaces, links and processes of one test; :meth:`close` removes them all."""

    def __init__(self) -> None:
        self.tag = f"p2p{os.getpid() % 100000}x{next(_labs)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []
        self._dns: dict[str, EmptyDnsServer] = {}
        self._etc: list[Path] = []

    # --- building ------------------------------------------------------------------------

    def host(self, short: str) -> str:
        """A new namespace (a host) with its loopback up; returns its name."""
        name = f"{self.tag}{short}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def router(self, short: str) -> str:
        """A host that forwards IPv4 between its interfaces."""
        name = self.host(short)
        self.sysctl(name, "net.ipv4.ip_forward", "1")
        return name

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a sysctl inside ``ns``."""
        run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")

    def star(self, addresses: dict[str, str]) -> dict[str, str]:
        """Hosts (short name → IPv4 address, each in a /24 of its own) behind one
        router, each with its default route through it; returns short name → namespace."""
        router = self.router("r")
        hosts = {}
        for name, address in addresses.items():
            host = self.host(name)
            gateway = f"{address.rsplit('.', 1)[0]}.1"
            self.cable(host, "eth0", f"{address}/24", router, name, f"{gateway}/24")
            self.default_route(host, gateway)
            hosts[name] = host
        return hosts

    def etc_file(self, ns: str, name: str, text: str) -> None:
        """``/etc/<name>`` as processes started in ``ns`` see it (``ip netns exec``
        bind-mounts ``/etc/netns/<ns>/<name>`` over it), e.g. ``hosts``; removed by
        :meth:`close`."""
        directory = Path("/etc/netns") / ns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
        self._etc.append(directory / name)

    def cable(self, a: str, a_if: str, a_addr: str | None, b: str, b_if: str,
              b_addr: str | None) -> None:
        """A veth pair between namespaces ``a`` and ``b`` (``a_addr``: CIDR or None)."""
        run("ip", "link", "add", "name", a_if, "netns", a, "type", "veth",
            "peer", "name", b_if, "netns", b)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            if addr:
                run("ip", "-n", ns, "addr", "add", addr, "dev", ifname)
            run("ip", "-n", ns, "link", "set", "dev", ifname, "up")

    def delayed_cable(self, a: str, a_if: str, a_addr: str, b: str, b_if: str,
                      b_addr: str, delay_ms: float, log_dir: Path) -> None:
        """Like :meth:`cable`, with ``delay_ms`` added in each direction (so the round
        trip grows by twice that) by a bridge process in a namespace of its own."""
        middle = self.host(f"d{a_if[:3]}")
        self.cable(a, a_if, a_addr, middle, "west", None)
        self.cable(middle, "east", None, b, b_if, b_addr)
        # Frames must stay frames: no segmentation offloads that make 64 KiB packets.
        for ns, ifname in ((a, a_if), (middle, "west"), (middle, "east"), (b, b_if)):
            run("ip", "netns", "exec", ns, "ethtool", "-K", ifname, "tso", "off", "gso",
                "off", "gro", "off", "tx", "off", "rx", "off")
        for ifname in ("west", "east"):
            run("ip", "-n", middle, "link", "set", "dev", ifname, "promisc", "on")
        bridge = self.popen(middle, [sys.executable, str(BRIDGE), "west", "east",
                                     str(delay_ms)], log_dir / f"{middle}-bridge.log")
        time.sleep(0.2)
        if bridge.poll() is not None:
            log = (log_dir / f"{middle}-bridge.log").read_text()
            raise RuntimeError(f"delay bridge exited: {log}")

    def default_route(self, ns: str, via: str) -> None:
        """Send everything not on a local network through ``via``."""
        run("ip", "-n", ns, "route", "add", "default", "via", via)

    def route(self, ns: str, destination: str, via: str) -> None:
        """A route to ``destination`` (CIDR) through ``via``."""
        run("ip", "-n", ns, "route", "add", destination, "via", via)

    def nat(self, ns: str, outside: str,
            forwards: tuple[tuple[str, int, str], ...] = ()) -> None:
        """Make ``ns`` a NAT box: what leaves through ``outside`` is masqueraded, and
        nothing enters from there unless it answers what went out, or matches one of
        the port ``forwards`` (protocol, port, inside address: same port inside)."""
        self.sysctl(ns, "net.ipv4.ip_forward", "1")
        dnat = "\n".join(f'        iifname "{outside}" {proto} dport {port} dnat to {inside}'
                         for proto, port, inside in forwards)
        allowed = "\n".join(f'        iifname "{outside}" ip daddr {inside} {proto} dport '
                            f'{port} accept' for proto, port, inside in forwards)
        rules = f"""
table ip nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
{dnat}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{outside}" masquerade
    }}
}}
table inet filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname != "{outside}" accept
{allowed}
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{outside}" ct state new drop
    }}
}}
"""
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules,
                       text=True, check=True, capture_output=True, timeout=30)

    # --- using ---------------------------------------------------------------------------

    @contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        """Run the block with this thread in ``ns``: sockets made here belong to it (and
        stay usable from any thread afterwards)."""
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def empty_dns(self, ns: str) -> EmptyDnsServer:
        """The DNS server (on 127.0.0.1 in ``ns``) in which no name exists, for the
        gateways of ``ns`` (one per namespace, closed with the lab)."""
        if ns not in self._dns:
            with self.inside(ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            self._dns[ns] = EmptyDnsServer(sock)
        return self._dns[ns]

    def popen(self, ns: str, argv: list[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``ns`` with output to ``log``; stopped by :meth:`close`."""
        handle = log.open("ab")
        self._logs.append(handle)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        self.processes.append(proc)
        return proc

    def exec(self, ns: str, *argv: str) -> str:
        """Run a short command inside ``ns``; its output."""
        return run("ip", "netns", "exec", ns, *argv)

    # --- tearing down --------------------------------------------------------------------

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM ``proc``, SIGKILL after ``timeout``."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        """Stop every process, delete every namespace (their links go with them)."""
        for proc in reversed(self.processes):
            self.stop(proc)
        for server in self._dns.values():
            server.stop()
        self._dns.clear()
        for path in self._etc:
            path.unlink(missing_ok=True)
            with suppress(OSError):
                path.parent.rmdir()
        self._etc.clear()
        for handle in self._logs:
            with suppress(Exception):
                handle.close()  # type: ignore[attr-defined]
        for ns in reversed(self.namespaces):
            # A process left in the namespace would keep it alive: kill them first.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
