"""Formal proofs of the macro's components (``make formal``), with YoWASP's SymbiYosys and the
Yices solver. One module per subject; :func:`all_proofs` lists every :class:`Proof` in the order
``make formal`` runs them; ``python -m pim_macro.tb.formal --list`` prints them."""

from .engine import Proof, Result, run


__all__ = ["Proof", "Result", "run", "all_proofs"]


def all_proofs():
    """Every proof of ``make formal``."""
    from . import decoder, fifo, scoreboard, output_engine, macro
    return [*decoder.PROOFS, *fifo.PROOFS, *scoreboard.PROOFS, *output_engine.PROOFS,
            *macro.PROOFS]
