"""Fixtures of the fault suite: the modules of this directory importable by the tests, the root
check (namespaces and mounts need it), and a time limit on every test."""
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

TEST_LIMIT_S = int(os.environ.get("FAULT_TEST_LIMIT_S", "600"))


@pytest.fixture(autouse=True)
def bounded_test_time(request):
    """No test may run past its limit: SIGALRM fails it (with every thread's traceback)."""
    scale = float(os.environ.get("FAULT_SCALE", "1"))
    soak_s = int(os.environ.get("FAULT_SOAK_S", "0"))
    limit_s = int(getattr(request.module, "TEST_LIMIT_S", TEST_LIMIT_S) * scale) + soak_s

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
def as_root():
    """The harness needs root (network namespaces, tmpfs mounts): without it a test fails, it is
    not skipped, so that a run without root never passes for one that checked something."""
    assert os.geteuid() == 0, "the fault harness needs root: network namespaces, tmpfs mounts"
