"""The command decoder: latches a command's header and arguments and checks them."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .constmul import times_const
from .isa import (STREAM_BITS, INT8_PER_WORD, FIELD_BITS, OPCODES, BARRIERS, REQUANTIZING,
                  Opcode, Flag, Error, Header, Status, RowArg, AddrArg, MatvecArg, BiasArg,
                  WritebackArg, QuantArg, MacroConfig, span_end_bits)
from .scoreboard import Span


__all__ = ["CommandDecoder", "Arg0", "words_of"]


#: The first argument word, read through the layout of the opcode at hand.
Arg0 = data.UnionLayout({"row": RowArg, "addr": AddrArg, "matvec": MatvecArg, "bias": BiasArg,
                         "writeback": WritebackArg})

# The offset of the high address field of an argument word.
_HI = MatvecArg["act"].offset
assert _HI == WritebackArg["act"].offset == FIELD_BITS == MatvecArg["row"].width


def words_of(rule, count, config):
    """The hardware value of a :class:`pim_macro.hw.isa.Words` rule on the value ``count``.

    A per-item number that is not a power of two (``row_words``) is multiplied as shifted adds
    (:func:`pim_macro.hw.constmul.times_const`), so that no DSP block goes to it; ``packed`` is
    a power of two, so the rounded-up division is a shift."""
    if rule.fixed:
        return C(rule.fixed)
    per = rule.per(config)
    if per == 0:
        return C(0)
    items = times_const(count, per)
    shift = rule.packed.bit_length() - 1
    assert rule.packed == 1 << shift, rule
    return (items + (rule.packed - 1)) >> shift if shift else items


def _field_rule(info, name, config):
    """What the argument field ``name`` of an opcode (``info``, its :data:`OPCODES` row) names:
    ``(limit, per, align, flag)``: the elements ``[field, field + count * per)`` must lie in
    ``limit`` and ``field`` be a multiple of ``align``, checked only when ``flag`` (if any) is
    set. ``None`` for a field that names no memory.

    hw/isa.py states these in its command table (in words); here they are data."""
    if name == "row":                   # weight rows, one per count
        return config.depth, 1, 1, None
    if name == "addr" and info.counts == "bytes":
        # A payload word lands whole in one activation word.
        return config.act_depth, 1, INT8_PER_WORD, None
    if name == "addr" and info.counts == "words":    # LOAD_BIAS, LOAD_QUANT: channels
        return config.bias_depth, 1, 1, None
    if name == "act" and info.counts == "rows":
        # A row reads R activation bytes, from one activation word.
        R = config.rows_per_cycle
        return config.act_depth, R, R, None
    if name == "act":                   # a write-back writes one byte per lane
        return config.act_depth, 1, 1, None
    if name == "bias":
        # A requantizing command reads its channels' multipliers and shifts, with or without
        # BIAS; EMIT_RAW reads the channels only for their bias.
        requantizing = any(op_info is info for op, op_info in OPCODES.items()
                           if op in REQUANTIZING)
        return config.bias_depth, 1, 1, None if requantizing else Flag.BIAS
    return None


class CommandDecoder(wiring.Component):
    """Takes a command's words from the stream and says what it is and whether it may run.

    Latching (one cycle each): ``latch_header`` takes ``word`` as the header (and clears the
    arguments), ``latch_arg0`` / ``latch_arg1`` as the first / second argument word.
    ``word_args`` tells, combinationally on ``word``, how many argument words follow a header
    ``word`` (0 for an unknown opcode); ``has_arg1`` whether the latched opcode takes two.

    Everything else is combinational on the latched command: ``error``, the first check that
    fails in the ISA's order (:class:`pim_macro.hw.isa.Error`; ``OK`` if none); ``status``, the
    command's status word; ``data_words``, the data words an OK status announces; ``payload``,
    the payload words the header announces (consumed even when a check fails; 0 for an unknown
    opcode); ``barrier``, a :data:`~pim_macro.hw.isa.BARRIERS` opcode. ``lo_span``,
    ``hi_span`` and ``hi_rows_span`` are ``[f, f + count)`` for the low and the high 16-bit
    field ``f`` of the first argument word, and ``[f, f + count * R)`` for the high one (the
    activation bytes of a MATVEC). Their ends are summed as the words are latched, so no adder
    sits between the latched command and the checks; each end has the width
    :func:`~pim_macro.hw.isa.span_end_bits` gives, which holds the sum for every header and
    argument word.

    Everything comes from :data:`pim_macro.hw.isa.OPCODES` (arguments, flags, what ``count``
    counts, payload and response words) and the argument layouts.
    """

    def __init__(self, config: MacroConfig):
        self._config = config
        # The latches and Arg0 cover every opcode of the table.
        for op, info in OPCODES.items():
            assert len(info.args) <= 2 and info.args[1:] in ((), (QuantArg,)), op
            assert not info.args or info.args[0] in Arg0.members.values(), op
        R = config.rows_per_cycle
        super().__init__({
            "word":         In(STREAM_BITS),
            "word_args":    Out(range(3)),
            "latch_header": In(1),
            "latch_arg0":   In(1),
            "latch_arg1":   In(1),
            "header":       Out(Header),
            "arg0":         Out(Arg0),
            "arg1":         Out(QuantArg),
            "has_arg1":     Out(1),
            # Each end as wide as its largest sum (isa.span_end_bits), so none can wrap.
            "lo_span":      Out(Span(FIELD_BITS, span_end_bits(1))),
            "hi_span":      Out(Span(FIELD_BITS, span_end_bits(1))),
            "hi_rows_span": Out(Span(FIELD_BITS, span_end_bits(R))),
            "error":        Out(Error),
            "status":       Out(Status),
            "data_words":   Out(16),
            "payload":      Out(32),
            "barrier":      Out(1),
        })

    def _span(self, offset, per):
        return {(0, 1): self.lo_span, (_HI, 1): self.hi_span,
                (_HI, self._config.rows_per_cycle): self.hi_rows_span}[offset, per]

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R = cfg.rows_per_cycle
        header, count = self.header, self.header.count
        flags = header.flags.as_value()
        arg0 = self.arg0.as_value()
        args = [arg0, self.arg1.as_value()]

        # ---- Latching ----------------------------------------------------------------------
        word_header = Header(self.word)
        with m.Switch(word_header.opcode):
            for op, info in OPCODES.items():
                with m.Case(op):
                    m.d.comb += self.word_args.eq(len(info.args))
        m.d.comb += self.has_arg1.eq(Cat(header.opcode == op.value for op, info in OPCODES.items()
                                         if len(info.args) > 1).any())
        # One register per distinct end (with R = 1 the two high spans share theirs).
        ports = [(self.lo_span, 0, 1), (self.hi_span, _HI, 1), (self.hi_rows_span, _HI, R)]
        ends = {}
        for span, offset, per in ports:
            width = max(len(span.hi), len(ends[offset, per]) if (offset, per) in ends else 0)
            ends[offset, per] = Signal(width, name=f"end_{offset}_x{per}")
        with m.If(self.latch_header):
            m.d.sync += [header.eq(self.word), arg0.eq(0), args[1].eq(0)]
            m.d.sync += [end.eq(times_const(word_header.count, per))
                         for (_, per), end in ends.items()]
        with m.If(self.latch_arg0):
            m.d.sync += arg0.eq(self.word)
            m.d.sync += [end.eq(self.word[offset:offset + FIELD_BITS] + times_const(count, per))
                         for (offset, per), end in ends.items()]
        with m.If(self.latch_arg1):
            m.d.sync += args[1].eq(self.word)
        for span, offset, per in ports:
            m.d.comb += [span.lo.eq(arg0[offset:offset + FIELD_BITS]),
                         span.hi.eq(ends[offset, per])]

        # ---- Checks, each a list of conditions that must all hold ---------------------------
        known, flags_ok, fields_ok, length_ok, aligned, in_range = (Signal(name=n) for n in (
            "known", "flags_ok", "fields_ok", "length_ok", "aligned", "in_range"))
        with m.Switch(header.opcode):
            for op, info in OPCODES.items():
                fields, length, alignment, ranges = [], [count != 0], [], []
                if info.counts is None:
                    fields, length = [count == 0], []
                elif info.counts == "lanes":
                    length.append(count <= cfg.lanes)
                for index, layout in enumerate(info.args):
                    view = layout(args[index])
                    for name, field in layout:
                        if name == "reserved":
                            fields.append(view[name] == 0)
                        rule = _field_rule(info, name, cfg)
                        if rule is None:
                            continue
                        limit, per, align, flag = rule
                        if align > 1:
                            alignment.append(view[name][:(align - 1).bit_length()] == 0)
                        in_memory = self._span(field.offset, per).hi <= limit
                        if flag is not None:
                            in_memory = ~(flags & flag.value).any() | in_memory
                        ranges.append(in_memory)
                with m.Case(op):
                    m.d.comb += [
                        known.eq(1),
                        # (A Python int mask: `~C(...)` here makes Yosys 0.70's abc9 fail an
                        # assertion on the ECP5 baseline build.)
                        flags_ok.eq((flags & (((1 << len(flags)) - 1) & ~info.flags.value))
                                    == 0),
                        fields_ok.eq(Cat(*fields, C(1)).all()),
                        length_ok.eq(Cat(*length, C(1)).all()),
                        aligned.eq(Cat(*alignment, C(1)).all()),
                        in_range.eq(Cat(*ranges, C(1)).all()),
                    ]
        with m.If(~known):
            m.d.comb += self.error.eq(Error.BAD_OPCODE)
        with m.Elif(~flags_ok | ~fields_ok):
            m.d.comb += self.error.eq(Error.BAD_FIELD)
        with m.Elif(~length_ok):
            m.d.comb += self.error.eq(Error.BAD_LENGTH)
        with m.Elif(~aligned):
            m.d.comb += self.error.eq(Error.MISALIGNED)
        with m.Elif(~in_range):
            m.d.comb += self.error.eq(Error.BAD_ADDRESS)
        with m.Else():
            m.d.comb += self.error.eq(Error.OK)

        # ---- What the command announces ----------------------------------------------------
        with m.Switch(header.opcode):
            for op, info in OPCODES.items():
                with m.Case(op):
                    m.d.comb += [self.data_words.eq(words_of(info.response, count, cfg)),
                                 self.payload.eq(words_of(info.payload, count, cfg))]
        ok = self.error == Error.OK
        m.d.comb += [
            self.status.opcode.eq(header.opcode), self.status.error.eq(self.error),
            self.status.count.eq(Mux(ok, self.data_words, 0)),
            self.barrier.eq(Cat(header.opcode == op.value for op in BARRIERS).any()),
        ]
        return m
