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
    arguments), ``latch_arg0`` / ``latch_arg1`` as the first / second argument word, in a cycle
    with ``valid`` high (it defaults to high). The strobes say where the word goes; ``valid``
    says it is there: the ``next_*`` views below assume it is taken when a strobe is high, so a
    controller may drive the strobes from its state alone, and the stream's ``valid`` reaches
    only the registers' enables.
    ``word_args`` tells, combinationally on ``word``, how many argument words follow a header
    ``word`` (0 for an unknown opcode); ``has_arg1`` whether the latched opcode takes two.

    Everything else describes the latched command (``error`` and ``barrier`` are registered with
    it, the rest is combinational on it): ``error``, the first check that fails in the ISA's
    order (:class:`pim_macro.hw.isa.Error`; ``OK`` if none);
    ``status``, the command's status word; ``data_words``, the data words an OK status announces;
    ``payload``, the payload words the header announces (consumed even when a check fails; 0 for
    an unknown opcode); ``barrier``, a :data:`~pim_macro.hw.isa.BARRIERS` opcode. ``lo_span``,
    ``hi_span`` and ``hi_rows_span`` are ``[f, f + count)`` for the low and the high 16-bit
    field ``f`` of the first argument word, and ``[f, f + count * R)`` for the high one (the
    activation bytes of a MATVEC); each end has the width :func:`~pim_macro.hw.isa.span_end_bits`
    gives, which holds the sum for every header and argument word.

    The checks run on what the latches will hold next cycle (the word being latched, or what is
    held), so their verdicts leave flip-flops in the same cycle as the command: a controller can
    act on them at once without a path from the latches through the checks. ``next_header``,
    ``next_error``, ``next_barrier``, ``next_lo_span`` and ``next_hi_rows_span`` are those
    next-cycle values themselves (combinational on ``word`` and the latch strobes), for a
    controller that registers its own verdicts on the next command.

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
            "valid":        In(1, init=1),
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
            "next_lo_span":      Out(Span(FIELD_BITS, span_end_bits(1))),
            "next_hi_rows_span": Out(Span(FIELD_BITS, span_end_bits(R))),
            "next_header":  Out(Header),
            "next_error":   Out(Error),
            "next_barrier": Out(1),
            # The latches reset to the all-zero command: zero is no opcode (hw/isa.py), so the
            # registered verdict starts as BAD_OPCODE, announcing nothing.
            "error":        Out(Error, init=Error.BAD_OPCODE),
            "status":       Out(Status),
            "data_words":   Out(16),
            "payload":      Out(32),
            "barrier":      Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R = cfg.rows_per_cycle
        header, count = self.header, self.header.count
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
        # What the latches will hold next cycle (`_n`): the checks run on these and their
        # verdicts are registered with the words, so they come out of flip-flops in the same
        # cycle as the latched command, and nothing downstream waits for them.
        header_n = Signal(Header, name="header_n")
        arg0_n, arg1_n = Signal(32, name="arg0_n"), Signal(32, name="arg1_n")
        m.d.comb += [
            header_n.eq(Mux(self.latch_header, self.word, header.as_value())),
            arg0_n.eq(Mux(self.latch_header, 0, Mux(self.latch_arg0, self.word, arg0))),
            arg1_n.eq(Mux(self.latch_header, 0, Mux(self.latch_arg1, self.word, args[1]))),
        ]
        take = self.valid & (self.latch_header | self.latch_arg0 | self.latch_arg1)
        with m.If(take):
            m.d.sync += [header.eq(header_n), arg0.eq(arg0_n), args[1].eq(arg1_n)]
        # One register per distinct end (with R = 1 the two high spans share theirs). The
        # controller's registered hazard checks read the next low span (rows, activations) and
        # the next high rows span (a write-back's activations): no next high span is needed.
        ports = [(self.lo_span, self.next_lo_span, 0, 1),
                 (self.hi_span, None, _HI, 1),
                 (self.hi_rows_span, self.next_hi_rows_span, _HI, R)]
        ends, ends_n = {}, {}
        for span, _, offset, per in ports:
            width = max(len(span.hi), len(ends[offset, per]) if (offset, per) in ends else 0)
            ends[offset, per] = Signal(width, name=f"end_{offset}_x{per}")
            ends_n[offset, per] = Signal(width, name=f"end_{offset}_x{per}_n")
        # The spans next cycle: in a header's cycle [0, count * per); in a first argument's,
        # [field, field + count * per); otherwise the latched span. One adder per end, shared
        # by every comparison (on the iCE40 a carry-save compare per slot costs some 400
        # logic cells more than the UP5K has).
        for (offset, per), end in ends.items():
            field = self.word[offset:offset + FIELD_BITS]
            m.d.comb += ends_n[offset, per].eq(Mux(
                self.latch_header, times_const(word_header.count, per),
                Mux(self.latch_arg0, field + times_const(count, per), end)))
            with m.If(take):
                m.d.sync += end.eq(ends_n[offset, per])
        for span, next_span, offset, per in ports:
            m.d.comb += [span.lo.eq(arg0[offset:offset + FIELD_BITS]),
                         span.hi.eq(ends[offset, per])]
            if next_span is not None:
                m.d.comb += [next_span.lo.eq(arg0_n[offset:offset + FIELD_BITS]),
                             next_span.hi.eq(ends_n[offset, per])]

        # ---- Checks (on the next command), each a list of conditions that must all hold -----
        hdr_n = Header(header_n)
        count_n, flags_n = hdr_n.count, hdr_n.flags.as_value()
        args_n = [arg0_n, arg1_n]
        known, flags_ok, fields_ok, length_ok, aligned, in_range = (Signal(name=n) for n in (
            "known", "flags_ok", "fields_ok", "length_ok", "aligned", "in_range"))
        with m.Switch(hdr_n.opcode):
            for op, info in OPCODES.items():
                fields, length, alignment, ranges = [], [count_n != 0], [], []
                if info.counts is None:
                    fields, length = [count_n == 0], []
                elif info.counts == "lanes":
                    length.append(count_n <= cfg.lanes)
                for index, layout in enumerate(info.args):
                    view = layout(args_n[index])
                    for name, field in layout:
                        if name == "reserved":
                            fields.append(view[name] == 0)
                        rule = _field_rule(info, name, cfg)
                        if rule is None:
                            continue
                        limit, per, align, flag = rule
                        if align > 1:
                            alignment.append(view[name][:(align - 1).bit_length()] == 0)
                        in_memory = ends_n[field.offset, per] <= limit
                        if flag is not None:
                            in_memory = ~(flags_n & flag.value).any() | in_memory
                        ranges.append(in_memory)
                with m.Case(op):
                    m.d.comb += [
                        known.eq(1),
                        # (A Python int mask: `~C(...)` here makes Yosys 0.70's abc9 fail an
                        # assertion on the ECP5 baseline build.)
                        flags_ok.eq((flags_n & (((1 << len(flags_n)) - 1) & ~info.flags.value))
                                    == 0),
                        fields_ok.eq(Cat(*fields, C(1)).all()),
                        length_ok.eq(Cat(*length, C(1)).all()),
                        aligned.eq(Cat(*alignment, C(1)).all()),
                        in_range.eq(Cat(*ranges, C(1)).all()),
                    ]
        error_n = Signal(Error, name="error_n")
        with m.If(~known):
            m.d.comb += error_n.eq(Error.BAD_OPCODE)
        with m.Elif(~flags_ok | ~fields_ok):
            m.d.comb += error_n.eq(Error.BAD_FIELD)
        with m.Elif(~length_ok):
            m.d.comb += error_n.eq(Error.BAD_LENGTH)
        with m.Elif(~aligned):
            m.d.comb += error_n.eq(Error.MISALIGNED)
        with m.Elif(~in_range):
            m.d.comb += error_n.eq(Error.BAD_ADDRESS)
        with m.Else():
            m.d.comb += error_n.eq(Error.OK)

        # ---- What the command announces ----------------------------------------------------
        # (From the latched header: no dispatch decision waits for these, so they take no
        # flip-flops of their own.)
        with m.Switch(header.opcode):
            for op, info in OPCODES.items():
                with m.Case(op):
                    m.d.comb += [self.data_words.eq(words_of(info.response, count, cfg)),
                                 self.payload.eq(words_of(info.payload, count, cfg))]
        barrier_n = Cat(hdr_n.opcode == op.value for op in BARRIERS).any()
        m.d.comb += [self.next_error.eq(error_n), self.next_barrier.eq(barrier_n),
                     self.next_header.eq(header_n)]
        with m.If(take):
            m.d.sync += [self.error.eq(error_n), self.barrier.eq(barrier_n)]
        ok = self.error == Error.OK
        m.d.comb += [
            self.status.opcode.eq(header.opcode), self.status.error.eq(self.error),
            self.status.count.eq(Mux(ok, self.data_words, 0)),
        ]
        return m
