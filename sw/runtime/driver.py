"""Run a command stream on any back end: the golden model, the cycle model, the RTL, or a board.

The one place where ``sim`` names are turned into runs, shared by :mod:`pim_macro.sw.compiler.gemv`
and :mod:`pim_macro.sw.compiler.compiler` (and through them by the ``pim`` CLI).
"""

from dataclasses import dataclass

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl


__all__ = ["SIMS", "execute", "run_stream", "StreamRun", "check_run_options", "Session"]


#: Back ends :func:`execute` accepts: the untimed golden model, the exact cycle model, the
#: RTL on each HDL simulator, and a board running the board top over its serial port.
SIMS = ("golden", "model") + tuple(SIMULATORS) + ("board",)


def check_run_options(sim, arch, idle=0.0, backpressure=0.0, port=None):
    """Raise ``ValueError`` naming a bad ``sim``, ``arch`` or stall probability, or a missing
    (or unexpected) serial ``port``."""
    if sim not in SIMS:
        raise ValueError(f"sim must be one of {', '.join(map(repr, SIMS))}, not {sim!r}")
    if sim == "board" and not port:
        raise ValueError("sim 'board' needs the board's serial port (--port /dev/ttyUSB0)")
    if sim != "board" and port:
        raise ValueError(f"a serial port is only for sim 'board', not {sim!r}")
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(map(repr, ARCHES))}, not {arch!r}")
    for name, p in (("idle", idle), ("backpressure", backpressure)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1), not {p!r}")


@dataclass
class StreamRun:
    """What :func:`run_stream` returns."""
    #: The output stream words.
    out: list
    #: RTL only: testbench cycles from the first word offered to the last answer; ``None``
    #: for the models and a board.
    cycles: int | None = None


def execute(words, config: MacroConfig, *, sim, arch="pim", work=0, idle=0.0, backpressure=0.0,
            seed=0, port=None):
    """The output words of ``words`` on ``sim``: :func:`run_stream`'s ``out``."""
    return run_stream(words, config, sim=sim, arch=arch, work=work, idle=idle,
                      backpressure=backpressure, seed=seed, port=port).out


def run_stream(words, config: MacroConfig, *, sim, arch="pim", work=0, idle=0.0,
               backpressure=0.0, seed=0, port=None):
    """Run ``words`` on ``sim`` (see :data:`SIMS`) of ``arch``; returns a :class:`StreamRun`.

    ``work`` (weight rows the program reads) sizes the RTL's cycle budget, together with the
    program length, the baseline's bus beats and the stall probabilities; the macro failing to
    finish within it raises ``RuntimeError`` (a hang). ``idle``, ``backpressure`` and ``seed``
    shape the RTL stream handshakes; the models ignore them. Raises
    :class:`pim_macro.sw.runtime.rtl.SimulatorMissing` when the simulator is not installed.
    ``sim="board"`` runs the program on a board over serial ``port``
    (:mod:`pim_macro.sw.runtime.board_link`), after checking that the board holds a macro of
    ``config`` and ``arch``; it raises :class:`pim_macro.sw.runtime.board_link.BoardError` if not,
    or if the board stops answering."""
    check_run_options(sim, arch, idle, backpressure, port)
    if sim == "board":
        from pim_macro.sw.runtime.board_link import run_on_board
        return StreamRun(run_on_board(words, config, arch=arch, port=port))
    if sim == "golden":
        return StreamRun(GoldenMacro(config, arch=arch).run(words))
    if sim == "model":
        return StreamRun(CycleModel(config, arch=arch).run(words))
    effort = len(words) + work * config.beats_per_row
    budget = 2_000_000 + int(20 * effort / ((1.0 - idle) * (1.0 - backpressure)))
    job = Job(words, idle=idle, backpressure=backpressure, seed=seed, max_cycles=budget)
    result, = run_rtl([job], config, sim=sim, arch=arch)
    if not result.finished:
        raise RuntimeError(f"the macro did not finish the program on {sim} within {budget} "
                           f"cycles (hung?)")
    return StreamRun(result.out, result.cycles)


# TEMP Session (golden/model) until the rtl branch merges
class Session:
    """A macro that keeps its state (weights, activations, channel memory, counters) across
    :meth:`run` calls: ``Session(config, sim=..., arch=...)``, a context manager. This stand-in
    serves ``sim`` ``"golden"`` (a :class:`GoldenMacro`) and ``"model"`` (a
    :class:`CycleModel`, whose ``READ_COUNTERS`` answers hold the predicted timed counters);
    other sims raise ``ValueError`` until the persistent RTL session lands. ``idle``,
    ``backpressure``, ``seed`` and ``port`` are accepted for the same signature."""

    def __init__(self, config: MacroConfig, *, sim, arch="pim", idle=0.0, backpressure=0.0,
                 seed=0, port=None):
        check_run_options(sim, arch, idle, backpressure, port)
        if sim not in ("golden", "model"):
            raise ValueError(f"sim {sim!r} needs the persistent RTL session, which is not "
                             f"merged yet (golden and model only)")
        self.config, self.sim, self.arch = config, sim, arch
        self._macro = (GoldenMacro if sim == "golden" else CycleModel)(config, arch=arch)

    def run(self, words):
        """The output words of ``words`` (every answer they produce), on the kept state."""
        if self._macro is None:
            raise ValueError("the session is closed")
        return self._macro.run(words)

    def close(self):
        self._macro = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
