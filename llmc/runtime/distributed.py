"""Pipeline stages as torch.distributed processes: an artifact compiled with ``--stages N`` runs on N ranks.

Rank ``i`` runs stage ``i`` (``stages/<i>/`` of the artifact, ``llmc.passes.schedule.stages``)
on the reference interpreter and keeps the KV cache of that stage's layers. Rank 0 also drives
generation: ``DistributedRunner`` is a runner of ``llmc.runtime.generate`` whose step runs stage 0,
sends the stage's interface values to rank 1 (point to point, gloo on CPU), each rank runs its
stage and sends on, and the last rank sends the logits back to rank 0. The same kernels run in
the same order as in one process, so the outputs are equal bit for bit.

Messages: a header of int64 ``[command, batch, n0, dims...]`` then the tensors it describes.
Commands: ``STEP`` (the interface values), ``CACHES`` (start a generation of ``batch``
sequences: each rank allocates its caches), ``STOP``.

Launching:

    llmc generate ARTIFACT --distributed --prompt-ids 1,2,3     # N local processes, started by llmc
    torchrun --nproc-per-node 2 -m llmc.runtime.distributed ARTIFACT --prompt-ids 1,2,3
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-endpoint HOST:29500 -m llmc.runtime.distributed ARTIFACT ...

A rank whose peer dies or stops answering ends with a ``TargetError`` naming the stage (gloo
reports a closed connection at once; a silent peer is given up after ``LLMC_STAGE_TIMEOUT``
seconds, default 120); the local launcher also watches its processes and reports the exit code
of the one that died, and stops the others.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from llmc.errors import ArtifactError, LLMCError, TargetError
from llmc.runtime.streaming import read_schedule

STEP, CACHES, STOP = 1, 2, 3
TIMEOUT = float(os.environ.get("LLMC_STAGE_TIMEOUT", "120"))


class Stage:
    """One stage of a staged artifact: its subgraph, interface and caches, on this rank."""

    def __init__(self, artifact: Path, rank: int):
        from llmc.ir import serialize

        doc = read_schedule(artifact)
        if doc is None or "stages" not in doc:
            raise ArtifactError(f"{artifact} has no pipeline stages", hint="compile it with --stages N")
        self.doc, self.rank, self.count = doc, rank, len(doc["stages"])
        self.entry = doc["stages"][rank]
        self.graph = serialize.load(Path(artifact) / self.entry["folder"])
        self.shape = None
        self.caches: dict[str, np.ndarray] = {}

    def new_caches(self, batch: int, cache_shape) -> None:
        self.caches = {n: np.zeros((batch, *cache_shape), np.float32) for n in self.entry["caches"]}

    def run(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from llmc.ir.interpreter import run_graph

        arrays = [self.caches[n] if n in self.caches else values[n] for n in self.entry["inputs"]]
        return dict(zip(self.entry["outputs"], run_graph(self.graph, arrays)))


class _Link:
    """Point-to-point messages between ranks, with errors that name the stage at fault."""

    def __init__(self, rank: int):
        self.rank = rank

    def send(self, to: int, command: int, batch: int = 0, arrays: list[np.ndarray] = ()) -> None:
        import torch
        import torch.distributed as dist

        dims = [d for a in arrays for d in (a.ndim, *a.shape)]
        header = torch.tensor([command, batch, len(arrays), *dims], dtype=torch.int64)
        self._do(lambda: dist.send(torch.tensor([header.numel()], dtype=torch.int64), to), to)
        self._do(lambda: dist.send(header, to), to)
        for a in arrays:
            data = torch.from_numpy(np.ascontiguousarray(a.view(np.uint8) if a.dtype == bool else a))
            self._do(lambda data=data: dist.send(data, to), to)

    def recv(self, source: int, dtypes: list) -> tuple[int, int, list[np.ndarray]]:
        import torch
        import torch.distributed as dist

        size = torch.zeros(1, dtype=torch.int64)
        self._do(lambda: dist.recv(size, source), source)
        header = torch.zeros(int(size[0]), dtype=torch.int64)
        self._do(lambda: dist.recv(header, source), source)
        command, batch, count, *dims = header.tolist()
        arrays = []
        for i in range(count):
            shape, dims = dims[1:1 + dims[0]], dims[1 + dims[0]:]
            dtype = dtypes[i] if i < len(dtypes) else np.float32
            wire = np.uint8 if dtype == np.bool_ else dtype
            data = torch.from_numpy(np.empty(shape, wire))
            self._do(lambda data=data: dist.recv(data, source), source)
            arrays.append(data.numpy().view(dtype) if dtype == np.bool_ else data.numpy())
        return command, batch, arrays

    def _do(self, op, peer: int) -> None:
        try:
            op()
        except (RuntimeError, ValueError) as e:  # gloo: connection closed, timeout
            raise TargetError(f"pipeline stage {peer} stopped answering stage {self.rank}: {str(e).splitlines()[0]}",
                              hint="stage processes run as one job: see the failed stage's error and run again")


class DistributedRunner:
    """Rank 0's runner: a generation step through every stage (see the module docstring)."""

    def __init__(self, artifact: Path, processes: list | None = None):
        self.stage = Stage(artifact, 0)
        self.link = _Link(0)
        self.processes = processes or []
        self.last = self.stage.count - 1

    def new_caches(self, spec, batch: int) -> list:
        self.stage.new_caches(batch, spec.cache_shape)
        self._checked(lambda: self.link.send(1, CACHES, batch))
        return []

    def __call__(self, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray, caches: list) -> np.ndarray:
        entry = self.stage.entry
        values = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        values.update(self.stage.run(values))

        def step():
            self.link.send(1, STEP, ids.shape[0], [values[n] for n in entry["send"]])
            _, _, (logits,) = self.link.recv(self.last, [np.float32])
            return logits

        return self._checked(step)

    def close(self) -> None:
        """Stop every stage (STOP down the chain), wait for the local processes, leave the group."""
        try:
            self.link.send(1, STOP)
        except TargetError:
            pass
        _finish(self.processes)
        shutdown()

    def _checked(self, op):
        """``op()``; a communication error names the local process that died, if one did."""
        try:
            return op()
        except TargetError as e:
            _finish(self.processes)
            shutdown()
            dead = [(r, p) for r, p in self.processes if p.returncode not in (0, None)]
            if dead:
                rank, p = dead[0]
                raise TargetError(f"pipeline stage {rank} (pid {p.pid}) exited with code {p.returncode}",
                                  hint="see its error above; the other stages were stopped") from e
            raise


def serve(artifact: Path, rank: int) -> None:
    """A stage rank > 0: receive, run, send on, until STOP (forwarded to the next rank)."""
    stage = Stage(artifact, rank)
    link = _Link(rank)
    entry, last = stage.entry, rank == stage.count - 1
    cache_shape = None
    receive_types = [np.dtype(entry["dtypes"][n]).type for n in entry["receive"]]
    while True:
        command, batch, arrays = link.recv(rank - 1, receive_types)
        if command == STOP:
            if not last:
                link.send(rank + 1, STOP)
            return
        if command == CACHES:
            cache_shape = cache_shape or _cache_shape(artifact)
            stage.new_caches(batch, cache_shape)
            if not last:
                link.send(rank + 1, CACHES, batch)
            continue
        values = dict(zip(entry["receive"], arrays))
        values.update(stage.run(values))
        if last:
            link.send(0, STEP, batch, [values["logits"]])
        else:
            link.send(rank + 1, STEP, batch, [values[n] for n in entry["send"]])


def _cache_shape(artifact: Path) -> tuple:
    manifest = json.loads((Path(artifact) / "manifest.json").read_text())
    return tuple(manifest["generation"]["cache_shape"])


def init(rank: int, world: int, address: str, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://{address}:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT))


def launch(artifact: Path) -> DistributedRunner:
    """Start ranks 1..N-1 of a staged artifact as local processes, join as rank 0, return its runner."""
    doc = read_schedule(artifact)
    if doc is None or "stages" not in doc:
        raise ArtifactError(f"{artifact} has no pipeline stages", hint="compile it with --stages N")
    world = len(doc["stages"])
    if world < 2:
        raise TargetError("a one-stage artifact runs in one process", hint="compile with --stages 2 or more")
    port = _free_port()
    processes = []
    for rank in range(1, world):
        cmd = [sys.executable, "-m", "llmc.runtime.distributed", str(artifact), "--serve"]
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        processes.append((rank, subprocess.Popen(cmd, env=env)))
    try:
        init(0, world, "127.0.0.1", port)
    except (RuntimeError, ValueError) as e:
        _finish(processes)
        raise TargetError(f"cannot start the {world} stage processes: {e}", hint="run again") from None
    return DistributedRunner(artifact, processes)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _finish(processes: list, wait: float = 10) -> None:
    """Wait a moment for the stage processes, then stop those still running."""
    for _, p in processes:
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    """A rank of a torchrun (or llmc-launched) job: rank 0 generates and prints; others serve."""
    p = argparse.ArgumentParser(prog="python -m llmc.runtime.distributed", description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prompt-ids", default="1", help="rank 0: the prompt as token ids")
    p.add_argument("--max-new-tokens", type=int, default=16)
    a = p.parse_args(argv)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        init(rank, world, os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")))
        if rank > 0:
            serve(a.artifact, rank)
        else:
            print(" ".join(map(str, generate_ids(a.artifact, DistributedRunner(a.artifact),
                                                 [int(t) for t in a.prompt_ids.split(",")], a.max_new_tokens))))
    except LLMCError as e:
        print(f"error: stage {rank}: {e}", file=sys.stderr, flush=True)
        os._exit(1)  # the group is broken: its teardown could wait on the dead peer
    shutdown()
    return 0


def generate_ids(artifact: Path, runner: DistributedRunner, prompt: list[int], max_new_tokens: int) -> list[int]:
    from llmc.runtime.generate import GenerationSpec, Generator

    manifest = json.loads((Path(artifact) / "manifest.json").read_text())
    try:
        return Generator(runner, GenerationSpec.from_manifest(manifest["generation"])).generate(
            prompt, max_new_tokens=max_new_tokens).ids[0]
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main())
