"""Hardware performance counters, in :class:`pim_macro.hw.isa.Counter` order."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import Counter


__all__ = ["PerfCounters"]


class PerfCounters(wiring.Component):
    """One 32-bit wrapping counter per :class:`Counter`, with a snapshot register bank.

    ``events`` carries one strobe per counter (``CYCLES`` counts regardless of its strobe). In a
    cycle with ``snapshot`` high, ``snap`` takes every counter's value as of that cycle (events of
    that same cycle excluded); with ``clear`` also high the counters restart from zero, counting
    events of that cycle. ``snap`` then holds still, so a reader can stream it word by word.
    """

    def __init__(self):
        super().__init__({
            "events":   In(len(Counter)),
            "snapshot": In(1),
            "clear":    In(1),
            "snap":     Out(data.ArrayLayout(32, len(Counter))),
        })

    def elaborate(self, platform):
        m = Module()
        for counter in Counter:
            value = Signal(32, name=counter.name.lower())
            event = 1 if counter == Counter.CYCLES else self.events[counter.value]
            with m.If(self.snapshot):
                m.d.sync += self.snap[counter.value].eq(value)
            with m.If(self.snapshot & self.clear):
                m.d.sync += value.eq(event)
            with m.Else():
                m.d.sync += value.eq(value + event)
        return m
