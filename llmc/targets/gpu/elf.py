"""A minimal little-endian ELF64 reader: symbols and their bytes.

Enough to read the embedded module blob out of an exported ``model.so`` and to list the kernel
functions of a CUDA cubin (``e_machine`` 190), without binutils or the CUDA toolkit's cuobjdump.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from llmc.errors import ArtifactError

EM_CUDA = 190
STT_FUNC = 2
STB_GLOBAL = 1
_SHT_SYMTAB, _SHT_DYNSYM, _SHT_NOBITS = 2, 11, 8


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int      # STT_*
    binding: int   # STB_* (1: global)
    section: int


class Elf:
    def __init__(self, data: bytes, what: str = "file"):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ArtifactError(f"{what} is not a little-endian 64-bit ELF file")
        self.data = data
        self.machine = struct.unpack_from("<H", data, 18)[0]
        shoff, = struct.unpack_from("<Q", data, 40)
        shentsize, shnum = struct.unpack_from("<HH", data, 58)
        self.sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def symbols(self) -> dict[str, Symbol]:
        """Every named symbol of the static and dynamic symbol tables."""
        out: dict[str, Symbol] = {}
        for sh in self.sections:
            if sh[1] not in (_SHT_SYMTAB, _SHT_DYNSYM):
                continue
            strtab = self.sections[sh[6]]
            for off in range(sh[4], sh[4] + sh[5], 24):
                name_off, info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", self.data, off)
                name = self._string(strtab[4] + name_off)
                if name:
                    out.setdefault(name, Symbol(name, value, size, info & 0xF, info >> 4, shndx))
        return out

    def symbol_bytes(self, name: str) -> bytes:
        """The bytes a data symbol holds in the file."""
        sym = self.symbols().get(name)
        if sym is None or not 0 < sym.section < len(self.sections):
            raise ArtifactError(f"ELF file has no data symbol {name}")
        sh = self.sections[sym.section]
        if sh[1] == _SHT_NOBITS:
            raise ArtifactError(f"ELF symbol {name} has no bytes in the file")
        start = sh[4] + (sym.value - sh[3])
        return self.data[start:start + sym.size]

    def functions(self) -> list[str]:
        """Global function symbols (entry points: a cubin's kernels, a library's exports)."""
        return sorted(s.name for s in self.symbols().values() if s.kind == STT_FUNC and s.binding == STB_GLOBAL)

    def _string(self, offset: int) -> str:
        end = self.data.index(b"\0", offset)
        return self.data[offset:end].decode("utf-8", "replace")
