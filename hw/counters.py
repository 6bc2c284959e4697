"""Hardware performance counters, in :class:`pim_macro.hw.isa.Counter` order."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import Counter


__all__ = ["PerfCounters", "SNAPPED"]


#: The counters whose events can still come while the macro streams a ``READ_COUNTERS`` answer
#: out (the macro is otherwise idle then and takes no input, :class:`pim_macro.hw.macro.Macro`):
#: only these need a snapshot register.
SNAPPED = (Counter.CYCLES, Counter.BEATS_OUT, Counter.STALL_OUT)


class PerfCounters(wiring.Component):
    """One 32-bit wrapping counter per :class:`Counter`, read through ``snap``.

    ``events`` carries one strobe per counter (``CYCLES`` counts regardless of its strobe). In a
    cycle with ``snapshot`` high, ``snap`` takes every counter's value as of that cycle (events of
    that same cycle excluded); with ``clear`` also high the counters restart from zero. ``snap``
    then holds still until the next snapshot, so a reader can stream it word by word.

    Only the counters in ``snapped`` (default :data:`SNAPPED`) have a snapshot register, which
    keeps counting (and, with ``clear``, counts the events of the clearing cycle). The others
    (*quiet* counters) are read directly: the caller promises that they have no event from the
    snapshot cycle until it strobes ``release`` (``snap`` has been read; the macro snapshots
    only when its engines are idle and it takes no input, and releases with the last word it
    reads), and their ``clear`` takes effect with ``release``. This saves a 32-bit register per
    quiet counter: on an iCE40 five counters' 160 logic cells. ``snapped=tuple(Counter)``
    snapshots every counter and asks no promise (``release`` is then unused).
    """

    def __init__(self, *, snapped=SNAPPED):
        self._snapped = frozenset(snapped)
        super().__init__({
            "events":   In(len(Counter)),
            "snapshot": In(1),
            "clear":    In(1),
            "release":  In(1),
            "snap":     Out(data.ArrayLayout(32, len(Counter))),
        })

    def elaborate(self, platform):
        m = Module()
        pending = Signal()          # a clear of the quiet counters waits for `release`
        with m.If(self.snapshot):
            m.d.sync += pending.eq(self.clear)
        with m.Elif(self.release):
            m.d.sync += pending.eq(0)
        for counter in Counter:
            value = Signal(32, name=counter.name.lower())
            event = 1 if counter == Counter.CYCLES else self.events[counter.value]
            if counter in self._snapped:
                snap = Signal(32, name=f"{counter.name.lower()}_snap")
                m.d.comb += self.snap[counter.value].eq(snap)
                with m.If(self.snapshot):
                    m.d.sync += snap.eq(value)
                with m.If(self.snapshot & self.clear):
                    m.d.sync += value.eq(event)
                with m.Else():
                    m.d.sync += value.eq(value + event)
                continue
            # A quiet counter: `value` is its snapshot too, so a clear waits until the reader
            # has read it (`release`): a synchronous reset of the counter's flip-flops.
            m.d.comb += self.snap[counter.value].eq(value)
            with m.If(self.release & pending):
                m.d.sync += value.eq(0)
            with m.Else():
                m.d.sync += value.eq(value + event)
        return m
