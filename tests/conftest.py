"""Put tests/ on sys.path so test modules can ``from reference import ...``; shared fixtures.

Everything the suite needs comes from ``pip install -e ".[test]"`` (PoCL, the linker) except qemu-user + binfmt
for the emulated aarch64 device: its tests skip with a one-line reason when it is missing, or, as root, install
it with ``.ci/setup-system.sh`` and run. With ``ECNN_NO_SKIP=1`` (set by ``.ci/run``) every skip is a failure,
so nothing is silently not run in CI.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SETUP_SYSTEM = Path(__file__).resolve().parents[1] / ".ci" / "setup-system.sh"
NO_SKIP = os.environ.get("ECNN_NO_SKIP", "") not in ("", "0")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def _fail_skips(report) -> None:
    """Under ECNN_NO_SKIP a skipped test or module is reported as failed, with its skip reason."""
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.longrepr = f"skipped, and ECNN_NO_SKIP is set: {_skip_reason(report)}"
        report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_skips(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_skips(report)
    return report


@pytest.fixture(scope="module")
def pocl_platform():
    """PoCL from pip (pocl-binary-distribution), for the OpenCL tests; a missing one is an error, not a skip."""
    from tvm_ecnn.device import pocl

    pocl.pocl_queue()


@pytest.fixture(scope="module")
def binfmt():
    """qemu-aarch64 via binfmt_misc, so aarch64 programs (the emulated device) run here. Missing: as root,
    installed now by .ci/setup-system.sh (and checked again); otherwise the test skips."""
    from tvm_ecnn.device import emulated

    if emulated.binfmt_enabled():
        return
    reason = "qemu-aarch64 binfmt is not enabled (emulated aarch64 device)"
    if os.geteuid() != 0:
        pytest.skip(f"{reason}: run `sudo {SETUP_SYSTEM}`")
    done = subprocess.run([str(SETUP_SYSTEM)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0 or not emulated.binfmt_enabled():
        pytest.fail(f"{reason} and {SETUP_SYSTEM} did not enable it (exit status {done.returncode}):\n"
                    f"{done.stdout}{done.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def device(binfmt):
    """``(host, port, key)`` of a tracker + emulated aarch64 device for the whole module; both are
    killed even when a test fails."""
    from tvm_ecnn.device import emulated

    with emulated.emulated_device() as (host, port, key):
        yield host, port, key
