"""Bad ONNX input: each case raises its specific LLMCError, naming the file, tensor or node."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from llmc.errors import InputError, ModelLoadError, ShapeError, UnsafeModelError, UnsupportedOpError
from llmc.frontend.onnx import from_onnx


def _model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _matmul_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "weight")
    return _model([helper.make_node("MatMul", ["x", "weight"], ["y"])], [_info("x", [2, 4])], [_info("y", [2, 3])], [w])


@pytest.fixture
def external(tmp_path):
    """A model folder: model.onnx whose weight lives in weights.bin. Returns (folder, path)."""
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(_matmul_model(), folder / "model.onnx", save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    return folder, folder / "model.onnx"


def _relocate(path, location: str) -> None:
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, path)


# -- unreadable files -----------------------------------------------------------------------


def test_truncated_file(tmp_path):
    data = _matmul_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelLoadError, match="cut.onnx") as e:
        from_onnx(path)
    assert type(e.value) is ModelLoadError


def test_bytes_that_are_not_protobuf(tmp_path):
    path = tmp_path / "noise.onnx"
    path.write_bytes(b"\xff\xfe not a model \x00" * 50)
    with pytest.raises(ModelLoadError, match="noise.onnx.*not an ONNX protobuf"):
        from_onnx(path)


def test_model_failing_the_checker(tmp_path):
    model = _model([helper.make_node("Relu", ["missing"], ["y"])], [_info("x", [2])], [_info("y", [2])])
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match="broken.onnx fails the ONNX checker"):
        from_onnx(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="nothing.onnx"):
        from_onnx(tmp_path / "nothing.onnx")


# -- external data --------------------------------------------------------------------------


def test_missing_external_data_file(external):
    folder, path = external
    (folder / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="weights.bin.*tensor weight|tensor weight.*weights.bin") as e:
        from_onnx(path)
    assert type(e.value) is ModelLoadError


def test_truncated_external_data_file(external):
    folder, path = external
    (folder / "weights.bin").write_bytes(b"\x00" * 20)  # the weight needs 48
    with pytest.raises(ModelLoadError, match="truncated.*weight"):
        from_onnx(path)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_model_folder_is_refused(external, location):
    folder, path = external
    (folder.parent / "outside.bin").write_bytes(b"\x00" * 48)
    _relocate(path, location)
    with pytest.raises(UnsafeModelError, match=f"tensor weight.*{location}.*refused"):
        from_onnx(path)


def test_symlink_out_of_the_model_folder_is_refused(external):
    folder, path = external
    outside = folder.parent / "secret.bin"
    outside.write_bytes(b"\x00" * 48)
    os.symlink(outside, folder / "link.bin")
    _relocate(path, "link.bin")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        from_onnx(path)


def test_in_memory_model_with_external_data_needs_its_path(external):
    _, path = external
    with pytest.raises(ModelLoadError, match="in-memory ModelProto.*Pass the path"):
        from_onnx(onnx.load(path, load_external_data=False))


# -- unsupported ops ------------------------------------------------------------------------


def test_every_unsupported_op_is_listed_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Hardmax", ["a"], ["b"], name="hm1"),
             helper.make_node("Hardmax", ["b"], ["c"], name="hm2"), helper.make_node("Selu", ["c"], ["d"]),
             helper.make_node("FusedGemm", ["d", "d"], ["y"], name="fg", domain="com.microsoft")]
    model = _model(nodes, [_info("x", [2, 2])], [_info("y", [2, 2])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(UnsupportedOpError) as e:
        from_onnx(model)
    assert e.value.unsupported == {"Hardmax": ["hm1", "hm2"], "Selu": ["Selu#3"], "com.microsoft.FusedGemm": ["fg"]}
    assert all(word in str(e.value) for word in ("3 unsupported ONNX op(s)", "Hardmax at hm1, hm2", "Selu#3"))


def test_an_unsupported_form_of_a_supported_op_names_the_node():
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3, 3), np.float32), "w")
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv3d")], [_info("x", [1, 1, 5, 5, 5])],
                   [_info("y", [1, 2, 3, 3, 3])], [w])
    with pytest.raises(UnsupportedOpError, match=r"Conv \(3-D windows.*conv3d"):
        from_onnx(model)


def test_a_shape_computed_from_tensor_data_is_refused():
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="dyn_reshape")],
                   [_info("x", [6]), _info("shape", [2], TensorProto.INT64)], [_info("y", [2, 3])])
    with pytest.raises(UnsupportedOpError, match="computed from tensor data.*dyn_reshape"):
        from_onnx(model)


# -- shapes ---------------------------------------------------------------------------------


def _cnn_input_model():
    return _model([helper.make_node("Relu", ["image"], ["y"])], [_info("image", ["batch", 3, 224, 224])],
                  [_info("y", ["batch", 3, 224, 224])])


def test_input_shape_contradicting_a_fixed_dim():
    with pytest.raises(ShapeError, match="input image axis 1 has the fixed size 3 in the model, but 4 was given"):
        from_onnx(_cnn_input_model(), input_shapes={"image": [1, 4, 224, 224]})


def test_input_shape_of_the_wrong_rank():
    with pytest.raises(ShapeError, match="input image has rank 4"):
        from_onnx(_cnn_input_model(), input_shapes={"image": [1, 3, 224]})


def test_input_shape_for_an_unknown_input():
    with pytest.raises(InputError, match="not inputs.*'image'"):
        from_onnx(_cnn_input_model(), input_shapes={"pixels": [1, 3, 224, 224]})


def test_conflicting_sizes_for_one_symbol():
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], [_info("a", ["seq"]), _info("b", ["seq"])],
                   [_info("y", ["seq"])])
    with pytest.raises(ShapeError, match="seq .*given as both 4 and 5"):
        from_onnx(model, input_shapes={"a": [4], "b": [5]})


def test_unsupported_input_dtype():
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [_info("x", [2], TensorProto.UINT16)],
                   [_info("y", [2], TensorProto.UINT16)])
    with pytest.raises(ModelLoadError, match="input x .*UINT16"):
        from_onnx(model)
