"""The write-back scoreboard (:class:`pim_macro.hw.scoreboard.WritebackScoreboard`): a MATVEC
waits for a pending write-back into the bytes it reads, so the scoreboard must never forget one.

The environment is the macro's: write-backs finish in the order they were added (the output
engine takes responses in order), only a pending one finishes, at most ``RESPONSE_SLOTS + 1``
are pending (a full response queue and one in the output engine), and every span names at least
one byte (a write-back's count and a MATVEC's are at least 1).

``scoreboard`` (``prove``): one write-back is followed (any one: the harness picks it with a
free input when it is added) until it finishes; while it is pending, the scoreboard's span
contains its span, ``pending`` is set, and ``conflict`` is set for every ``check`` span that
overlaps it. The scoreboard's private count equals the write-backs added and not finished.
"""

from amaranth import *
from amaranth.hdl import Assert, Assume

from pim_macro.hw.macro import RESPONSE_SLOTS
from pim_macro.hw.scoreboard import WritebackScoreboard

from .engine import Proof, find_signal


__all__ = ["ScoreboardHarness", "PROOFS"]


class ScoreboardHarness(Elaboratable):
    """A :class:`WritebackScoreboard` of ``slots`` under the macro's environment."""

    def __init__(self, slots=RESPONSE_SLOTS):
        self.slots = slots
        self.dut = WritebackScoreboard(slots=slots)
        self.dut._MustUse__silence = True   # elaborated by hand below, to reach its count
        self.add, self.done, self.pick = Signal(), Signal(), Signal()
        # The widths of the scoreboard's own ports (a span's start, its end, a check's end).
        add, check = self.dut.add_span, self.dut.check
        self.add_lo, self.add_hi = Signal(len(add.lo)), Signal(len(add.hi))
        self.check_lo, self.check_hi = Signal(len(check.lo)), Signal(len(check.hi))
        self.ports = [self.add, self.done, self.pick, self.add_lo, self.add_hi, self.check_lo,
                      self.check_hi]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        dut = self.dut
        board = dut.elaborate(platform)
        m.submodules.scoreboard = board
        count = find_signal(board, "count")
        m.d.comb += [dut.add.eq(self.add), dut.done.eq(self.done),
                     dut.add_span.lo.eq(self.add_lo), dut.add_span.hi.eq(self.add_hi),
                     dut.check.lo.eq(self.check_lo), dut.check.hi.eq(self.check_hi)]

        # ---- The environment --------------------------------------------------------------
        pending = Signal(range(self.slots + 2))     # added and not finished
        m.d.comb += [
            Assume(~self.done | (pending != 0)),
            Assume(~self.add | self.done | (pending <= self.slots)),
            Assume(~self.add | (self.add_lo < self.add_hi)),
            Assume(self.check_lo < self.check_hi),
        ]
        m.d.sync += pending.eq(pending + self.add - self.done)

        # ---- One write-back followed from its add to its finish ---------------------------
        state = Signal(2)                   # 0 not yet picked, 1 pending, 2 finished
        ahead = Signal(range(self.slots + 2))   # pending write-backs older than it
        lo, hi = Signal(len(self.add_lo)), Signal(len(self.add_hi))
        with m.Switch(state):
            with m.Case(0):
                with m.If(self.add & self.pick):
                    m.d.sync += [state.eq(1), ahead.eq(pending - self.done),
                                 lo.eq(self.add_lo), hi.eq(self.add_hi)]
            with m.Case(1):
                with m.If(self.done):
                    with m.If(ahead == 0):
                        m.d.sync += state.eq(2)
                    with m.Else():
                        m.d.sync += ahead.eq(ahead - 1)

        m.d.comb += [
            Assert(count == pending, "count is the write-backs pending"),
            Assert(dut.pending == (pending != 0), "pending"),
        ]
        with m.If(state == 1):
            overlaps = (self.check_lo < hi) & (lo < self.check_hi)
            m.d.comb += [
                Assert(ahead < pending, "the followed write-back is among those pending"),
                Assert(lo < hi, "its span is not empty"),
                Assert((dut.span.lo <= lo) & (hi <= dut.span.hi),
                       "the scoreboard's span covers the followed write-back"),
                Assert(~overlaps | dut.conflict,
                       "a MATVEC reading its bytes sees a conflict"),
            ]
        return m


PROOFS = [Proof("scoreboard", f"{RESPONSE_SLOTS} slots", "write-back scoreboard never forgets "
                "a pending write-back's bytes", lambda: ScoreboardHarness(), "prove", 3)]
