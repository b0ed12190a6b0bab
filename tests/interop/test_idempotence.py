"""The idempotent producer under lost responses: Apache Kafka's Java producer, with its default
settings (idempotence on, five requests in flight), writes through a proxy that swallows Produce
responses and cuts the connection, so the producer retries batches the broker already holds. The
broker recognises each retry by its producer id, epoch and sequence and answers with the original
offsets: every record ends up in the topic exactly once, in order, at the offset the workload
expects.
"""
from conftest import Broker, free_port
from proxy import DroppingProxy
import test_java_client as jc
import workload as w


def test_java_producer_retries_never_duplicate(tmp_path):
    proxy_port = free_port()
    broker = Broker(tmp_path / "data", ["--set", "num.partitions=3",
                                        "--set", f"advertised.listeners=127.0.0.1:{proxy_port}"])
    broker.start()
    proxy = DroppingProxy(proxy_port, broker.port, drop_probability=0.08, max_drops=25).start()
    try:
        topic = "idempotent"
        jc.java("produce", f"127.0.0.1:{proxy_port}", topic, "lz4", w.RECORDS)
        assert proxy.dropped >= 10, f"only {proxy.dropped} responses dropped"
        # Read back directly: exactly the workload, each record once, in order.
        jc.verify(broker.bootstrap, topic)
        print(f"{proxy.dropped} produce responses dropped, {proxy.forwarded_produce} forwarded")
    finally:
        proxy.close()
        broker.stop()
