"""A TCP proxy that delays and drops, for the fault harness (the kernel here has no netem, and
tests/interop/proxy.py only swallows Kafka Produce responses). Stdlib only.

It owns one listening socket and, per accepted connection, one connection to the target; each
direction is a reader that stamps what it reads with `now + delay` and a writer that sends it
when due. So a delay is latency (it does not limit throughput) and bytes keep their order even
when the delay changes. Runs its asyncio loop in a thread; `close()` stops it.

Faults, on every connection or on one (`conn` = the id `connections()` lists, in accept order):
- `set_delay(seconds, conn=None)`: what is read from now on is sent `seconds` later, both ways;
- `set_drop(True, conn=None)`: what is read is thrown away, silently (the connection stays open,
  as across a partition); `set_drop(False)` forwards again (what was dropped stays lost, so
  a Kafka stream is broken; the client should time out and reconnect, as after a partition);
- `reset(conn=None)`: closes both sides at once, like a crashed peer.
Per-connection settings override the proxy's until set to None.

Invariants: every connection opened is closed by `close()`; nothing is sent early.

As a process (e.g. inside a namespace, with `Network.exec_prefix`):
    python3 delay_proxy.py --listen 10.77.1.1:19092 --target 10.77.1.12:9092 --delay-ms 200
"""
import argparse
import asyncio
import itertools
import signal
import threading
import time

CHUNK = 65536


class _Conn:
    def __init__(self, cid, writers):
        self.id, self.writers = cid, writers
        self.delay_s = None  # None: the proxy's
        self.drop = None
        self.tasks = []


class DelayProxy:
    def __init__(self, listen_host, listen_port, target_host, target_port, delay_s=0.0, log=None):
        self.listen_host, self.port = listen_host, listen_port  # port 0: any; set by start()
        self.target = (target_host, target_port)
        self.delay_s, self.drop = delay_s, False
        self.log = log or (lambda event: None)
        self._conns = {}
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    # ---- life

    def start(self):
        self.thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"delay proxy did not start: {self._error}")
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, self.listen_host, self.port))
            self.port = self.server.sockets[0].getsockname()[1]
        except OSError as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def close(self):
        if not self.thread.is_alive():
            return
        self._call(self._close_all)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _close_all(self):
        self.server.close()
        for c in list(self._conns.values()):
            self._reset(c)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- faults (called from any thread)

    def connections(self) -> list:
        return self._call(lambda: sorted(self._conns))

    def set_delay(self, seconds, conn=None):
        self._call(lambda: self._set(conn, "delay_s", seconds))
        self.log(f"delay {self._what(conn)} {seconds * 1000:.0f}ms")

    def set_drop(self, on=True, conn=None):
        self._call(lambda: self._set(conn, "drop", on))
        self.log(f"{'drop' if on else 'undrop'} {self._what(conn)}")

    def reset(self, conn=None):
        self._call(lambda: [self._reset(c) for c in self._targets(conn)])
        self.log(f"reset {self._what(conn)}")

    def _what(self, conn):
        return f"proxy :{self.port}" + ("" if conn is None else f" conn {conn}")

    def _call(self, fn):
        """Runs fn on the loop's thread and returns its result."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def _targets(self, conn):
        return list(self._conns.values()) if conn is None else [self._conns[conn]]

    def _set(self, conn, attr, value):
        if conn is None:
            setattr(self, attr, value)
        else:
            setattr(self._conns[conn], attr, value)

    def _reset(self, c):
        for t in c.tasks:
            t.cancel()
        for w in c.writers:
            try:
                w.transport.abort()
            except Exception:
                pass
        self._conns.pop(c.id, None)

    # ---- forwarding

    def _setting(self, c, attr):
        own = getattr(c, attr)
        return getattr(self, attr) if own is None else own

    async def _serve(self, client_r, client_w):
        try:
            target_r, target_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        c = _Conn(next(self._ids), (client_w, target_w))
        self._conns[c.id] = c
        c.tasks = [asyncio.ensure_future(self._pipe(c, client_r, target_w)),
                   asyncio.ensure_future(self._pipe(c, target_r, client_w))]
        await asyncio.wait(c.tasks, return_when=asyncio.FIRST_EXCEPTION)
        self._reset(c)

    async def _pipe(self, c, reader, writer):
        """Forwards reader to writer, each chunk when its time comes; EOF is forwarded too."""
        queue = asyncio.Queue()

        async def send():
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if data is None:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not self._setting(c, "drop"):  # a dropped EOF is lost too
                    queue.put_nowait((time.monotonic() + self._setting(c, "delay_s"), data or None))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="host:port")
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--delay-ms", type=float, default=0.0)
    a = p.parse_args()
    (lh, lp), (th, tp) = (x.rsplit(":", 1) for x in (a.listen, a.target))
    proxy = DelayProxy(lh, int(lp), th, int(tp), a.delay_ms / 1000).start()
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    print(f"listening {lh}:{proxy.port}", flush=True)
    stop.wait()
    proxy.close()


if __name__ == "__main__":
    main()
