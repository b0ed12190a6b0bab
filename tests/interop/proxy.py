"""A Kafka-protocol TCP proxy for fault tests: it forwards frames both ways and, on a schedule,
swallows a Produce response and cuts the connection, so the producer never learns its batch was
written and must retry it. Runs in a thread; `close()` stops it.
"""
import asyncio
import random
import struct
import threading

PRODUCE = 0


class DroppingProxy:
    def __init__(self, listen_port: int, target_port: int, drop_probability: float, max_drops: int, seed=5):
        self.listen_port = listen_port
        self.target_port = target_port
        self.drop_probability = drop_probability
        self.max_drops = max_drops
        self.rng = random.Random(seed)
        self.dropped = 0
        self.forwarded_produce = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        assert self.ready.wait(10), "proxy did not start"
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.listen_port))
        self.ready.set()
        self.loop.run_forever()

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _serve(self, client_r, client_w):
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        apis = {}  # correlation id -> api key of the requests in flight on this connection

        async def read_frame(r):
            size = struct.unpack(">i", await r.readexactly(4))[0]
            return await r.readexactly(size)

        async def upstream():
            while True:
                frame = await read_frame(client_r)
                api_key, _version, correlation_id = struct.unpack(">hhi", frame[:8])
                apis[correlation_id] = api_key
                broker_w.write(struct.pack(">i", len(frame)) + frame)
                await broker_w.drain()

        async def downstream():
            while True:
                frame = await read_frame(broker_r)
                correlation_id = struct.unpack(">i", frame[:4])[0]
                if apis.pop(correlation_id, None) == PRODUCE:
                    if self.dropped < self.max_drops and self.rng.random() < self.drop_probability:
                        self.dropped += 1
                        return  # the write happened; its answer is lost with the connection
                    self.forwarded_produce += 1
                client_w.write(struct.pack(">i", len(frame)) + frame)
                await client_w.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            pass
        for t in tasks:
            t.cancel()
        for w in (client_w, broker_w):
            try:
                w.close()
            except Exception:
                pass
