"""A private test network for the fault harness, made with iproute2 (stdlib only, run as root).

This module owns, for one `Network`:
- a Linux bridge `<prefix>br<k>` in the root namespace with address `<subnet>.1` (the clients'
  address: test clients run in the root namespace); its alias, `<prefix> owner <pid> <start>
  net <subnet>`, records which process owns it;
- per node i (1..N) a namespace `<prefix><k>n<i>` holding `lo` and `eth0` (`<subnet>.<10+i>`,
  the only route: the subnet itself), whose veth peer `<prefix><k>v<i>` is a port of the bridge;
- the blackhole routes its faults add (in node namespaces, and in the root namespace for the
  client-to-node direction of `cut_client`).

Invariants:
- `k` is free when claimed: the bridge name is the lock (`ip link add` fails if it exists), and no
  other route or address in the root namespace lies inside the subnet; after the build, every node
  address is routed by the root namespace through the bridge and nowhere else;
- nothing leaves the machine: the bridge has no physical port, the namespaces have no default
  route, and the root namespace does not forward (we never turn ip_forward on);
- every route a fault adds is removed by `heal` (and only those); faults are idempotent;
- `close` (also run by `atexit`, and by `with`) leaves nothing behind: veths, namespaces, bridge
  and routes; a run that died without closing is cleaned up by the next `Network` of the same
  prefix, once its owner process is gone.

Caveats:
- processes started inside a namespace (`exec_prefix(i)`) must be stopped before `close()`:
  `ip netns del` only removes the name, a namespace with live processes lives on until they exit
  (close deletes the veth pairs first, so such a namespace is at least cut off from everything);
- a blackhole route drops silently what it matches, but a local sender is told: `connect` and
  `sendto` to a blackholed address fail at once with EINVAL. An established TCP connection whose
  sends are blackholed simply stalls (retransmits are discarded). So a cut node sees its new
  connections fail fast, while its peers see nothing arrive;
- `cut(a, b)` is one direction; TCP needs both, so a one-way cut kills TCP both ways (the SYN
  arrives, the SYN-ACK does not) while UDP still flows b -> a.

Delay: this kernel has no netem (`tc qdisc ... netem` is unknown; tbf rate limiting exists), and
tests/interop/proxy.py cannot delay (it only swallows Produce responses, on 127.0.0.1). Use
`delay_proxy.DelayProxy`: in the root namespace, listen on `client_ip` at some port and forward
to `node_ip(j):port`; point whoever should see the delay (a client, or node i's configuration
for node j) at the proxy. `set_delay`, `set_drop` and `reset` act on one or all connections.

Callers: `Network(...)` raises `NotRoot` when not run as root (a test may `pytest.skip` on it,
or check `os.geteuid()` first), and `NetworkUnavailable` when `ip` is missing or fails to build
the network (that is a failure, not a skip).
"""
import atexit
import ipaddress
import json
import os
import re
import shutil
import subprocess


class NetworkUnavailable(RuntimeError):
    """The network cannot be built here (no `ip`, or iproute2 refused)."""


class NotRoot(NetworkUnavailable):
    """Not run as root: the only reason a test should skip rather than fail."""


def _ip(*args, ns=None, check=True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def _ip_json(*args, ns=None) -> list:
    out = _ip("-j", *args, ns=ns).stdout.strip()
    return json.loads(out) if out else []


def _start_time(pid: int):
    """The start time of process `pid` (clock ticks since boot), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def check_environment():
    if os.geteuid() != 0:
        raise NotRoot("the fault network needs root (network namespaces, bridges, routes)")
    if shutil.which("ip") is None:
        raise NetworkUnavailable("`ip` (iproute2) is not installed")


def _bridges(prefix: str) -> dict:
    """{k: alias} of the bridges named `<prefix>br<k>`."""
    pattern = re.compile(re.escape(prefix) + r"br(\d+)")
    found = {}
    for link in _ip_json("link", "show", "type", "bridge"):
        m = pattern.fullmatch(link["ifname"])
        if m:
            found[int(m.group(1))] = link.get("ifalias", "")
    return found


def _namespaces(prefix: str, k: int) -> list:
    pattern = re.compile(re.escape(f"{prefix}{k}") + r"n\d+")
    names = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]
    return [n for n in names if pattern.fullmatch(n)]


def _veths(prefix: str, k: int) -> list:
    pattern = re.compile(re.escape(f"{prefix}{k}") + r"v\d+")
    return [l["ifname"] for l in _ip_json("link", "show", "type", "veth") if pattern.fullmatch(l["ifname"])]


def _remove(prefix: str, k: int, subnet):
    """Everything of network `k`: root blackholes in its subnet, veths, namespaces, bridge."""
    if subnet is not None:
        for r in _ip_json("route", "show", "type", "blackhole", "root", str(subnet)):
            _ip("route", "del", "blackhole", r["dst"], check=False)
    for v in _veths(prefix, k):
        _ip("link", "del", v, check=False)
    for n in _namespaces(prefix, k):
        _ip("netns", "del", n, check=False)
    _ip("link", "del", f"{prefix}br{k}", check=False)


def remove_leftovers(prefix: str):
    """Removes the networks of `prefix` whose owner process is dead (runs that never closed)."""
    owner = re.compile(re.escape(prefix) + r" owner (\d+) (\d+) net (\S+)")
    for k, alias in _bridges(prefix).items():
        m = owner.fullmatch(alias)
        if m and _start_time(int(m.group(1))) != m.group(2):
            _remove(prefix, k, ipaddress.ip_network(m.group(3)))


def _subnet_in_use(subnet) -> bool:
    if _ip_json("-4", "route", "show", "table", "all", "root", str(subnet)):
        return True
    return any(ipaddress.ip_address(a["local"]) in subnet
               for link in _ip_json("-4", "addr", "show") for a in link.get("addr_info", []))


class Network:
    """A bridge, N node namespaces on it, and the faults done to their routes. See the module."""

    def __init__(self, prefix="qf", subnet="10.77.{k}.0/24", nodes=3, log=None):
        check_environment()
        if not 1 <= nodes <= 200:
            raise ValueError("nodes must be in 1..200")
        if len(f"{prefix}br250") > 15 or not re.fullmatch(r"[a-z][a-z0-9]*", prefix):
            raise ValueError("prefix: lower-case letters and digits, at most 10 characters")
        self.prefix, self.nodes = prefix, nodes
        self.log = log or (lambda event: None)
        self._routes = set()  # (namespace or None for the root one, blackholed address)
        self._closed = False
        remove_leftovers(prefix)
        self.k, self.subnet = self._claim(subnet)
        atexit.register(self.close)
        try:
            for i in range(1, nodes + 1):
                self._add_node(i)
            self._verify()
        except BaseException:
            self.close()
            raise

    # ---- building

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br{self.k}"

    def _claim(self, template: str):
        """The first k in 1..250 whose bridge name and subnet are free; the bridge is made."""
        for k in range(1, 251):
            subnet = ipaddress.ip_network(template.format(k=k))
            if subnet.num_addresses < 256 or _subnet_in_use(subnet):
                continue
            bridge = f"{self.prefix}br{k}"
            if _ip("link", "add", "name", bridge, "type", "bridge", check=False).returncode != 0:
                continue  # taken by another run in the meantime
            alias = f"{self.prefix} owner {os.getpid()} {_start_time(os.getpid())} net {subnet}"
            _ip("link", "set", "dev", bridge, "alias", alias)
            _ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge)
            _ip("link", "set", "dev", bridge, "up")
            routes = _ip_json("-4", "route", "show", "table", "all", "root", str(subnet))
            if all(r.get("dev") == bridge for r in routes):
                return k, subnet
            _ip("link", "del", bridge, check=False)  # another run took the same subnet
        raise NetworkUnavailable(f"no free network for prefix {self.prefix!r} and {template}")

    def _add_node(self, i: int):
        ns, veth = self.netns(i), f"{self.prefix}{self.k}v{i}"
        if ns in _namespaces(self.prefix, self.k):
            _ip("netns", "del", ns)  # a stale one: whoever owned k before us is gone
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", "dev", veth, "master", self.bridge, "up")
        _ip("addr", "add", f"{self.node_ip(i)}/{self.subnet.prefixlen}", "dev", "eth0", ns=ns)
        _ip("link", "set", "dev", "eth0", "up", ns=ns)
        _ip("link", "set", "dev", "lo", "up", ns=ns)

    def _verify(self):
        for i in range(1, self.nodes + 1):
            via = _ip_json("route", "get", self.node_ip(i))
            if not via or via[0].get("dev") != self.bridge:
                raise NetworkUnavailable(f"the root namespace routes {self.node_ip(i)} via {via}")
            routes = _ip_json("-4", "route", "show", ns=self.netns(i))
            if [(r["dst"], r.get("dev")) for r in routes] != [(str(self.subnet), "eth0")]:
                raise NetworkUnavailable(f"unexpected routes in {self.netns(i)}: {routes}")

    # ---- addresses

    def node_ip(self, i: int) -> str:
        self._check_node(i)
        return str(self.subnet.network_address + 10 + i)

    @property
    def client_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    def netns(self, i: int) -> str:
        self._check_node(i)
        return f"{self.prefix}{self.k}n{i}"

    def exec_prefix(self, i: int) -> list:
        """The command prefix that runs a process inside node i's namespace."""
        return ["ip", "netns", "exec", self.netns(i)]

    def _check_node(self, i: int):
        if not (isinstance(i, int) and 1 <= i <= self.nodes):
            raise ValueError(f"no node {i!r} (nodes are 1..{self.nodes})")

    # ---- faults

    def cut(self, a: int, b: int):
        """Node a can no longer send to node b (one direction)."""
        self._cut(a, b)
        self.log(f"cut {a}->{b}")

    def partition(self, groups):
        """Cuts both directions between every two nodes of different groups, e.g. [[1, 2], [3]].
        Nodes in no group are left alone."""
        for x, g in enumerate(groups):
            for h in groups[x + 1:]:
                for a in g:
                    for b in h:
                        self._cut(a, b)
                        self._cut(b, a)
        self.log(f"partition {' | '.join(','.join(map(str, g)) for g in groups)}")

    def isolate(self, i: int):
        """Node i is cut, both ways, from every other node and from the clients."""
        for j in range(1, self.nodes + 1):
            if j != i:
                self._cut(i, j)
                self._cut(j, i)
        self._cut_client(i)
        self.log(f"isolate {i}")

    def cut_client(self, i: int):
        """The clients cannot reach node i, nor node i them. Both routes are needed: with only
        node->client cut, a client's datagrams, and its bytes on a connection that was open
        before, would still arrive (requests done, answers lost)."""
        self._cut_client(i)
        self.log(f"cut_client {i}")

    def heal(self):
        """Removes every blackhole route added by the faults (and no other route)."""
        n = len(self._routes)
        for ns, dst in sorted(self._routes, key=lambda r: (r[0] or "", r[1])):
            self._unblackhole(ns, dst)
        self.log(f"heal network ({n} routes)")

    def heal_pair(self, a: int, b: int):
        """Undoes the cuts between nodes a and b, both directions."""
        self._unblackhole(self.netns(a), self.node_ip(b))
        self._unblackhole(self.netns(b), self.node_ip(a))
        self.log(f"heal_pair {a},{b}")

    def _cut(self, a: int, b: int):
        if a != b:
            self._blackhole(self.netns(a), self.node_ip(b))

    def _cut_client(self, i: int):
        self._blackhole(self.netns(i), self.client_ip)
        self._blackhole(None, self.node_ip(i))

    def _blackhole(self, ns, dst: str):
        if self._closed:
            raise RuntimeError("the network is closed")
        if (ns, dst) not in self._routes:
            _ip("route", "add", "blackhole", f"{dst}/32", ns=ns)
            self._routes.add((ns, dst))

    def _unblackhole(self, ns, dst: str):
        if (ns, dst) in self._routes:
            r = _ip("route", "del", "blackhole", f"{dst}/32", ns=ns, check=False)
            if r.returncode != 0 and "No such process" not in r.stderr:
                raise NetworkUnavailable(f"cannot remove blackhole {dst} in {ns}: {r.stderr.strip()}")
            self._routes.discard((ns, dst))

    # ---- teardown

    def close(self):
        """Removes the routes, veths, namespaces and bridge; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for ns, dst in self._routes:
            _ip("route", "del", "blackhole", f"{dst}/32", ns=ns, check=False)
        self._routes.clear()
        _remove(self.prefix, self.k, self.subnet)
        left = [*_namespaces(self.prefix, self.k), *_veths(self.prefix, self.k)]
        if self.k in _bridges(self.prefix):
            left.append(self.bridge)
        if left:
            raise NetworkUnavailable(f"close left {left} behind")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
