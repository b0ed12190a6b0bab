"""kcat (librdkafka's command-line client, from Debian): every codec, then a restart.

kcat sets one header set per run and stamps records with the time they were produced, so the
headers are checked against that set, and the timestamp read uses a timestamp taken from the
records themselves. Offsets for a timestamp come from `kcat -Q` (ListOffsets).
"""
import subprocess

import workload as w

CLIENT = "kcat"
FORMAT = "%p\\t%o\\t%k\\t%s\\t%h\\t%T\\n"


def kcat(*args, stdin=None, timeout=300) -> str:
    out = subprocess.run(["kcat", *map(str, args)], input=stdin, capture_output=True, timeout=timeout)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    return out.stdout.decode()


def produce(bootstrap, topic, codec):
    for p in range(w.PARTITIONS):
        lines = b"".join(w.key(i) + b"\t" + w.value(i) + b"\n" for i in range(p, w.RECORDS, w.PARTITIONS))
        kcat("-P", "-b", bootstrap, "-t", topic, "-p", p, "-K", "\t", "-z", codec, "-H", f"client={CLIENT}",
             "-X", "linger.ms=5", stdin=lines)


def consume(bootstrap, topic, partition, start, count):
    if count == 0:
        return []
    out = kcat("-C", "-b", bootstrap, "-t", topic, "-p", partition, "-o", start, "-c", count, "-e", "-f", FORMAT)
    records = []
    for line in out.splitlines():
        p, o, k, v, h, ts = line.split("\t")
        headers = [(a, b.encode()) for a, b in (x.split("=", 1) for x in h.split(",") if x)]
        records.append(w.Consumed(int(p), int(o), k.encode(), v.encode(), headers, int(ts)))
    return records


def check(records, partition, start):
    w.check_records(records, partition, start, CLIENT, check_ts=False,
                    expected_headers=lambda i: [("client", CLIENT.encode())])


def verify(bootstrap, topic):
    for p in range(w.PARTITIONS):
        n = w.count_in_partition(p)
        everything = consume(bootstrap, topic, p, 0, n)
        check(everything, p, 0)
        mid = w.middle_offset(p)
        check(consume(bootstrap, topic, p, mid, n - mid), p, mid)
        # The first record stamped at or after the middle record's time.
        ts = everything[mid].timestamp
        expected = next(r.offset for r in everything if r.timestamp >= ts)
        answer = kcat("-Q", "-b", bootstrap, "-t", f"{topic}:{p}:{ts}")
        assert f"offset {expected}" in answer, answer
        check(consume(bootstrap, topic, p, f"s@{ts}", n - expected), p, expected)


def test_kcat_round_trip_every_codec_and_restart(broker):
    topics = [f"kcat-{codec}" for codec in w.CODECS]
    for codec, topic in zip(w.CODECS, topics):
        produce(broker.bootstrap, topic, codec)
        verify(broker.bootstrap, topic)
    broker.restart()
    for topic in topics:
        verify(broker.bootstrap, topic)
