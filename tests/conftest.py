"""Put tests/ on sys.path so test modules can ``from reference import ...``; shared fixtures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pocl_platform():
    """PoCL's ICD for the OpenCL tests; as root (CI) install it instead of skipping."""
    from tvm_ecnn.device import pocl

    try:
        pocl.pocl_queue()
    except RuntimeError as err:
        if os.geteuid() != 0:
            pytest.skip(str(err))
        subprocess.run([str(Path(__file__).resolve().parents[1] / ".ci" / "setup-system.sh")], check=True)
        pocl.pocl_queue.cache_clear()
        pocl.pocl_queue()
