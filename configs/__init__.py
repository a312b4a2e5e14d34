"""Experiment configs: each file's `get_config(arg=None)` returns a locked ConfigDict."""
