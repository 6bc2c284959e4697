"""Golden model of the macro: a naive, bit-exact, transaction-level interpreter of the command
stream defined in :mod:`pim_macro.hw.isa`.

It is the reference the gateware and the host software are compared against, so it is written
for clarity, not speed: one command at a time, in plain Python, with numpy only where the work is
bulk arithmetic (the MATVEC inner products, unpacking payloads).

Every fact about the instruction set (opcodes, flags, error codes, counter and status word order,
header and status field positions, payload lengths) comes from :mod:`pim_macro.hw.isa`; byte packing
comes from :mod:`pim_macro.sw.runtime.asm`.
"""

import numpy as np

from pim_macro.hw.isa import (
    ACC_BITS, ARCHES, ERROR_COUNT_MAX, INT8_PER_WORD, OPCODES, REQUANTIZING, STREAM_BITS,
    ChannelMultiplier, ChannelShift, Counter, Error, Flag, Header, MacroConfig, Opcode, Status,
    pack, response_words, status_words, unpack,
)
from pim_macro.sw.models.requant import requantize, wrap32
from pim_macro.sw.runtime.asm import frame_program, pack_bytes


__all__ = ["GoldenMacro", "run_golden", "requantize", "wrap32"]


_WORD_MASK = (1 << STREAM_BITS) - 1
_ACC_MASK = (1 << ACC_BITS) - 1


def _opcode(byte):
    """The :class:`Opcode` of a header's opcode byte, or ``None`` for an unknown one."""
    try:
        return Opcode(byte)
    except ValueError:
        return None


def _arguments(op, args):
    """The argument words ``args`` (ints) of ``op``, unpacked through the layouts the ISA gives
    it: ``(fields, reserved)``, the named fields (``row``, ``act``, ``bias``, ``mult``, ...) as
    a dict, and whether any ``reserved`` field is non-zero."""
    fields, reserved = {}, False
    for layout, word in zip(OPCODES[op].args, args):
        value = unpack(layout, word)
        for name, _ in layout:
            if name == "reserved":
                reserved |= value.reserved != 0
            else:
                fields[name] = getattr(value, name)
    return fields, reserved


class GoldenMacro:
    """Bit-exact reference model of one PIM macro, at the level of whole commands.

    What it models: the architectural state (weight SRAM ``weights`` int8 of shape
    ``(depth, rows_per_cycle, lanes)``, activation buffer ``act`` int8 ``(act_depth,)``, the
    channel memory: ``bias`` int32, ``multiplier`` int64 (31-bit unsigned) and ``shift`` int64
    (-32 .. 31), each ``(bias_depth,)``, accumulators ``acc`` int32 ``(lanes,)``, the sticky
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
        self.multiplier = np.zeros(c.bias_depth, dtype=np.int64)
        self.shift = np.zeros(c.bias_depth, dtype=np.int64)
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
        them (:func:`pim_macro.sw.runtime.asm.frame_program`); raise ``ValueError`` if the
        program ends inside a command."""
        commands = []
        for opcode, start, length in frame_program(words, self.config):
            op = _opcode(opcode)
            end_args = start + 1 + (len(OPCODES[op].args) if op is not None else 0)
            commands.append((words[start], words[start + 1:end_args],
                             words[end_args:start + length]))
        return commands

    def _count(self, counter, amount):
        self.counters[counter] = (self.counters[counter] + amount) & _WORD_MASK

    def step(self, hdr, args, payload):
        """Execute one command framed by :meth:`frame`; return its output words."""
        self._count(Counter.BEATS_IN, 1 + len(args) + len(payload))
        hdr = unpack(Header, hdr)
        op = _opcode(hdr.opcode)
        if op is None:
            error, data = Error.BAD_OPCODE, []
        else:
            error = self.check(op, hdr.flags, hdr.count, args)
            data = [] if error != Error.OK else self._execute(op, hdr.flags, hdr.count, args,
                                                              payload)
        if error != Error.OK:
            self.last_error = error
            self.error_count = min(self.error_count + 1, ERROR_COUNT_MAX)
        else:
            assert len(data) == response_words(op, hdr.count, self.config)
        out = [pack(Status, opcode=hdr.opcode, error=error, count=len(data)), *data]
        self._count(Counter.BEATS_OUT, len(out))
        return out

    # -- checks -------------------------------------------------------------------------------

    def check(self, op, flags, count, args):
        """The :class:`Error` of a command with a known :class:`Opcode` ``op``, ``flags`` (a
        :class:`Flag` or the header's flag byte), header ``count`` and argument words ``args``
        (ints), per the ISA's order of checks; ``Error.OK`` if it may execute. The reference the
        gateware's decoder is tested against."""
        c = self.config
        op, flags = Opcode(op), Flag(flags)
        rule = OPCODES[op]
        arg, reserved = _arguments(op, args)

        # BAD_FIELD. Flag values keep stray bits (bits no Flag names): compare the bytes.
        if flags.value & ~rule.flags.value or reserved:
            return Error.BAD_FIELD
        if rule.counts is None:
            return Error.BAD_FIELD if count != 0 else Error.OK

        # BAD_LENGTH
        if count == 0 or (rule.counts == "lanes" and count > c.lanes):
            return Error.BAD_LENGTH

        # MISALIGNED: LOAD_ACT writes whole words; a MATVEC row reads R activations at once.
        if op == Opcode.LOAD_ACT and arg["addr"] % INT8_PER_WORD != 0:
            return Error.MISALIGNED
        if op == Opcode.MATVEC and arg["act"] % c.rows_per_cycle != 0:
            return Error.MISALIGNED

        # BAD_ADDRESS: every span (first element, elements, memory size) inside its memory.
        spans = []
        if "row" in arg:
            spans.append((arg["row"], count, c.depth))
        if "act" in arg:                    # MATVEC reads R activations per row
            per_item = c.rows_per_cycle if op == Opcode.MATVEC else 1
            spans.append((arg["act"], count * per_item, c.act_depth))
        if "bias" in arg and (flags & Flag.BIAS or op in REQUANTIZING):
            spans.append((arg["bias"], count, c.bias_depth))
        if op == Opcode.LOAD_ACT:
            spans.append((arg["addr"], count, c.act_depth))
        if op in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):
            spans.append((arg["addr"], count, c.bias_depth))
        if any(first + size > memory for first, size, memory in spans):
            return Error.BAD_ADDRESS
        return Error.OK

    # -- execution ----------------------------------------------------------------------------

    def _lanes(self, flags, count, bias):
        """``wrap32(acc[l] + self.bias[bias + l])`` (the bias only with ``Flag.BIAS``) for
        ``l < count``."""
        v = self.acc[:count].astype(np.int64)
        if flags & Flag.BIAS:
            v = v + self.bias[bias:bias + count]
        return wrap32(v)

    def _execute(self, op, flags, count, args, payload):
        """Perform a command that passed its checks; return its data words."""
        c = self.config
        arg, _ = _arguments(op, args)

        if op == Opcode.WRITE_WEIGHTS:
            row = arg["row"]
            raw = np.asarray(payload, dtype="<u4").view(np.int8)
            self.weights[row:row + count] = raw.reshape(count, c.rows_per_cycle, c.lanes)
            self._count(Counter.WEIGHT_WORDS, len(payload))
            return []

        if op == Opcode.LOAD_ACT:
            addr = arg["addr"]
            raw = np.asarray(payload, dtype="<u4").view(np.int8)
            self.act[addr:addr + count] = raw[:count]       # padding bytes are not written
            return []

        if op == Opcode.LOAD_BIAS:
            addr = arg["addr"]
            self.bias[addr:addr + count] = np.asarray(payload, dtype="<u4").view(np.int32)
            return []

        if op == Opcode.LOAD_QUANT:
            addr = arg["addr"]
            for j in range(count):
                self.multiplier[addr + j] = unpack(ChannelMultiplier, payload[2 * j]).multiplier
                self.shift[addr + j] = unpack(ChannelShift, payload[2 * j + 1]).shift
            return []

        if op == Opcode.MATVEC:
            row, a, r = arg["row"], arg["act"], c.rows_per_cycle
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
            return [int(v) & _WORD_MASK for v in self._lanes(flags, count, arg["bias"])]

        if op in REQUANTIZING:
            channels = slice(arg["bias"], arg["bias"] + count)
            y = requantize(self._lanes(flags, count, arg["bias"]), self.multiplier[channels],
                           self.shift[channels], arg["zero_point"], arg["act_min"],
                           arg["act_max"], double_rounding=bool(flags & Flag.DOUBLE_ROUND))
            if op == Opcode.EMIT_INT8:
                return pack_bytes(y)
            a = arg["act"]
            self.act[a:a + count] = y
            return []

        if op == Opcode.READ_COUNTERS:
            snapshot = [0 if counter in self.UNTIMED else self.counters[counter]
                        for counter in Counter]
            if flags & Flag.CLEAR:
                self.counters = {counter: 0 for counter in Counter}
            return snapshot

        if op == Opcode.STATUS:
            words = status_words(c, self.arch, last_error=self.last_error,
                                 error_count=self.error_count)
            self.last_error = Error.OK
            return words

        raise AssertionError(f"unhandled opcode {op}")   # pragma: no cover


def run_golden(words, config, **kwargs):
    """Run ``words`` on a fresh :class:`GoldenMacro` of ``config``; return the output words."""
    return GoldenMacro(config, **kwargs).run(words)
