"""Layered scheduling: layer groups under a memory budget, weight streaming plans, pipeline stages.

- ``split``: cut a generation step graph into layer-range subgraphs with explicit interface values.
- ``storage``: the measured read bandwidth of the disk (or a GPU's host link) weights stream from.
- ``plan``: per-unit facts (bytes, roofline decode time), the memory model, the plan search.
- ``preflight``: does a model fit a budget, the smallest budget that does, and its speed.
- ``layer_groups``: the ``schedule`` pass and ``schedule.json``; ``stages``: ``--stages N``.
- ``request``: what ``llmc.compile`` calls; ``tables``: what ``llmc inspect`` shows.

The runtimes are ``llmc.runtime.streaming`` and ``llmc.runtime.distributed``; see docs/scheduling.md.
"""
