"""Runs that measure and write reports: ``regression`` (``make sim``), ``demo``, ``spill``,
``waves``."""
