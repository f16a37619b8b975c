"""Bad input to scripts/compile.py, scripts/run.py and ``tvm_ecnn.load``: one clear message and exit status 2 (1 for a
compiler failure), never a traceback or a crash, and the user's files intact. Also what a compiled ``.so`` records
about its inputs (``tvm_ecnn.metadata``) and the ELF checks made before anything is loaded (``tvm_ecnn.elf``)."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import targets
from relax_helpers import build_module
from tvm_ecnn import elf, runtime
from tvm_ecnn.deploy import compile_model
from tvm_ecnn.pipeline import build

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 8, 8)
TRUNCATED = "is truncated"

# A user's model file in the current folder (not on sys.path), as `--model tinynets:build` finds it.
TINYNETS = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class DataDependent(torch.nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Fft(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).real


def build():
    torch.manual_seed(0)
    return Net()


def half():
    return build().half()


def nothing():
    return None


def broken():
    raise RuntimeError("no weights here")


def data_dependent():
    return DataDependent()


def fft():
    return Fft()
'''


def script(name: str, *args, cwd, env=None):
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_refused(done, status: int, *expected: str) -> None:
    """Exit ``status``, the message on stderr, no traceback, nothing on stdout."""
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "def forward" not in done.stderr, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with the user's files: tinynets.py, net.pt2 (static), dyn.pt2 (dynamic batch 1..16), garbage.pt2."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "tinynets.py").write_text(TINYNETS)
    sys.path.insert(0, str(folder))
    try:
        import tinynets
    finally:
        sys.path.remove(str(folder))
    net = tinynets.build().eval()
    torch.export.save(torch.export.export(net, (torch.randn(SHAPE),)), str(folder / "net.pt2"))
    batch = torch.export.Dim("batch", min=1, max=16)
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},)),
                      str(folder / "dyn.pt2"))
    (folder / "garbage.pt2").write_text("not a zip archive")
    (folder / "a_folder").mkdir()
    (folder / "folder.pt2").mkdir()
    return folder


@pytest.fixture(scope="module")
def libraries(work, tmp_path_factory) -> dict[str, Path]:
    """net.so (compiled from net.pt2, with metadata), dyn.so (dynamic batch) and old.so (built without metadata)."""
    folder = tmp_path_factory.mktemp("so")
    paths = {"net": folder / "net.so", "dyn": folder / "dyn.so", "old": folder / "old.so"}
    compile_model(str(work / "net.pt2"), None, "host", output=paths["net"], progress=False)
    compile_model(str(work / "dyn.pt2"), None, "host", output=paths["dyn"], progress=False)
    from tvm_ecnn.frontend import from_torch

    build(from_torch(torch.export.load(str(work / "net.pt2")), ()), "host").export_library(str(paths["old"]))
    return paths


# ------------------------------------------------------------------------------------------------------------------
# scripts/compile.py


# Through the script (exit status, stderr, files intact): one case of each kind.
SCRIPT_CASES = [
    (["--model", "garbage.pt2"], "garbage.pt2 is not a program saved with torch.export.save"),
    (["--model", "tinynets:broken", "--input-shape", "1,3,8,8"], "broken() raised RuntimeError: no weights here"),
    (["--model", "tinynets:half", "--input-shape", "1,3,8,8"], "give the fp32 model (without .half()) and use --dtype"),
    (["--model", "tinynets:data_dependent", "--input-shape", "1,3,8,8"], "data-dependent"),
    (["--model", "tinynets:fft", "--input-shape", "1,3,8,8"], "aten._fft_c2c.default"),
    (["--model", "dyn.pt2", "--input-shape", "17,3,8,8"], "which takes (1..16, 3, 8, 8) float32"),
    (["--model", "net.pt2", "-o", "net.pt2"], "is the input"),
    (["--model", "net.pt2", "-o", "/proc/net.so"], "cannot be written"),
]
# Through compile_model (the same ValueError the script prints), cheaper than a process each.
API_CASES = [
    (["missing.pt2"], "missing.pt2 does not exist"),
    (["folder.pt2"], "model file folder.pt2 is a directory"),
    (["tinynets:nothing", (1, 3, 8, 8)], "expected a torch.nn.Module"),
    (["tinynets:absent", (1, 3, 8, 8)], "module tinynets has no attribute 'absent'"),
    (["nonet:build", (1, 3, 8, 8)], "no module named 'nonet'"),
    (["tinynets:build"], "--input-shape is required"),
    (["tinynets:build", (1, 3, 0, 8)], "zero or negative dimension"),
    (["tinynets:build", ()], "input shape must be a list of integers"),
    (["shiftresnet20", (1, 3)], "it takes N x 3 x H x W images"),
    (["net.pt2", (1, 3, 9, 9)], "does not fit net.pt2, which takes (1, 3, 8, 8) float32"),
    (["tinynets:build", (1, 3, 8, 8), "tinynets.py"], "is the input"),
    (["net.pt2", None, "a_folder"], "is a directory"),
    (["net.pt2", None, "tinynets.py/net.so"], "is not a directory"),
]


@pytest.mark.parametrize("args, expected", SCRIPT_CASES)
def test_compile_bad_input_exits_2_with_one_message_and_leaves_the_files(work, args, expected):
    before = digest(work)
    done = script("compile.py", "--quiet", "--target", "host", *args, cwd=work)
    assert_refused(done, 2, expected)
    assert len(done.stderr.strip().splitlines()) <= (3 if "tinynets:fft" in args else 2), done.stderr
    assert digest(work) == before  # nothing replaced, nothing written
    assert not list(work.glob("*.so"))


@pytest.mark.parametrize("args, expected", API_CASES)
def test_compile_model_bad_input_is_a_value_error_before_any_work(work, monkeypatch, args, expected):
    monkeypatch.chdir(work)
    before = digest(work)
    model, shape, output = (args + [None, None])[:3]
    with pytest.raises(ValueError) as error:
        compile_model(model, shape, "host", output=output, progress=False)
    assert expected in str(error.value)
    assert digest(work) == before and not list(work.glob("*.so"))
    assert str(work) not in sys.path  # looked there for module:callable, not left there


@pytest.mark.parametrize("shape, expected", [
    ("1,3,x", "must be positive integers"), ("", "must be positive integers"), ("1,-3,8,8", "must be positive"),
    ("1,0,8,8", "every dimension must be at least 1"),
])
def test_compile_bad_input_shape_names_the_argument(work, shape, expected):
    done = script("compile.py", "--model", "tinynets:build", "--input-shape", shape, cwd=work)
    assert_refused(done, 2, "argument --input-shape", expected)


def test_compiler_failure_exits_1_naming_the_stage(work, tmp_path):
    """A broken toolchain is not a bad argument: exit 1, the stage named; --traceback shows the details."""
    env = {"TVM_NDK_CC": str(tmp_path / "no-such-clang")}
    done = script("compile.py", "--quiet", "--model", "net.pt2", "--target", "arm", "-o", str(tmp_path / "a.so"),
                  cwd=work, env=env)
    assert_refused(done, 1, "compilation failed in the export stage", "no-such-clang", "--traceback")
    loud = script("compile.py", "--quiet", "--model", "net.pt2", "--target", "arm", "-o", str(tmp_path / "a.so"),
                  "--traceback", cwd=work, env=env)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


# ------------------------------------------------------------------------------------------------------------------
# what a .so records, and Loaded checking inputs against it


def test_so_records_its_inputs_and_origin(libraries, work):
    with runtime.load(libraries["net"]) as model:
        assert [str(s) for s in model.inputs] == ["x: (1, 3, 8, 8) float32"]
        assert model.metadata["target"] == "host" and model.metadata["dtype"] == "fp32"
        assert model.metadata["model"].endswith("net.pt2")
        x = np.random.default_rng(0).standard_normal(SHAPE).astype("float32")
        with torch.no_grad():
            expected = torch.export.load(str(work / "net.pt2")).module()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.run(x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inputs, expected", [
    ([np.zeros((1, 3, 9, 9), "float32")], "must be (1, 3, 8, 8) float32, got shape (1, 3, 9, 9)"),
    ([np.zeros(SHAPE, "float64")], "must be (1, 3, 8, 8) float32, got dtype float64"),
    ([np.zeros(SHAPE, "float32")] * 2, "takes 1 input(s), got 2: x: (1, 3, 8, 8) float32"),
    ([], "takes 1 input(s), got 0"),
])
def test_wrong_input_is_a_value_error_naming_what_it_takes(libraries, inputs, expected):
    with runtime.load(libraries["net"]) as model, pytest.raises(ValueError) as error:
        model.run(*inputs)
    assert expected in str(error.value) and "net.so" in str(error.value)


def test_dynamic_batch_is_reported_as_a_range_not_the_example_size(libraries):
    with runtime.load(libraries["dyn"]) as model:
        assert [str(s) for s in model.inputs] == ["x: (1..16, 3, 8, 8) float32"]
        assert model.run(np.zeros((5, 3, 8, 8), "float32"))[0].shape == (5, 4, 8, 8)
        with pytest.raises(ValueError, match=r"must be \(1\.\.16, 3, 8, 8\) float32, got shape \(17, 3, 8, 8\)"):
            model.run(np.zeros((17, 3, 8, 8), "float32"))


def test_so_without_metadata_still_loads_and_wrong_input_is_a_value_error(libraries):
    with runtime.load(libraries["old"]) as model:
        assert model.inputs is None and model.metadata is None
        assert model.run(np.zeros(SHAPE, "float32"))[0].shape == (1, 4, 8, 8)
        with pytest.raises(ValueError, match=r"wrong input for old.so: input x must be R.Tensor\(\(1, 3, 8, 8\)"):
            model.run(np.zeros((1, 3, 9, 9), "float32"))
        with pytest.raises(ValueError, match="number must be a positive integer"):
            model.benchmark(np.zeros(SHAPE, "float32"), number=0)


# ------------------------------------------------------------------------------------------------------------------
# scripts/run.py


def test_run_without_flags_uses_what_the_so_records(libraries):
    done = script("run.py", str(libraries["net"]), "--number", "1", "--repeat", "1", cwd=libraries["net"].parent)
    assert done.returncode == 0, done.stderr
    assert "output 0: (1, 4, 8, 8) float32" in done.stdout


def test_run_compares_with_the_model_at_the_recorded_shape(libraries, work):
    done = script("run.py", str(libraries["net"]), "--model", "tinynets:build", "--number", "1", "--repeat", "1",
                  cwd=work)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split("max abs error vs PyTorch:")[1].split()[0]) < 1e-5


@pytest.mark.parametrize("args, expected", [
    (["--input-shape", "1,3,9,9"], "must be (1, 3, 8, 8) float32, got shape (1, 3, 9, 9)"),
    (["--inputs", "two.npz"], "takes 1 input(s), got 2"),
    (["--inputs", "f64.npz"], "got dtype float64"),
    (["--inputs", "missing.npz"], "--inputs missing.npz: cannot read it (No such file or directory)"),
    (["--inputs", "tinynets.py"], "not an .npz or .npy file"),
    (["--repeat", "0"], "argument --repeat: must be an integer >= 1"),
    (["--number", "0"], "argument --number: must be an integer >= 1"),
    (["--seed", "-1"], "argument --seed"),
])
def test_run_bad_input_exits_2(libraries, work, tmp_path, args, expected):
    np.savez(work / "two.npz", a=np.zeros(SHAPE, "float32"), b=np.zeros(SHAPE, "float32"))
    np.savez(work / "f64.npz", a=np.zeros(SHAPE))
    assert_refused(script("run.py", str(libraries["net"]), *args, cwd=work), 2, expected)


def test_run_old_so_without_shape_says_what_to_give(libraries):
    done = script("run.py", str(libraries["old"]), cwd=libraries["old"].parent)
    assert_refused(done, 2, "does not record its inputs", "--input-shape")


# ------------------------------------------------------------------------------------------------------------------
# .so files checked before dlopen


def _corrupt(source: Path, target: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    target.write_bytes(bytes(data))
    return target


def bad_files(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Real damaged copies of ``good`` (an x86-64 or aarch64 ELF64 .so) and what the message must say."""
    size = good.stat().st_size
    phoff, shoff = struct.unpack_from("<QQ", good.read_bytes(), 32)
    files = {}
    for cut in (10, 40, 100, 5000, size // 2, size - 1):
        path = folder / f"cut{cut}.so"
        subprocess.run(f"head -c {cut} {good} > {path}", shell=True, check=True)
        files[f"truncated at {cut}"] = (path, TRUNCATED)
    files["program table offset"] = (_corrupt(good, folder / "phoff.so", 32, "<Q", 2**40), "program header table")
    files["program table count"] = (_corrupt(good, folder / "phnum.so", 56, "<H", 0xFFFF), "program header table")
    files["section table offset"] = (_corrupt(good, folder / "shoff.so", 40, "<Q", size), "section header table")
    files["segment offset"] = (_corrupt(good, folder / "seg.so", phoff + 8, "<Q", size), "segment 0")
    files["section size"] = (_corrupt(good, folder / "sec.so", shoff + 64 + 32, "<Q", 2**33), "section 1")
    files["header size"] = (_corrupt(good, folder / "ehsize.so", 52, "<H", 7), "corrupt ELF header")
    files["type"] = (_corrupt(good, folder / "exec.so", 16, "<H", 2), "not a shared object")
    files["class"] = (_corrupt(good, folder / "class.so", 4, "<B", 9), "corrupt ELF identification")
    (folder / "text.so").write_text("hello")
    files["not ELF"] = (folder / "text.so", "no ELF header")
    (folder / "dir.so").mkdir(exist_ok=True)
    files["directory"] = (folder / "dir.so", "is a directory")
    files["missing"] = (folder / "missing.so", "does not exist")
    return files


def test_damaged_so_is_a_value_error_naming_file_and_problem(libraries, tmp_path):
    for case, (path, expected) in bad_files(libraries["net"], tmp_path).items():
        with pytest.raises(ValueError) as error:
            runtime.load(path)
        assert expected in str(error.value) and str(path) in str(error.value), (case, str(error.value))
    assert elf.check_shared_object(libraries["net"]) == targets.host_arch()


def test_run_on_truncated_or_corrupt_so_exits_2_instead_of_crashing(libraries, tmp_path):
    """Before: SIGBUS (exit 135) for a truncated file, SIGSEGV (139) inside dlopen for a corrupt header."""
    files = bad_files(libraries["net"], tmp_path)
    for case in ("truncated at 5000", "program table offset", "segment offset"):
        path, expected = files[case]
        before = path.read_bytes()
        assert_refused(script("run.py", str(path), cwd=tmp_path), 2, expected)
        assert path.read_bytes() == before


def test_so_for_another_architecture_is_a_value_error(tmp_path, libraries, work):
    aarch64 = tmp_path / "net-aarch64.so"
    compile_model(str(work / "net.pt2"), None, "aarch64-linux", output=aarch64, progress=False)
    assert elf.check_shared_object(aarch64) == "aarch64"
    if targets.host_arch() != "aarch64":
        with pytest.raises(ValueError, match="built for aarch64, but this machine is .*--rpc-tracker"):
            runtime.load(aarch64)


def test_rpc_device_gets_metadata_and_refuses_foreign_or_damaged_files(device, libraries, work, tmp_path):
    """Before: an x86 or truncated .so answered "No such file or directory" from the device."""
    host, port, key = device
    tracker = f"{host}:{port}"
    aarch64 = tmp_path / "net-aarch64.so"
    compile_model(str(work / "net.pt2"), None, "aarch64-linux", output=aarch64, progress=False)
    with runtime.upload_and_load(aarch64, tracker, key) as model:
        assert [str(s) for s in model.inputs] == ["x: (1, 3, 8, 8) float32"]
        assert model.run(np.zeros(SHAPE, "float32"))[0].shape == (1, 4, 8, 8)
        with pytest.raises(ValueError, match="must be"):
            model.run(np.zeros((1, 3, 9, 9), "float32"))
    if targets.host_arch() != "aarch64":
        with pytest.raises(ValueError, match="built for x86_64, but the RPC device is aarch64"):
            runtime.upload_and_load(libraries["net"], tracker, key)
    cut = tmp_path / "cut.so"
    cut.write_bytes(aarch64.read_bytes()[:20000])
    with pytest.raises(ValueError, match=TRUNCATED):
        runtime.upload_and_load(cut, tracker, key)


def test_lower_failure_names_the_innermost_pass_and_tvm_errors_count_as_compiler_failures(libraries):
    import tvm
    from tvm import relax

    from tvm_ecnn.compile_errors import _lower_naming_the_pass, _raised_by_compiler

    @tvm.transform.module_pass(opt_level=0, name="StopsHere")
    def stops_here(mod, _ctx):
        raise RuntimeError("stopped")

    pipeline = tvm.transform.Sequential([relax.transform.LegalizeOps(), stops_here, relax.transform.FuseOps()])
    mod = build_module(lambda x: relax.op.nn.relu(x), [((1, 4), "float32")])
    with pytest.raises(RuntimeError) as error:
        _lower_naming_the_pass(pipeline, mod)
    assert error.value.failed_pass == "StopsHere"
    with runtime.load(libraries["old"]) as model:  # a ValueError raised inside TVM's VM (dtype check)
        with pytest.raises(ValueError) as inside_tvm:
            model.vm["main"](tvm.runtime.tensor(np.zeros(SHAPE, "float64")))
    assert _raised_by_compiler(inside_tvm.value)
    with pytest.raises(ValueError) as ours:
        compile_model("tinynets:build", None, "host", progress=False)
    assert not _raised_by_compiler(ours.value)

