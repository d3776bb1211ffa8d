"""The spill file: arrays written once, read back lazily, the file gone with its last reader."""

from __future__ import annotations

import gc

import numpy as np

from llmc.ir.dtypes import DType
from llmc.ir.tensor import FileWeight, Spill


def test_spilled_arrays_read_back_exactly_and_aligned():
    spill = Spill()
    arrays = [np.arange(7, dtype=np.int32), np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4),
              np.ones((2, 3), np.float32)]
    weights = [spill.put(a) for a in arrays]
    for a, w in zip(arrays, weights):
        assert isinstance(w, FileWeight) and w.type.shape == a.shape and w.dtype == DType.from_numpy(a.dtype)
        assert w.offset % 64 == 0
        np.testing.assert_array_equal(w.numpy(), a)


def test_the_file_lives_while_a_weight_reads_it():
    spill = Spill()
    path = spill.path
    weight = spill.put(np.full((4, 4), 3.0, np.float32))
    del spill
    gc.collect()
    assert path.exists()
    np.testing.assert_array_equal(weight.numpy(), np.full((4, 4), 3.0, np.float32))
    del weight
    gc.collect()
    assert not path.exists()
