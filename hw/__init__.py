"""Gateware of the PIM macro: :func:`make_macro` builds it; :mod:`pim_macro.hw.isa` is its
contract."""

from .isa import MacroConfig
from .macro import Macro, make_macro

__all__ = ["Macro", "MacroConfig", "make_macro"]
