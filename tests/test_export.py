"""Exports for aarch64 Linux and Android link with ld.lld from the ziglang wheel by default on every machine, with no
system linker; an opt-in compiler driver replaces it; every linker problem is one ``LinkerError`` naming the tool
and what to install. (The linked ``.so`` files run on the emulated device: ``test_emulated_device.py``.)"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tvm import relax

import targets
from relax_helpers import build_module
from tvm_ecnn.device.export import AARCH64_CC, NDK_CC, LinkerError, cross_compiler_for, lld_shared
from tvm_ecnn.pipeline import build

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"aarch64-linux": targets.get_target("aarch64-linux"), "android": targets.get_target("arm")}
EM_AARCH64, ET_DYN, PT_LOAD = 183, 3, 1
LLD_PAGE = 16384  # lld_shared's max-page-size; compiler drivers keep their own default (64 KB for aarch64)


def relu_module():
    return build_module(lambda x: relax.op.nn.relu(x), [((1, 8), "float32")])


def elf_facts(path: Path) -> tuple[int, int, set[int]]:
    """(e_type, e_machine, alignments of the PT_LOAD segments) of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", path
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    headers = [phoff + i * phentsize for i in range(phnum)]
    loads = [h for h in headers if struct.unpack_from("<I", data, h)[0] == PT_LOAD]
    aligns = {struct.unpack_from("<Q", data, h + 48)[0] for h in loads}  # p_align
    return e_type, e_machine, aligns


@pytest.fixture
def no_opt_in(monkeypatch):
    monkeypatch.delenv(NDK_CC, raising=False)
    monkeypatch.delenv(AARCH64_CC, raising=False)


@pytest.mark.filterwarnings("ignore:TVM_NDK_CC is not set")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_default_link_is_ziglang_lld_with_no_system_linker_on_path(name, tmp_path, monkeypatch, no_opt_in):
    target = TARGETS[name]
    fcompile = cross_compiler_for(target)
    assert fcompile is lld_shared
    executable = build(relu_module(), target)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ld.lld, clang or cross gcc can be found
    so = tmp_path / f"{name}.so"
    executable.export_library(str(so), fcompile=fcompile)
    assert elf_facts(so) == (ET_DYN, EM_AARCH64, {LLD_PAGE})


def test_opt_in_driver_replaces_lld(tmp_path, monkeypatch):
    """``TVM_ECNN_AARCH64_CC`` (e.g. aarch64-linux-gnu-gcc) links instead; here zig's own cc driver stands in."""
    monkeypatch.setenv(AARCH64_CC, f"{sys.executable} -m ziglang cc -target aarch64-linux-gnu -nostdlib")
    target = TARGETS["aarch64-linux"]
    so = tmp_path / "driver.so"
    build(relu_module(), target).export_library(str(so), fcompile=cross_compiler_for(target))
    e_type, e_machine, aligns = elf_facts(so)
    assert (e_type, e_machine) == (ET_DYN, EM_AARCH64) and LLD_PAGE not in aligns


def test_missing_ziglang_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ziglang", None)  # how Python sees an uninstalled package
    with pytest.raises(LinkerError, match=r"pip install ziglang"):
        lld_shared(str(tmp_path / "x.so"), [])


def test_linker_failure_carries_the_linker_output(tmp_path):
    bogus = tmp_path / "bogus.o"
    bogus.write_text("not an object file\n")
    with pytest.raises(LinkerError) as error:
        lld_shared(str(tmp_path / "x.so"), [str(bogus)])
    message = str(error.value)
    assert message.startswith("ld.lld (from ziglang) failed") and "ld.lld: error:" in message and str(bogus) in message


def test_missing_opt_in_driver_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(NDK_CC, "/nonexistent/ndk/clang")
    target = TARGETS["android"]
    with pytest.raises(LinkerError, match=f"{NDK_CC}=/nonexistent/ndk/clang could not be run.*unset {NDK_CC}"):
        build(relu_module(), target).export_library(str(tmp_path / "x.so"), fcompile=cross_compiler_for(target))


def test_compile_cli_reports_a_missing_linker_in_one_line(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 8, 8),)), str(tmp_path / "net.pt2"))
    env = {**os.environ, NDK_CC: "/nonexistent/ndk/clang", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compile.py"), "--quiet", "--model", "net.pt2",
                           "--target", "arm"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: compilation failed in the export stage"), done.stderr
    assert f"{NDK_CC}=/nonexistent/ndk/clang could not be run" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("*.so"))
