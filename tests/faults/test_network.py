"""Self-test of network.py (and delay_proxy.py): a 3-node Network with a TCP echo and UDP recorder
on port 9092 in every namespace, probed from the root namespace (the clients) and from inside
the namespaces, before, during and after each fault. The network tests skip when not root.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from delay_proxy import DelayProxy
from network import Network, NotRoot, _bridges, _ip, _ip_json, _namespaces

PORT = 9092

# Inside a namespace: TCP echo and UDP recorder on ip:9092; prints "ready", then "udp <payload>".
SERVER = r"""
import socket, sys, threading
ip = sys.argv[1]
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((ip, 9092)); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 9092))
def echo(c):
    with c:
        while (d := c.recv(4096)):
            c.sendall(d)
def tcp():
    while True:
        c, _ = t.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    d, _ = u.recvfrom(4096)
    print("udp", d.decode(), flush=True)
"""

# Probes every target at once ("tcp:ip:port" or "udp:ip:port:payload"); prints {target: result}.
PROBE = r"""
import json, socket, sys, threading
out = {}
def probe(target):
    kind, ip, port, *rest = target.split(":")
    try:
        if kind == "udp":
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(rest[0].encode(), (ip, int(port)))
            out[target] = "sent"
            return
        with socket.create_connection((ip, int(port)), timeout=1.5) as s:
            s.sendall(b"ping")
            out[target] = "ok" if s.recv(4) == b"ping" else "bad echo"
    except OSError as e:
        out[target] = type(e).__name__ + ": " + str(e)
threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[1:]]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
"""


def make(**kw) -> Network:
    try:
        return Network(**kw)
    except NotRoot as e:
        pytest.skip(str(e))


class Server:
    """The echo/recorder process in one namespace, and the datagrams it has received."""

    def __init__(self, net, i):
        self.proc = subprocess.Popen([*net.exec_prefix(i), sys.executable, "-c", SERVER, net.node_ip(i)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.received = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.received.append(line.split(" ", 1)[1].strip())

    def got(self, payload, wait_s=0.5) -> bool:
        deadline = time.time() + wait_s
        while payload not in self.received and time.time() < deadline:
            time.sleep(0.02)
        return payload in self.received

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class ClientServer:
    """A TCP echo in the root namespace at the clients' address, for probes from the nodes."""

    def __init__(self, ip):
        self.sock = socket.create_server((ip, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.sendall(c.recv(4))


@pytest.fixture(scope="module")
def cluster():
    events = []
    net = make(prefix="qft", nodes=3, log=events.append)
    servers = {i: Server(net, i) for i in (1, 2, 3)}
    client = ClientServer(net.client_ip)
    yield net, servers, client, events
    for s in servers.values():
        s.stop()
    client.sock.close()
    net.close()


@pytest.fixture
def net(cluster):
    """The module's network, healed after each test (and checked to hold no blackhole left)."""
    yield cluster
    n = cluster[0]
    n.heal()
    for i in (1, 2, 3):
        assert not _ip_json("route", "show", "type", "blackhole", ns=n.netns(i))
    assert not _ip_json("route", "show", "type", "blackhole", "root", str(n.subnet))


def probe(net, src, *targets) -> dict:
    """Runs the probes from node `src` (None: the root namespace)."""
    prefix = [] if src is None else net.exec_prefix(src)
    r = subprocess.run([*prefix, sys.executable, "-c", PROBE, *targets],
                       capture_output=True, text=True, timeout=10, check=True)
    return json.loads(r.stdout)


def tcp(net, dst, client=None) -> str:
    return f"tcp:{net.client_ip}:{client.port}" if dst is None else f"tcp:{net.node_ip(dst)}:{PORT}"


def reach(net, src, dsts, client=None) -> dict:
    """{dst: True if a TCP echo works from src to dst} (None: the clients), probed in parallel."""
    targets = {d: tcp(net, d, client) for d in dsts}
    out = probe(net, src, *targets.values())
    return {d: out[t] == "ok" for d, t in targets.items()}


def all_pairs(net, client):
    """{(src, dst): reachable} for every node and the clients, each way."""
    ends = [None, 1, 2, 3]
    return {(s, d): ok for s in ends for d, ok in reach(net, s, [e for e in ends if e != s], client).items()}


def expect(net, client, broken):
    result = all_pairs(net, client)
    assert {pair for pair, ok in result.items() if not ok} == set(broken), result


def test_everything_reachable_and_nothing_leaves(net):
    n, _, client, _ = net
    expect(n, client, broken=())
    for i in (1, 2, 3):
        assert _ip_json("route", "get", n.node_ip(i))[0]["dev"] == n.bridge
        routes = _ip_json("-4", "route", "show", "table", "all", ns=n.netns(i))
        assert not any(r["dst"] == "default" for r in routes), routes
        assert [r["dst"] for r in _ip_json("-4", "route", "show", ns=n.netns(i))] == [str(n.subnet)]
    out = probe(n, 1, "udp:192.0.2.1:9:x", "tcp:192.0.2.1:80")
    assert all("unreachable" in v for v in out.values()), out
    assert n.exec_prefix(2) == ["ip", "netns", "exec", n.netns(2)]
    assert n.client_ip.endswith(".1") and n.node_ip(3).endswith(".13")


def test_one_way_cut(net):
    n, servers, client, events = net
    n.cut(1, 2)
    n.cut(1, 2)  # idempotent
    assert events[-1] == "cut 1->2"
    assert probe(n, 2, f"udp:{n.node_ip(1)}:{PORT}:from2")[f"udp:{n.node_ip(1)}:{PORT}:from2"] == "sent"
    assert servers[1].got("from2")
    out = probe(n, 1, f"udp:{n.node_ip(2)}:{PORT}:from1")
    assert "Invalid argument" in out[f"udp:{n.node_ip(2)}:{PORT}:from1"], out  # a blackhole tells the sender
    assert not servers[2].got("from1")
    # TCP needs both directions: 1->2 fails at once, 2->1 times out (the SYN-ACK is blackholed).
    expect(n, client, broken={(1, 2), (2, 1)})
    n.heal()
    expect(n, client, broken=())
    assert probe(n, 1, f"udp:{n.node_ip(2)}:{PORT}:again")
    assert servers[2].got("again")


def test_partition_and_heal(net):
    n, _, client, events = net
    n.partition([[1, 2], [3]])
    assert events[-1] == "partition 1,2 | 3"
    expect(n, client, broken={(1, 3), (3, 1), (2, 3), (3, 2)})
    n.heal()
    expect(n, client, broken=())


def test_heal_pair(net):
    n, _, client, _ = net
    n.partition([[1], [2], [3]])
    n.heal_pair(1, 3)
    expect(n, client, broken={(1, 2), (2, 1), (2, 3), (3, 2)})


def test_isolate(net):
    n, servers, client, _ = net
    n.isolate(3)
    expect(n, client, broken={(3, d) for d in (None, 1, 2)} | {(s, 3) for s in (None, 1, 2)})
    probe(n, None, f"udp:{n.node_ip(3)}:{PORT}:isolated")
    assert not servers[3].got("isolated")


def test_cut_client(net):
    n, servers, client, events = net
    n.cut_client(2)
    assert events[-1] == "cut_client 2"
    expect(n, client, broken={(None, 2), (2, None)})
    probe(n, None, f"udp:{n.node_ip(2)}:{PORT}:client")  # the client->node direction is cut too
    assert not servers[2].got("client")


def test_heal_removes_only_its_routes(net):
    n, _, _, _ = net
    stranger = str(n.subnet.network_address + 200)
    _ip("route", "add", "blackhole", f"{stranger}/32", ns=n.netns(1))
    try:
        n.cut(1, 2)
        n.heal()
        assert [r["dst"] for r in _ip_json("route", "show", "type", "blackhole", ns=n.netns(1))] == [stranger]
    finally:
        _ip("route", "del", "blackhole", f"{stranger}/32", ns=n.netns(1))


def test_close_leaves_nothing_behind():
    n = make(prefix="qfc", nodes=2)
    server = Server(n, 1)
    n.cut_client(1)
    n.partition([[1], [2]])
    server.stop()  # processes in a namespace are stopped before close
    n.close()
    n.close()  # idempotent
    assert not _namespaces("qfc", n.k) and not _bridges("qfc")
    assert "qfc" not in _ip("netns", "list").stdout
    assert "qfc" not in _ip("link", "show").stdout
    assert not _ip_json("route", "show", "type", "blackhole", "root", str(n.subnet))


def test_two_networks_at_once_differ():
    with make(prefix="qft", nodes=1) as a, make(prefix="qft", nodes=1) as b:
        assert a.k != b.k and a.subnet != b.subnet and a.bridge != b.bridge
        assert not a.subnet.overlaps(b.subnet)
        assert a.netns(1) != b.netns(1)


def test_leftovers_of_dead_owners_are_removed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    _ip("link", "add", "name", "qfdbr240", "type", "bridge")
    _ip("link", "set", "dev", "qfdbr240", "alias", f"qfd owner {dead.pid} 1 net 10.77.240.0/24")
    _ip("netns", "add", "qfd240n1")
    _ip("link", "add", "qfd240v1", "type", "veth", "peer", "name", "eth0", "netns", "qfd240n1")
    with make(prefix="qfd", nodes=1) as live:  # a live owner: not removed by the next one
        assert 240 not in _bridges("qfd") and not _namespaces("qfd", 240)
        assert "qfd240v1" not in _ip("link", "show").stdout
        with make(prefix="qfd", nodes=1) as other:
            assert live.k in _bridges("qfd") and other.k != live.k


# ---- the delay proxy (no root needed)

@pytest.fixture
def echo_port():
    server = socket.create_server(("127.0.0.1", 0))

    def echo(c):
        with c:
            while (d := c.recv(4096)):
                c.sendall(d)

    def serve():
        while True:
            try:
                c, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def round_trip(sock, data=b"hello", timeout=2.0):
    sock.settimeout(timeout)
    start = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    assert got == data
    return time.monotonic() - start


def test_proxy_delays_both_ways(echo_port):
    events = []
    with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo_port, delay_s=0.0, log=events.append) as p:
        s = socket.create_connection(("127.0.0.1", p.port))
        assert round_trip(s) < 0.1
        p.set_delay(0.15)
        assert 0.3 <= round_trip(s) < 1.0  # 0.15 s each way
        assert events == [f"delay proxy :{p.port} 150ms"]
        p.set_delay(0.0)
        assert round_trip(s) < 0.1


def test_proxy_drops_and_resets_one_connection(echo_port):
    with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as p:
        a = socket.create_connection(("127.0.0.1", p.port))
        round_trip(a)
        b = socket.create_connection(("127.0.0.1", p.port))
        round_trip(b)
        first, second = p.connections()
        p.set_drop(True, conn=first)
        with pytest.raises(socket.timeout):
            round_trip(a, b"lost", timeout=0.3)
        round_trip(b)  # the other connection is untouched
        p.set_drop(False, conn=first)
        round_trip(a, b"back")
        p.reset(conn=second)
        with pytest.raises((ConnectionError, OSError)):
            round_trip(b)
        assert p.connections() == [first]
