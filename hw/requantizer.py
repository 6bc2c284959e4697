"""Requantization of a 32-bit accumulator to int8: multiply, round, shift, saturate, ReLU."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .isa import ACC_BITS, REQUANT_MULT_BITS


__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """``y = sat8((value * mult + round) >> shift)``, then ``max(y, 0)`` when ``relu``.

    ``round`` is ``1 << (shift - 1)`` for ``shift > 0`` and 0 otherwise; the shift is arithmetic
    and the product is kept at full width (49 bits), so nothing overflows before saturation.
    ``shift`` must be at most 31 (the controller rejects larger values).

    Timing: fully pipelined, no backpressure; inputs sampled in cycle ``t`` give ``result`` in
    cycle ``t + LATENCY``, with ``o_valid`` following ``i_valid``. ``mult``, ``shift`` and ``relu``
    must be held for the whole time a value is in flight (the controller holds them per command).
    """

    #: Cycles from inputs to ``result``: the registered product, then round, shift and saturate.
    LATENCY = 2

    def __init__(self):
        super().__init__({
            "i_valid": In(1),
            "value":   In(signed(ACC_BITS)),
            "mult":    In(REQUANT_MULT_BITS),
            "shift":   In(5),
            "relu":    In(1),
            "o_valid": Out(1),
            "result":  Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        product = Signal(signed(ACC_BITS + REQUANT_MULT_BITS + 1))
        valid = Signal()
        m.d.sync += [product.eq(self.value * self.mult), valid.eq(self.i_valid)]

        rounding = (Const(1, 32) << self.shift) >> 1
        shifted = Signal(signed(len(product) + 1))
        m.d.comb += shifted.eq((product + rounding) >> self.shift)
        low = Mux(self.relu, 0, -128)
        m.d.sync += [
            self.result.eq(Mux(shifted > 127, 127, Mux(shifted < low, low, shifted))),
            self.o_valid.eq(valid),
        ]
        return m
