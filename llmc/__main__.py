"""``python -m llmc ...``: the same as the ``llmc`` command."""

import sys

from llmc.cli import main

sys.exit(main())
