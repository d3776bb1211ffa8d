"""Helpers the NPU tests import (a module of its own: every test folder's ``conftest`` shares one module name)."""

TOL_LSB_CPU = 1.01  # ONNX Runtime's CPU provider vs the interpreter, per op (float summation order, ties)


def make_plan_of(art):
    from llmc.codegen.target import get_target
    from llmc.targets.npu.build import make_plan

    return make_plan(art.graph, get_target("npu").make_options(**art.manifest["target"]["options"]))
