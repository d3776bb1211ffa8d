"""Layered scheduling: layer groups under a memory budget, weight streaming plans, pipeline stages.

- ``split``: cut a generation step graph into layer-range subgraphs with explicit interface values.
"""
