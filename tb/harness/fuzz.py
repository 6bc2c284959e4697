"""Seeded command-stream fuzzer: valid commands mixed with every kind of bad field, at the limits.

:func:`fuzz_case` makes one :class:`FuzzCase` from a seed: a stream that first writes the memory
it will read (its *windows*: the bottom and the top of the weight rows, the activation buffer
and the bias memory, or all of a small memory), clears the counters, then mixes

* valid commands of every opcode, with addresses anywhere in the windows, up to the last row,
  byte and channel of the memory (spans that end exactly at 65536 in the largest
  configuration), requantizing with random channels (multipliers over the whole 31-bit range,
  every shift), zero points, clamps (empty ones too) and both roundings, and back-to-back
  sequences that exercise the hazards (a ``WRITEBACK`` then a ``MATVEC`` or ``LOAD_ACT`` over
  its bytes, a ``WRITE_WEIGHTS`` over rows a queued ``MATVEC`` reads, a ``LOAD_BIAS`` or
  ``LOAD_QUANT`` under an ``EMIT`` that reads those channels);
* commands that fail a check, each kind of them: an unknown opcode (with random other header
  bits), a flag the opcode does not accept, non-zero reserved argument bits, channels past the
  memory for a requantizing command without ``BIAS``,
  a count of 0 or beyond ``lanes`` (or non-zero where there is none), a misaligned address, and
  out-of-range spans, among them sums that overflow 16 and 17 bits (``act + count * R`` with
  ``R = 4`` and ``act`` near 65535, a bias or a write-back near 65535 plus ``lanes``), and
  random field mutations; the golden model says which check fails first;

and ends with ``STATUS`` and ``READ_COUNTERS``. A case may also be *cut* (the stream ends inside
a command's arguments or payload: :func:`expected_answers` gives the prefix the macro must
answer), be played after a *reset* at a random point of another stream (``Job.prefix``), most of
them with the sink holding ``ready`` low so the output is blocked at the reset, and run with
random source idling and sink backpressure. The sink reads on after the answers
(``Job.drain_cycles``), so an extra word fails :func:`check`.

:func:`check` compares the RTL's output word for word with the golden model
(:func:`pim_macro.tb.harness.programs.compare`), checks that the cycle model's stream is the
golden model's, and, where nothing stalls and the stream is whole, the counters against the
cycle model (:func:`pim_macro.tb.harness.programs.compare_timing`).

Configurations: the largest addresses the ISA allows, ``depth = act_depth = bias_depth = 65536``
at ``R = 4`` (:data:`FUZZ_CONFIGS` ``"max"``: every 16-bit address field, and every end that
needs 17 to 19 bits), with 4 lanes, and small ones (those of
:data:`pim_macro.tb.harness.programs.CONFIGS`, whose builds the other tests share). Lanes = 256
is left to the formal proofs and the golden model: the address checks, the spans and the
hazards do not depend on the lane count (only ``count <= lanes`` does, the same comparison at
any width), while 256 lanes x 4 rows are 1024 multipliers and a 1024-input adder tree, which
makes a Verilator build take many minutes and every simulated cycle hundreds of times slower;
:func:`model_check` runs the golden and cycle models on such configurations instead, in
milliseconds.
"""

from dataclasses import dataclass, field, replace

import numpy as np

from pim_macro.hw.isa import (
    OPCODES, REQUANTIZING, Error, Flag, Header, MacroConfig, Opcode, arg_words, pack,
    payload_words, unpack,
)
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import Job
from pim_macro.tb.harness.programs import (CONFIGS, compare, compare_timing, random_channels,
                                          random_quant, rounding_program)


__all__ = ["FUZZ_CONFIGS", "FuzzCase", "fuzz_case", "fuzz_cases", "expected_answers", "check",
           "model_check", "minimise", "INVALID_KINDS"]


#: The largest-address configuration (4 lanes keep the simulators fast; see the module
#: docstring), one whose memories are one short of the largest (none a power of two; 8 lanes,
#: R = 2, 2 requantizers), and the suite's :data:`~pim_macro.tb.harness.programs.CONFIGS`.
FUZZ_CONFIGS = {
    "max": MacroConfig(lanes=4, rows_per_cycle=4, depth=65536, act_depth=65536, bias_depth=65536,
                       bus_bits=64),
    "odd": MacroConfig(lanes=8, rows_per_cycle=2, depth=65535, act_depth=65532,
                       bias_depth=65535, bus_bits=32, requantizers=2),
    **CONFIGS,
}

#: The kinds of invalid command :func:`fuzz_case` draws from.
INVALID_KINDS = ("opcode", "flags", "reserved", "channels", "count_zero", "count_long",
                 "misaligned", "range", "overflow", "mutation")

# Field values worth trying anywhere: the ends of 16 bits and of the memories.
_EDGES16 = (0, 1, 2, 3, 4, 0x7FFF, 0x8000, 0xBFFF, 0xC000, 0xC001, 0xFFFB, 0xFFFC, 0xFFFD,
            0xFFFE, 0xFFFF)
# Longest payload a generated command announces, in words (it is sent even when the command
# fails its checks); keeps a stream short.
_MAX_PAYLOAD = 48
# Size of each window of a memory that a stream writes first and may read.
_ROW_WINDOW, _ACT_WINDOW, _BIAS_WINDOW = 12, 64, 16


@dataclass
class FuzzCase:
    """One fuzzed job: ``words`` to play (maybe cut inside a command), ``reference`` the
    stream the golden model runs for it (:func:`expected_answers`), and how to play it."""
    seed: int
    words: list
    reference: list
    answers: int
    cut: bool = False
    idle: float = 0.0
    backpressure: float = 0.0
    prefix: list = None
    reset_after: int = 0
    reset_cycles: int = None
    prefix_blocked: bool = False
    kinds: dict = field(default_factory=dict)   # invalid kind -> commands of that kind

    @property
    def smooth(self):
        """Timing is predicted: the source never idles, the sink never refuses, whole stream."""
        return not (self.idle or self.backpressure or self.cut)

    def job(self, drain_cycles=64, max_cycles=400_000):
        return Job(self.words, idle=self.idle, backpressure=self.backpressure, seed=self.seed,
                   prefix=self.prefix, reset_after=self.reset_after,
                   reset_cycles=self.reset_cycles, prefix_blocked=self.prefix_blocked,
                   answers=self.answers, drain_cycles=drain_cycles, max_cycles=max_cycles)

    def describe(self):
        parts = [f"seed {self.seed}", f"{len(self.words)} words"]
        parts += ["cut"] if self.cut else []
        parts += [f"idle {self.idle}"] if self.idle else []
        parts += [f"backpressure {self.backpressure}"] if self.backpressure else []
        if self.prefix is not None:
            parts.append(f"reset after {self.reset_after} words / {self.reset_cycles} cycles of "
                         f"a {len(self.prefix)}-word prefix"
                         + (" (output blocked)" if self.prefix_blocked else ""))
        return ", ".join(parts)


def expected_answers(words, config):
    """What the macro must answer for ``words``, which may end inside a command.

    Returns ``(reference, answers, cut)``: ``reference`` is the stream whose golden output is
    the expected answer: the complete commands, plus the cut command whole when its header and
    arguments are all there and only payload is missing (the macro checks a command and pushes
    its status before it takes the payload; a load answers nothing else); ``answers`` is the
    number of responses; ``cut`` whether ``words`` ends inside a command. The cut command's
    missing words are taken from nowhere: they are zeros in ``reference``, which changes no
    status."""
    words = [int(w) for w in words]
    i, answers = 0, 0
    while i < len(words):
        hdr = unpack(Header, words[i])
        op = _opcode(hdr.opcode)
        if op is None:
            i, answers = i + 1, answers + 1
            continue
        count = hdr.count
        n_args, n_payload = arg_words(op), payload_words(op, count, config)
        end = i + 1 + n_args + n_payload
        if end <= len(words):
            i, answers = end, answers + 1
            continue
        if i + 1 + n_args <= len(words):      # only payload missing: its status is due
            return words + [0] * (end - len(words)), answers + 1, True
        return words[:i], answers, True
    return words, answers, False


def _opcode(byte):
    try:
        return Opcode(byte)
    except ValueError:
        return None


def _windows(size, window, align):
    """``[(lo, hi), ...]``: the bottom and the top ``window`` elements of a memory of ``size``
    (its whole when they would meet), ``lo`` and ``hi`` multiples of ``align`` (``size`` is)."""
    if size <= 2 * window:
        return [(0, size)]
    top = (size - window) // align * align
    return [(0, window), (top, size)]


class _Generator:
    """Draws the commands of one stream (numpy ``Generator`` ``rng``)."""

    def __init__(self, config, rng):
        self.cfg, self.rng = config, rng
        cfg = config
        r = cfg.rows_per_cycle
        self.rows = _windows(cfg.depth, _ROW_WINDOW, 1)
        self.acts = _windows(cfg.act_depth, max(_ACT_WINDOW, -(-r * _ROW_WINDOW // 4) * 4),
                             4 * r)
        self.biases = _windows(cfg.bias_depth, _BIAS_WINDOW, 1)
        self.golden = GoldenMacro(cfg)
        self.kinds = {}

    def int(self, lo, hi):
        """An int in ``[lo, hi]``."""
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, seq):
        return seq[int(self.rng.integers(0, len(seq)))]

    def span(self, windows, most, align=1):
        """``(first, count)`` inside one of ``windows``, ``count <= most``, first aligned."""
        lo, hi = self.pick(windows)
        first = lo + align * self.int(0, (hi - lo - 1) // align)
        if self.rng.random() < 0.3:     # end exactly at the top of the window
            count = min(most, hi - lo)
            first = max(lo, (hi - count) // align * align)
        count = self.int(1, min(most, hi - first))
        return first, count

    def bytes(self, n):
        return self.rng.integers(-128, 128, n)

    # -- valid commands -----------------------------------------------------------------------

    def init(self):
        cfg, words = self.cfg, []
        for lo, hi in self.rows:
            words += asm.encode_write_weights(
                lo, self.rng.integers(-128, 128, (hi - lo, cfg.rows_per_cycle, cfg.lanes)), cfg)
        for lo, hi in self.acts:
            words += asm.encode_load_act(lo, self.bytes(hi - lo))
        for lo, hi in self.biases:
            words += asm.encode_load_bias(lo, self.rng.integers(-2**31, 2**31, hi - lo))
            words += asm.encode_load_quant(lo, *random_channels(self.rng, hi - lo))
        return words

    def quant(self):
        """Random zero point, clamp and rounding of a requantizing command."""
        return random_quant(self.rng)

    def channel(self, count):
        """The first of ``count`` channels inside a window (``count`` at most the widest)."""
        lo, hi = self.pick([(lo, hi) for lo, hi in self.biases if hi - lo >= count])
        return self.int(lo, hi - count)

    def lanes(self):
        """A lane count for a command that reads channels: at most the widest window."""
        return self.int(1, min(self.cfg.lanes, max(hi - lo for lo, hi in self.biases)))

    def bias(self, count):
        """A bias address for ``count`` lanes inside a window, or ``None`` (no ``BIAS`` flag)."""
        fitting = [(lo, hi) for lo, hi in self.biases if hi - lo >= count]
        if not fitting or self.rng.random() < 0.3:
            return None
        lo, hi = self.pick(fitting)
        return self.int(lo, hi - count)

    def requant(self, count, act=None):
        """An ``EMIT_INT8`` (or with ``act`` a ``WRITEBACK``) of ``count`` lanes, its channels
        in a window, with or without their bias."""
        channel, bias = self.channel(count), bool(self.int(0, 3))
        if act is None:
            return asm.encode_emit_int8(count, channel=channel, bias=bias, **self.quant())
        return asm.encode_writeback(count, act, channel=channel, bias=bias, **self.quant())

    def matvec(self, accumulate=None):
        """A valid MATVEC inside the windows, often ending at a window's (the memory's) top;
        returns ``(words, (row, act, count))``."""
        r = self.cfg.rows_per_cycle
        rlo, rhi = self.pick(self.rows)
        alo, ahi = self.pick(self.acts)
        most = min(rhi - rlo, (ahi - alo) // r, 40)
        count = most if self.rng.random() < 0.3 else self.int(1, most)
        row = rhi - count if self.rng.random() < 0.3 else self.int(rlo, rhi - count)
        slots = (ahi - alo) // r - count
        act = alo + r * (slots if self.rng.random() < 0.3 else self.int(0, slots))
        acc = bool(self.int(0, 1)) if accumulate is None else accumulate
        return asm.encode_matvec(row, act, count, accumulate=acc), (row, act, count)

    def valid(self):
        """One valid command, or a short valid sequence around a hazard."""
        cfg = self.cfg
        kind = self.pick(["weights", "act", "bias", "quant", "matvec", "matvec", "matvec", "raw",
                          "int8", "int8", "writeback", "ties", "counters", "status", "hazard"])
        if kind == "weights":
            row, count = self.span(self.rows, max(1, min(4, _MAX_PAYLOAD // cfg.row_words)))
            return asm.encode_write_weights(
                row, self.rng.integers(-128, 128, (count, cfg.rows_per_cycle, cfg.lanes)), cfg)
        if kind == "act":
            addr, count = self.span(self.acts, 4 * 12, 4)
            return asm.encode_load_act(addr, self.bytes(count))
        if kind == "bias":
            addr, count = self.span(self.biases, 12)
            return asm.encode_load_bias(addr, self.rng.integers(-2**31, 2**31, count))
        if kind == "quant":
            addr, count = self.span(self.biases, _MAX_PAYLOAD // 2)
            return asm.encode_load_quant(addr, *random_channels(self.rng, count))
        if kind == "matvec":
            return self.matvec()[0]
        if kind == "ties":          # results on the rounding's ties (programs.rounding_program)
            r = cfg.rows_per_cycle
            rlo, rhi = self.pick(self.rows)
            alo, ahi = self.pick(self.acts)
            rows = self.int(1, max(1, min(3, rhi - rlo, (ahi - alo) // r)))
            act = alo + 4 * self.int(0, (ahi - alo - rows * r) // 4)
            count = self.lanes()
            return rounding_program(cfg, self.rng, row=self.int(rlo, rhi - rows), act=act,
                                    channel=self.channel(count), lanes=count, rows=rows)
        if kind == "raw":
            count = self.int(1, cfg.lanes)
            return asm.encode_emit_raw(count, bias=self.bias(count))
        if kind in ("int8", "writeback"):
            count = self.lanes()
            if kind == "int8":
                return self.requant(count)
            # (A window may be narrower than 256 lanes.)
            count = min(count, max(hi - lo for lo, hi in self.acts))
            fitting = [(lo, hi) for lo, hi in self.acts if hi - lo >= count]
            lo, hi = self.pick(fitting)
            return self.requant(count, self.int(lo, hi - count))
        if kind == "counters":
            return asm.encode_read_counters(clear=bool(self.int(0, 1)))
        if kind == "status":
            return asm.encode_status()
        return self.hazard()

    def hazard(self):
        """Back-to-back commands that must wait for each other (the results are those of
        running them one at a time)."""
        cfg, r = self.cfg, self.cfg.rows_per_cycle
        case = self.int(0, 2)
        if case == 0:       # write-back, then a MATVEC and a load over its bytes
            words, (row, act, count) = self.matvec()
            lanes = min(self.lanes(), count * r)
            at = act + self.int(0, count * r - lanes)
            words += self.requant(lanes, at)
            words += asm.encode_matvec(row, act, count, accumulate=bool(self.int(0, 1)))
            words += asm.encode_emit_raw(self.int(1, cfg.lanes))
            words += asm.encode_load_act(act // 4 * 4, self.bytes(self.int(1, 8)))
            return words + asm.encode_matvec(row, act, count) + asm.encode_emit_raw(cfg.lanes)
        if case == 1:       # MATVEC, then new weights in its rows, then the MATVEC again
            words, (row, act, count) = self.matvec()
            n = self.int(1, max(1, min(count, _MAX_PAYLOAD // cfg.row_words)))
            at = row + self.int(0, count - n)
            words += asm.encode_write_weights(
                at, self.rng.integers(-128, 128, (n, r, cfg.lanes)), cfg)
            words += asm.encode_emit_raw(cfg.lanes)
            return words + asm.encode_matvec(row, act, count) + asm.encode_emit_raw(cfg.lanes)
        # an EMIT that reads channels, new biases or requantizations there, the EMIT again
        count = self.lanes()
        bias = self.channel(count)
        quant = self.quant()
        emit = asm.encode_emit_int8(count, channel=bias, **quant)
        words = self.matvec()[0] + emit
        if self.int(0, 1):
            words += asm.encode_load_bias(bias, self.rng.integers(-2**31, 2**31, count))
        else:
            words += asm.encode_load_quant(bias, *random_channels(self.rng, count))
        return words + emit + asm.encode_emit_raw(count, bias=bias)

    # -- invalid commands ---------------------------------------------------------------------

    def invalid(self):
        """One command that fails a check (the golden model says so), with its payload."""
        kind = self.pick(INVALID_KINDS)
        for _ in range(50):
            words = self._invalid(kind)
            if words is None:
                kind = self.pick(INVALID_KINDS)
                continue
            hdr = unpack(Header, words[0])
            op = _opcode(hdr.opcode)
            if op is not None:
                if payload_words(op, hdr.count, self.cfg) > _MAX_PAYLOAD:
                    continue
                args = words[1:1 + arg_words(op)]
                if self.golden.check(op, hdr.flags, hdr.count, args) == Error.OK:
                    continue
                words = words[:1 + arg_words(op)] + [
                    int(w) for w in self.rng.integers(0, 1 << 32, payload_words(
                        op, hdr.count, self.cfg), dtype=np.uint64)]
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            return words
        raise AssertionError(f"no invalid {kind} command found")     # pragma: no cover

    def _command(self, op, count, flags=0, args=None):
        """Header and argument words of ``op`` with raw fields (``args``: ints per word)."""
        args = args if args is not None else [0] * arg_words(op)
        return [asm.header(op, flags=flags, count=count), *args]

    def _fields(self, op, **fields):
        """The argument words of ``op`` from named fields (the rest 0; ``reserved`` allowed)."""
        words = []
        for layout in OPCODES[op].args:
            mine = {name: fields[name] for name, _ in layout if name in fields}
            words.append(pack(layout, **mine))
        return words

    def _invalid(self, kind):
        cfg = self.cfg
        ops = list(OPCODES)
        op = self.pick(ops)
        count = self.int(1, 4)
        if kind == "opcode":
            last = max(op.value for op in Opcode)
            byte = self.pick([0x00, last + 1, last + 2, 0x10, 0x40, 0x7F, 0x80, 0xFE, 0xFF]
                             + [self.int(last + 1, 0xFF)])
            return [(self.int(0, (1 << 24) - 1) << 8) | byte]
        if kind == "flags":
            bad = 0xFF & ~OPCODES[op].flags.value
            flags = self.pick([1 << b for b in range(8) if bad >> b & 1]) | (
                self.int(0, 255) & OPCODES[op].flags.value)
            return self._command(op, 0 if OPCODES[op].counts is None else count, flags,
                                 [self.int(0, 0xFFFF) for _ in range(arg_words(op))])
        if kind == "reserved":
            if OPCODES[op].counts is None:
                return self._command(op, self.int(1, 0xFFFF))
            choices = [i for i, layout in enumerate(OPCODES[op].args)
                       if "reserved" in layout.members]
            if not choices:
                return None
            args = self._valid_args(op, count)
            i = self.pick(choices)
            offset = OPCODES[op].args[i]["reserved"].offset
            width = OPCODES[op].args[i]["reserved"].width
            args[i] |= self.pick([1, 1 << (width - 1), self.int(1, (1 << width) - 1)]) << offset
            return self._command(op, count, self._flags(op), args)
        if kind == "channels":     # a requantizing command reads its channels without BIAS
            op = self.pick(sorted(REQUANTIZING, key=lambda o: o.value))
            n = self.int(1, cfg.lanes)
            args = self._valid_args(op, n)
            first = max(0, min(0xFFFF, cfg.bias_depth - n + self.int(1, 3)))
            args[0] = (args[0] & ~0xFFFF) | first
            return self._command(op, n, self._flags(op) & ~Flag.BIAS.value, args)
        if kind == "count_zero":
            op = self.pick([o for o in ops if OPCODES[o].counts is not None])
            return self._command(op, 0, self._flags(op), self._valid_args(op, 1))
        if kind == "count_long":
            op = self.pick([o for o in ops if OPCODES[o].counts == "lanes"])
            long = self.pick([cfg.lanes + 1, cfg.lanes + 4, 0x8000, 0xFFFF,
                              self.int(cfg.lanes + 1, 0xFFFF)])
            return self._command(op, long, self._flags(op), self._valid_args(op, 1))
        if kind == "misaligned":
            if cfg.rows_per_cycle > 1 and self.int(0, 1):
                args = self._valid_args(Opcode.MATVEC, count)
                act = (args[0] >> 16) + self.int(1, cfg.rows_per_cycle - 1)
                return self._command(Opcode.MATVEC, count, 0, self._fields(
                    Opcode.MATVEC, row=args[0] & 0xFFFF, act=act & 0xFFFF))
            addr = self.pick([1, 2, 3, 0xFFFF, 0xFFFD, 4 * self.int(0, 100) + self.int(1, 3)])
            return self._command(Opcode.LOAD_ACT, count, 0,
                                 self._fields(Opcode.LOAD_ACT, addr=addr))
        if kind == "range":
            return self._out_of_range(count)
        if kind == "overflow":
            return self._overflow()
        # mutation: a valid command with one or two fields set to edge values or random bits
        args = self._valid_args(op, count)
        hdr_flags = self._flags(op)
        for _ in range(self.int(1, 2)):
            what = self.int(0, 3)
            if what == 0:
                count = self.pick(list(_EDGES16) + [cfg.lanes, cfg.lanes + 1, cfg.depth & 0xFFFF,
                                                    self.int(0, 0xFFFF)])
            elif what == 1:
                hdr_flags = self.int(0, 255)
            elif args:
                i = self.int(0, len(args) - 1)
                shift = self.pick([0, 16])
                value = self.pick(list(_EDGES16) + [self.int(0, 0xFFFF)])
                args[i] = (args[i] & ~(0xFFFF << shift)) | (value << shift)
            else:
                count = self.int(1, 0xFFFF)
        if OPCODES[op].counts is None:
            count = count if self.int(0, 1) else 0
        return self._command(op, count, hdr_flags, args)

    def _flags(self, op):
        return self.int(0, 255) & OPCODES[op].flags.value

    def _valid_args(self, op, count):
        """Argument words of ``op`` in range for ``count`` (ints), small addresses."""
        cfg = self.cfg
        quant = dict(zero_point=self.int(-128, 127), act_min=self.int(-128, 127),
                     act_max=self.int(-128, 127))
        row = self.int(0, max(0, min(cfg.depth - count, 8)))
        act = cfg.rows_per_cycle * self.int(0, 4)
        return {
            Opcode.WRITE_WEIGHTS: lambda: self._fields(op, row=row),
            Opcode.LOAD_ACT: lambda: self._fields(op, addr=0),
            Opcode.LOAD_BIAS: lambda: self._fields(op, addr=0),
            Opcode.LOAD_QUANT: lambda: self._fields(op, addr=0),
            Opcode.MATVEC: lambda: self._fields(op, row=row, act=act),
            Opcode.EMIT_RAW: lambda: self._fields(op, bias=0),
            Opcode.EMIT_INT8: lambda: self._fields(op, bias=0, **quant),
            Opcode.WRITEBACK: lambda: self._fields(op, bias=0, act=act, **quant),
            Opcode.READ_COUNTERS: lambda: [],
            Opcode.STATUS: lambda: [],
        }[op]()

    def _out_of_range(self, count):
        """A span that passes the other checks but ends beyond its memory (no overflow)."""
        cfg, r = self.cfg, self.cfg.rows_per_cycle
        which = self.int(0, 5)
        if which == 0 and cfg.depth < 0x10000:
            row = self.int(max(0, cfg.depth - count + 1), min(cfg.depth + 2, 0xFFFF))
            return self._command(Opcode.WRITE_WEIGHTS, count, 0,
                                 self._fields(Opcode.WRITE_WEIGHTS, row=row))
        if which == 0:
            return self._command(Opcode.WRITE_WEIGHTS, self.int(2, 3), 0,
                                 self._fields(Opcode.WRITE_WEIGHTS, row=0xFFFF))
        if which == 1:
            addr = max(0, min(cfg.act_depth - 4 * self.int(0, 2), 0xFFFC))
            n = cfg.act_depth - addr + self.int(1, 8) if addr < cfg.act_depth else self.int(1, 8)
            return self._command(Opcode.LOAD_ACT, n & 0xFFFF, 0,
                                 self._fields(Opcode.LOAD_ACT, addr=addr))
        if which == 2:
            op = self.pick([Opcode.LOAD_BIAS, Opcode.LOAD_QUANT])
            addr = max(0, min(0xFFFF, cfg.bias_depth - self.int(0, 2)))
            n = max(1, cfg.bias_depth - addr) + self.int(1, 4)
            return self._command(op, n, 0, self._fields(op, addr=addr))
        if which == 3:      # MATVEC past the last row or the last activation
            n = self.int(1, 64)
            if self.int(0, 1):
                row, act = min(0xFFFF, cfg.depth - n + self.int(1, 3)), 0
            else:
                row, act = 0, min(0xFFFC, cfg.act_depth - r * n + r * self.int(1, 3)) // r * r
            return self._command(Opcode.MATVEC, n, self.int(0, 1), self._fields(
                Opcode.MATVEC, row=max(0, row), act=max(0, act)))
        op = self.pick([Opcode.EMIT_RAW, Opcode.EMIT_INT8, Opcode.WRITEBACK])
        n = self.int(1, cfg.lanes)
        args = self._valid_args(op, n)
        if which == 4 or op != Opcode.WRITEBACK:
            bias = min(0xFFFF, cfg.bias_depth - n + self.int(1, 3))
            args[0] = (args[0] & ~0xFFFF) | max(0, bias)
            return self._command(op, n, Flag.BIAS.value | self._flags(op), args)
        act = max(0, min(0xFFFF, cfg.act_depth - n + self.int(1, 3)))
        args[0] = (args[0] & 0xFFFF) | (act << 16)
        return self._command(op, n, self._flags(op) & ~Flag.BIAS.value, args)

    def _overflow(self):
        """A span whose end needs more than 16 (or 17) bits: the first element near 65535 and
        a count that carries it past 2**16, 2**17 or 2**18 (the end wraps to a small number
        in an adder that is too narrow)."""
        cfg, r = self.cfg, self.cfg.rows_per_cycle
        which = self.int(0, 4)
        if which == 0:      # MATVEC: act + count * R
            act = (0xFFFF - self.int(0, 64)) // r * r
            target = self.pick([1 << 16, 1 << 17, 1 << 18, 0x3FFFC])
            n = max(1, min(0xFFFF, (target - act) // r + self.int(-1, 1)))
            row = self.int(0, max(0, min(cfg.depth - n, 4)))
            return self._command(Opcode.MATVEC, n, 0, self._fields(Opcode.MATVEC, row=row,
                                                                     act=act))
        if which == 1:      # MATVEC: row + count
            n = self.pick([0xFFFF, 0x8001, self.int(2, 0xFFFF)])
            row = self.int(max(0, 0x10000 - n), 0xFFFF)
            return self._command(Opcode.MATVEC, n, 0, self._fields(Opcode.MATVEC, row=row,
                                                                     act=0))
        if which == 2:      # a biased output near the top of the bias field
            op = self.pick([Opcode.EMIT_RAW, Opcode.EMIT_INT8, Opcode.WRITEBACK])
            args = self._valid_args(op, cfg.lanes)
            args[0] = (args[0] & ~0xFFFF) | (0xFFFF - self.int(0, cfg.lanes - 2))
            return self._command(op, cfg.lanes, Flag.BIAS.value | self._flags(op), args)
        if which == 3:      # a write-back near the top of the activation field
            args = self._valid_args(Opcode.WRITEBACK, cfg.lanes)
            args[0] = (args[0] & 0xFFFF) | ((0xFFFF - self.int(0, cfg.lanes - 2)) << 16)
            return self._command(Opcode.WRITEBACK, cfg.lanes, self._flags(Opcode.WRITEBACK),
                                 args)
        op = self.pick([Opcode.LOAD_ACT, Opcode.LOAD_BIAS, Opcode.LOAD_QUANT, Opcode.WRITE_WEIGHTS])
        first = 0xFFFC if op == Opcode.LOAD_ACT else 0xFFFF - self.int(0, 1)
        n = self.int(0x10000 - first + 1, 0x10000 - first + 4) if op != Opcode.WRITE_WEIGHTS \
            else self.int(2, 3)
        field_name = "row" if op == Opcode.WRITE_WEIGHTS else "addr"
        return self._command(op, n, 0, self._fields(op, **{field_name: first}))


def _stream(config, rng, commands, invalid):
    gen = _Generator(config, rng)
    words = gen.init() + asm.encode_read_counters(clear=True)
    for _ in range(commands):
        words += gen.invalid() if rng.random() < invalid else gen.valid()
    return words + asm.encode_status() + asm.encode_read_counters(), gen.kinds


def _cut(words, config, rng):
    """``words`` cut inside a command that has arguments or payload (after its header)."""
    frames = [(start, length) for _, start, length in asm.frame_program(words, config)
              if length > 1]
    start, length = frames[int(rng.integers(0, len(frames)))]
    return words[:start + int(rng.integers(1, length))]


def fuzz_case(config: MacroConfig, seed, *, commands=24, invalid=0.35, cut=0.15, reset=0.25,
              stalls=0.5):
    """One seeded :class:`FuzzCase` for ``config``: ``commands`` commands after the stream's
    initialisation, about ``invalid`` of them failing a check; with probability ``cut`` the
    stream ends inside a command, with ``reset`` it is played after a reset in another stream,
    with ``stalls`` the source idles and the sink refuses at random."""
    rng = np.random.default_rng([seed, config.depth, config.lanes, config.rows_per_cycle])
    words, kinds = _stream(config, rng, commands, invalid)
    case = FuzzCase(seed=seed, words=words, reference=words, answers=0, kinds=kinds)
    if rng.random() < cut:
        case.words = _cut(words, config, rng)
    case.reference, case.answers, case.cut = expected_answers(case.words, config)
    if rng.random() < stalls:
        case.idle = float(rng.choice([0.0, 0.1, 0.3, 0.6]))
        case.backpressure = float(rng.choice([0.0, 0.3, 0.7, 0.9]))
    if rng.random() < reset:
        prefix, _ = _stream(config, rng, commands, invalid)
        case.prefix = prefix
        case.prefix_blocked = bool(rng.random() < 0.75)
        case.reset_after = int(rng.integers(1, len(prefix) + 2))
        case.reset_cycles = int(rng.integers(1, 8 * len(prefix))) if rng.random() < 0.7 else None
    return case


def fuzz_cases(config, seed, n, **kwargs):
    """``n`` cases, seeds ``seed .. seed + n - 1``."""
    return [fuzz_case(config, s, **kwargs) for s in range(seed, seed + n)]


def model_check(case, config, arch):
    """The cycle model's stream is the golden model's (all but the timed counters)."""
    out = CycleModel(config, arch=arch).run(case.reference)
    compare(case.reference, out, config, arch=arch, where=f"cycle model, {case.describe()}")


def check(case, result, config, arch, *, where=""):
    """Assert that the RTL's ``result`` (a :class:`pim_macro.sw.runtime.rtl.JobResult`) for
    ``case`` is right: finished, the golden model's answers word for word (extra words fail),
    and where nothing stalls and the stream is whole, the cycle model's counters. Returns the
    number of ``READ_COUNTERS`` compared with the cycle model."""
    where = f"{where}{case.describe()}"
    assert result.finished, f"{where}: the macro did not answer within the cycle budget (hang)"
    compare(case.reference, result.out, config, arch=arch, where=where)
    assert result.extra == 0, f"{where}: {result.extra} words after the last answer"
    if case.smooth:
        return compare_timing(case.reference, result.out, config, arch=arch, where=where)
    return 0


def minimise(case, config, fails):
    """A simpler case that still fails, by what ``fails(candidates)`` says (a function of a
    list of cases returning, for each, whether it fails; one simulator run for all).

    First the case is played more simply if it still fails so: without its reset prefix,
    without stalls, or both. Then commands after the stream's initialisation are removed, in
    halving chunks down to single commands, while the smaller stream still fails. The
    initialisation stays (without it, what the macro reads would be left from an earlier job),
    and so does a cut command at the end. Returns the simplest failing case found."""
    simpler = [dict(prefix=None, idle=0.0, backpressure=0.0), dict(prefix=None),
               dict(idle=0.0, backpressure=0.0)]
    variants = [replace(case, **change) for change in simpler
                if any(getattr(case, k) != v for k, v in change.items())]
    if variants:
        verdicts = fails(variants)
        case = next((v for v, bad in zip(variants, verdicts) if bad), case)
    frames = asm.frame_program(case.reference, config)
    # The commands whole in the played stream; a cut one stays, as the tail.
    complete = [(start, length) for _, start, length in frames
                if start + length <= len(case.words)]
    # The initialisation ends with the first (clearing) READ_COUNTERS.
    clears = [i for i, (op, start, length) in enumerate(frames)
              if op == Opcode.READ_COUNTERS.value and start + length <= len(case.words)]
    if not clears:
        return case
    first = clears[0]
    end = complete[-1][0] + complete[-1][1]
    head, tail = case.words[:frames[first][1] + frames[first][2]], case.words[end:]
    body = [case.words[start:start + length] for start, length in complete[first + 1:]]
    chunk = max(1, len(body) // 2)
    while chunk >= 1 and body:
        candidates = []
        for i in range(0, len(body), chunk):
            rest = body[:i] + body[i + chunk:]
            words = head + [w for command in rest for w in command] + tail
            reference, answers, cut = expected_answers(words, config)
            candidates.append((rest, replace(case, words=words, reference=reference,
                                             answers=answers, cut=cut, kinds={})))
        verdicts = fails([c for _, c in candidates])
        failing = [c for (c, verdict) in zip(candidates, verdicts) if verdict]
        if failing:
            body, case = failing[0]
            chunk = min(chunk, max(1, len(body) // 2))
        elif chunk == 1:
            break
        else:
            chunk //= 2
    return case
