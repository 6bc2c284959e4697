"""Requantization of a 32-bit accumulator to int8, TFLite's rule in both roundings, pipelined."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .isa import ACC_BITS, REQUANT_MULT_BITS, REQUANT_SHIFT_BITS


__all__ = ["Requantizer", "PASSES"]


#: The legal numbers of multiplier passes (:class:`Requantizer` ``passes``).
PASSES = (1, 2, 4)

# The product v * M0 is below 2**62 in magnitude; with the rounding term it fits 64 signed bits.
_T_BITS = 64
# Bits of ``T >> k`` kept before the zero point: |y| >= 512 saturates, since y + zero_point then
# lies outside -128 .. 127 whatever the zero point, and the clamp gives the same byte.
_Y_BITS = 10


def _at_least(x, c):
    """``x >= c`` for an unsigned value ``x`` and a constant ``c``, built from ``x``'s bits
    (from the least significant up: where ``c`` has a one, ``x`` needs it too and the lower
    bits at least ``c``'s; where a zero, ``x``'s one suffices)."""
    result = C(1, 1)
    for j in range(len(x)):
        result = (x[j] & result) if (c >> j) & 1 else (x[j] | result)
    return result if c < (1 << len(x)) else C(0, 1)


class Requantizer(wiring.Component):
    """One lane of TFLite's int8 requantization (the rule: :mod:`pim_macro.sw.models.requant`,
    ``MultiplyByQuantizedMultiplier`` of ``tensorflow/lite/kernels/internal/common.h``)::

        result = min(max(MultiplyByQuantizedMultiplier(value, multiplier, shift)
                         + zero_point, act_min), act_max)

    in single rounding, or gemmlowp's double rounding when ``double`` is set.

    Ports: ``value`` (int32), ``multiplier`` (Q31 ``M0``, 31-bit unsigned), ``shift`` (signed
    6-bit, -32 .. 31) and ``double`` are sampled with ``i_valid`` (they may change after);
    ``zero_point``, ``act_min`` and ``act_max`` (signed bytes) are read at the last stage and
    must be held while a value is in flight (the output engine holds them per command).
    ``result`` (int8) is valid with ``o_valid``.

    How, without a 64-bit rounding adder or a full barrel shifter (both roundings are one
    arithmetic right shift of ``T`` by ``k`` plus one rounding bit; the tests compare it with
    the rule bit for bit, and the derivation is in the comments of :meth:`elaborate`):

    * ``x = value`` sign-extended from its bit ``31 - shift`` for double rounding with
      ``shift > 0`` (``wrap32(value << shift) = x << shift``), else ``value``;
    * ``T = x * M0``, plus ``2**30`` for double rounding with ``shift <= 0`` (gemmlowp's nudge,
      which for ``M0 >= 0`` is round-half-up at bit 31);
    * ``k = 31 - shift`` in every case;
    * ``y = (T >> k) + r``: single rounding's ``r`` (ties away from zero) is bit ``k - 1`` of
      ``T`` (0 for ``k = 0``), and, for ``T < 0``, only if a bit of ``T`` below it is set too;
      double rounding's with ``shift > 0`` (the nudge ``2**30`` shifted down: half up) is bit
      ``k - 1``; with ``shift <= 0`` (``RoundingDivideByPOT``, ties away from zero) it is bit
      ``k - 1`` when ``k > 31``, and, for ``T < 0``, only if a bit of ``T`` in ``31 .. k - 2``
      is set too;
    * only ``_Y_BITS`` bits of ``T >> k`` are built (ten ``64:1`` multiplexers) and the rest
      is saturated; then ``+ zero_point`` and the clamp.

    Timing: the multiply is ``passes`` cycles of two ``32 x w`` partial products
    (``w = ceil(31 / (2 * passes))``), most significant digits first, summed into ``T``.
    ``i_valid`` may be high at most once every :attr:`interval` (``passes``) cycles; a value
    sampled in cycle ``t`` gives ``result`` with ``o_valid`` in cycle ``t + latency``
    (``4 + passes``, and 2 more with several passes: :meth:`latency_of`). ``passes = 2`` on an
    iCE40 keeps the DSP use of two 32x8 products.

    ``soft`` builds the products from shifted adds instead of the ``*`` operator, so that
    synthesis never spends DSP blocks on them (for FPGAs whose DSPs all belong to the MAC
    lanes, :class:`pim_macro.hw.fabric.Fabric`); the timing is the same.

    Raises ``ValueError`` for ``passes`` not in :data:`PASSES`.
    """

    #: Cycles from ``i_valid`` to ``o_valid`` with one pass (:meth:`latency_of` for more).
    LATENCY = 5

    def __new__(cls, *, soft=False, passes=1):
        # Checked before the object exists: a rejected one leaves no unused object behind.
        if passes not in PASSES:
            raise ValueError(f"passes must be one of {PASSES}, not {passes!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, soft=False, passes=1):
        self._soft = soft
        self.passes = passes
        super().__init__({
            "i_valid":    In(1),
            "value":      In(signed(ACC_BITS)),
            "multiplier": In(REQUANT_MULT_BITS),
            "shift":      In(signed(REQUANT_SHIFT_BITS)),
            "double":     In(1),
            "zero_point": In(signed(8)),
            "act_min":    In(signed(8)),
            "act_max":    In(signed(8)),
            "o_valid":    Out(1),
            "result":     Out(signed(8)),
        })

    @staticmethod
    def deep_for(passes):
        """Whether requantizers of ``passes`` take the two extra pipeline stages (Fmax):
        with several passes, whose values come ``passes`` cycles apart. (With one pass a value
        may come every cycle, and the output engine keeps its pipeline no deeper than the
        output FIFO, :data:`pim_macro.hw.output_engine.OUT_FIFO_DEPTH`, so that it issues a
        group every cycle.)"""
        return passes > 1

    @staticmethod
    def latency_of(passes):
        """Cycles from ``i_valid`` to ``o_valid``: the operand register, ``passes`` product
        cycles, the sum ``T``, the shift and saturation, the zero point and clamp; with several
        passes (:meth:`deep_for`) also each pass's chunk and the shifter registered half-way
        (two more)."""
        return Requantizer.LATENCY - 1 + passes + (2 if Requantizer.deep_for(passes) else 0)

    @property
    def deep(self):
        return self.deep_for(self.passes)

    @property
    def latency(self):
        return self.latency_of(self.passes)

    @property
    def interval(self):
        """Fewest cycles between two values: one multiplier pass each."""
        return self.passes

    def elaborate(self, platform):
        m = Module()
        P = self.passes
        w = -(-REQUANT_MULT_BITS // (2 * P))      # digit width: 16, 8 or 4

        # ---- Stage 1: the operand x and the shift amount k, registered ------------------------
        s = self.shift
        x1 = Signal(signed(ACC_BITS))
        m1 = Signal(2 * w * P)
        k1 = Signal(6)                  # 0 .. 63
        d1 = Signal()
        u1 = Signal()
        v1 = Signal()
        # Double rounding with a left shift s > 0 (gemmlowp: SRDHM(wrap32(v * 2**s), M0)) is
        # floor((wrap32(v * 2**s) * M0 + 2**30) / 2**31). wrap32(v * 2**s) = v' * 2**s, where v'
        # is v sign-extended from its bit 31 - s (v' fits 32 - s bits), so this is
        # floor((v' * M0 + 2**(30 - s)) / 2**(31 - s)): v' * M0 shifted right by 31 - s,
        # rounded half up (`u`; for s = 31 no rounding, bit k - 1 being the constant 0 below).
        # No left shifter: a sign extension from a variable bit is about half its logic.
        left = self.double & (s > 0)
        s5 = s[:5]
        sign = self.value.as_unsigned().bit_select(~s5, 1)          # bit 31 - s
        operand = Signal(signed(ACC_BITS))
        m.d.comb += operand[0].eq(self.value[0])
        for i in range(1, ACC_BITS):
            # bit i > 31 - s, i.e. s >= 32 - i: a compare with a constant, as logic (a
            # comparator would take an iCE40 carry chain of logic cells for each bit).
            m.d.comb += operand[i].eq(Mux(left & _at_least(s5, 32 - i), sign, self.value[i]))
        # k = 31 - shift (0 .. 63) in all three cases: single rounding's; double rounding's
        # 31 (SRDHM) plus RoundingDivideByPOT's -shift for shift <= 0 (folded into one shift:
        # floor(floor(a / 2**31) / 2**e) = floor(a / 2**(31 + e)), the rounding terms handled
        # by the bit r below); and the left shift's, above.
        k = 31 - s
        # Held for the P product cycles: the inputs may change after i_valid.
        with m.If(self.i_valid):
            m.d.sync += [x1.eq(operand), m1.eq(self.multiplier), k1.eq(k[:6]),
                         d1.eq(self.double & ~left), u1.eq(left)]
        m.d.sync += v1.eq(self.i_valid)

        # ---- Stages 2 .. 1 + P: two partial products a cycle, most significant digits first --
        # phase[i]: the value in x1 is in its i-th product cycle (values come >= P cycles apart,
        # so x1, m1, k1 and d1 hold still meanwhile).
        phase = Signal(P)
        m.d.comb += phase[0].eq(v1)
        if P > 1:
            later = Signal(P - 1)
            m.d.sync += later.eq(Cat(v1, later[:-1]) if P > 2 else v1)
            m.d.comb += phase[1:].eq(later)
        digits = [m1[j * w:(j + 1) * w] for j in range(2 * P)]
        d_lo, d_hi = Signal(w), Signal(w)
        m.d.comb += [d_lo.eq(digits[2 * (P - 1)]), d_hi.eq(digits[2 * (P - 1) + 1])]
        for i in range(1, P):
            with m.If(phase[i]):
                m.d.comb += [d_lo.eq(digits[2 * (P - 1 - i)]), d_hi.eq(digits[2 * (P - 1 - i) + 1])]
        p_lo = Signal(signed(ACC_BITS + w), name="product_lo")
        p_hi = Signal(signed(ACC_BITS + w), name="product_hi")
        for part, digit in ((p_lo, d_lo), (p_hi, d_hi)):
            if self._soft:
                m.d.sync += part.eq(sum(Mux(digit[i], x1 << i, 0) for i in range(w)))
            else:
                m.d.sync += part.eq(x1 * digit)
        p_valid, p_first, p_last = Signal(), Signal(), Signal()
        k2, d2, u2 = Signal(6), Signal(), Signal()
        m.d.sync += [p_valid.eq(phase.any()), p_first.eq(phase[0]), p_last.eq(phase[-1]),
                     k2.eq(k1), d2.eq(d1), u2.eq(u1)]

        # ---- Stage 2 + P (deep only): each pass's chunk x * (two digits), registered: one
        # carry chain per stage (Fmax: two chained adds of 64 bits, the longest path after the
        # shifter on an iCE40).
        chunk = Signal(signed(ACC_BITS + 2 * w))
        c_valid, c_first, c_last = Signal(), Signal(), Signal()
        k2c, d2c, u2c = Signal(6), Signal(), Signal()
        domain = m.d.sync if self.deep else m.d.comb
        domain += [chunk.eq(p_lo + (p_hi << w)), c_valid.eq(p_valid), c_first.eq(p_first),
                   c_last.eq(p_last), k2c.eq(k2), d2c.eq(d2), u2c.eq(u2)]

        # ---- Stage 2 + P (+1 deep): T = x * M0 (+ 2**30 for double rounding), accumulated
        # chunk by chunk from the top: T = (T << 2w) + chunk. The nudge is added with the first
        # chunk, scaled down by the shifts still to come (2**30 / 2**(2w(P-1)) is an integer for
        # every P).
        t = Signal(signed(_T_BITS))
        k3, d3, u3, t_valid = Signal(6), Signal(), Signal(), Signal()
        nudge = Mux(d2c, 1 << (30 - 2 * w * (P - 1)), 0)
        base = Mux(c_first, nudge, t << (2 * w)) if P > 1 else nudge
        with m.If(c_valid):
            m.d.sync += t.eq(base + chunk)
        m.d.sync += [t_valid.eq(c_valid & c_last), k3.eq(k2c), d3.eq(d2c), u3.eq(u2c)]

        # ---- Stage 3 + P (+2 deep): y = (T >> k) + r, kept to _Y_BITS bits plus saturation ----
        # A logarithmic shifter of Cat(0, T) (so that output 0 is bit k - 1 of T, the rounding
        # bit of single rounding, and outputs 1 .. _Y_BITS are T >> k) that builds only the
        # outputs still needed after each stage, largest shift first; whatever a stage drops
        # above them must equal the sign for T >> k to fit _Y_BITS signed bits (the kept
        # window's top bit, T[k + _Y_BITS - 1], too).
        neg = t[-1]
        # Double rounding never looks at T's bits 0 .. 30 (its k is at least 31, its rounding
        # bit is used only for k > 31, and it looks for set bits in 31 .. k - 2 only): cleared,
        # so that `sticky` below is exactly what double rounding needs too.
        low = Signal(31)
        m.d.comb += low.eq(Mux(d3, 0, t[:31]))
        bits = [C(0, 1)] + [low[j] for j in range(31)] + [t[j] for j in range(31, _T_BITS)]
        keep = _Y_BITS + 1
        dropped = []
        # `sticky`: some bit that falls off the bottom is set. Over the six stages those are
        # positions 0 .. k - 1 of Cat(0, T), i.e. T's bits below the rounding bit k - 1 (for
        # double rounding only those from 31 up, the others being cleared).
        sticky = C(0, 1)
        for b in reversed(range(6)):
            step = 1 << b
            def at(i, bits=bits, neg=neg):
                return bits[i] if i < len(bits) else neg
            width = keep + step - 1 if b else keep
            sticky = sticky | (k3[b] & Cat(*bits[:step]).any())
            moved = [Mux(k3[b], at(i + step), at(i)) for i in range(len(bits))]
            dropped += [bit ^ neg for bit in moved[width:]]
            bits = moved[:width]
            if b == 3 and self.deep:
                # Deep: registered half-way (Fmax: six multiplexer levels and the OR trees beside
                # them were the requantizer's longest path): the bits still needed, what has
                # been dropped and the sticky bit so far, and what the rest looks at.
                h_bits = Signal(len(bits))
                h_over, h_sticky, h_neg, h_valid = Signal(), Signal(), Signal(), Signal()
                k4, d4, u4, big4 = Signal(3), Signal(), Signal(), Signal()
                m.d.sync += [h_bits.eq(Cat(*bits)), h_over.eq(Cat(*dropped).any()),
                             h_sticky.eq(sticky), h_neg.eq(neg), h_valid.eq(t_valid),
                             k4.eq(k3[:3]), d4.eq(d3), u4.eq(u3), big4.eq(k3 > 31)]
                bits, dropped, sticky, neg = list(h_bits), [h_over], h_sticky, h_neg
                k3 = Cat(k4, C(0, 3))
        if not self.deep:
            h_valid, d4, u4, big4 = t_valid, d3, u3, k3 > 31
        r_bit = bits[0]
        q = Signal(signed(_Y_BITS))
        m.d.comb += q.eq(Cat(*bits[1:]))
        fits = ~Cat(*dropped, bits[-1] ^ neg).any()
        # Double rounding, RoundingDivideByPOT(h, e) with h = T >> 31, e = k - 31: rounds up
        # when the remainder h mod 2**e exceeds 2**(e-1) - 1 + (h < 0): its top bit (bit k - 1
        # of T) is set and, for negative h, some lower bit (31 .. k - 2) too: `sticky`, since
        # the bits below 31 were cleared; never for e = 0.
        r_double = big4 & r_bit & (~neg | sticky)
        # Single rounding, ties away from zero: like half up, except that a negative T at an
        # exact tie (bit k - 1 set, nothing below it) stays at floor(T / 2**k), which is the
        # tie's value rounded away from zero.
        r_single = r_bit & (~neg | sticky)
        y = Signal(signed(_Y_BITS + 1))
        r = Signal()
        y_valid = Signal()
        with m.If(fits):
            m.d.sync += y.eq(q)
        with m.Else():
            m.d.sync += y.eq(Mux(neg, -(1 << (_Y_BITS - 1)) - 1, 1 << (_Y_BITS - 1)))
        m.d.sync += [r.eq(Mux(d4, r_double, Mux(u4, r_bit, r_single))), y_valid.eq(h_valid)]

        # ---- Stage 4 + P (+2 deep): + zero point, then max(act_min), then min(act_max), in
        # TFLite's order
        z = Signal(signed(_Y_BITS + 3))
        m.d.comb += z.eq(y + self.zero_point + r)
        # min(max(z, lo), hi) with both compares side by side (Fmax): hi when lo > hi or
        # z > hi, else lo when z < lo, else z.
        lo, hi = self.act_min, self.act_max
        m.d.sync += [self.result.eq(Mux((lo > hi) | (z > hi), hi, Mux(z < lo, lo, z))),
                     self.o_valid.eq(y_valid)]
        return m
