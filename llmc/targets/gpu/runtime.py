"""Run a cpu/cuda artifact with TVM's runtime only (works with ``TVM_USE_RUNTIME_LIB=1``).

The payload is ``model.so`` (a Relax VM executable), ``tvm.json`` (its signature and where its
weights are) and the weights (the artifact's ``weights.safetensors``, or ``params.safetensors``
when the target cast them). Loading reads the weights, copies them to the device and runs the
module's weight transform once (re-layouts); each ``run`` then calls ``main`` (a generation
artifact has ``prefill`` and ``decode`` instead, over the same weights: ``decode`` runs one-token steps).

Inputs are numpy arrays or DLPack tensors (torch); with torch inputs the outputs are torch
tensors sharing the runtime's memory (no copy), otherwise numpy arrays. This module imports
nothing from TVM's compiler.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from llmc.errors import ArtifactError, InputError, ShapeError
from llmc.ir import shapes as S
from llmc.ir.tensor import read_safetensors

SPEC = "tvm.json"
LIBRARY = "model.so"
ALIGNMENT = 64  # bytes: kernels may read a tensor with aligned vector loads (a misaligned one crashes them)
SHARED_KINDS = "fiub"  # numpy dtype kinds a cpu tensor shares with numpy through DLPack (float, int, bool)


class Session:
    """A loaded artifact, ready to run repeatedly on one device."""

    def __init__(self, artifact: Path, device_id: int = 0):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        artifact = Path(artifact)
        spec_path = artifact / SPEC
        if not spec_path.is_file():
            raise ArtifactError(f"{artifact} has no {SPEC}", hint="compile the model with --target=cpu or --target=cuda")
        self.spec = json.loads(spec_path.read_text())
        self.device = tvm.cpu(device_id) if self.spec["device"] == "cpu" else tvm.cuda(device_id)
        if self.spec["device"] == "cpu":
            use_every_core()
        if not self.device.exist:
            raise ArtifactError(f"this artifact needs a {self.spec['device']} device, and none is present",
                                hint="run it on a machine with that device, or use `llmc run --reference`")
        self.vm = VirtualMachine(tvm.runtime.load_module(str(artifact / LIBRARY)), self.device)
        self.params = self._load_params(artifact)

    def _load_params(self, artifact: Path) -> list:
        import tvm

        info = self.spec["params"]
        weights = read_safetensors(artifact / info["file"])
        missing = [k for k in info["keys"] if k not in weights]
        if missing:
            raise ArtifactError(f"{info['file']} lacks weights {missing[:3]}", hint="compile the artifact again")
        params = [tvm.runtime.tensor(np.ascontiguousarray(weights[k].numpy()), self.device) for k in info["keys"]]
        transform = self.spec["transform_params"]
        if transform:  # a function name (older artifacts: true for main's)
            params = list(self.vm[transform if isinstance(transform, str) else "main_transform_params"](params))
        return params

    def entry(self, sizes: dict[str, int]) -> str:
        """The function for inputs of these symbol sizes: of the entries whose fixed sizes they match,
        the one that fixes the most (``decode1`` for one-token steps of one sequence, ``decode`` for
        one-token steps), else ``prefill`` (generation) or ``main``."""
        entries = self.spec.get("entries", {"main": {}})
        matching = [(len(fixed), name) for name, fixed in entries.items()
                    if fixed and all(sizes.get(k) == v for k, v in fixed.items())]
        if matching:
            return max(matching)[1]
        return "prefill" if "prefill" in entries else "main"

    def run(self, inputs: Mapping[str, object]) -> dict[str, object]:
        """Outputs keyed by name; torch tensors if any input is one, numpy arrays otherwise."""
        names = [t["name"] for t in self.spec["inputs"]]
        if set(inputs) != set(names):
            raise InputError(f"inputs do not match the model: missing {sorted(set(names) - set(inputs))}, "
                             f"unexpected {sorted(set(inputs) - set(names))}", hint=f"the model's inputs are {names}")
        torch_io = any(_is_torch(v) for v in inputs.values())
        env: dict[str, int] = {}
        args = [self._to_device(inputs[t["name"]], t, env) for t in self.spec["inputs"]]
        outs = self.vm[self.entry(env)](*args, *self.params)
        on_cpu = self.spec["device"] == "cpu"
        return {t["name"]: _from_device(o, torch_io, on_cpu) for t, o in zip(self.spec["outputs"], outs)}

    def _to_device(self, value, tensor: dict, env: dict[str, int]):
        import tvm
        import tvm_ffi

        name, dtype = tensor["name"], tensor["dtype"]
        shape = tuple(value.shape)
        try:
            S.bind(S.shape(tensor["shape"]), shape, env, what=f"input {name}")
        except ShapeError as e:
            raise InputError(e.what, hint="give inputs of the shape the model was compiled for") from None
        if _is_torch(value):
            value = value.to(_torch_dtype(dtype)).contiguous()
            if self.spec["device"] == "cuda":
                return tvm_ffi.from_dlpack(value.to(f"cuda:{self.device.index}"))
            value = value.cpu()
            return tvm_ffi.from_dlpack(value if value.data_ptr() % ALIGNMENT == 0 else value.clone())
        array, expected = np.asarray(value), np.dtype(_numpy_dtype(dtype))
        if array.dtype != expected and not (array.dtype.kind == "f" and expected.kind in "fV"):
            raise InputError(f"input {name} has dtype {array.dtype} but the model expects {dtype}",
                             hint="convert the array before running (float inputs are converted to the compiled dtype)")
        array = np.ascontiguousarray(array.astype(expected, copy=False))
        if self.spec["device"] == "cpu" and expected.kind in SHARED_KINDS and array.ctypes.data % ALIGNMENT == 0:
            return tvm_ffi.from_dlpack(array)  # read in place: no copy
        return tvm.runtime.tensor(array, self.device)


def use_every_core() -> None:
    """Give TVM's CPU thread pool one thread per physical core this process may run on.

    TVM sizes its pool to half the logical CPUs on x86 (assuming two hyper-threads per core), so
    a machine without them gets half its cores: one thread on a 2-vCPU VM, whose parallel loops
    then pay for a launch and run serially. An explicit ``TVM_NUM_THREADS`` is left as it is.
    """
    if "TVM_NUM_THREADS" in os.environ:
        return
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(physical_cores())  # TVM caps the pool by this variable
    tvm.get_global_func("runtime.config_threadpool")(0, physical_cores())


def physical_cores() -> int:
    """Distinct (package, core) pairs among the CPUs this process may run on (their count if unknown)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(len(cores), 1)


class StepRunner:
    """One generation step (``llmc.runtime.generate``'s runner) on a ``Session``.

    The caches are device tensors allocated once per generation; each step passes the same
    buffers and the module's ``kv_update`` kernels write the step's keys and values into them
    in place (the step's cache outputs alias its inputs), so nothing is copied between steps.
    """

    def __init__(self, session: Session):
        self.session = session
        cache = next(t for t in session.spec["inputs"] if t["name"] == "cache_k.0")
        self.cache_dtype = _numpy_dtype(cache["dtype"])  # float16 in a cuda --dtype float16 build

    def new_caches(self, spec, batch: int) -> list:
        import tvm

        zeros = np.zeros((batch, *spec.cache_shape), self.cache_dtype)
        return [tvm.runtime.tensor(zeros, self.session.device) for _ in range(2 * spec.layers)]

    def __call__(self, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray, caches: list) -> np.ndarray:
        import tvm

        s = self.session
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), s.device) for a in (ids, positions, mask)]
        logits = s.vm[s.entry({"batch": ids.shape[0], "seq": ids.shape[1]})](*args, *caches, *s.params)[0]
        return logits.numpy().astype(np.float32, copy=False)


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


def _numpy_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _torch_dtype(dtype: str):
    import torch

    return getattr(torch, dtype)


def _from_device(out, torch_io: bool, on_cpu: bool):
    """The output as a torch tensor or numpy array sharing its memory (a copy for cuda, or a dtype numpy lacks)."""
    if torch_io:
        import torch

        return torch.from_dlpack(out)
    if on_cpu and np.dtype(str(out.dtype)).kind in SHARED_KINDS:
        return np.from_dlpack(out)
    return out.numpy()
