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


def test_throughput_script_smoke():
    out = run("throughput.py", "--records", "3000", "--brokers", "quipu")
    for figure in ["produce MB/s", "consume MB/s", "peak RSS MiB", "CPU s per GB"]:
        assert figure in out, out


def test_storage_figures_script_smoke():
    out = run("storage_figures.py", "--partitions", "20", "--recovery-mb", "4")
    assert "start-up after a clean shutdown with 20 partitions" in out, out
    assert "recovery after kill -9 of 4 MB" in out, out
