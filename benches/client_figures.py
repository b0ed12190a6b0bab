#!/usr/bin/env python3
"""The Rust client's throughput next to librdkafka's, on the same Quipu broker and machine, in
one run.

    cargo build --release -p quipu-broker -p quipu-benches --bin client_throughput
    python3 benches/client_figures.py [--records 1000000] [--rounds 3]

- produce: RECORDS records of 1 KiB over 3 partitions, acks=1 and acks=all, batch.size 1 MiB,
  linger.ms 5, by our producer (benches/src/bin/client_throughput.rs) and by librdkafka
  (confluent-kafka, the same loop side_by_side.py uses), alternating, each into a fresh topic.
- replay: the backlog one acks=all round wrote, read from offset 0 by our consumer and by
  librdkafka.
- The same with kcat (librdkafka driven from C: no Python loop in the way) when it is installed:
  `kcat -P -l` from a file of the same records, and `kcat -C -e` printing one byte per record.

Each figure is the median of --rounds; ratios are ours / librdkafka's. Before every measurement
the page cache's dirty pages are written out (`sync`), so no client pays for another's writeback,
and the order of the clients rotates from round to round. The driver binary's and
librdkafka's loops both run on this machine's cores next to the broker: the figures compare
clients under the same load, not absolute capacity.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import (PARTITIONS, RECORD_BYTES, ROOT, Moved, QuipuBroker, create,  # noqa: E402
                          rdkafka_producer, rdkafka_replay)


def settle():
    os.sync()
    time.sleep(1)


def ours(driver, *args):
    settle()
    out = subprocess.run([driver, *map(str, args)], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["bytes"] / 1e6 / r["seconds"], r["records"] / r["seconds"]


def kcat_produce(bootstrap, topic, path, records, acks):
    create(bootstrap, topic)
    settle()
    start = time.perf_counter()
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-l", "-X", f"acks={acks}", "-X", "linger.ms=5",
                    "-X", "batch.size=1048576", "-X", "queue.buffering.max.kbytes=1048576", str(path)],
                   check=True, timeout=1800)
    elapsed = time.perf_counter() - start
    return records * (RECORD_BYTES - 1) / 1e6 / elapsed


def kcat_replay(bootstrap, topic, records):
    settle()
    start = time.perf_counter()
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "."],
                         capture_output=True, check=True, timeout=1800).stdout
    elapsed = time.perf_counter() - start
    assert len(out) == records, (len(out), records)
    return records * RECORD_BYTES / 1e6 / elapsed


def create_topic(bootstrap, topic):
    create(bootstrap, topic)
    return topic


def rdkafka_measured(bootstrap, topic, records, acks):
    create(bootstrap, topic)
    settle()
    return rdkafka_producer(bootstrap, topic, records, acks, 1 << 20, Moved(), create_topic=False)[0]


def rotate(runs, n):
    k = n % len(runs)
    return runs[k:] + runs[:k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "quipu"))
    ap.add_argument("--driver", default=None, help="client_throughput binary (default: next to --bin)")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    driver = args.driver or str(Path(args.bin).parent / "client_throughput")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = QuipuBroker(args.bin, tmp).start()
        lines = Path(tmp) / "records.txt"
        if shutil.which("kcat"):
            # kcat sends each line: RECORD_BYTES - 1 bytes and a newline.
            with open(lines, "wb") as f:
                line = bytes(65 + i % 26 for i in range(RECORD_BYTES - 1)) + b"\n"
                for _ in range(args.records):
                    f.write(line)
        try:
            b = broker.bootstrap
            for n in range(args.rounds):
                for acks in ["1", "all"]:
                    runs = [
                        ("Rust client", lambda: ours(driver, "produce", b, create_topic(b, f"ours-{acks}-{n}"),
                                                     args.records, RECORD_BYTES, PARTITIONS, acks, 1 << 20)[0]),
                        ("librdkafka", lambda: rdkafka_measured(b, f"rd-{acks}-{n}", args.records, acks)),
                    ]
                    if lines.exists():
                        runs.append(("kcat", lambda: kcat_produce(b, f"kcat-{acks}-{n}", lines, args.records, acks)))
                    for who, run in rotate(runs, n):
                        figures.setdefault(f"produce acks={acks}, {who} (MB/s)", []).append(run())
                runs = [
                    ("Rust client", lambda: ours(driver, "replay", b, f"ours-all-{n}", args.records, PARTITIONS)[0]),
                    ("librdkafka", lambda: (settle(), rdkafka_replay(b, f"ours-all-{n}", args.records, Moved()))[1]),
                ]
                if lines.exists():
                    runs.append(("kcat", lambda: kcat_replay(b, f"ours-all-{n}", args.records)))
                for who, run in rotate(runs, n):
                    figures.setdefault(f"replay from offset 0, {who} (MB/s)", []).append(run())
        finally:
            broker.stop()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    print(f"{args.records} records of {RECORD_BYTES} B over {PARTITIONS} partitions, median of {args.rounds}")
    for k, v in medians.items():
        print(f"{k:55s} {v:12.1f}   runs: {', '.join(f'{x:.1f}' for x in figures[k])}")
    for what in ["produce acks=1", "produce acks=all", "replay from offset 0"]:
        for other in ["librdkafka", "kcat"]:
            if f"{what}, {other} (MB/s)" in medians:
                ratio = medians[f"{what}, Rust client (MB/s)"] / medians[f"{what}, {other} (MB/s)"]
                print(f"{what}: Rust client / {other} = {ratio:.2f}")


if __name__ == "__main__":
    main()
