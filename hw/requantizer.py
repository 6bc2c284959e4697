"""Requantization of a 32-bit accumulator to int8: multiply, round, shift, saturate, ReLU."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .isa import ACC_BITS, REQUANT_MULT_BITS


__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """``y = sat8((value * mult + round) >> shift)``, then ``max(y, 0)`` when ``relu``.

    ``round`` is ``1 << (shift - 1)`` for ``shift > 0`` and 0 otherwise; the shift is arithmetic
    and the product is kept at full width, so nothing overflows before saturation. ``shift``
    must be at most 31 (the controller rejects larger values).

    Timing: fully pipelined, no backpressure; inputs sampled in cycle ``t`` give ``result`` in
    cycle ``t + LATENCY``, with ``o_valid`` following ``i_valid``. ``mult``, ``shift`` and ``relu``
    must be held for the whole time a value is in flight (the controller holds them per command).

    ``soft`` builds the multiply from shifted adds instead of the ``*`` operator, so that
    synthesis never spends DSP blocks on it (about 1500 LUT4s; with ``*`` Yosys puts each
    32x8 half on two 16x16 iCE40 DSPs): for FPGAs whose DSPs all belong to the MAC lanes
    (:class:`pim_macro.hw.fabric.Fabric`). Both forms are split into two registered halves, so the
    timing is the same.
    """

    #: Cycles from inputs to ``result``: the two half products, their sum with the rounding
    #: constant, then shift and saturate.
    LATENCY = 3

    def __init__(self, *, soft=False):
        self._soft = soft
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
        valid = Signal(self.LATENCY - 1)
        m.d.sync += valid.eq(Cat(self.i_valid, valid[:-1]))

        # Stage 1: value * mult[0:8] and value * mult[8:16].
        half = REQUANT_MULT_BITS // 2
        halves = []
        for h in range(2):
            part = Signal(signed(ACC_BITS + half), name=f"product_{'lo' if h == 0 else 'hi'}")
            digits = self.mult[h * half:(h + 1) * half]
            if self._soft:
                m.d.sync += part.eq(sum(Mux(digits[i], self.value << i, 0) for i in range(half)))
            else:
                m.d.sync += part.eq(self.value * digits)
            halves.append(part)

        # Stage 2: the full product plus the rounding constant.
        rounding = (Const(1, 32) << self.shift) >> 1
        t = Signal(signed(ACC_BITS + REQUANT_MULT_BITS + 2))
        m.d.sync += t.eq(halves[0] + (halves[1] << half) + rounding)

        # Stage 3: shift and saturate. Only the low 8 bits of ``t >> shift`` and whether it fits
        # in int8 are needed, so no full-width barrel shifter is built: the low byte is eight
        # 32:1 multiplexers, and "fits" asks whether every bit of ``t`` from ``shift + 7`` up
        # equals the sign bit (a thermometer mask of constant compares).
        sign = t[-1]
        low_byte = Signal(8)
        m.d.comb += low_byte.eq(t.as_unsigned() >> self.shift)
        beyond = Signal(len(t))         # bits of t that must all equal the sign for int8
        for j in range(len(t)):
            m.d.comb += beyond[j].eq(self.shift + 7 <= j)
        fits = ~((t.as_unsigned() ^ sign.replicate(len(t))) & beyond).any()
        with m.If(sign & self.relu):
            m.d.sync += self.result.eq(0)
        with m.Elif(~fits):
            m.d.sync += self.result.eq(Mux(sign, -128, 127))
        with m.Else():
            m.d.sync += self.result.eq(low_byte.as_signed())
        m.d.sync += self.o_valid.eq(valid[-1])
        return m
