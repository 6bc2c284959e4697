"""Command stream encoding and response decoding.

Each ``encode_*`` function returns the list of 32-bit words (Python ints) for one command; a
program is their concatenation. :func:`parse_responses` splits the output stream into one
:class:`Response` per command, using the data-word count that every status word carries.

The encoder only packs fields into their bit positions, through the word layouts of
:mod:`pim_macro.hw.isa` (a command's argument layouts are those its row of ``OPCODES`` gives),
and checks that each value fits its field (``ValueError`` naming the field otherwise). It
deliberately does not check addresses against a macro's size: that is the macro's job, and tests
must be able to send commands the macro will reject.

A program can also be written as text, one hex word per line (:func:`read_program`, the input of
``pim run``); :func:`frame_complete` splits any program into the commands it completes and says
where it is cut, if it is.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pim_macro.hw.isa import (
    ARCHES, INT8_PER_WORD, ISA_VERSION, OPCODES, STREAM_BITS, WORD_BYTES, Counter, Error,
    ChannelMultiplier, ChannelShift, ErrorsWord, Flag, Header,
    MacroConfig, Opcode, ShapeWord, Status, StatusWord, arg_words, pack, payload_words,
    response_words, unpack,
)
from pim_macro.sw.files import open_input, shown


__all__ = [
    "AnswerCounter",
    "header", "encode_write_weights", "encode_load_act", "encode_load_bias", "encode_load_quant",
    "encode_matvec",
    "encode_emit_raw", "encode_emit_int8", "encode_writeback", "encode_read_counters",
    "encode_status", "pack_bytes", "unpack_bytes", "weight_rows", "Response", "parse_responses",
    "decode_status_words", "Truncation", "frame_complete", "frame_program", "words_to_bytes",
    "bytes_to_words", "parse_program_text", "read_program", "PROGRAM_BYTES_MAX",
    "PROGRAM_WORDS_MAX", "check_program_size",
]


_WORD_MASK = (1 << STREAM_BITS) - 1


def header(opcode, *, flags=0, count=0):
    """The header word: ``opcode`` may be an :class:`Opcode` or any byte (to test rejection),
    ``flags`` a :class:`Flag` or any byte (stray bits included)."""
    opcode = opcode.value if isinstance(opcode, Opcode) else opcode
    return pack(Header, opcode=opcode, flags=flags, count=count)


def _command(opcode, *args, flags=Flag(0), count=0, payload=()):
    """The words of one command: its header, each of ``args`` (a dict of fields) packed through
    the argument layout the ISA gives ``opcode``, then ``payload``."""
    layouts = OPCODES[opcode].args
    assert len(args) == len(layouts), (opcode, args)
    return [header(opcode, flags=flags, count=count),
            *(pack(layout, **fields) for layout, fields in zip(layouts, args)), *payload]


def pack_bytes(values):
    """Pack int8 (or uint8) values into little-endian 32-bit words, zero-padding the last."""
    raw = np.asarray(values).astype(np.int64).ravel()
    if raw.size and (raw.min() < -128 or raw.max() > 255):
        raise ValueError("byte values must be in -128..255")
    raw = (raw & 0xFF).astype(np.uint8)
    padded = np.zeros(-(-raw.size // INT8_PER_WORD) * INT8_PER_WORD, dtype=np.uint8)
    padded[:raw.size] = raw
    return [int(w) for w in padded.view("<u4")]


def words_to_bytes(words):
    """The bytes of 32-bit ``words`` in stream order: each word least significant byte first
    (the order a serial link carries them). Raises ``ValueError`` for a word outside
    ``0 .. 2**32 - 1`` rather than sending other bits than were asked for."""
    out = bytearray()
    for i, w in enumerate(words):
        w = int(w)
        if not 0 <= w <= _WORD_MASK:
            raise ValueError(f"word {i} = {w} does not fit in {STREAM_BITS} unsigned bits")
        out += w.to_bytes(WORD_BYTES, "little")
    return bytes(out)


def bytes_to_words(data):
    """The 32-bit words in ``data`` (bytes, least significant first); a trailing partial word is
    left out."""
    return [int.from_bytes(data[i:i + WORD_BYTES], "little")
            for i in range(0, len(data) - WORD_BYTES + 1, WORD_BYTES)]


def unpack_bytes(words, count):
    """The first ``count`` int8 values packed little-endian in ``words``."""
    raw = np.asarray([int(w) & _WORD_MASK for w in words], dtype="<u4").view(np.int8)
    if raw.size < count:
        raise ValueError(f"{len(words)} words hold fewer than {count} bytes")
    return raw[:count].copy()


def weight_rows(tile, config):
    """Arrange an int8 weight tile of shape (lanes, K) into macro rows.

    Returns an int8 array of shape (ceil(K / R), R, lanes): element ``[j, r, l]`` is
    ``tile[l, R*j + r]``, zero where ``R*j + r >= K`` (so padding adds nothing)."""
    tile = np.asarray(tile)
    lanes, k = tile.shape
    if lanes != config.lanes:
        raise ValueError(f"weight tile must have {config.lanes} rows (lanes), not {lanes}")
    r = config.rows_per_cycle
    rows = -(-k // r)
    padded = np.zeros((lanes, rows * r), dtype=np.int8)
    padded[:, :k] = tile
    return padded.reshape(lanes, rows, r).transpose(1, 2, 0).copy()


def encode_write_weights(row, rows, config):
    """Write ``rows`` (int8, shape (n, R, lanes), see :func:`weight_rows`) at ``row``."""
    rows = np.asarray(rows)
    expected = (config.rows_per_cycle, config.lanes)
    if rows.ndim != 3 or rows.shape[1:] != expected:
        raise ValueError(f"weight rows must have shape (n, {expected[0]}, {expected[1]}), "
                         f"not {rows.shape}")
    return _command(Opcode.WRITE_WEIGHTS, {"row": row}, count=rows.shape[0],
                    payload=pack_bytes(rows))


def encode_load_act(addr, values):
    """Load int8 ``values`` into the activation buffer at byte ``addr``."""
    values = np.asarray(values).ravel()
    return _command(Opcode.LOAD_ACT, {"addr": addr}, count=values.size,
                    payload=pack_bytes(values))


def encode_load_bias(addr, values):
    """Load int32 ``values`` into the bias memory at word ``addr``."""
    values = np.asarray(values, dtype=np.int64).ravel()
    half = 1 << (STREAM_BITS - 1)             # a bias is one signed stream word
    if values.size and (values.min() < -half or values.max() >= half):
        raise ValueError("bias values must fit in int32")
    return _command(Opcode.LOAD_BIAS, {"addr": addr}, count=values.size,
                    payload=[int(v) & _WORD_MASK for v in values])


def encode_matvec(row, act, count, *, accumulate=False):
    """Multiply ``count`` weight rows from ``row`` by activations from byte ``act``."""
    flags = Flag.ACCUMULATE if accumulate else Flag(0)
    return _command(Opcode.MATVEC, {"row": row, "act": act}, flags=flags, count=count)


def encode_load_quant(addr, multipliers, shifts):
    """Load channels ``addr ..`` with Q31 ``multipliers`` (0 .. 2**31 - 1) and ``shifts``
    (-32 .. 31), one each per channel (TFLite's ``(M0, shift)``, see
    :func:`pim_macro.sw.models.requant.quantize_multiplier`). Raises ``ValueError`` for values
    out of range or arrays of different sizes."""
    multipliers = np.asarray(multipliers, dtype=np.int64).ravel()
    shifts = np.asarray(shifts, dtype=np.int64).ravel()
    if multipliers.shape != shifts.shape:
        raise ValueError(f"{multipliers.size} multipliers but {shifts.size} shifts")
    payload = []
    for m, s in zip(multipliers.tolist(), shifts.tolist()):
        payload += [pack(ChannelMultiplier, multiplier=m), pack(ChannelShift, shift=s)]
    return _command(Opcode.LOAD_QUANT, {"addr": addr}, count=multipliers.size, payload=payload)


def _quant(zero_point, act_min, act_max):
    return {"zero_point": zero_point, "act_min": act_min, "act_max": act_max}


def encode_emit_raw(count, *, bias=None):
    """Emit ``count`` lanes as int32, adding ``bias[bias + lane]`` when ``bias`` is an address."""
    return _command(Opcode.EMIT_RAW, {"bias": bias or 0},
                    flags=Flag.BIAS if bias is not None else Flag(0), count=count)


def _requant_flags(bias, double_rounding):
    return ((Flag.BIAS if bias else Flag(0))
            | (Flag.DOUBLE_ROUND if double_rounding else Flag(0)))


def encode_emit_int8(count, *, channel, bias=True, zero_point=0, act_min=-128, act_max=127,
                     double_rounding=False):
    """Emit ``count`` lanes requantized to int8 (four per word) with channels ``channel ..``
    (their multiplier and shift, and their bias when ``bias``), then ``zero_point`` and the
    clamp ``[act_min, act_max]`` (signed bytes); ``double_rounding`` sets ``DOUBLE_ROUND``."""
    return _command(Opcode.EMIT_INT8, {"bias": channel},
                    _quant(zero_point, act_min, act_max),
                    flags=_requant_flags(bias, double_rounding), count=count)


def encode_writeback(count, act, *, channel, bias=True, zero_point=0, act_min=-128,
                     act_max=127, double_rounding=False):
    """Requantize ``count`` lanes as :func:`encode_emit_int8` does and write them to the
    activation buffer at byte ``act``."""
    return _command(Opcode.WRITEBACK, {"bias": channel, "act": act},
                    _quant(zero_point, act_min, act_max),
                    flags=_requant_flags(bias, double_rounding), count=count)


def encode_read_counters(*, clear=False):
    return _command(Opcode.READ_COUNTERS, flags=Flag.CLEAR if clear else Flag(0))


def encode_status():
    return _command(Opcode.STATUS)


@dataclass
class Response:
    """One command's answer: the echoed opcode byte, its :class:`Error` and its data words."""
    opcode: int
    error: Error
    data: list = field(default_factory=list)

    @property
    def ok(self):
        return self.error == Error.OK

    def counters(self):
        """The data of a ``READ_COUNTERS`` response as ``{counter name: value}``; a
        ``ValueError`` for another response, or one of another number of words."""
        if self.opcode != Opcode.READ_COUNTERS.value:
            raise ValueError("not a READ_COUNTERS response")
        if len(self.data) != len(Counter):
            raise ValueError(f"READ_COUNTERS data is {len(self.data)} words, not "
                             f"{len(Counter)}")
        return {c.name.lower(): self.data[c.value] for c in Counter}

    def int32(self):
        """The data words as signed int32 values."""
        return np.asarray(self.data, dtype=np.uint32).view(np.int32).copy()


class AnswerCounter:
    """Counts the complete responses of an output stream fed one word at a time (a status
    word, then the data words its count announces): what a testbench needs to know when a
    program has answered, without re-parsing the stream."""

    def __init__(self):
        self.complete = 0
        self._due = 0               # data words still to come for the current response

    def add(self, word):
        if self._due:
            self._due -= 1
        else:
            self._due = unpack(Status, word).count
        if not self._due:
            self.complete += 1


def parse_responses(words):
    """Split output stream ``words`` into :class:`Response` objects.

    Raises ``ValueError`` if the stream ends inside a response or holds an unknown error code."""
    words = [int(w) for w in words]
    responses, i = [], 0
    while i < len(words):
        status = unpack(Status, words[i])
        count = status.count
        if i + 1 + count > len(words):
            raise ValueError(f"output stream ends inside a response: status {words[i]:#010x} "
                             f"announces {count} words, {len(words) - i - 1} follow")
        responses.append(Response(status.opcode, status.error, words[i + 1:i + 1 + count]))
        i += 1 + count
    return responses


def _raw_field(layout, name, word):
    """The raw bits of field ``name`` of ``word`` (an enum field's too, member or not); a
    ``ValueError`` for a word wider than the layout."""
    word = int(word)
    if not 0 <= word < (1 << layout.size):
        raise ValueError(f"a {layout.size}-bit word must be 0 .. {(1 << layout.size) - 1}, "
                         f"not {word}")
    field = layout[name]
    return (word >> field.offset) & ((1 << field.width) - 1)


def decode_status_words(data):
    """The data of a ``STATUS`` response (``len(StatusWord)`` words) as a dict: ``last_error``
    (an :class:`Error`), ``isa_version``, ``error_count``, the configuration fields and ``arch``
    (an index into :data:`pim_macro.hw.isa.ARCHES`). Raises ``ValueError`` (naming the word)
    for another number of words or a word that does not hold an ISA value where one must be (an
    error code no :class:`Error` has, an architecture not in ``ARCHES``: line noise)."""
    data = [int(w) for w in data]
    if len(data) != len(StatusWord):
        raise ValueError(f"STATUS data is {len(data)} words, not the {len(StatusWord)} of ISA "
                         f"version {ISA_VERSION}")
    errors_word, shape_word = data[StatusWord.ERRORS.value], data[StatusWord.SHAPE.value]
    last_error = _raw_field(ErrorsWord, "last_error", errors_word)
    if last_error not in {e.value for e in Error}:
        raise ValueError(f"ERRORS data word {errors_word:#010x} holds error code {last_error}, "
                         f"none of the ISA's")
    arch = _raw_field(ShapeWord, "arch", shape_word)
    if arch >= len(ARCHES):
        raise ValueError(f"SHAPE data word {shape_word:#010x} holds architecture {arch}, none "
                         f"of {', '.join(ARCHES)}")
    errors = unpack(ErrorsWord, errors_word)
    shape = unpack(ShapeWord, shape_word)
    return {
        "last_error": errors.last_error,
        "isa_version": errors.isa_version,
        "error_count": errors.error_count,
        "lanes": shape.lanes,
        "rows_per_cycle": shape.rows_per_cycle,
        "arch": shape.arch,
        "depth": data[StatusWord.DEPTH.value],
        "act_depth": data[StatusWord.ACT_DEPTH.value],
        "bias_depth": data[StatusWord.BIAS_DEPTH.value],
        "bus_bits": data[StatusWord.BUS_BITS.value],
        "requantizers": data[StatusWord.REQUANTIZERS.value],
    }


@dataclass(frozen=True)
class Truncation:
    """Where a program ends inside a command: command number ``command`` (counted from 0) of
    opcode ``opcode``, its header at word ``first``, has ``present`` of the ``needed`` words of
    its ``part`` (``"argument"`` or ``"payload"``)."""
    command: int
    opcode: Opcode
    first: int
    part: str
    present: int
    needed: int

    def __str__(self):
        return (f"program ends inside {self.opcode.name} (header at word {self.first}): "
                f"{self.present} of {self.needed} {self.part} words")


def _field_reader(layout, name):
    """:func:`_raw_field` of ``layout`` and ``name`` as a function of the word, the layout
    looked up once (amaranth's layouts are slow to index: millions of words)."""
    size, field = layout.size, layout[name]
    offset, mask = field.offset, (1 << field.width) - 1

    def read(word):
        if not 0 <= word < (1 << size):
            raise ValueError(f"a {size}-bit word must be 0 .. {(1 << size) - 1}, not {word}")
        return (word >> offset) & mask
    return read


def frame_complete(words, config):
    """Split a program into the commands it completes, the way the macro reads it.

    Returns ``(commands, truncation)``: ``commands`` a list of ``(opcode_byte,
    first_word_index, word_count)`` for every complete command, ``truncation`` ``None``, or a
    :class:`Truncation` when the program ends inside a command (the macro would wait for the
    rest). An unknown opcode is one word (the macro reports ``BAD_OPCODE`` and reads the next
    word as a header). The one framing rule of the project: :func:`frame_program`,
    :meth:`pim_macro.sw.models.golden.GoldenMacro.frame` and the players use it."""
    words = [int(w) for w in words]
    commands, i, n = [], 0, len(words)
    opcodes = {op.value: op for op in Opcode}
    opcode_of, count_of = _field_reader(Header, "opcode"), _field_reader(Header, "count")
    while i < n:
        # The header's fields by shifts, not unpack(): a program of millions of commands.
        opcode, count = opcode_of(words[i]), count_of(words[i])
        op = opcodes.get(opcode)
        if op is None:
            commands.append((opcode, i, 1))
            i += 1
            continue
        n_args, n_payload = arg_words(op), payload_words(op, count, config)
        # What is missing, checked in stream order: arguments first, then payload.
        for part, first, size in (("argument", i + 1, n_args),
                                  ("payload", i + 1 + n_args, n_payload)):
            if first + size > n:
                return commands, Truncation(len(commands), op, i, part, n - first, size)
        length = 1 + n_args + n_payload
        commands.append((opcode, i, length))
        i += length
    return commands, None


def frame_program(words, config):
    """:func:`frame_complete`'s commands of a program that must be whole: raises
    ``ValueError`` if it ends inside a command, naming it, where its header is, and how many of
    its argument or payload words are there."""
    commands, truncation = frame_complete(words, config)
    if truncation is not None:
        raise ValueError(str(truncation))
    return commands


# -- programs as text -------------------------------------------------------------------------

#: One word of a program text: hex digits, ``0x`` optional.
_HEX_WORD = re.compile(r"(0[xX])?[0-9a-fA-F]+")
#: The most words a program may move (:func:`check_program_size`): its own words plus the words
#: its answers hold at most. The golden model took 895 MB and 78 s for 512 Ki ``STATUS``
#: commands (the most output per word in: 5 Mi words moved, ~170 bytes and ~15 us a word
#: across parsing, the model, the responses and the report); 4 Mi words are ~0.7 GB and about
#: a minute, what a machine holds comfortably (the cycle model and the report cost the same
#: order; the RTL simulators are far slower per word and have their own cycle budget).
PROGRAM_WORDS_MAX = 4 << 20
#: The largest program file :func:`read_program` reads (bytes): 64 MiB, far more than the text
#: of :data:`PROGRAM_WORDS_MAX` words (11 bytes a line, ``0x12345678``) with comments; an
#: endless file (/dev/zero, a pipe that never ends) stops here.
PROGRAM_BYTES_MAX = 64 << 20
#: Characters that may not appear in a program text: control characters but tab, \n and the
#: \r of a \r\n (C0, DEL, C1: a form feed or vertical tab would be a line break to some tools
#: and not to others), and the Unicode line and paragraph separators.
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]|\r(?!\n)")
_BOM = "\ufeff"


def parse_program_text(text, source="program"):
    """The words of a program written as text: one 32-bit word per line in hex (``0x``
    optional, any case), ``#`` starting a comment, blank lines ignored. Lines end at ``\n``
    (a ``\r\n`` is one line end too); a leading byte-order mark is skipped; tabs and spaces
    around a word are ignored; any other control character (a form feed, a vertical tab, a
    NUL, a lone ``\r``) or Unicode line separator, comment or not, is an error.

    Returns ``(words, lines)``: the words (ints) and the line (counted from 1) each comes from,
    the numbers ``grep -n`` gives. Raises ``ValueError`` naming ``source`` and the line for
    anything else on a line (tokens cut to 40 characters in the message)."""
    if text.startswith(_BOM):
        text = text[len(_BOM):]
    bad = _BAD_CHAR.search(text)
    if bad:
        number = text.count("\n", 0, bad.start()) + 1
        code = ord(bad.group()[0])
        kind = "a Unicode line separator" if code > 0xFF else "a control character"
        raise ValueError(f"{source} line {number}: character U+{code:04X} ({kind}) is not "
                         f"allowed in a program (one hex word per line)")
    words, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        token = line.split("#", 1)[0].strip(" \t\r")
        if not token:
            continue
        if not _HEX_WORD.fullmatch(token):
            raise ValueError(f"{source} line {number}: {shown(token)!r} is not a hex word (one "
                             f"32-bit word per line, 0x optional, # for comments)")
        value = int(token, 16)
        if value > _WORD_MASK:
            raise ValueError(f"{source} line {number}: {shown(token)} does not fit in "
                             f"{STREAM_BITS} bits")
        if len(words) >= PROGRAM_WORDS_MAX:
            raise ValueError(f"{source} line {number}: the program holds more than "
                             f"{PROGRAM_WORDS_MAX} words (the limit of a program)")
        words.append(value)
        lines.append(number)
    return words, lines


def check_program_size(words, config, source="program", commands=None):
    """Raise ``ValueError`` (one line naming ``source``) when ``words`` plus the words their
    answers hold at most (every command OK, for ``config``) exceed :data:`PROGRAM_WORDS_MAX`:
    the memory and time a run takes grow with both. ``commands``: those of
    :func:`frame_complete`, if the caller has them."""
    if commands is None:
        commands, _ = frame_complete(words, config)
    opcodes = {op.value: op for op in Opcode}
    count_of = _field_reader(Header, "count")
    answers = 0
    for opcode, first, _ in commands:
        answers += 1
        if opcode in opcodes:           # an unknown opcode: answered by a status word only
            answers += response_words(opcodes[opcode], count_of(words[first]), config)
    if len(words) + answers > PROGRAM_WORDS_MAX:
        raise ValueError(f"{source}: its {len(words)} words and the up to {answers} words of "
                         f"their answers are more than the {PROGRAM_WORDS_MAX} words a "
                         f"program may move (the limit of a program)")


def _read_limited(path):
    """The bytes of file ``path``, read in chunks: stops at :data:`PROGRAM_BYTES_MAX` and at
    the first NUL (no program holds one: a binary file, /dev/zero)."""
    chunks, size = [], 0
    with open_input(path, "program") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if b"\0" in chunk:
                data = b"".join(chunks)
                line = data[:data.index(b"\0")].count(b"\n") + 1
                raise ValueError(f"{path} line {line}: byte 0x00 is "
                                 f"not text (UTF-8): a binary file, not a program?")
            if size > PROGRAM_BYTES_MAX:
                raise ValueError(f"cannot read program {path}: it is larger than "
                                 f"{PROGRAM_BYTES_MAX} bytes (the limit of a program file)")


def read_program(path):
    """:func:`parse_program_text` of the file ``path`` (UTF-8 text, at most
    :data:`PROGRAM_BYTES_MAX` bytes). Raises ``ValueError`` naming the file (and the line)
    when it cannot be read, is larger, is not text, or holds a line that is not a word."""
    try:
        data = _read_limited(path)
    except OSError as exc:              # a read that fails once the file is open
        raise ValueError(f"cannot read program {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: byte {data[exc.start]:#04x} is not text "
                         f"(UTF-8): a binary file, not a program?") from None
    return parse_program_text(text, source=str(path))
