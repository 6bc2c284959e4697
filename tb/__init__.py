"""Verification of the macro, by audience:

* ``tb/tests``: the pytest suite (``make test``); nothing imports a test module;
* :mod:`pim_macro.tb.harness`: what runs a design: the cocotb stream players, the
  Amaranth-simulator helpers, the shared test programs and the DUT-versus-model comparison;
* :mod:`pim_macro.tb.experiments`: runs that write reports (``make sim``, ``make demo``,
  ``make spill``, ``make waves``).
"""
