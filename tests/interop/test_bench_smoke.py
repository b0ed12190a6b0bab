"""The benchmark scripts in a short smoke mode, so they cannot rot: each runs end to end against
Quipu with tiny numbers and prints its figures (the numbers themselves are not judged here)."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import QUIPU_BIN

BENCHES = Path(__file__).resolve().parents[2] / "benches"


def run(script, *args):
    out = subprocess.run([sys.executable, str(BENCHES / script), "--bin", str(QUIPU_BIN), *args],
                         capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_side_by_side_script_smoke():
    out = run("side_by_side.py", "--smoke")
    for figure in ["ProducerPerformance acks=all batch=1024 KiB (MB/s)", "librdkafka produce acks=1",
                   "end-to-end latency p99.9 (ms)", "ConsumerPerformance (MB/s)", "peak RSS (MiB)",
                   "CPU seconds per GB moved", "start-up, 10 partitions with data (s)", "limit: loopback TCP"]:
        assert figure in out, out


def test_group_figures_script_smoke():
    out = run("group_figures.py", "--brokers", "quipu", "--commits", "50", "--rounds", "1")
    assert "commits/s" in out and "rebalance s (median)" in out, out


def test_storage_figures_script_smoke():
    out = run("storage_figures.py", "--partitions", "20", "--recovery-mb", "4")
    assert "start-up after a clean shutdown with 20 partitions" in out, out
    assert "recovery after kill -9 of 4 MB" in out, out


def test_client_figures_script_smoke():
    out = run("client_figures.py", "--records", "3000", "--rounds", "1")
    for figure in ["produce acks=all, Rust client (MB/s)", "produce acks=1, librdkafka (MB/s)",
                   "replay from offset 0, Rust client (MB/s)", "Rust client / librdkafka"]:
        assert figure in out, out


def test_cluster_figures_script_smoke():
    out = run("cluster_figures.py", "--smoke")
    for figure in ["ProducerPerformance acks=all batch=1024 KiB (MB/s)", "librdkafka produce acks=all",
                   "end-to-end latency p99.9", "kill -9 of a partition leader to the next acknowledged produce",
                   "follower catch-up from 20 MB behind"]:
        assert figure in out, out
    assert "NOT MEASURED" not in out, out
