"""``graph.json`` + ``weights.safetensors``: the IR on disk, and back.

Weights are streamed out one at a time and memory-mapped back in, so neither direction holds
the whole model. Files are deterministic: the same graph always gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmc.errors import ArtifactError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph
from llmc.ir.meta import NodeMeta
from llmc.ir.ops import registry
from llmc.ir.tensor import Weight, read_safetensors, write_safetensors
from llmc.ir.types import TensorType

SCHEMA = 1


def _encode_attr(value, kind):
    if kind == "dtype":
        return value.value
    if kind in ("dims", "dim"):
        return [S.to_json(d) for d in value] if kind == "dims" else S.to_json(value)
    if kind in ("ints", "floats"):
        return list(value)
    if kind == "graph":
        return None  # written separately, see _encode_graph
    return value


def _decode_attr(value, kind):
    if kind == "dtype":
        return DType(value)
    if kind == "dims":
        return tuple(S.dim(d) for d in value)
    if kind == "dim":
        return S.dim(value)
    if kind in ("ints", "floats"):
        return tuple(value)
    return value


def _encode_graph(graph: Graph, weights: dict[str, Weight], prefix: str) -> dict:
    consts = []
    for v in graph.constants.values():
        key = prefix + v.name
        weights[key] = v.const
        consts.append({"name": v.name, "type": v.type.to_json(), "key": key})
    nodes = []
    for n in graph.nodes:
        spec = n.opdef.attrs
        attrs = {k: _encode_attr(v, spec[k].kind) for k, v in n.attrs.items()}
        entry = {"name": n.name, "op": n.op, "inputs": [v.name for v in n.inputs],
                 "outputs": [{"name": v.name, "type": v.type.to_json()} for v in n.outputs], "attrs": attrs}
        if "body" in n.attrs:
            entry["attrs"]["body"] = _encode_graph(n.attrs["body"], weights, f"{prefix}{n.name}/")
        meta = n.meta.to_json()
        if meta:
            entry["meta"] = meta
        nodes.append(entry)
    return {
        "name": graph.name,
        "inputs": [{"name": v.name, "type": v.type.to_json()} for v in graph.inputs],
        "constants": consts,
        "nodes": nodes,
        "outputs": [v.name for v in graph.outputs],
    }


def graph_to_json(graph: Graph) -> tuple[dict, dict[str, Weight]]:
    weights: dict[str, Weight] = {}
    body = _encode_graph(graph, weights, "")
    return {"schema": SCHEMA, "graph": body}, weights


def save(graph: Graph, folder: Path) -> list[Path]:
    """Write ``graph.json`` and ``weights.safetensors`` into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc, weights = graph_to_json(graph)
    gpath, wpath = folder / "graph.json", folder / "weights.safetensors"
    gpath.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    write_safetensors(wpath, weights)
    return [gpath, wpath]


def _decode_graph(doc: dict, weights: dict[str, Weight]) -> Graph:
    g = Graph(doc["name"])
    env = {}
    for entry in doc["inputs"]:
        v = g.add_input(entry["name"], TensorType.from_json(entry["type"]))
        env[entry["name"]] = v
    for entry in doc["constants"]:
        if entry["key"] not in weights:
            raise ArtifactError(f"weight {entry['key']} is missing from weights.safetensors", hint="rebuild the artifact")
        env[entry["name"]] = g.add_const(entry["name"], weights[entry["key"]])
    for entry in doc["nodes"]:
        opdef = registry.get(entry["op"])
        attrs = {}
        for k, v in entry["attrs"].items():
            attrs[k] = _decode_graph(v, weights) if opdef.attrs[k].kind == "graph" else _decode_attr(v, opdef.attrs[k].kind)
        node = g.add_node(entry["op"], [env[i] for i in entry["inputs"]], attrs, meta=NodeMeta.from_json(entry.get("meta", {})),
                          name=entry["name"], out_names=[o["name"] for o in entry["outputs"]])
        for v in node.outputs:
            env[v.name] = v
    g.outputs = [env[n] for n in doc["outputs"]]
    return g


def load(folder: Path) -> Graph:
    """Read a graph written by ``save``; weights stay on disk until used."""
    folder = Path(folder)
    gpath = folder / "graph.json"
    if not gpath.is_file():
        raise ArtifactError(f"{folder} has no graph.json", hint="point at a folder written by `llmc compile`")
    try:
        doc = json.loads(gpath.read_text())
    except ValueError as e:
        raise ArtifactError(f"{gpath} is not valid JSON ({e})", hint="rebuild the artifact") from None
    if doc.get("schema") != SCHEMA:
        raise ArtifactError(f"{gpath} has schema {doc.get('schema')}, this llmc reads schema {SCHEMA}",
                            hint="rebuild the artifact with this version of llmc")
    wpath = folder / "weights.safetensors"
    weights = read_safetensors(wpath) if wpath.exists() else {}
    return _decode_graph(doc["graph"], weights)
