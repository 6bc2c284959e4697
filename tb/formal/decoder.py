"""The command decoder against a plain specification of the ISA's checks.

:class:`DecoderHarness` drives a :class:`pim_macro.hw.decoder.CommandDecoder` with any word, any
sequence of latch strobes (at most one per cycle, as the controller takes one word a cycle) and
any word-valid bit, keeps its own copy of the latched header and argument words, and asserts in
every cycle that the decoder's outputs are what :func:`specification` says of those words: the error code,
the status word, the payload words, the data words of an OK status, the argument words of a
header, the barrier bit and the three spans. Every register of the decoder is pinned by one of
these assertions, so the property is inductive: ``prove`` with k = 1 is a proof for every
header and argument word and every history.

:func:`specification` is written from the README's "Command set" section, opcode by opcode, in
integers too wide to overflow (Amaranth's ``+`` and ``*`` widen their results, and each result
is kept in :data:`WIDE` bits); it uses the ISA's enums and layouts but none of the decoder's
helpers (``_field_rule``, ``words_of``) nor the ``OPCODES`` table they read.
"""

from amaranth import *
from amaranth.hdl import Assert, Assume
from amaranth.lib import data

from pim_macro.hw.decoder import CommandDecoder
from pim_macro.hw.isa import (STREAM_BITS, Opcode, Flag, Error, Counter,
                              StatusWord, Header, RowArg, AddrArg, MatvecArg, BiasArg,
                              WritebackArg, QuantArg, MacroConfig)

from .engine import Proof


__all__ = ["specification", "args_of", "DecoderHarness", "CONFIGS", "PROOFS", "decoder_proof"]


#: Bits of every sum and product below: the largest is ``act + count * R``, below 2 ** 19, and
#: ``count * R * L / 4``, below 2 ** 24.
WIDE = 40


def _wide(m, value, name):
    signal = Signal(WIDE, name=name)
    m.d.comb += signal.eq(value)
    return signal


class _Verdict:
    """The first failing check of an ordered list, as the README's check table orders them."""

    def __init__(self, m, error):
        self._m, self._error = m, error

    def checks(self, *failures):
        """``failures``: ``(Error, condition)`` pairs, a command failing with the first code
        whose condition holds; ``OK`` if none does."""
        verdict = C(Error.OK.value, 8)
        for code, fails in reversed(failures):
            verdict = Mux(fails, code.value, verdict)
        self._m.d.comb += self._error.eq(verdict)


def specification(m, config, header, arg0, arg1):
    """Add to ``m`` the ISA's verdict on the command ``header``, ``arg0``, ``arg1`` (32-bit
    values; an argument the opcode does not take is ignored) for a macro of ``config``.

    Returns a dict of values: ``error`` (an :class:`Error` code, 8 bits), ``payload`` (words
    after the arguments, consumed whether or not the command passes), ``response`` (data words
    after an OK status), ``args`` (argument words after this header), ``barrier``."""
    L, R = config.lanes, config.rows_per_cycle
    hdr = Header(header)
    flags, count = hdr.flags.as_value(), _wide(m, hdr.count, "spec_count")
    error = Signal(8, name="spec_error")
    payload, response = Signal(WIDE, name="spec_payload"), Signal(WIDE, name="spec_response")
    args, barrier = Signal(2, name="spec_args"), Signal(name="spec_barrier")
    verdict = _Verdict(m, error)

    def rejects_flags(*accepted):
        mask = 0
        for flag in accepted:
            mask |= flag.value
        return (flags & ~C(mask, 8)) != 0

    def ceil_div(value, by):
        return (value + (by - 1)) // by

    bias_on = (flags & Flag.BIAS.value) != 0
    quant = QuantArg(arg1)
    # ISA v4: every QuantArg value is legal but its reserved byte (no shift to check).
    quant_bad = quant.reserved != 0

    m.d.comb += _no_words(payload, response, args, barrier)
    with m.Switch(hdr.opcode):
        with m.Case(Opcode.WRITE_WEIGHTS):
            a = RowArg(arg0)
            row = _wide(m, a.row, "spec_ww_row")
            verdict.checks((Error.BAD_FIELD, rejects_flags() | (a.reserved != 0)),
                           (Error.BAD_LENGTH, count == 0),
                           (Error.BAD_ADDRESS, row + count > config.depth))
            # `count * R * L / 4` words: a row is R * L int8, four to a word.
            m.d.comb += [payload.eq(count * R * L // 4), args.eq(1)]
        with m.Case(Opcode.LOAD_ACT):
            a = AddrArg(arg0)
            addr = _wide(m, a.addr, "spec_la_addr")
            verdict.checks((Error.BAD_FIELD, rejects_flags() | (a.reserved != 0)),
                           (Error.BAD_LENGTH, count == 0),
                           (Error.MISALIGNED, addr % 4 != 0),
                           (Error.BAD_ADDRESS, addr + count > config.act_depth))
            m.d.comb += [payload.eq(ceil_div(count, 4)), args.eq(1)]
        with m.Case(Opcode.LOAD_BIAS):
            a = AddrArg(arg0)
            addr = _wide(m, a.addr, "spec_lb_addr")
            verdict.checks((Error.BAD_FIELD, rejects_flags() | (a.reserved != 0)),
                           (Error.BAD_LENGTH, count == 0),
                           (Error.BAD_ADDRESS, addr + count > config.bias_depth))
            m.d.comb += [payload.eq(count), args.eq(1)]
        with m.Case(Opcode.LOAD_QUANT):
            a = AddrArg(arg0)
            addr = _wide(m, a.addr, "spec_lq_addr")
            verdict.checks((Error.BAD_FIELD, rejects_flags() | (a.reserved != 0)),
                           (Error.BAD_LENGTH, count == 0),
                           (Error.BAD_ADDRESS, addr + count > config.bias_depth))
            # Two words per channel: its multiplier, then its shift.
            m.d.comb += [payload.eq(2 * count), args.eq(1)]
        with m.Case(Opcode.MATVEC):
            a = MatvecArg(arg0)
            row, act = _wide(m, a.row, "spec_mv_row"), _wide(m, a.act, "spec_mv_act")
            # Row j reads the R activation bytes act + R*j .. act + R*j + R - 1.
            verdict.checks((Error.BAD_FIELD, rejects_flags(Flag.ACCUMULATE)),
                           (Error.BAD_LENGTH, count == 0),
                           (Error.MISALIGNED, act % R != 0),
                           (Error.BAD_ADDRESS, (row + count > config.depth)
                                               | (act + count * R > config.act_depth)))
            m.d.comb += args.eq(1)
        with m.Case(Opcode.EMIT_RAW):
            a = BiasArg(arg0)
            bias = _wide(m, a.bias, "spec_er_bias")
            verdict.checks((Error.BAD_FIELD, rejects_flags(Flag.BIAS) | (a.reserved != 0)),
                           (Error.BAD_LENGTH, (count == 0) | (count > L)),
                           (Error.BAD_ADDRESS, bias_on & (bias + count > config.bias_depth)))
            m.d.comb += [response.eq(count), args.eq(1)]
        with m.Case(Opcode.EMIT_INT8):
            a = BiasArg(arg0)
            bias = _wide(m, a.bias, "spec_ei_bias")
            # A requantizing command reads its channels' multipliers and shifts: their span is
            # checked with or without BIAS.
            verdict.checks((Error.BAD_FIELD, rejects_flags(Flag.BIAS, Flag.DOUBLE_ROUND)
                            | (a.reserved != 0) | quant_bad),
                           (Error.BAD_LENGTH, (count == 0) | (count > L)),
                           (Error.BAD_ADDRESS, bias + count > config.bias_depth))
            m.d.comb += [response.eq(ceil_div(count, 4)), args.eq(2)]
        with m.Case(Opcode.WRITEBACK):
            a = WritebackArg(arg0)
            bias, act = _wide(m, a.bias, "spec_wb_bias"), _wide(m, a.act, "spec_wb_act")
            verdict.checks((Error.BAD_FIELD, rejects_flags(Flag.BIAS, Flag.DOUBLE_ROUND)
                            | quant_bad),
                           (Error.BAD_LENGTH, (count == 0) | (count > L)),
                           (Error.BAD_ADDRESS, (bias + count > config.bias_depth)
                                               | (act + count > config.act_depth)))
            m.d.comb += args.eq(2)
        with m.Case(Opcode.READ_COUNTERS):
            verdict.checks((Error.BAD_FIELD, rejects_flags(Flag.CLEAR) | (count != 0)))
            m.d.comb += [response.eq(len(Counter)), barrier.eq(1)]
        with m.Case(Opcode.STATUS):
            verdict.checks((Error.BAD_FIELD, rejects_flags() | (count != 0)))
            m.d.comb += [response.eq(len(StatusWord)), barrier.eq(1)]
        with m.Default():
            m.d.comb += error.eq(Error.BAD_OPCODE.value)
    return {"error": error, "payload": payload, "response": response, "args": args,
            "barrier": barrier}


def _no_words(payload, response, args, barrier):
    """Nothing to pay or answer unless an opcode's case says so."""
    return [payload.eq(0), response.eq(0), args.eq(0), barrier.eq(0)]


def args_of(m, word):
    """Argument words after the header ``word`` (README table: none for READ_COUNTERS and
    STATUS, two for EMIT_INT8 and WRITEBACK, one for the others, none for an unknown opcode)."""
    n = Signal(2, name="spec_word_args")
    with m.Switch(Header(word).opcode):
        with m.Case(Opcode.WRITE_WEIGHTS, Opcode.LOAD_ACT, Opcode.LOAD_BIAS, Opcode.LOAD_QUANT,
                    Opcode.MATVEC, Opcode.EMIT_RAW):
            m.d.comb += n.eq(1)
        with m.Case(Opcode.EMIT_INT8, Opcode.WRITEBACK):
            m.d.comb += n.eq(2)
    return n


class DecoderHarness(Elaboratable):
    """A :class:`CommandDecoder` (or ``decoder_class``) of ``config`` under free inputs, with
    every output asserted against :func:`specification` in every cycle."""

    def __init__(self, config, decoder_class=CommandDecoder, *, spans=True):
        self.config, self.spans = config, spans
        self.dut = decoder_class(config)
        self.word = Signal(STREAM_BITS)
        self.latch = Signal(3)          # header, arg0, arg1
        self.valid = Signal()           # the word is there: a strobe takes it only then
        self.ports = [self.word, self.latch, self.valid]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.submodules.dut = dut = self.dut
        cfg = self.config
        # The controller takes one word a cycle: at most one strobe.
        m.d.comb += Assume((self.latch & (self.latch - 1)) == 0)
        m.d.comb += [dut.word.eq(self.word), dut.valid.eq(self.valid),
                     dut.latch_header.eq(self.latch[0]),
                     dut.latch_arg0.eq(self.latch[1]), dut.latch_arg1.eq(self.latch[2])]

        # The words the decoder should hold, by its documented latching rule.
        header, arg0, arg1 = (Signal(STREAM_BITS, name=n) for n in ("h_word", "a0_word",
                                                                    "a1_word"))
        with m.If(self.valid & self.latch[0]):
            m.d.sync += [header.eq(self.word), arg0.eq(0), arg1.eq(0)]
        with m.If(self.valid & self.latch[1]):
            m.d.sync += arg0.eq(self.word)
        with m.If(self.valid & self.latch[2]):
            m.d.sync += arg1.eq(self.word)

        spec = specification(m, cfg, header, arg0, arg1)
        ok = spec["error"] == Error.OK.value
        hdr = Header(header)
        lo, hi = arg0[:16], arg0[16:]
        count = hdr.count
        m.d.comb += [
            Assert(dut.header.as_value() == header, "latched header"),
            Assert(dut.arg0.as_value() == arg0, "latched first argument"),
            Assert(dut.arg1.as_value() == arg1, "latched second argument"),
            Assert(dut.error.as_value() == spec["error"], "error code"),
            Assert(dut.status.opcode == hdr.opcode, "status echoes the opcode"),
            Assert(dut.status.error.as_value() == spec["error"], "status error code"),
            Assert(dut.status.count == Mux(ok, spec["response"], 0), "status count"),
            Assert(~ok | (dut.data_words == spec["response"]), "data words of an OK status"),
            Assert(dut.payload == spec["payload"], "payload words"),
            Assert(dut.word_args == args_of(m, self.word), "argument words of a header"),
            Assert(dut.has_arg1 == (spec["args"] == 2), "second argument"),
            Assert(dut.barrier == spec["barrier"], "barrier"),
        ]
        if not self.spans:              # (to show that the verdict alone catches a short sum)
            return m
        m.d.comb += [
            # The spans the controller's hazard checks read, in wide arithmetic.
            Assert(dut.lo_span.lo == lo, "low span start"),
            Assert(dut.lo_span.hi == _wide(m, lo, "w_lo") + count, "low span end"),
            Assert(dut.hi_span.lo == hi, "high span start"),
            Assert(dut.hi_span.hi == _wide(m, hi, "w_hi") + count, "high span end"),
            Assert(dut.hi_rows_span.lo == hi, "activation span start"),
            Assert(dut.hi_rows_span.hi == _wide(m, hi, "w_hr") + count * cfg.rows_per_cycle,
                   "activation span end (act + count * R)"),
        ]
        return m


#: The smallest and the largest legal configuration, each with R = 1, 2, 4.
CONFIGS = [MacroConfig(lanes=4, rows_per_cycle=R, depth=1, act_depth=4, bias_depth=1)
           for R in (1, 2, 4)] + \
          [MacroConfig(lanes=256, rows_per_cycle=R, depth=65536, act_depth=65536,
                       bias_depth=65536) for R in (1, 2, 4)]


def decoder_proof(config, *, mode="prove", depth=4, name=None, decoder_class=CommandDecoder):
    """The decoder proof for ``config`` (``mode``/``depth`` as in :class:`Proof`)."""
    size = "min" if config.depth == 1 else "max" if config.depth == 65536 else "cfg"
    return Proof(name=name or f"decoder-{size}-r{config.rows_per_cycle}", config=config.tag(),
                 what="decoder verdict, payload, data words, spans == the ISA specification",
                 harness=lambda: DecoderHarness(config, decoder_class), mode=mode, depth=depth)


PROOFS = [decoder_proof(config) for config in CONFIGS]
