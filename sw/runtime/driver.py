"""Run command streams on any back end: the golden model, the cycle model, the RTL, or a board.

The one place where ``sim`` names are turned into runs, shared by :mod:`pim_macro.sw.compiler.gemv`
and :mod:`pim_macro.sw.compiler.compiler` (and through them by the ``pim`` CLI). A
:class:`Session` keeps one macro (and, on the RTL, one simulator process) for many runs, its state
kept from run to run; :func:`run_stream` and :func:`execute` are a one-run session.
"""

from dataclasses import dataclass

from pim_macro.hw.isa import ARCHES, STREAM_BITS, Header, MacroConfig, Opcode, unpack
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime.asm import frame_program
from pim_macro.sw.runtime.rtl import SIMULATORS, RTLSession


__all__ = ["SIMS", "execute", "run_stream", "StreamRun", "check_run_options", "Session",
           "cycle_budget"]


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


def cycle_budget(words, config: MacroConfig, *, idle=0.0, backpressure=0.0, work=None):
    """Cycles the RTL may take for ``words`` before a run counts as hung: generous for the
    program's length, the weight rows its MATVECs read (``work``; counted from ``words`` when
    ``None``) times the baseline's bus beats per row, and the stall probabilities."""
    if work is None:
        work = sum(unpack(Header, words[first]).count
                   for opcode, first, _ in frame_program(words, config)
                   if opcode == Opcode.MATVEC.value)
    effort = len(words) + work * config.beats_per_row
    return 2_000_000 + int(20 * effort / ((1.0 - idle) * (1.0 - backpressure)))


def _stream_words(words):
    """``words`` as a list of ints; ``ValueError`` naming the first that is not a stream word."""
    out = []
    for i, word in enumerate(words):
        try:
            value = int(word)
        except (TypeError, ValueError):
            raise ValueError(f"word {i} is not an integer: {word!r}") from None
        if not 0 <= value < 1 << STREAM_BITS:
            raise ValueError(f"word {i} = {value} does not fit in {STREAM_BITS} unsigned bits")
        out.append(value)
    return out


class Session:
    """One macro that keeps its state (weight SRAM, activations, channel memory, accumulators,
    counters, sticky error) from one :meth:`run` to the next. A context manager.

    ``sim`` (see :data:`SIMS`):

    * ``"golden"``: a :class:`GoldenMacro`; timed counters read 0.
    * ``"model"``: the golden model's outputs, with every ``READ_COUNTERS`` answer holding the
      cycle model's prediction (:class:`CycleModel`), exactly as ``execute(..., sim="model")``
      does, per run: each run is timed from its first header (cycle 0) with every unit idle.
      A run that starts with ``READ_COUNTERS CLEAR`` (a barrier: the macro is idle after it,
      whatever came before) and ends with ``READ_COUNTERS`` reports the exact cycles the RTL
      reports with a smooth stream; a ``READ_COUNTERS`` before the first clearing one of a run
      reports cycles since the run's start, which the RTL does not.
    * ``"icarus"``, ``"verilator"``: one simulator process for the whole session
      (:class:`pim_macro.sw.runtime.rtl.RTLSession`): the macro is reset once, at the start;
      each run offers its words with the source idling a cycle with probability ``idle`` and
      the sink refusing one with probability ``backpressure`` (a fresh pattern per run, from
      ``seed`` and the run's index).
    * ``"board"``: a board on serial ``port``, checked once to hold a macro of ``config`` and
      ``arch`` (:mod:`pim_macro.sw.runtime.board_link`); its state persists by nature.

    ``timeout`` (RTL only): wall-clock seconds one run may take (default: from its cycle
    budget, see :class:`~pim_macro.sw.runtime.rtl.RTLSession`). ``fabric`` (``"model"`` only):
    the :class:`~pim_macro.hw.fabric.Fabric` (or its name) the cycle model times.

    Raises ``ValueError`` for bad options (:func:`check_run_options`),
    :class:`~pim_macro.sw.runtime.rtl.SimulatorMissing` when the simulator is not installed, and
    the board link's :class:`~pim_macro.sw.runtime.board_link.BoardError`."""

    def __init__(self, config: MacroConfig, *, sim, arch="pim", idle=0.0, backpressure=0.0,
                 seed=0, port=None, timeout=None, fabric="portable"):
        check_run_options(sim, arch, idle, backpressure, port)
        self.fabric = fabric
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        self.config, self.sim, self.arch = config, sim, arch
        self.idle, self.backpressure, self.seed = idle, backpressure, seed
        #: RTL only: testbench cycles of the last run, from its first word offered to its last
        #: answer (``None`` on the other back ends).
        self.last_cycles = None
        self.runs = 0
        self._golden = self._rtl = self._board = None
        if sim in ("golden", "model"):
            self._golden = GoldenMacro(config, arch=arch)
        elif sim == "board":
            from pim_macro.sw.runtime.board_link import BoardLink, check_board_config
            self._board = BoardLink(port)
            try:
                check_board_config(self._board, config, arch)
            except BaseException:
                self._board.close()
                raise
        else:
            self._rtl = RTLSession(config, sim=sim, arch=arch, timeout=timeout)
        self._open = True

    def run(self, words, *, work=None):
        """Run ``words`` (32-bit ints, whole commands) on the kept state; return the output words
        (every answer the commands produce: status and data words).

        ``work``: weight rows the words' MATVECs read, for the RTL's cycle budget (counted from
        the words when ``None``). Raises ``ValueError`` for words that are not 32-bit unsigned
        integers or not whole commands (nothing runs then), ``RuntimeError`` when the RTL does
        not answer within its cycle budget (a hang of the macro),
        :class:`~pim_macro.sw.runtime.rtl.SessionError` when the simulator dies or stops
        answering, and ``RuntimeError`` after :meth:`close`."""
        if not self._open:
            raise RuntimeError(f"the {self.sim} session is closed")
        words = _stream_words(words)
        seed = self.seed + self.runs
        self.runs += 1
        if self.sim == "golden":
            return self._golden.run(words)
        if self.sim == "model":
            # Golden outputs from the kept state; the timing of this run alone (every unit idle
            # at its first header), as execute(sim="model") times a whole program.
            self._golden.frame(words)          # ValueError for a cut command, before anything
            model = CycleModel(self.config, arch=self.arch, fabric=self.fabric)
            model.golden = self._golden
            return model.run(words)
        if self.sim == "board":
            return self._board.run(words, self.config)
        frame_program(words, self.config)                     # ValueError for a cut command
        budget = cycle_budget(words, self.config, idle=self.idle,
                              backpressure=self.backpressure, work=work)
        result = self._rtl.play(words, idle=self.idle, backpressure=self.backpressure,
                                seed=seed, max_cycles=budget)
        if not result.finished:
            raise RuntimeError(f"the macro did not finish the program on {self.sim} within "
                               f"{budget} cycles (hung?)")
        self.last_cycles = result.cycles
        return result.out

    def close(self):
        """Stop the simulator (or close the serial port). Idempotent."""
        self._open = False
        if self._rtl is not None:
            self._rtl.close()
        if self._board is not None:
            self._board.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def execute(words, config: MacroConfig, *, sim, arch="pim", work=None, idle=0.0, backpressure=0.0,
            seed=0, port=None):
    """The output words of ``words`` on ``sim``: :func:`run_stream`'s ``out``."""
    return run_stream(words, config, sim=sim, arch=arch, work=work, idle=idle,
                      backpressure=backpressure, seed=seed, port=port).out


def run_stream(words, config: MacroConfig, *, sim, arch="pim", work=None, idle=0.0,
               backpressure=0.0, seed=0, port=None):
    """Run ``words`` on ``sim`` (see :data:`SIMS`) of ``arch`` from reset: a one-run
    :class:`Session`; returns a :class:`StreamRun`.

    ``work`` (weight rows the program reads; counted from the words when ``None``) sizes the
    RTL's cycle budget (:func:`cycle_budget`); the macro failing to finish within it raises
    ``RuntimeError`` (a hang). ``idle``, ``backpressure`` and ``seed`` shape the RTL stream
    handshakes; the models ignore them. Raises
    :class:`pim_macro.sw.runtime.rtl.SimulatorMissing` when the simulator is not installed.
    ``sim="board"`` runs the program on a board over serial ``port``
    (:mod:`pim_macro.sw.runtime.board_link`), after checking that the board holds a macro of
    ``config`` and ``arch``; it raises :class:`pim_macro.sw.runtime.board_link.BoardError` if not,
    or if the board stops answering."""
    check_run_options(sim, arch, idle, backpressure, port)
    if sim == "board":
        # run_on_board: the board link's one-shot form (its messages name the one run).
        from pim_macro.sw.runtime.board_link import run_on_board
        return StreamRun(run_on_board(words, config, arch=arch, port=port))
    with Session(config, sim=sim, arch=arch, idle=idle, backpressure=backpressure,
                 seed=seed) as session:
        out = session.run(words, work=work)
        return StreamRun(out, session.last_cycles)
