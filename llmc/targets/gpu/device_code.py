"""Ahead-of-time CUDA device code inside ``model.so``.

TVM 0.27 (PyPI) builds its CUDA module with format ``cuda``: the module holds CUDA C source,
and the *runtime* compiles it when the library is loaded (through ``tvm_callback_cuda_compile``,
i.e. nvcc or NVRTC on the GPU machine). ``export_library`` serializes it as it is, so the
library carries no device binary. Here the export packs the imported modules itself
(``export_library``'s ``fpack_imports`` hook): each ``cuda`` module's source is compiled with
nvcc into a fatbin (SASS for the arch plus its PTX, uncompressed) and the module is written
with format ``fatbin``, which the runtime hands to ``cuModuleLoadData`` as it is.

Layouts (tvm-ffi's library blob and the CUDA module's serialized bytes), all little-endian,
``str`` = u64 length + bytes, ``vec<T>`` = u64 count + items::

    blob    = u64 nbytes, vec<u64> import_tree_indptr, vec<u64> child_indices,
              then per module: str kind, and str bytes unless kind == "_lib"
    cuda    = str fmt, fmap, str code
    fmap    = u64 count, then per function: str key, str name, vec<u32 dtype> arg_types,
              vec<str> launch_param_tags, vec<u32> arg_extra_tags
    fatbin  = u32 magic 0xBA55ED50, u16 version, u16 header size, u64 size, then entries:
              u16 kind (1 PTX, 2 ELF), u16 version, u32 header size, u64 payload size, ...,
              u32 sm (at entry offset 28)
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmc.errors import ArtifactError, TargetError
from llmc.targets.gpu.elf import EM_CUDA, Elf

BLOB_SYMBOL = "__tvm_ffi__library_bin"
FATBIN_MAGIC = 0xBA55ED50
_NVCC_FLAGS = [
    "--fatbin", "--no-compress", "-O3", "-w", "--expt-relaxed-constexpr",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
]


# -- byte streams ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def u64(self) -> int:
        return self._unpack("<Q", 8)

    def u32(self) -> int:
        return self._unpack("<I", 4)

    def bytes(self) -> bytes:
        n = self.u64()
        if self.pos + n > len(self.data):
            raise ArtifactError(f"{self.what} is truncated at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise ArtifactError(f"{self.what} is truncated at byte {self.pos}")
        self.pos += n

    def str(self) -> str:
        return self.bytes().decode("utf-8", "replace")

    def _unpack(self, fmt: str, size: int) -> int:
        if self.pos + size > len(self.data):
            raise ArtifactError(f"{self.what} is truncated at byte {self.pos}")
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return v


def _str(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack("<Q", len(raw)) + raw


# -- the library blob and the CUDA module ---------------------------------------------------


@dataclass
class LibraryBlob:
    """tvm-ffi's serialized import tree: the modules a library carries beside its host code."""

    indptr: list[int]
    children: list[int]
    modules: list[tuple[str, bytes | None]]  # (kind, serialized bytes; None for the host "_lib")

    @classmethod
    def parse(cls, blob: bytes) -> LibraryBlob:
        r = _Reader(blob, "the library blob")
        end = r.u64() + 8
        indptr = [r.u64() for _ in range(r.u64())]
        children = [r.u64() for _ in range(r.u64())]
        modules = []
        while r.pos < end:
            kind = r.str()
            modules.append((kind, None if kind == "_lib" else r.bytes()))
        return cls(indptr, children, modules)

    def serialize(self) -> bytes:
        body = struct.pack("<Q", len(self.indptr)) + b"".join(struct.pack("<Q", v) for v in self.indptr)
        body += struct.pack("<Q", len(self.children)) + b"".join(struct.pack("<Q", v) for v in self.children)
        for kind, data in self.modules:
            body += _str(kind) + (b"" if data is None else _str(data))
        return struct.pack("<Q", len(body)) + body


@dataclass
class CudaModule:
    """A serialized TVM CUDA module: code format, function table (kept as bytes), code."""

    fmt: str
    fmap: bytes
    kernels: list[str]
    code: bytes

    @classmethod
    def parse(cls, data: bytes) -> CudaModule:
        r = _Reader(data, "the CUDA module")
        fmt = r.str()
        start = r.pos
        kernels = []
        for _ in range(r.u64()):
            r.str()
            kernels.append(r.str())
            r.skip(4 * r.u64())
            for _ in range(r.u64()):
                r.str()
            r.skip(4 * r.u64())
        fmap = data[start:r.pos]
        code = r.bytes()
        if r.pos != len(data):
            raise ArtifactError("the CUDA module has an unknown layout (trailing bytes)",
                                hint="this TVM version serializes CUDA modules differently; see llmc/targets/gpu/device_code.py")
        return cls(fmt, fmap, sorted(kernels), code)

    def serialize(self) -> bytes:
        return _str(self.fmt) + self.fmap + _str(self.code)


# -- compiling and packing ------------------------------------------------------------------


def find_nvcc(explicit: str | None = None) -> Path | None:
    """nvcc from ``explicit``, else the one on PATH, else ``$CUDA_HOME/bin/nvcc``."""
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    home = os.environ.get("CUDA_HOME")
    return Path(home) / "bin" / "nvcc" if home and (Path(home) / "bin" / "nvcc").is_file() else None


def compile_fatbin(source: str, arch: str, nvcc: Path) -> bytes:
    """nvcc: CUDA C source -> fatbin with SASS for ``arch`` (``sm_90``, ``sm_90a``) and its PTX."""
    number = arch.removeprefix("sm_")
    with tempfile.TemporaryDirectory(prefix="llmc-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        cmd = [str(nvcc), *_NVCC_FLAGS, "-gencode", f"arch=compute_{number},code=[sm_{number},compute_{number}]",
               "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TargetError(f"nvcc failed to compile the CUDA kernels for {arch}: {proc.stderr.strip()[-2000:]}",
                              hint="check the CUDA toolkit version supports this arch")
        return out.read_bytes()


def embed_device_code(blob: bytes, arch: str, nvcc: Path) -> bytes:
    """The blob with every source-only CUDA module replaced by its compiled fatbin."""
    lib = LibraryBlob.parse(blob)
    for i, (kind, data) in enumerate(lib.modules):
        if kind != "cuda":
            continue
        module = CudaModule.parse(data)
        if module.fmt == "cuda":
            module = CudaModule("fatbin", module.fmap, module.kernels, compile_fatbin(module.code.decode(), arch, nvcc))
        lib.modules[i] = (kind, module.serialize())
    return lib.serialize()


def fpack_with_device_code(arch: str, nvcc: Path):
    """An ``export_library(fpack_imports=...)`` hook that embeds compiled device code (see module doc).

    The blob goes into the library through an assembler ``.incbin`` (instant, where a C array
    of a many-megabyte fatbin takes the C compiler minutes).
    """

    def fpack(mod, is_system_lib, prefix, workspace_dir):
        from tvm.runtime import _ffi_api

        if is_system_lib or prefix:
            raise TargetError("system-library export is not supported by the cuda target")
        blob = embed_device_code(_ffi_api.ModulePackImportsToTensor(mod).numpy().tobytes(), arch, nvcc)
        data, path = Path(workspace_dir) / "devc.bin", Path(workspace_dir) / "devc.S"
        data.write_bytes(blob)
        path.write_text(_incbin(_ffi_api.ModuleImportsBlobName(), data, len(blob)))
        return str(path)

    return fpack


def _incbin(symbol: str, data: Path, size: int) -> str:
    return (f'\t.section .rodata\n\t.balign 16\n\t.globl {symbol}\n\t.type {symbol}, @object\n'
            f'\t.size {symbol}, {size}\n{symbol}:\n\t.incbin "{data}"\n'
            '\t.section .note.GNU-stack,"",@progbits\n')


# -- inspecting an exported library ---------------------------------------------------------


@dataclass(frozen=True)
class DeviceImage:
    """One device binary inside a fatbin: ``kind`` is ``elf`` (SASS) or ``ptx``; ``sm`` like 90."""

    kind: str
    sm: int
    kernels: tuple[str, ...]  # function symbols of an ELF image


def fatbin_images(fatbin: bytes) -> list[DeviceImage]:
    magic, _version, header, size = struct.unpack_from("<IHHQ", fatbin, 0)
    if magic != FATBIN_MAGIC:
        raise ArtifactError("device code is not a fatbin (bad magic)")
    out, off = [], header
    while off < header + size:
        kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", fatbin, off)
        sm, = struct.unpack_from("<I", fatbin, off + 28)
        body = fatbin[off + entry_header: off + entry_header + payload]
        if kind == 2:
            elf = Elf(body, "fatbin ELF image")
            if elf.machine != EM_CUDA:
                raise ArtifactError(f"fatbin ELF image is for machine {elf.machine}, not CUDA")
            out.append(DeviceImage("elf", sm, tuple(elf.functions())))
        else:
            out.append(DeviceImage("ptx", sm, ()))
        off += entry_header + payload
    return out


def library_cuda_modules(so_path: Path) -> list[CudaModule]:
    """The CUDA modules serialized inside an exported library."""
    blob = Elf(Path(so_path).read_bytes(), str(so_path)).symbol_bytes(BLOB_SYMBOL)
    return [CudaModule.parse(data) for kind, data in LibraryBlob.parse(blob).modules if kind == "cuda"]


def kernels_of(primfunc: str, device_kernels: list[str]) -> list[str]:
    """The device kernels TVM split a PrimFunc into: ``name_kernel``, ``name_kernel_1``, ..."""
    stem = f"{primfunc}_kernel"
    return [k for k in device_kernels if k == stem or (k.startswith(stem + "_") and k[len(stem) + 1:].isdigit())]
