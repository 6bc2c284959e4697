"""The macro's contract: instruction set, parameters, counters and status words.

This module is the single definition of every fact that the gateware (``hw``), the host software
(``sw``) and the testbenches (``tb``) share. Nothing else writes an opcode number, a field
position, a counter index or a parameter limit.

Command stream
==============

The macro has one input stream and one output stream, both :data:`STREAM_BITS` (32) bits wide.
Multi-byte values are little-endian: byte ``i`` of a word sits in bits ``[8*i+7 : 8*i]``.

Every command is a *header* word, then :func:`arg_words` argument words, then
:func:`payload_words` payload words::

    header   [7:0] opcode   [15:8] flags   [31:16] count

Every command produces exactly one *status* word on the output stream, as soon as its header and
arguments have been checked, followed (when the status is OK) by :func:`response_words` data words::

    status   [7:0] opcode (echoed)   [15:8] error code   [31:16] number of data words that follow

A command whose check fails does nothing, reports its :class:`Error` code with zero data words, and
still consumes the payload its header announces, so the stream stays aligned and the next command
runs. An unknown opcode announces no payload: the next word is taken as a header.

Memories and units
==================

* Weight SRAM: ``depth`` *rows*. A row is ``rows_per_cycle`` (R) sub-array rows that are read in
  the same cycle, each ``lanes`` (L) int8 weights wide: lane ``l`` of sub-array ``r`` of row ``j``
  is the weight ``W[l, R*j + r]``. Payload byte order of a row: sub-array-major, then lane.
* Activation buffer: ``act_depth`` int8 elements, byte addressed.
* Channel memory: ``bias_depth`` entries, one per output channel: an int32 *bias*, a Q31
  *multiplier* ``M0`` (31-bit unsigned) and a *shift* (signed 6-bit), the per-channel
  requantization of TFLite's int8 kernels.
* Accumulators: L lanes of 32-bit two's complement; additions wrap.

Commands (``count`` is the header field)
========================================

=================  =============================  ==========================================
opcode             arguments                      effect
=================  =============================  ==========================================
``WRITE_WEIGHTS``  row                            write ``count`` rows starting at ``row``;
                                                  payload ``count * R * L / 4`` words
``LOAD_ACT``       addr (bytes, multiple of 4)    write ``count`` activations at ``addr``;
                                                  payload ``ceil(count / 4)`` words
``LOAD_BIAS``      addr (entries)                 write ``count`` int32 biases; payload
                                                  ``count`` words
``LOAD_QUANT``     addr (entries)                 write ``count`` channels' multiplier and
                                                  shift; payload ``2 * count`` words, per
                                                  channel a :data:`ChannelMultiplier` then a
                                                  :data:`ChannelShift` word
``MATVEC``         row [15:0], act [31:16]        for ``j < count``, every lane ``l``:
                   (act a multiple of R)          ``acc[l] += sum_r W[row+j][r][l] *
                                                  A[act + R*j + r]``; without ``ACCUMULATE``
                                                  the accumulators are cleared first
``EMIT_RAW``       bias [15:0]                    emit ``acc[l] (+ bias[bias+l])`` as int32
                                                  for ``l < count``; ``count`` data words
``EMIT_INT8``      bias [15:0];                   emit requantized int8 for ``l < count``,
                   zero_point [7:0],              four per word; ``ceil(count/4)`` words;
                   act_min [15:8], act_max [23:16]  lane ``l`` uses channel ``bias + l``
``WRITEBACK``      bias [15:0], act [31:16];      write requantized int8 of lane ``l`` to
                   zero_point, act_min, act_max   ``A[act + l]`` for ``l < count``
``READ_COUNTERS``  (none)                         emit the :class:`Counter` values, snapshot
                                                  at decode; ``CLEAR`` zeroes them after
``STATUS``         (none)                         emit the :class:`StatusWord` words; clears
                                                  the sticky last-error code
=================  =============================  ==========================================

Requantization of lane ``l``, TFLite's int8 rule (:mod:`pim_macro.sw.models.requant` gives both
roundings exactly, says where they come from and which LiteRT op uses which), with
``v = wrap32(acc[l] + bias[c])`` (the bias only with ``BIAS``), ``M0 = multiplier[c]``,
``shift = shift[c]`` of channel ``c = bias + l`` and the command's ``zero_point``, ``act_min``,
``act_max`` (signed bytes)::

    y = MultiplyByQuantizedMultiplier(v, M0, shift)     # single rounding; DOUBLE_ROUND: gemmlowp's
    y = min(max(y + zero_point, act_min), act_max)

Single rounding is ``(v * M0 + ((1 << (total - 1)) - (v < 0) if total else 0)) >> total`` with
``total = 31 - shift``, exact and arithmetic: one rounding, ties away from zero (LiteRT's
``FULLY_CONNECTED``); double rounding is
``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(wrap32(v << max(shift, 0)), M0),
max(-shift, 0))``.

Fused ReLU is ``act_min = zero_point``, ReLU6 also ``act_max``. ``act_min > act_max`` is legal and
gives ``act_max`` (TFLite's order: max, then min).

Checks, in this order; the first that fails gives the error code: opcode known
(``BAD_OPCODE``); flags allowed for the opcode, reserved argument bits zero and ``count == 0``
for commands without a count (``BAD_FIELD``); ``count`` in ``1 ..`` its limit (``BAD_LENGTH``:
zero, or more than ``lanes`` for the emitting commands); alignment (``MISALIGNED``); every
addressed element inside its memory (``BAD_ADDRESS``; a requantizing command always reads the
channels ``bias .. bias + count - 1``, with or without ``BIAS``). Payload words are not checked
(the status has left by then): bits a payload layout marks ``reserved`` are ignored.
"""

import enum as py_enum
from dataclasses import dataclass

from amaranth.hdl import signed
from amaranth.lib import enum, data


__all__ = [
    "STREAM_BITS", "WORD_BYTES", "ISA_VERSION", "ACC_BITS", "REQUANT_MULT_BITS",
    "REQUANT_SHIFT_BITS", "REQUANT_SHIFT_MIN", "REQUANT_SHIFT_MAX", "ARCHES",
    "INT8_PER_WORD", "ERROR_COUNT_BITS", "ERROR_COUNT_MAX", "FIELD_BITS", "COUNT_BITS",
    "span_end_bits", "ROWS_PER_CYCLE", "LANES_MAX",
    "Opcode", "Flag", "Error", "Counter", "StatusWord",
    "Header", "Status", "RowArg", "AddrArg", "MatvecArg", "BiasArg", "WritebackArg", "QuantArg",
    "ChannelMultiplier", "ChannelShift",
    "ErrorsWord", "ShapeWord", "pack", "unpack",
    "Words", "OpcodeInfo", "OPCODES", "COUNTLESS", "LOADS", "LANE_COUNTED", "BARRIERS",
    "REQUANTIZING", "arg_words", "allowed_flags", "payload_words", "response_words",
    "status_words", "MacroConfig",
]


#: Width of the input and output streams, in bits.
STREAM_BITS = 32
#: Bytes in one stream word, as a byte-wide link (the UART bridge) carries it.
WORD_BYTES = STREAM_BITS // 8
#: Version of this instruction set, reported by ``STATUS``.
ISA_VERSION = 5                 # 2: BUS_BEATS counter and BUS_BITS status word (baseline)
                                # 3: REQUANTIZERS status word
                                # 4: TFLite requantization: LOAD_QUANT, per-channel Q31
                                #    multiplier and shift, zero point and clamp, both
                                #    roundings (DOUBLE_ROUND replaces RELU)
                                # 5: WEIGHT_WORDS counter (the energy model's SRAM writes and
                                #    off-chip weight bytes)
#: Accumulator width; sums wrap modulo ``2 ** ACC_BITS``.
ACC_BITS = 32
#: A channel's requantization multiplier ``M0`` is an unsigned integer of this many bits: Q31,
#: ``[2**30, 2**31)`` for TFLite's scales (which require ``M0 >= 0``), or 0.
REQUANT_MULT_BITS = 31
#: A channel's shift is a signed integer of this many bits (positive: left), from
#: :data:`REQUANT_SHIFT_MIN` to :data:`REQUANT_SHIFT_MAX`; TFLite's lie in -31 .. 30.
REQUANT_SHIFT_BITS = 6
REQUANT_SHIFT_MIN = -(1 << (REQUANT_SHIFT_BITS - 1))
REQUANT_SHIFT_MAX = (1 << (REQUANT_SHIFT_BITS - 1)) - 1
#: Architectures a macro can be built as (``pim_macro.hw.make_macro(arch=...)``): ``"pim"`` wires
#: every SRAM column to its MAC lane; ``"baseline"`` keeps the same SRAM and MACs apart, joined by a
#: bus of ``bus_bits``.
ARCHES = ("pim", "baseline")


class Opcode(enum.Enum, shape=8):
    """Command opcodes (header bits ``[7:0]``). Zero is deliberately not an opcode, so that a
    stream of zero words is rejected rather than obeyed."""
    WRITE_WEIGHTS = 0x01
    LOAD_ACT      = 0x02
    LOAD_BIAS     = 0x03
    MATVEC        = 0x04
    EMIT_RAW      = 0x05
    EMIT_INT8     = 0x06
    WRITEBACK     = 0x07
    READ_COUNTERS = 0x08
    STATUS        = 0x09
    LOAD_QUANT    = 0x0A


class Flag(enum.Flag, shape=8, boundary=py_enum.KEEP):
    """Header flag bits (``[15:8]``); each opcode accepts only those in :func:`allowed_flags`.

    ``Flag(byte)`` keeps bits that name no flag (``boundary=KEEP``), so a header with a stray bit
    decodes, and the check that rejects it (``BAD_FIELD``) can see it."""
    ACCUMULATE = 0x01   # MATVEC: add to the accumulators instead of clearing them first
    BIAS       = 0x02   # EMIT_*/WRITEBACK: add bias[addr + lane] before anything else
    DOUBLE_ROUND = 0x04  # EMIT_INT8/WRITEBACK: gemmlowp's double rounding, not single
                         # (before ISA version 4 this bit was RELU; QuantArg's clamp replaces it)
    CLEAR      = 0x08   # READ_COUNTERS: zero the counters after the snapshot


class Error(enum.Enum, shape=8):
    """Error codes reported in the status word (``[15:8]``)."""
    OK          = 0
    BAD_OPCODE  = 1
    BAD_FIELD   = 2
    BAD_LENGTH  = 3
    MISALIGNED  = 4
    BAD_ADDRESS = 5


class Counter(enum.Enum):
    """Performance counters, in the order ``READ_COUNTERS`` emits them. Each is 32 bits and wraps.

    ``CYCLES``      clock cycles.
    ``MAC_ACTIVE``  cycles in which the MAC lanes multiplied a weight row.
    ``ROW_READS``   weight rows read from the SRAM (each ``rows_per_cycle`` sub-array rows).
    ``BEATS_IN``    input stream transfers.
    ``BEATS_OUT``   output stream transfers.
    ``STALL_IN``    cycles the macro was ready for input that did not come.
    ``STALL_OUT``   cycles the macro offered output that was not taken.
    ``BUS_BEATS``   weight words that crossed the memory-to-ALU bus (baseline; 0 for PIM).
    ``WEIGHT_WORDS`` 32-bit stream words written into the weight SRAM (``WRITE_WEIGHTS``
                    payload words of commands that passed their checks): the SRAM writes, and
                    the weight bytes fetched from off-chip (:mod:`pim_macro.sw.models.energy`).
    """
    CYCLES     = 0
    MAC_ACTIVE = 1
    ROW_READS  = 2
    BEATS_IN   = 3
    BEATS_OUT  = 4
    STALL_IN   = 5
    STALL_OUT  = 6
    BUS_BEATS  = 7
    WEIGHT_WORDS = 8


class StatusWord(enum.Enum):
    """Words emitted by ``STATUS``, in order.

    ``ERRORS``      ``[7:0]`` last error code since the previous ``STATUS``, ``[15:8]``
                    :data:`ISA_VERSION`, ``[31:16]`` number of failed commands (saturating).
    ``SHAPE``       ``[15:0]`` lanes, ``[23:16]`` rows_per_cycle, ``[31:24]`` architecture index
                    in :data:`ARCHES`.
    ``DEPTH``       weight rows.
    ``ACT_DEPTH``   activation buffer bytes.
    ``BIAS_DEPTH``  bias words.
    ``BUS_BITS``    width of the SRAM-to-MAC bus (baseline); 0 for PIM, which has none.
    ``REQUANTIZERS`` int8 lanes the output engine requantizes per cycle.
    """
    ERRORS     = 0
    SHAPE      = 1
    DEPTH      = 2
    ACT_DEPTH  = 3
    BIAS_DEPTH = 4
    BUS_BITS   = 5
    REQUANTIZERS = 6


#: Int8 values packed in one stream word (little-endian: value ``i`` in bits ``[8*i+7 : 8*i]``).
INT8_PER_WORD = STREAM_BITS // 8
#: Width of the failed-command count in the ``ERRORS`` status word; it saturates at
#: :data:`ERROR_COUNT_MAX` instead of wrapping.
ERROR_COUNT_BITS = 16
ERROR_COUNT_MAX = (1 << ERROR_COUNT_BITS) - 1
#: Width of every address field (a row, a bias word, an activation byte: one 16-bit half of an
#: argument word) and of a header's ``count``.
FIELD_BITS = 16
COUNT_BITS = 16
#: The most MAC lanes a macro can have (:attr:`MacroConfig.lanes`).
LANES_MAX = 256
#: The legal values of :attr:`MacroConfig.rows_per_cycle` (R).
ROWS_PER_CYCLE = (1, 2, 4)


def span_end_bits(per=1):
    """Bits that hold the end ``field + count * per`` of any span a command can name: the largest
    field plus the largest count times ``per`` (the elements per ``count``: R for a MATVEC's
    activation bytes, else 1). A command is checked against its memory's size only after this
    sum, so it must not wrap for any header and argument word, legal or not (a narrower sum let
    ``act + count * R`` wrap at R = 4 and pass the range check)."""
    field_max, count_max = (1 << FIELD_BITS) - 1, (1 << COUNT_BITS) - 1
    return (field_max + count_max * per).bit_length()


# ---- Word layouts: every field position of every word, packed and unpacked through these ----

#: Every command's first word. ``opcode`` is a plain byte: an unknown opcode must be expressible.
Header = data.StructLayout({"opcode": 8, "flags": Flag, "count": COUNT_BITS})
#: Every command's answer. ``opcode`` echoes the header's byte; ``count`` is the number of data
#: words that follow (0 unless ``error`` is ``OK``).
Status = data.StructLayout({"opcode": 8, "error": Error, "count": COUNT_BITS})

#: Argument of ``WRITE_WEIGHTS``: the first row written.
RowArg = data.StructLayout({"row": FIELD_BITS, "reserved": 16})
#: Argument of ``LOAD_ACT`` (a byte address, a multiple of 4), ``LOAD_BIAS`` and ``LOAD_QUANT``
#: (a channel entry).
AddrArg = data.StructLayout({"addr": FIELD_BITS, "reserved": 16})
#: Argument of ``MATVEC``: first weight row, first activation byte (a multiple of R).
MatvecArg = data.StructLayout({"row": FIELD_BITS, "act": FIELD_BITS})
#: First argument of ``EMIT_RAW`` and ``EMIT_INT8``: the first channel entry (its bias added
#: with ``BIAS``; ``EMIT_INT8`` always requantizes with its multiplier and shift).
BiasArg = data.StructLayout({"bias": FIELD_BITS, "reserved": 16})
#: First argument of ``WRITEBACK``: the first channel entry, the first activation byte written.
WritebackArg = data.StructLayout({"bias": FIELD_BITS, "act": FIELD_BITS})
#: Second argument of ``EMIT_INT8`` and ``WRITEBACK``: the output zero point and the clamp, signed
#: bytes (TFLite's ``output_offset``, ``output_activation_min``/``max``).
QuantArg = data.StructLayout({"zero_point": signed(8), "act_min": signed(8),
                              "act_max": signed(8), "reserved": 8})
#: ``LOAD_QUANT`` payload, first word of a channel: its Q31 multiplier (bit 31 ignored).
ChannelMultiplier = data.StructLayout({"multiplier": REQUANT_MULT_BITS, "reserved": 1})
#: ``LOAD_QUANT`` payload, second word of a channel: its shift (bits 31:6 ignored).
ChannelShift = data.StructLayout({"shift": signed(REQUANT_SHIFT_BITS), "reserved": 26})

#: ``STATUS`` word ``ERRORS``.
ErrorsWord = data.StructLayout({"last_error": Error, "isa_version": 8,
                                "error_count": ERROR_COUNT_BITS})
#: ``STATUS`` word ``SHAPE``; ``arch`` is the index of the architecture in :data:`ARCHES`.
ShapeWord = data.StructLayout({"lanes": 16, "rows_per_cycle": 8, "arch": 8})


def pack(layout, **fields):
    """The int whose ``layout`` fields hold ``fields`` (ints or enum members; others 0). A
    signed field takes a signed value and stores its two's complement.

    Raises ``ValueError`` naming the field when a value does not fit it: Amaranth's
    ``layout.const`` would truncate silently."""
    values = {}
    for name, value in fields.items():
        width = layout[name].width
        value = value.value if isinstance(value, py_enum.Enum) else int(value)
        shape = layout[name].shape
        if getattr(shape, "signed", False):
            if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
                raise ValueError(f"{name} must fit in {width} signed bits, not {value}")
            value &= (1 << width) - 1
        elif not 0 <= value < (1 << width):
            raise ValueError(f"{name} must fit in {width} unsigned bits, not {value}")
        values[name] = value
    word = 0
    for name, value in values.items():
        word |= value << layout[name].offset
    return word


def unpack(layout, word):
    """The fields of the int ``word`` as a ``data.Const`` of ``layout`` (``.opcode``, ``.count``,
    ...; enum fields come back as members). Raises ``ValueError`` for a value an enum field has no
    member for (an unknown :class:`Error` code), or when ``word`` is negative or wider than the
    layout: a word off a stream never is, so such a value is a caller's error, not bits to drop."""
    word = int(word)
    if not 0 <= word < (1 << layout.size):
        raise ValueError(f"a {layout.size}-bit word must be 0 .. {(1 << layout.size) - 1}, "
                         f"not {word}")
    return layout.from_bits(word)


# ---- Per-opcode table: what every part of the project reads about a command ---------------

@dataclass(frozen=True)
class Words:
    """A number of stream words as a rule on a command's ``count``: ``fixed`` words, or
    ``ceil(count * per_item / packed)`` where ``per_item`` is an int or the name of a
    :class:`MacroConfig` property (``"row_words"``). ``Words()`` is none."""
    fixed: int = 0
    per_item: object = 0
    packed: int = 1

    def per(self, config):
        """Words per counted item (an int) for ``config``."""
        return getattr(config, self.per_item) if isinstance(self.per_item, str) else self.per_item

    def __call__(self, count, config):
        if self.fixed:
            return self.fixed
        return -(-count * self.per(config) // self.packed)


@dataclass(frozen=True)
class OpcodeInfo:
    """One opcode's row of :data:`OPCODES`.

    ``args``      layouts of the argument words, in order.
    ``flags``     the :class:`Flag` bits it accepts; any other set bit is ``BAD_FIELD``.
    ``counts``    what ``count`` counts (``"rows"``, ``"bytes"``, ``"words"``, ``"lanes"``, at
                  most ``lanes``), or ``None``: ``count`` must be 0.
    ``payload``   payload words after the arguments (consumed even when a check fails).
    ``response``  data words after an OK status.
    ``barrier``   it waits until every engine is idle and answers by itself (its counters and
                  status words are then exact).
    """
    args: tuple
    flags: Flag
    counts: object
    payload: Words = Words()
    response: Words = Words()
    barrier: bool = False


#: The instruction set, one row per opcode.
OPCODES = {
    Opcode.WRITE_WEIGHTS: OpcodeInfo((RowArg,), Flag(0), "rows",
                                     payload=Words(per_item="row_words")),
    Opcode.LOAD_ACT:      OpcodeInfo((AddrArg,), Flag(0), "bytes",
                                     payload=Words(per_item=1, packed=INT8_PER_WORD)),
    Opcode.LOAD_BIAS:     OpcodeInfo((AddrArg,), Flag(0), "words", payload=Words(per_item=1)),
    Opcode.LOAD_QUANT:    OpcodeInfo((AddrArg,), Flag(0), "words", payload=Words(per_item=2)),
    Opcode.MATVEC:        OpcodeInfo((MatvecArg,), Flag.ACCUMULATE, "rows"),
    Opcode.EMIT_RAW:      OpcodeInfo((BiasArg,), Flag.BIAS, "lanes", response=Words(per_item=1)),
    Opcode.EMIT_INT8:     OpcodeInfo((BiasArg, QuantArg), Flag.BIAS | Flag.DOUBLE_ROUND, "lanes",
                                     response=Words(per_item=1, packed=INT8_PER_WORD)),
    Opcode.WRITEBACK:     OpcodeInfo((WritebackArg, QuantArg), Flag.BIAS | Flag.DOUBLE_ROUND,
                                     "lanes"),
    Opcode.READ_COUNTERS: OpcodeInfo((), Flag.CLEAR, None, response=Words(fixed=len(Counter)),
                                     barrier=True),
    Opcode.STATUS:        OpcodeInfo((), Flag(0), None, response=Words(fixed=len(StatusWord)),
                                     barrier=True),
}

#: Opcodes whose ``count`` field must be zero.
COUNTLESS = frozenset(op for op, info in OPCODES.items() if info.counts is None)
#: Opcodes that carry a payload after their arguments.
LOADS = frozenset(op for op, info in OPCODES.items() if info.payload != Words())
#: Opcodes whose ``count`` is a number of lanes (at most ``lanes``).
LANE_COUNTED = frozenset(op for op, info in OPCODES.items() if info.counts == "lanes")
#: Opcodes that wait for everything to be idle and answer by themselves.
BARRIERS = frozenset(op for op, info in OPCODES.items() if info.barrier)
#: Opcodes with a :data:`QuantArg` (requantizing to int8).
REQUANTIZING = frozenset(op for op, info in OPCODES.items() if QuantArg in info.args)


def arg_words(opcode):
    """Number of argument words after the header of ``opcode``."""
    return len(OPCODES[Opcode(opcode)].args)


def allowed_flags(opcode):
    """The :class:`Flag` bits ``opcode`` accepts; any other set bit is ``BAD_FIELD``."""
    return OPCODES[Opcode(opcode)].flags


def payload_words(opcode, count, config):
    """Payload words that follow the arguments of ``opcode`` with header ``count``.

    This is what the macro consumes whether or not the command passes its checks."""
    return OPCODES[Opcode(opcode)].payload(count, config)


def response_words(opcode, count, config):
    """Data words that follow an OK status of ``opcode`` with header ``count``."""
    return OPCODES[Opcode(opcode)].response(count, config)


def status_words(config, arch, *, last_error=Error.OK, error_count=0):
    """The data words of a ``STATUS`` answer, in :class:`StatusWord` order (ints), for a macro of
    ``config`` built as ``arch``. This is the one place the words are assembled: the gateware
    takes its constant words from here, the golden model all of them, the board link compares a
    board's answer with them."""
    words = {
        StatusWord.ERRORS: pack(ErrorsWord, last_error=last_error, isa_version=ISA_VERSION,
                                error_count=error_count),
        StatusWord.SHAPE: pack(ShapeWord, lanes=config.lanes,
                               rows_per_cycle=config.rows_per_cycle, arch=ARCHES.index(arch)),
        StatusWord.DEPTH: config.depth,
        StatusWord.ACT_DEPTH: config.act_depth,
        StatusWord.BIAS_DEPTH: config.bias_depth,
        # The PIM macro has no bus between its SRAM and its MACs: it reports none.
        StatusWord.BUS_BITS: config.bus_bits if arch == "baseline" else 0,
        StatusWord.REQUANTIZERS: config.requantizers,
    }
    return [words[word] for word in StatusWord]


@dataclass(frozen=True)
class MacroConfig:
    """Elaboration parameters of a macro. Keyword-only; checked on construction.

    Parameters
    ----------
    lanes : int
        MAC lanes, one per SRAM column: outputs computed in parallel. A multiple of 4 (a row of
        one sub-array packs into whole stream words) from 4 to 256.
    rows_per_cycle : int
        R, sub-arrays read in the same cycle; their products are summed per lane by an adder tree.
        1, 2 or 4.
    depth : int
        Rows per sub-array (weight rows addressable), 1 to 65536.
    act_depth : int
        Activation buffer size in int8 elements, a multiple of 4 from 4 to 65536.
    bias_depth : int
        Channel memory entries (each an int32 bias, a multiplier and a shift), 1 to 65536.
    bus_bits : int
        Width of the bus between the weight SRAM and the MAC lanes in the ``baseline``
        architecture: 8, 16, 32 or 64, dividing the row width ``8 * lanes * rows_per_cycle``.
        The PIM architecture has no such bus and ignores it.
    requantizers : int
        Requantizers in the output engine, 1, 2 or 4: the int8 lanes ``EMIT_INT8`` and
        ``WRITEBACK`` produce per cycle (``EMIT_RAW`` always emits one lane per cycle). Each
        costs a 32x31 multiplier and a channel-memory bank; small FPGAs take one.
    """
    lanes: int = 8
    rows_per_cycle: int = 1
    depth: int = 256
    act_depth: int = 1024
    bias_depth: int = 256
    bus_bits: int = 32
    requantizers: int = 4

    def __init__(self, *, lanes=8, rows_per_cycle=1, depth=256, act_depth=1024, bias_depth=256,
                 bus_bits=32, requantizers=4):
        def check(name, value, ok, what):
            if not isinstance(value, int) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"{name} must be {what}, not {value!r}")
            object.__setattr__(self, name, value)
        check("lanes", lanes, lambda v: 4 <= v <= LANES_MAX and v % 4 == 0,
              f"a multiple of 4 from 4 to {LANES_MAX}")
        check("rows_per_cycle", rows_per_cycle, lambda v: v in ROWS_PER_CYCLE,
              ", ".join(map(str, ROWS_PER_CYCLE[:-1])) + f" or {ROWS_PER_CYCLE[-1]}")
        # A memory holds at most what a 16-bit address field names.
        most = 1 << FIELD_BITS
        check("depth", depth, lambda v: 1 <= v <= most, f"an integer from 1 to {most}")
        check("act_depth", act_depth, lambda v: 4 <= v <= most and v % 4 == 0,
              f"a multiple of 4 from 4 to {most}")
        check("bias_depth", bias_depth, lambda v: 1 <= v <= most, f"an integer from 1 to {most}")
        check("bus_bits", bus_bits, lambda v: v in (8, 16, 32, 64), "8, 16, 32 or 64")
        check("requantizers", requantizers, lambda v: v in (1, 2, 4), "1, 2 or 4")
        if (8 * lanes * rows_per_cycle) % bus_bits:
            raise ValueError(f"bus_bits must divide the row width 8 * lanes * rows_per_cycle = "
                             f"{8 * lanes * rows_per_cycle}, not {bus_bits}")

    @property
    def row_bytes(self):
        """Bytes (int8 weights) in one row: ``rows_per_cycle * lanes``."""
        return self.rows_per_cycle * self.lanes

    @property
    def row_words(self):
        """Stream words that carry one row."""
        return self.row_bytes // 4

    @property
    def weight_bytes(self):
        """Weight capacity of the SRAM in bytes."""
        return self.depth * self.row_bytes

    @property
    def macs_per_cycle(self):
        return self.lanes * self.rows_per_cycle

    @property
    def beats_per_row(self):
        """Bus beats that carry one row to the baseline's MAC lanes."""
        return 8 * self.row_bytes // self.bus_bits

    def as_dict(self):
        return {"lanes": self.lanes, "rows_per_cycle": self.rows_per_cycle, "depth": self.depth,
                "act_depth": self.act_depth, "bias_depth": self.bias_depth,
                "bus_bits": self.bus_bits, "requantizers": self.requantizers}

    def tag(self, arch="pim"):
        """A short name for build directories: ``l8r1d256a1024b256`` (plus ``q1`` or ``q2``
        for fewer than 4 requantizers, and ``w32``, the bus width, for the baseline: the PIM
        macro does not depend on it)."""
        tag = (f"l{self.lanes}r{self.rows_per_cycle}d{self.depth}"
               f"a{self.act_depth}b{self.bias_depth}")
        tag += f"q{self.requantizers}" if self.requantizers != 4 else ""
        return tag + (f"w{self.bus_bits}" if arch == "baseline" else "")

    @classmethod
    def from_tag(cls, tag):
        """The configuration a :meth:`tag` names, e.g. ``l12r4d300a512b64q2w16`` (``q`` and
        ``w`` optional: 4 requantizers, a 32-bit bus). Raises ``ValueError`` (one line) for a
        string of another form or a configuration out of its limits."""
        import re
        # [0-9], not \d: \d matches every Unicode digit (int() reads Arabic-Indic ones too).
        match = re.fullmatch(r"l([0-9]+)r([0-9]+)d([0-9]+)a([0-9]+)b([0-9]+)"
                             r"(?:q([0-9]+))?(?:w([0-9]+))?", tag)
        # A message shows at most 40 characters of the tag (a 5000-digit one is no message).
        shown = tag if len(tag) <= 40 else tag[:37] + "..."
        if match is None:
            raise ValueError(f"{shown!r} is not a configuration tag like l8r1d256a1024b256 "
                             f"(lanes, R, depth, act_depth, bias_depth; then optionally "
                             f"q<requantizers>, w<bus_bits>)")
        lanes, r, depth, act, bias, q, w = match.groups()
        try:
            return cls(lanes=int(lanes), rows_per_cycle=int(r), depth=int(depth),
                       act_depth=int(act), bias_depth=int(bias),
                       requantizers=int(q) if q else 4, bus_bits=int(w) if w else 32)
        except ValueError as exc:
            # int() of thousands of digits, or MacroConfig echoing such a value: cut short.
            message = str(exc) if len(str(exc)) <= 120 else str(exc)[:117] + "..."
            raise ValueError(f"{shown}: {message}") from None
