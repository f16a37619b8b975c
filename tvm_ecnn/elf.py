"""Check a shared object's ELF structure before anything ``dlopen``s it.

Why: ``dlopen`` trusts the file. A truncated ``.so`` maps segments past the end of the file and dies with SIGBUS on
first touch; a corrupt header table pointer segfaults inside the loader; over RPC the device answers "No such file
or directory". Every table and segment is checked against the file size here, so a bad file is a ``ValueError``
naming it and what is wrong, in Python, before any loader sees it. Reference: the System V gABI, chapter 4
(https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html).
"""
from __future__ import annotations

import struct
from pathlib import Path

# e_machine values of the CPUs we meet.
MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
_ET_DYN = 3
_PT_LOAD, _PT_DYNAMIC = 1, 2
_SHT_NOBITS = 8
# class -> (header size, header fields after e_ident, program header size + fields, section header size + fields)
_LAYOUT = {
    1: (52, "HHIIIIIHHHHHH", (32, "IIIIIIII"), (40, "IIIIIIIIII")),
    2: (64, "HHIQQQIHHHHHH", (56, "IIQQQQQQ"), (64, "IIQQQQIIQQ")),
}
_REEXPORT = "re-export it (scripts/compile.py or executable.export_library)"


def check_shared_object(path) -> str:
    """The architecture of the shared object ``path`` (a ``MACHINES`` name); ``ValueError`` naming the file when it
    is missing, not an ELF shared object, truncated or inconsistent."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a compiled .so")
    if not path.is_file():
        raise ValueError(f"{path} does not exist" if not path.exists() else f"{path} is not a regular file")
    data = path.read_bytes()
    size = len(data)
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not a shared object (no ELF header); export it with scripts/compile.py or "
                         "executable.export_library('net.so')")
    if size < 6 or data[4] not in _LAYOUT or data[5] not in (1, 2):
        raise ValueError(f"{path}: corrupt ELF identification bytes; {_REEXPORT}")
    header_size, fields, (ph_size, ph_fields), (sh_size, sh_fields) = _LAYOUT[data[4]]
    order = "<" if data[5] == 1 else ">"
    if size < header_size:
        raise ValueError(f"{path} is truncated: the ELF header needs {header_size} bytes, file is {size} bytes; "
                         f"{_REEXPORT}")
    (e_type, e_machine, _version, _entry, e_phoff, e_shoff, _flags, e_ehsize, e_phentsize, e_phnum, e_shentsize,
     e_shnum, _shstrndx) = struct.unpack_from(order + fields, data, 16)
    if e_type != _ET_DYN:
        raise ValueError(f"{path} is an ELF file of type {e_type}, not a shared object (type {_ET_DYN}); {_REEXPORT}")
    if e_ehsize != header_size or e_phentsize != ph_size or (e_shnum and e_shentsize != sh_size):
        raise ValueError(f"{path}: corrupt ELF header (header/table entry sizes {e_ehsize}/{e_phentsize}/"
                         f"{e_shentsize}, expected {header_size}/{ph_size}/{sh_size}); {_REEXPORT}")

    def within(what: str, offset: int, length: int) -> None:
        if offset + length > size:
            raise ValueError(f"{path} is truncated or corrupt: {what} ends at byte {offset + length}, file is {size} "
                             f"bytes; {_REEXPORT}")

    within("the program header table", e_phoff, e_phnum * ph_size)
    segments = [struct.unpack_from(order + ph_fields, data, e_phoff + i * ph_size) for i in range(e_phnum)]
    kinds = set()
    for index, segment in enumerate(segments):
        # ELF64 moved p_flags up: (type, offset, filesz) sit at different positions in the two classes.
        p_type, p_offset, p_filesz = (segment[i] for i in ((0, 2, 5) if data[4] == 2 else (0, 1, 4)))
        kinds.add(p_type)
        within(f"segment {index} (type {p_type})", p_offset, p_filesz)
    if _PT_LOAD not in kinds or _PT_DYNAMIC not in kinds:
        raise ValueError(f"{path}: no loadable segment or dynamic section in the program headers; {_REEXPORT}")
    if e_shoff:
        if e_shnum == 0:  # extended numbering: the count is section 0's sh_size
            within("the section header table", e_shoff, sh_size)
            e_shnum = struct.unpack_from(order + sh_fields, data, e_shoff)[5]
        within("the section header table", e_shoff, e_shnum * sh_size)
        for index in range(e_shnum):
            section = struct.unpack_from(order + sh_fields, data, e_shoff + index * sh_size)
            sh_type, sh_offset, sh_length = section[1], section[4], section[5]
            if sh_type != _SHT_NOBITS:
                within(f"section {index}", sh_offset, sh_length)
    return MACHINES.get(e_machine, f"ELF machine {e_machine}")
