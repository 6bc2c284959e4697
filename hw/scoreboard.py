"""Spans of memory a command names, and the scoreboard of the write-backs still pending."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import FIELD_BITS, ROWS_PER_CYCLE, span_end_bits


__all__ = ["Span", "WritebackScoreboard"]


class Span(data.StructLayout):
    """A half-open span ``[lo, hi)`` of rows or bytes: ``lo`` of ``lo_bits``, ``hi`` of
    ``hi_bits`` (an end is one past the last element, so it takes a bit more than a start).

    Every hazard check of the macro compares two of these: the weight rows or activation bytes
    a command names against those a queued operation or a pending write-back uses. A signal of
    this layout is a :class:`SpanView`, with :meth:`SpanView.overlaps`.
    """

    def __init__(self, lo_bits, hi_bits=None):
        super().__init__({"lo": unsigned(lo_bits),
                          "hi": unsigned(lo_bits + 1 if hi_bits is None else hi_bits)})

    def __call__(self, target):
        return SpanView(self, target)


class SpanView(data.View):
    """A :class:`Span` in the design."""

    def overlaps(self, other):
        """Whether this span and ``other`` share an element (combinational). Both must be
        non-empty (``lo < hi``): every span the macro compares names at least one element, so
        no logic is spent on empty ones."""
        return (self.lo < other.hi) & (other.lo < self.hi)


class WritebackScoreboard(wiring.Component):
    """Counts the write-backs queued but not yet written, and the activation bytes they write.

    ``add`` (with ``add_span``, the bytes of one write-back) counts one more in that cycle;
    ``done`` (the output engine has written one) counts one less; both may strobe together.
    ``span`` covers every write-back pending since the count was last zero: it only grows while
    some are pending (a write-back that finishes does not shrink it), which is conservative and
    takes no per-write-back storage.

    ``pending`` and ``conflict`` (``pending`` and ``check`` overlaps ``span``) are registered
    state seen combinationally: a write-back added in cycle ``t`` counts from ``t + 1``.

    Parameters
    ----------
    slots : int
        Most write-backs that can be pending at once.
    lo_bits : int
        Width of a span's start (its end has one bit more).
    check_bits : int
        Width of ``check``'s end: a MATVEC's ``act + count * R`` is checked for hazards before
        it is known to lie in the buffer, so it takes the width
        :func:`~pim_macro.hw.isa.span_end_bits` gives for R (the default: the largest R).
    """

    def __init__(self, *, slots, lo_bits=FIELD_BITS,
                 check_bits=span_end_bits(ROWS_PER_CYCLE[-1])):
        self._slots = slots
        super().__init__({
            "add":      In(1),
            "add_span": In(Span(lo_bits)),
            "done":     In(1),
            "check":    In(Span(lo_bits, check_bits)),
            "pending":  Out(1),
            "conflict": Out(1),
            "span":     Out(Span(lo_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self._slots + 2))
        span, new = self.span, self.add_span
        with m.If(self.add):
            m.d.sync += count.eq(count + 1 - self.done)
            with m.If(count == 0):
                m.d.sync += span.eq(new)
            with m.Else():
                m.d.sync += [span.lo.eq(Mux(new.lo < span.lo, new.lo, span.lo)),
                             span.hi.eq(Mux(new.hi > span.hi, new.hi, span.hi))]
        with m.Elif(self.done):
            m.d.sync += count.eq(count - 1)
        m.d.comb += [self.pending.eq(count != 0),
                     self.conflict.eq(self.pending & span.overlaps(self.check))]
        return m
