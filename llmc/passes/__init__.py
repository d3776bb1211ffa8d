"""Passes: the pass contract and registry, the pass manager, pipelines, and the cleanup passes.

    from llmc.passes import run_pipeline, PIPELINES, get_pass
    graph, log = run_pipeline(graph, "O1", verify=True)
    print(PIPELINES["O1"])            # ['fixpoint(canonicalize, constant_fold, cse, dce)']
    [r.to_json() for r in log]        # what each pass did, for the manifest

Importing this package registers the cleanup passes: ``dce``, ``constant_fold``, ``cse`` and
``canonicalize`` (rules in ``llmc.passes.canonicalize``, engine in ``llmc.passes.rewrite``), and
``fuse`` (``llmc.passes.fusion``; ``-O2``).
"""

from llmc.passes import canonicalize, constant_fold, cse, dce, fusion  # noqa: F401  (register the passes)
from llmc.passes.base import Pass, PassResult, get_pass, pass_names, register_pass
from llmc.passes.manager import PassRecord, run_pipeline
from llmc.passes.pipelines import PIPELINES, resolve

__all__ = [
    "PIPELINES", "Pass", "PassRecord", "PassResult", "get_pass", "pass_names", "register_pass", "resolve",
    "run_pipeline",
]
