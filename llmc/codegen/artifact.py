"""Artifact folders: written whole or not at all, and read back only if intact.

    out/
      manifest.json         schema, llmc version, target + options, pass log, model facts
                            (signature, symbols, parameters, weight memory, ops, per-layer table),
                            target payload facts, sha256 of every other file
      graph.json            the optimized IR        } llmc.ir.serialize
      weights.safetensors   its weights             }
      <target payload>      whatever Target.lower wrote (nothing for `reference`)
      report.md             the manifest as tables, for people

``write_artifact`` fills a temporary sibling folder and renames it into place only when every
file is written; on any error nothing is left at the output path, no temporary folder remains,
and a previous artifact at that path is untouched. An existing folder that is not an llmc
artifact is never replaced.

Files are deterministic: the same graph, target and options give byte-identical files. Hence
no timestamps, no absolute paths, and no pass timings (they differ run to run): timings are
returned to the caller (``PassRecord.seconds``, shown by ``llmc compile``) but not written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from llmc.codegen.cost import artifact_section
from llmc.codegen.report import graph_facts, render_report
from llmc.codegen.target import Target
from llmc.errors import ArtifactError, TargetError
from llmc.ir import serialize
from llmc.ir.graph import Graph

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.md"
_REQUIRED = ("schema", "llmc", "target", "opt_level", "passes", "model", "payload", "files")


def check_output(out: Path) -> None:
    """Refuse, before any work, an output path that must not be replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output path {out} is a file", hint="choose a folder path for -o / output")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ArtifactError(f"refusing to replace {out}: it is a non-empty folder but not an llmc artifact",
                            hint="choose another output path, or empty the folder")


def write_artifact(graph: Graph, out: Path, *, target: Target, options: Any, opt_level: str,
                   passes: Sequence, sizes: dict[str, int] | None = None,
                   sections: Mapping[str, Callable[[Path], dict]] | None = None) -> dict:
    """Write the artifact of the optimized ``graph`` at ``out``; returns its manifest.

    ``passes`` are the ``PassRecord``s of the pipeline that produced ``graph``; ``sizes`` binds
    symbolic dims for the flops estimates (default 1). ``sections`` adds manifest sections: each
    function may write files into the (temporary) artifact folder it is given and returns its
    section (``generation``: the tokenizer files and what the generation loop needs).
    """
    out = Path(out)
    check_output(out)
    created = _make_parent(out.parent)
    tmp = _fresh_sibling(out, "llmc-tmp")
    try:
        manifest = _fill(tmp, graph, target=target, options=options, opt_level=opt_level, passes=passes,
                         sizes=sizes, sections=sections or {})
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return manifest


def _make_parent(parent: Path) -> Path | None:
    """Create ``parent``; return the topmost folder this created (to remove on failure), if any."""
    top = None
    for p in [parent, *parent.parents]:
        if p.exists():
            break
        top = p
    parent.mkdir(parents=True, exist_ok=True)
    return top


def _fresh_sibling(out: Path, kind: str) -> Path:
    """A new hidden folder beside ``out`` (same file system, so renames are atomic), with normal permissions."""
    while True:
        path = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.{kind}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _fill(tmp: Path, graph: Graph, *, target, options, opt_level, passes, sizes, sections) -> dict:
    facts = graph_facts(graph, sizes)  # first: a bad size name fails before the long lowering
    serialize.save(graph, tmp)
    written = {name: write(tmp) for name, write in sections.items()}  # before lowering: a target may read them
    payload = target.lower(graph, options, tmp)
    missing = [f for f in payload.files if not (tmp / f).is_file()]
    if missing:
        raise TargetError(f"target {target.name} reported payload files it did not write: {missing}")
    manifest = {
        "schema": SCHEMA_VERSION,
        "llmc": _llmc_version(),
        "target": {"name": target.name, "options": _options_json(options)},
        "opt_level": opt_level,
        "passes": [r.to_json(timings=False) for r in passes],
        "model": facts,
        "payload": {"files": sorted(payload.files), **payload.manifest},
        **written,
    }
    if (cost := artifact_section(graph, target.name, manifest["target"]["options"], sizes, tmp)) is not None:
        manifest["cost"] = cost
    (tmp / REPORT).write_text(render_report(manifest))
    manifest["files"] = hash_files(tmp)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return json.loads((tmp / MANIFEST).read_text())


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _fresh_sibling(out, "llmc-old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def _options_json(options: Any) -> dict:
    if not dataclasses.is_dataclass(options):
        return {}
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))


def _llmc_version() -> str:
    from importlib.metadata import version

    return version("llmc")


# -- hashing and reading --------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the manifest, keyed by relative POSIX path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in files}


def read_artifact(path: Path, *, verify: bool = True) -> dict:
    """The manifest of the artifact at ``path``, after checking its schema and (``verify``) every sha256.

    Raises ``ArtifactError`` for a missing or unreadable manifest, an unknown schema, a missing
    file, or a file whose content differs from what was written.
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not an llmc artifact (no {MANIFEST})",
                            hint="point at a folder written by `llmc compile`")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mpath} is not valid JSON ({e})", hint="the artifact is damaged; compile it again") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA_VERSION:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{mpath} has schema {found!r}; this llmc reads schema {SCHEMA_VERSION}",
                            hint="compile the model again with this version of llmc")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{mpath} lacks {missing}", hint="the artifact is damaged; compile it again")
    if verify:
        _verify_files(path, manifest["files"])
    return manifest


def _verify_files(path: Path, files: dict[str, str]) -> None:
    for rel, digest in files.items():
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ArtifactError(f"the manifest of {path} names a file outside the artifact: {rel}",
                                hint="do not use this artifact; compile the model again")
        file = path / rel
        if not file.is_file():
            raise ArtifactError(f"artifact {path} is missing {rel}", hint="the artifact is incomplete; compile it again")
        actual = sha256(file)
        if actual != digest:
            raise ArtifactError(f"{file} is corrupted: its sha256 {actual[:12]}... differs from the manifest's "
                                f"{digest[:12]}...", hint="the artifact was modified or damaged; compile it again")
