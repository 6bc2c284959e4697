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

    * ``x = wrap32(value << shift)`` for double rounding with ``shift > 0``, else ``value``;
    * ``T = x * M0``, plus ``2**30`` for double rounding (gemmlowp's nudge, which for ``M0 >= 0``
      is round-half-up at bit 31);
    * ``k = 31 - shift`` (single) or ``31 + max(-shift, 0)`` (double);
    * ``y = (T >> k) + r``: single rounding's ``r`` (ties away from zero) is bit ``k - 1`` of
      ``T`` (0 for ``k = 0``), and, for ``T < 0``, only if a bit of ``T`` below it is set too;
      double rounding's (``RoundingDivideByPOT``, ties away from zero) is bit ``k - 1`` when
      ``k > 31``, and, for ``T < 0``, only if a bit of ``T`` in ``31 .. k - 2`` is set too;
    * only ``_Y_BITS`` bits of ``T >> k`` are built (ten ``64:1`` multiplexers) and the rest
      is saturated; then ``+ zero_point`` and the clamp.

    Timing: the multiply is ``passes`` cycles of two ``32 x w`` partial products
    (``w = ceil(31 / (2 * passes))``), most significant digits first, summed into ``T``.
    ``i_valid`` may be high at most once every :attr:`interval` (``passes``) cycles; a value
    sampled in cycle ``t`` gives ``result`` with ``o_valid`` in cycle ``t + latency``
    (``4 + passes``). ``passes = 2`` on an iCE40 keeps the DSP use of two 32x8 products.

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
    def latency_of(passes):
        """Cycles from ``i_valid`` to ``o_valid``: the operand register, ``passes`` product
        cycles, the sum ``T``, the shift and saturation, the zero point and clamp."""
        return Requantizer.LATENCY - 1 + passes

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
        v1 = Signal()
        # Double rounding shifts left first, wrapping to 32 bits (gemmlowp: `x * (1 << left)`).
        left = self.double & (s > 0)
        # One barrel shifter, by 0 when there is nothing to shift: no multiplexer after it.
        shifted = (self.value << Mux(left, s[:REQUANT_SHIFT_BITS - 1], 0))[:ACC_BITS].as_signed()
        # Single: total = 31 - shift (0 .. 63). Double: SRDHM's 31, plus RoundingDivideByPOT's
        # max(-shift, 0) (folded into one shift: floor(floor(a / 2**31) / 2**e) = floor(a /
        # 2**(31 + e)), the rounding terms handled by the bit r below).
        k = Mux(self.double, 31 + Mux(s < 0, -s, 0), 31 - s)
        # Held for the P product cycles: the inputs may change after i_valid.
        with m.If(self.i_valid):
            m.d.sync += [x1.eq(shifted), m1.eq(self.multiplier), k1.eq(k[:6]),
                         d1.eq(self.double)]
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
        k2, d2 = Signal(6), Signal()
        m.d.sync += [p_valid.eq(phase.any()), p_first.eq(phase[0]), p_last.eq(phase[-1]),
                     k2.eq(k1), d2.eq(d1)]

        # ---- Stage 2 + P: T = x * M0 (+ 2**30 for double rounding), accumulated digit by digit
        # from the top: T = (T << 2w) + chunk. The nudge is added with the first chunk, scaled
        # down by the shifts still to come (2**30 / 2**(2w(P-1)) is an integer for every P).
        t = Signal(signed(_T_BITS))
        k3, d3, t_valid = Signal(6), Signal(), Signal()
        nudge = Mux(d2, 1 << (30 - 2 * w * (P - 1)), 0)
        base = Mux(p_first, nudge, t << (2 * w)) if P > 1 else nudge
        with m.If(p_valid):
            m.d.sync += t.eq(base + p_lo + (p_hi << w))
        m.d.sync += [t_valid.eq(p_valid & p_last), k3.eq(k2), d3.eq(d2)]

        # ---- Stage 3 + P: y = (T >> k) + r, kept to _Y_BITS bits plus saturation ------------
        # A logarithmic shifter of Cat(0, T) (so that output 0 is bit k - 1 of T, the rounding
        # bit of single rounding, and outputs 1 .. _Y_BITS are T >> k) that builds only the
        # outputs still needed after each stage, largest shift first; whatever a stage drops
        # above them must equal the sign for T >> k to fit _Y_BITS signed bits (the kept
        # window's top bit, T[k + _Y_BITS - 1], too).
        neg = t[-1]
        bits = [C(0, 1)] + [t[j] for j in range(_T_BITS)]
        keep = _Y_BITS + 1
        dropped = []
        # `sticky`: some bit that falls off the bottom is set. Over the six stages those are
        # positions 0 .. k - 1 of Cat(0, T), i.e. T's bits below the rounding bit k - 1.
        sticky = C(0, 1)
        for b in reversed(range(6)):
            step = 1 << b
            def at(i, bits=bits):
                return bits[i] if i < len(bits) else neg
            width = keep + step - 1 if b else keep
            sticky = sticky | (k3[b] & Cat(*bits[:step]).any())
            moved = [Mux(k3[b], at(i + step), at(i)) for i in range(len(bits))]
            dropped += [bit ^ neg for bit in moved[width:]]
            bits = moved[:width]
        r_bit = bits[0]
        q = Signal(signed(_Y_BITS))
        m.d.comb += q.eq(Cat(*bits[1:]))
        fits = ~Cat(*dropped, bits[-1] ^ neg).any()
        # Double rounding, RoundingDivideByPOT(h, e) with h = T >> 31, e = k - 31: rounds up
        # when the remainder h mod 2**e exceeds 2**(e-1) - 1 + (h < 0): its top bit (bit k - 1
        # of T) is set and, for negative h, some lower bit (31 .. k - 2) too; never for e = 0.
        # `under`: the bits of T below k - 1 (0 .. k - 2); double rounding looks at 31 .. k - 2.
        under = Signal(_T_BITS - 1)
        m.d.comb += under.eq(C((1 << (_T_BITS - 1)) - 1, _T_BITS - 1)
                             >> (_T_BITS - k3).as_unsigned())
        below = (t[31:_T_BITS - 1] & under[31:]).any()
        r_double = (k3 > 31) & r_bit & (~neg | below)
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
        m.d.sync += [r.eq(Mux(d3, r_double, r_single)), y_valid.eq(t_valid)]

        # ---- Stage 4 + P: + zero point, then max(act_min), then min(act_max) (TFLite's order) -
        z = Signal(signed(_Y_BITS + 3))
        m.d.comb += z.eq(y + self.zero_point + r)
        low = Mux(z < self.act_min, self.act_min, z)
        m.d.sync += [self.result.eq(Mux(low > self.act_max, self.act_max, low)),
                     self.o_valid.eq(y_valid)]
        return m
