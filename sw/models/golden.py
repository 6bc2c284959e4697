"""Golden model of the macro: a naive, bit-exact, transaction-level interpreter of the command
stream defined in :mod:`pim_macro.hw.isa`.

It is the reference the gateware and the host software are compared against, so it is written
for clarity, not speed: one command at a time, in plain Python, with numpy only where the work is
bulk arithmetic (the MATVEC inner products, unpacking payloads).

Every fact about the instruction set (opcodes, flags, error codes, counter and status word order,
header and status field positions, payload lengths) comes from :mod:`pim_macro.hw.isa`; byte packing comes
from :mod:`pim_macro.sw.runtime.asm`.
"""

import numpy as np

from pim_macro.hw.isa import (
    ACC_BITS, ARCHES, ISA_VERSION, LANE_COUNTED, COUNTLESS, REQUANT_MULT_BITS, REQUANT_SHIFT_MAX,
    STREAM_BITS, Counter, Error, Flag, Header, MacroConfig, Opcode, QuantArg, Status, StatusWord,
    allowed_flags, arg_words, payload_words, response_words,
)
from pim_macro.sw.runtime.asm import pack_bytes


__all__ = ["GoldenMacro", "run_golden", "requantize", "wrap32"]


_WORD_MASK = (1 << STREAM_BITS) - 1
_ACC_MASK = (1 << ACC_BITS) - 1
#: ``error_count`` in the ``ERRORS`` status word is this wide and saturates.
_ERROR_COUNT_MAX = 0xFFFF

# Argument words that hold two 16-bit fields (MATVEC row/act, WRITEBACK bias/act) and the
# single-field argument words (row, addr, bias in [15:0], [31:16] reserved). hw.isa documents
# these positions in its command table but has no layout for them, so they are named once here.
_ARG_LO_BITS = 16
_ARG_LO_MASK = (1 << _ARG_LO_BITS) - 1


def _field(layout, name, word):
    """Field ``name`` of ``layout`` (an Amaranth StructLayout) extracted from the int ``word``."""
    f = layout[name]
    return (word >> f.offset) & ((1 << f.width) - 1)


def _put(layout, **fields):
    """The int whose ``layout`` fields hold ``fields``."""
    word = 0
    for name, value in fields.items():
        f = layout[name]
        assert 0 <= value < (1 << f.width), (name, value)
        word |= value << f.offset
    return word


def _lo(word):
    return word & _ARG_LO_MASK


def _hi(word):
    return word >> _ARG_LO_BITS


def wrap32(values):
    """Wrap integers (scalar or array, any integer dtype, exact) to signed ``ACC_BITS`` two's
    complement; returns an int64 array."""
    v = np.asarray(values, dtype=np.int64)
    return ((v + (1 << (ACC_BITS - 1))) & _ACC_MASK) - (1 << (ACC_BITS - 1))


def requantize(values, mult, shift, relu):
    """Requantize int32 lane values to int8, exactly as the ISA defines::

        y = (v * mult + (1 << (shift - 1) if shift > 0 else 0)) >> shift   # arithmetic shift
        y = min(max(y, -128), 127); y = max(y, 0) if relu

    ``values`` must already be wrapped to int32 (``wrap32(acc + bias)``), ``mult`` is an unsigned
    :data:`REQUANT_MULT_BITS`-bit integer and ``shift`` is ``0 ..`` :data:`REQUANT_SHIFT_MAX`;
    with those ranges ``v * mult + round`` fits in int64, so the int64 arithmetic is exact.
    Returns an ``np.int8`` array of the same shape as ``values``.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise ValueError(f"requantize takes integer values, not {v.dtype}")
    v = v.astype(np.int64)
    if v.size and (v.min() < -(1 << 31) or v.max() >= (1 << 31)):
        raise ValueError("requantize takes int32 values (wrap acc + bias first)")
    mult, shift = int(mult), int(shift)
    if not 0 <= mult < (1 << REQUANT_MULT_BITS):
        raise ValueError(f"mult must be 0 .. {(1 << REQUANT_MULT_BITS) - 1}, not {mult}")
    if not 0 <= shift <= REQUANT_SHIFT_MAX:
        raise ValueError(f"shift must be 0 .. {REQUANT_SHIFT_MAX}, not {shift}")
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    y = (v * mult + rounding) >> shift          # numpy >> on int64 is arithmetic (floor)
    y = np.clip(y, -128, 127)
    if relu:
        y = np.maximum(y, 0)
    return y.astype(np.int8)


class GoldenMacro:
    """Bit-exact reference model of one PIM macro, at the level of whole commands.

    What it models: the architectural state (weight SRAM ``weights`` int8 of shape
    ``(depth, rows_per_cycle, lanes)``, activation buffer ``act`` int8 ``(act_depth,)``, bias
    memory ``bias`` int32 ``(bias_depth,)``, accumulators ``acc`` int32 ``(lanes,)``, the sticky
    ``last_error`` and the saturating ``error_count``), every command's checks in the ISA order,
    payload skipping on errors, the exact output stream (status and data words), and the
    performance counters that do not depend on time (``MAC_ACTIVE``, ``ROW_READS``,
    ``BEATS_IN``, ``BEATS_OUT``, ``BUS_BEATS``, in ``counters``, a dict keyed by
    :class:`Counter`). Both architectures compute the same results; ``arch`` only changes
    ``BUS_BEATS`` and the ``STATUS`` words.

    What it does not model: time. There are no cycles, no back-pressure and no latency; the
    counters named in :attr:`UNTIMED` (``CYCLES``, ``STALL_IN``, ``STALL_OUT``) always read 0
    and comparisons with the gateware must skip them. ``MAC_ACTIVE`` is taken to be one per
    weight row a successful MATVEC multiplies, i.e. equal to ``ROW_READS``.

    :meth:`run` first splits the whole program into commands (framing depends only on the
    headers and the configuration) and raises ``ValueError`` if it ends inside a command, before
    executing anything; so a truncated program leaves the state untouched.
    """

    #: Counters that measure time, which this model reports as 0.
    UNTIMED = frozenset({Counter.CYCLES, Counter.STALL_IN, Counter.STALL_OUT})

    def __init__(self, config: MacroConfig, *, arch="pim"):
        if not isinstance(config, MacroConfig):
            raise TypeError(f"config must be a MacroConfig, not {config!r}")
        if arch not in ARCHES:
            raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
        self.config = config
        self.arch = arch
        c = config
        self.weights = np.zeros((c.depth, c.rows_per_cycle, c.lanes), dtype=np.int8)
        self.act = np.zeros(c.act_depth, dtype=np.int8)
        self.bias = np.zeros(c.bias_depth, dtype=np.int32)
        self.acc = np.zeros(c.lanes, dtype=np.int32)
        self.last_error = Error.OK
        self.error_count = 0
        self.counters = {counter: 0 for counter in Counter}

    # -- stream handling ----------------------------------------------------------------------

    def run(self, words):
        """Execute the program ``words`` (32-bit words, Python or numpy integers) and return the
        output stream words (Python ints): for each command its status word then its data words.
        State persists across calls."""
        program = []
        for i, w in enumerate(words):
            try:
                w = int(w)
            except TypeError:
                raise TypeError(f"word {i} is not an integer: {w!r}") from None
            if not 0 <= w <= _WORD_MASK:
                raise ValueError(f"word {i} = {w} does not fit in {STREAM_BITS} unsigned bits")
            program.append(w)
        commands = self.frame(program)
        out = []
        for command in commands:
            out.extend(self.step(*command))
        return out

    def frame(self, words):
        """Split ``words`` (ints) into ``(header, args, payload)`` tuples, the way the macro reads
        them; raise ``ValueError`` if the program ends inside a command."""
        commands, i, n = [], 0, len(words)
        while i < n:
            hdr = words[i]
            op_byte = _field(Header, "opcode", hdr)
            try:
                op = Opcode(op_byte)
            except ValueError:
                commands.append((hdr, [], []))      # unknown opcode: only the header
                i += 1
                continue
            start = i
            i += 1
            n_args = arg_words(op)
            if i + n_args > n:
                raise ValueError(
                    f"program ends inside {op.name} (header at word {start}): "
                    f"{n - i} of {n_args} argument words")
            args = words[i:i + n_args]
            i += n_args
            n_payload = payload_words(op, _field(Header, "count", hdr), self.config)
            if i + n_payload > n:
                raise ValueError(
                    f"program ends inside {op.name} (header at word {start}): "
                    f"{n - i} of {n_payload} payload words")
            commands.append((hdr, args, words[i:i + n_payload]))
            i += n_payload
        return commands

    def _count(self, counter, amount):
        self.counters[counter] = (self.counters[counter] + amount) & _WORD_MASK

    def step(self, hdr, args, payload):
        """Execute one command framed by :meth:`frame`; return its output words."""
        self._count(Counter.BEATS_IN, 1 + len(args) + len(payload))
        op_byte = _field(Header, "opcode", hdr)
        try:
            op = Opcode(op_byte)
        except ValueError:
            error, data = Error.BAD_OPCODE, []
        else:
            flags = Flag(_field(Header, "flags", hdr))
            count = _field(Header, "count", hdr)
            error = self.check(op, flags, count, args)
            data = [] if error != Error.OK else self._execute(op, flags, count, args, payload)
        if error != Error.OK:
            self.last_error = error
            self.error_count = min(self.error_count + 1, _ERROR_COUNT_MAX)
        else:
            assert len(data) == response_words(op, count, self.config)
        status = _put(Status, opcode=op_byte, error=error.value, count=len(data))
        out = [status, *data]
        self._count(Counter.BEATS_OUT, len(out))
        return out

    # -- checks -------------------------------------------------------------------------------

    def check(self, op, flags, count, args):
        """The :class:`Error` of a command with a known :class:`Opcode` ``op``, :class:`Flag`
        ``flags``, header ``count`` and argument words ``args`` (ints), per the ISA's order of
        checks; ``Error.OK`` if it may execute. The reference the gateware's decoder is tested
        against."""
        c = self.config
        arg0 = args[0] if args else 0
        quant = args[1] if op in (Opcode.EMIT_INT8, Opcode.WRITEBACK) else None

        # BAD_FIELD
        if flags.value & ~allowed_flags(op).value:
            return Error.BAD_FIELD
        if op in (Opcode.WRITE_WEIGHTS, Opcode.LOAD_ACT, Opcode.LOAD_BIAS, Opcode.EMIT_RAW,
                  Opcode.EMIT_INT8) and _hi(arg0) != 0:
            return Error.BAD_FIELD
        if quant is not None and (_field(QuantArg, "reserved", quant) != 0
                                  or _field(QuantArg, "shift", quant) > REQUANT_SHIFT_MAX):
            return Error.BAD_FIELD
        if op in COUNTLESS:
            return Error.BAD_FIELD if count != 0 else Error.OK

        # BAD_LENGTH
        if count == 0 or (op in LANE_COUNTED and count > c.lanes):
            return Error.BAD_LENGTH

        # MISALIGNED
        if op == Opcode.LOAD_ACT and arg0 % 4 != 0:
            return Error.MISALIGNED
        if op == Opcode.MATVEC and _hi(arg0) % c.rows_per_cycle != 0:
            return Error.MISALIGNED

        # BAD_ADDRESS
        bias_used = op in LANE_COUNTED and flags & Flag.BIAS
        if ((op == Opcode.WRITE_WEIGHTS and arg0 + count > c.depth)
                or (op == Opcode.LOAD_ACT and arg0 + count > c.act_depth)
                or (op == Opcode.LOAD_BIAS and arg0 + count > c.bias_depth)
                or (op == Opcode.MATVEC and (_lo(arg0) + count > c.depth
                    or _hi(arg0) + count * c.rows_per_cycle > c.act_depth))
                or (bias_used and _lo(arg0) + count > c.bias_depth)
                or (op == Opcode.WRITEBACK and _hi(arg0) + count > c.act_depth)):
            return Error.BAD_ADDRESS
        return Error.OK

    # -- execution ----------------------------------------------------------------------------

    def _lanes(self, flags, count, arg0):
        """``wrap32(acc[l] + bias[b + l])`` (bias only with ``Flag.BIAS``) for ``l < count``."""
        v = self.acc[:count].astype(np.int64)
        if flags & Flag.BIAS:
            b = _lo(arg0)
            v = v + self.bias[b:b + count]
        return wrap32(v)

    def _execute(self, op, flags, count, args, payload):
        """Perform a command that passed its checks; return its data words."""
        c = self.config
        arg0 = args[0] if args else 0

        if op == Opcode.WRITE_WEIGHTS:
            raw = np.asarray(payload, dtype="<u4").view(np.int8)
            self.weights[arg0:arg0 + count] = raw.reshape(count, c.rows_per_cycle, c.lanes)
            return []

        if op == Opcode.LOAD_ACT:
            raw = np.asarray(payload, dtype="<u4").view(np.int8)
            self.act[arg0:arg0 + count] = raw[:count]       # padding bytes are not written
            return []

        if op == Opcode.LOAD_BIAS:
            self.bias[arg0:arg0 + count] = np.asarray(payload, dtype="<u4").view(np.int32)
            return []

        if op == Opcode.MATVEC:
            row, a, r = _lo(arg0), _hi(arg0), c.rows_per_cycle
            w = self.weights[row:row + count].astype(np.int64)            # (count, R, lanes)
            x = self.act[a:a + count * r].astype(np.int64).reshape(count, r)
            # |sum| <= 65536 * 4 * 2**14 = 2**32: exact in int64.
            products = np.einsum("jrl,jr->l", w, x)
            start = self.acc.astype(np.int64) if flags & Flag.ACCUMULATE else 0
            self.acc = wrap32(start + products).astype(np.int32)
            self._count(Counter.ROW_READS, count)
            self._count(Counter.MAC_ACTIVE, count)
            if self.arch == "baseline":
                self._count(Counter.BUS_BEATS, count * c.beats_per_row)
            return []

        if op == Opcode.EMIT_RAW:
            return [int(v) & _WORD_MASK for v in self._lanes(flags, count, arg0)]

        if op in (Opcode.EMIT_INT8, Opcode.WRITEBACK):
            quant = args[1]
            y = requantize(self._lanes(flags, count, arg0), _field(QuantArg, "mult", quant),
                           _field(QuantArg, "shift", quant), bool(flags & Flag.RELU))
            if op == Opcode.EMIT_INT8:
                return pack_bytes(y)
            a = _hi(arg0)
            self.act[a:a + count] = y
            return []

        if op == Opcode.READ_COUNTERS:
            snapshot = [0 if counter in self.UNTIMED else self.counters[counter]
                        for counter in Counter]
            if flags & Flag.CLEAR:
                self.counters = {counter: 0 for counter in Counter}
            return snapshot

        if op == Opcode.STATUS:
            words = {
                StatusWord.ERRORS: (self.last_error.value | ISA_VERSION << 8
                                    | self.error_count << 16),
                StatusWord.SHAPE: (c.lanes | c.rows_per_cycle << 16
                                   | ARCHES.index(self.arch) << 24),
                StatusWord.DEPTH: c.depth,
                StatusWord.ACT_DEPTH: c.act_depth,
                StatusWord.BIAS_DEPTH: c.bias_depth,
                StatusWord.BUS_BITS: c.bus_bits if self.arch == "baseline" else 0,
                StatusWord.REQUANTIZERS: c.requantizers,
            }
            self.last_error = Error.OK
            return [words[s] for s in StatusWord]

        raise AssertionError(f"unhandled opcode {op}")   # pragma: no cover


def run_golden(words, config, **kwargs):
    """Run ``words`` on a fresh :class:`GoldenMacro` of ``config``; return the output words."""
    return GoldenMacro(config, **kwargs).run(words)
