"""README.md's tables of the instruction set, read back and compared with hw/isa.py, its single
source: opcodes (number, name, arguments and their bit fields, payload and response word
counts), flags, error codes, counters, status words (and their bit fields), the header and
status word diagrams and the macro parameters. A member added to ``isa`` without a row in the
README, a renumbered one or a changed field fails here (as test_synth.py does for the pins)."""

import dataclasses
import math
import re

import pytest

from pim_macro.hw import isa
from pim_macro.hw.isa import (Counter, Error, Flag, MacroConfig, Opcode, OPCODES, StatusWord,
                              Words)
from pim_macro.sw.paths import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()

#: The status words with fields; the others are one number each.
STATUS_LAYOUTS = {StatusWord.ERRORS: isa.ErrorsWord, StatusWord.SHAPE: isa.ShapeWord}


def _cells(line):
    """The cells of a Markdown table row (``\\|`` is a pipe inside a cell)."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in cells]


def table(*header):
    """The rows (lists of cells) of the one README table whose header row is ``header``."""
    lines = README.splitlines()
    found = [i for i, line in enumerate(lines)
             if line.startswith("|") and tuple(_cells(line)) == header]
    assert len(found) == 1, f"README.md should have one table headed {header}, has {len(found)}"
    rows = []
    for line in lines[found[0] + 2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def _code(cell):
    """The first `code` span of a cell."""
    match = re.search(r"`([^`]*)`", cell)
    assert match, f"no `name` in {cell!r}"
    return match.group(1)


def _ranges(text):
    """``[(hi, lo)]`` of every bit range ``[hi:lo]`` in ``text``, in order."""
    return [(int(hi), int(lo)) for hi, lo in re.findall(r"\[(\d+):(\d+)\]", text)]


def _layout_ranges(layout, skip=("reserved",)):
    """``[(name, hi, lo)]`` of a StructLayout's fields, in bit order."""
    fields = sorted(((name, f.offset, f.width) for name, f in layout), key=lambda f: f[1])
    return [(name, offset + width - 1, offset) for name, offset, width in fields
            if name not in skip]


def _words(cell, count, config):
    """The number of words a README cell gives: ``none``, ``N words``, ```expr` words`` with
    ``count``, ``R``, ``L`` and ``ceil``."""
    if cell == "none":
        return 0
    match = re.match(r"(?:`([^`]+)`|(\d+)) words?\b", cell)
    assert match, f"cannot read a word count from {cell!r}"
    if match.group(2):
        return int(match.group(2))
    expr = match.group(1)
    value = eval(expr, {"__builtins__": {}},
                 {"count": count, "R": config.rows_per_cycle, "L": config.lanes, "ceil": math.ceil})
    assert value == int(value), f"{expr} is not a whole number of words for count {count}"
    return int(value)


def opcodes(text):
    """The opcode names written as code in ``text``."""
    return {name for name in re.findall(r"`(\w+)`", text) if name in Opcode.__members__}


CONFIGS = [MacroConfig(), MacroConfig(lanes=12, rows_per_cycle=4, bus_bits=16, requantizers=1),
           MacroConfig(lanes=4, rows_per_cycle=2)]

OPCODE_ROWS = table("op", "name", "arguments", "payload", "effect; response data")


def test_opcode_table_lists_every_opcode_in_order():
    documented = [(int(op, 16), _code(name)) for op, name, *_ in OPCODE_ROWS]
    assert documented == [(op.value, op.name) for op in Opcode], \
        "README.md's command table should list every isa.Opcode with its number, in order"


@pytest.mark.parametrize("row", OPCODE_ROWS, ids=[_code(row[1]) for row in OPCODE_ROWS])
def test_opcode_arguments(row):
    """The arguments column: one entry per argument word (``;`` between words), the fields of
    each (``,`` between them; a bit range, when given, must be the field's); ``none`` for no
    argument. Reserved fields are not named."""
    _, name, arguments, _, _ = row
    info = OPCODES[Opcode[_code(name)]]
    if arguments == "none":
        assert info.args == (), f"{_code(name)} has arguments in isa.py"
        return
    words = [re.sub(r"\([^)]*\)", "", word) for word in arguments.split(";")]
    assert len(words) == len(info.args), \
        f"{_code(name)}: README gives {len(words)} argument words, isa.py {len(info.args)}"
    for word, layout in zip(words, info.args):
        fields = _layout_ranges(layout)
        parts = [part.strip() for part in word.split(",")]
        assert [part.split()[0] for part in parts] == [f for f, _, _ in fields], \
            f"{_code(name)}: README names the fields {parts}, isa.py {fields}"
        for part, (field, hi, lo) in zip(parts, fields):
            given = _ranges(part)
            assert given in ([], [(hi, lo)]), \
                f"{_code(name)}: README gives {field} bits {given}, isa.py [{hi}:{lo}]"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.tag())
@pytest.mark.parametrize("row", OPCODE_ROWS, ids=[_code(row[1]) for row in OPCODE_ROWS])
def test_opcode_payload_and_response_words(row, config):
    """The payload column, and the response data the effect column begins with (``N words:``;
    an effect that begins otherwise promises no data words)."""
    _, name, _, payload, effect = row
    op = Opcode[_code(name)]
    counts = [0] if OPCODES[op].counts is None else [1, 2, 3, 4, 5, 7, 8, 12, 100]
    for count in counts:
        assert _words(payload, count, config) == isa.payload_words(op, count, config), \
            f"{op.name}: README's payload for count {count} differs from isa.py"
        documented = _words(effect, count, config) if re.match(r"(`[^`]+`|\d+) words?\b", effect) \
            else 0
        assert documented == isa.response_words(op, count, config), \
            f"{op.name}: README's response data for count {count} differs from isa.py"


def test_flag_table():
    rows = table("flag", "bit", "accepted by", "effect")
    documented = [(_code(name), int(bit, 16)) for name, bit, _, _ in rows]
    assert documented == [(flag.name, flag.value) for flag in Flag], \
        "README.md's flag table should list every isa.Flag with its bit, in order"
    for name, _, accepted, _ in rows:
        flag = Flag[_code(name)]
        documented = set(re.findall(r"`(\w+)`", accepted))
        assert documented == {op.name for op in Opcode if flag in isa.allowed_flags(op)}, \
            f"README.md: the opcodes that accept {flag.name}"


def test_error_table():
    rows = table("code", "name", "fails when")
    assert [(int(code), _code(name)) for code, name, _ in rows] == \
        [(error.value, error.name) for error in Error if error is not Error.OK], \
        "README.md's check table should list every isa.Error but OK, with its code, in order"
    assert f"(`OK` is {Error.OK.value})" in README
    fails_when = {_code(name): text for _, name, text in rows}
    assert opcodes(fails_when["BAD_FIELD"]) == {op.name for op in isa.COUNTLESS}, \
        "README.md: the opcodes whose count must be 0 (isa.COUNTLESS)"
    assert opcodes(fails_when["BAD_LENGTH"]) == {op.name for op in isa.LANE_COUNTED}, \
        "README.md: the opcodes whose count is at most lanes (isa.LANE_COUNTED)"
    requantization = re.search(r"\*\*Requantization\*\* \(([^;]*);", README)
    assert requantization and opcodes(requantization.group(1)) == \
        {op.name for op in isa.REQUANTIZING}, "README.md: the requantizing opcodes"
    assert f"an unsigned {isa.REQUANT_MULT_BITS}-bit multiplier `M0`" in README
    assert f"a signed {isa.REQUANT_SHIFT_BITS}-bit `shift`" in README
    assert opcodes(fails_when["BAD_ADDRESS"]) >= {op.name for op in isa.REQUANTIZING}, \
        "README.md: the requantizing commands check their channels' addresses"


def test_counter_table():
    rows = table("index", "counter", "counts")
    assert [(int(index), _code(name)) for index, name, _ in rows] == \
        [(counter.value, counter.name) for counter in Counter], \
        "README.md's counter table should list every isa.Counter with its index, in order"


def test_status_word_table():
    rows = table("index", "word", "layout")
    assert [(int(index), _code(name)) for index, name, _ in rows] == \
        [(word.value, word.name) for word in StatusWord], \
        "README.md's status word table should list every isa.StatusWord with its index, in order"
    for _, name, layout in rows:
        word = StatusWord[_code(name)]
        want = [(hi, lo) for _, hi, lo in _layout_ranges(STATUS_LAYOUTS[word])] \
            if word in STATUS_LAYOUTS else []
        assert _ranges(layout) == want, f"README.md: the bit fields of status word {word.name}"
    errors = rows[StatusWord.ERRORS.value][2]
    assert f"`ISA_VERSION` ({isa.ISA_VERSION})" in errors
    assert f"saturates at {isa.ERROR_COUNT_MAX}" in errors


def test_header_and_status_diagrams():
    for name, layout in (("header", isa.Header), ("status", isa.Status)):
        line = next(line for line in README.splitlines() if line.startswith(name + " "))
        documented = [(field, int(hi), int(lo))
                      for hi, lo, field in re.findall(r"\[(\d+):(\d+)\] (\w+)", line)]
        assert documented == _layout_ranges(layout), f"README.md's {name} word diagram"


def test_parameter_table():
    rows = table("parameter", "default", "limits", "meaning")
    defaults = MacroConfig()
    assert [(_code(name), int(default)) for name, default, _, _ in rows] == \
        [(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(MacroConfig)], \
        "README.md's parameter table should list every MacroConfig field with its default"


def test_a_counter_added_without_a_row_fails(monkeypatch):
    """The check itself: README text without the last counter's row (as if isa.py had gained
    a counter nobody documented) fails."""
    last = list(Counter)[-1]
    row = next(line for line in README.splitlines()
               if line.startswith(f"| {last.value} | `{last.name}` |"))
    monkeypatch.setitem(globals(), "README", README.replace(row + "\n", ""))
    with pytest.raises(AssertionError, match="every isa.Counter"):
        test_counter_table()


def test_named_constants():
    """The gateware constants the README quotes by name (timing, queue and FIFO sizes, the
    line rate) have the values it gives."""
    from pim_macro.hw.board import BAUD
    from pim_macro.hw.mac_array import MacArray
    from pim_macro.hw.mac_engine import OP_SLOTS
    from pim_macro.hw.macro import RESPONSE_SLOTS
    from pim_macro.hw.output_engine import OUT_FIFO_DEPTH, OutputEngine
    from pim_macro.hw.uart_bridge import RX_FIFO_BYTES
    quoted = {
        r"`MacArray\.LATENCY` = (\d+)": MacArray.LATENCY,
        r"`OutputEngine\.LANE_LATENCY` = (\d+)": OutputEngine.LANE_LATENCY,
        r"output FIFO holds (\d+) words\s+\(`OUT_FIFO_DEPTH`\)": OUT_FIFO_DEPTH,
        r"response queue (\d+) \(`RESPONSE_SLOTS`\)": RESPONSE_SLOTS,
        r"op queue (\d+) \(`OP_SLOTS`\)": OP_SLOTS,
        r"receive FIFO \((\d+) bytes, `RX_FIFO_BYTES`\)": RX_FIFO_BYTES,
        r"UART at\s+(\d+)\s+baud": BAUD,
    }
    for pattern, value in quoted.items():
        found = [int(n) for n in re.findall(pattern, README)]
        assert found and set(found) == {value}, f"README.md: {pattern} should give {value}"
