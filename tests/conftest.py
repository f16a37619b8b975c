"""Put tests/ on sys.path so test modules can ``from reference import ...``; shared fixtures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


SETUP_SYSTEM = Path(__file__).resolve().parents[1] / ".ci" / "setup-system.sh"


def _setup_system_or_skip(reason: str) -> None:
    """Missing system pieces: as root (CI) install them with .ci/setup-system.sh, else skip."""
    if os.geteuid() != 0:
        pytest.skip(f"{reason}: run `sudo .ci/setup-system.sh`")
    subprocess.run([str(SETUP_SYSTEM)], check=True)


@pytest.fixture(scope="module")
def pocl_platform():
    """PoCL's ICD for the OpenCL tests."""
    from tvm_ecnn.device import pocl

    try:
        pocl.pocl_queue()
    except RuntimeError as err:
        _setup_system_or_skip(str(err))
        pocl.pocl_queue.cache_clear()
        pocl.pocl_queue()


@pytest.fixture(scope="module")
def binfmt():
    """qemu-aarch64 via binfmt_misc, so aarch64 programs (the emulated device) run here."""
    from tvm_ecnn.device import emulated

    if not emulated.binfmt_enabled():
        _setup_system_or_skip("qemu-aarch64 binfmt is not enabled")


@pytest.fixture(scope="module")
def device(binfmt):
    """``(host, port, key)`` of a tracker + emulated aarch64 device for the whole module; both are
    killed even when a test fails."""
    from tvm_ecnn.device import emulated

    with emulated.emulated_device() as (host, port, key):
        yield host, port, key
