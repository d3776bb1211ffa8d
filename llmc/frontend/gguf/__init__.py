"""The GGUF frontend's base: reading llama.cpp ``.gguf`` files safely and lazily.

``read_gguf(path)`` checks the file (header counts, bounds, tensor sizes, types) and returns a
``GGUFFile``: ``architecture``, every metadata key as a Python value, and each tensor as a
``GGUFWeight`` that keeps its stored bytes memory-mapped (``raw()``), says which llmc
``QuantSpec`` its format is (``spec``) and dequantizes to float32 only when ``numpy()`` is called.
"""

from llmc.frontend.gguf.reader import GGUFFile, GGUFWeight, read_gguf

__all__ = ["GGUFFile", "GGUFWeight", "read_gguf"]
