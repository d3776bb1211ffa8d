"""Marks the FPGA tests import (a module of its own: every test folder's ``conftest`` shares one module name)."""

import pytest

from llmc.targets.fpga import csim

needs_csim = pytest.mark.skipif(not csim.available(), reason="needs g++ and the hls4ml package (pip install -e '.[fpga]')")
