"""Fixtures for the interoperability suite: a Quipu broker process per test, on loopback.

The broker binary comes from TEST_QUIPU_BIN (default: target/release/quipu, which tests/run.sh builds).
Each broker gets its own free port and a temporary data directory and is stopped at the end.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIPU_BIN = Path(os.environ.get("TEST_QUIPU_BIN", ROOT / "target" / "release" / "quipu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A quipu process; `restart()` stops it cleanly (SIGTERM) and starts it on the same data."""

    def __init__(self, data_dir: Path, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = data_dir.parent / f"quipu-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        assert QUIPU_BIN.exists(), f"{QUIPU_BIN} missing: build it with cargo build --release"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(QUIPU_BIN), "--data-dir", str(self.data_dir), "--listen", self.bootstrap, *self.extra_args],
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quipu exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("quipu did not start listening within 30 s")

    def stop(self, sig=signal.SIGTERM, timeout_s=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("quipu did not stop within the timeout")
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


TEST_TIMEOUT_S = 900


@pytest.fixture(autouse=True)
def bounded_test_time(request):
    """No test may run past TEST_TIMEOUT_S, or its module's own TEST_LIMIT_S: SIGALRM fails it
    (with a traceback of where it waited) instead of letting the suite hang."""
    limit_s = getattr(request.module, "TEST_LIMIT_S", TEST_TIMEOUT_S)

    def expire(signum, frame):
        import faulthandler
        faulthandler.dump_traceback(all_threads=True)
        raise TimeoutError(f"test exceeded {limit_s} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit_s)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", ["--set", "num.partitions=3"])
    b.start()
    yield b
    b.stop()
