"""Command streams for the RTL tests and the regression, and the DUT-vs-model comparison.

Layers, as the tests use them: :func:`hand_program` (results written out by hand,
:func:`hand_expected`), :func:`error_programs` (one command per error code, each followed by proof
that nothing happened and that the next command runs), :func:`random_program` (seeded random mixes
of every command, a few of them invalid). Every program is checked against
:class:`pim_macro.sw.models.golden.GoldenMacro` with :func:`compare`.
"""

import numpy as np

from pim_macro.hw.isa import (
    REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, Counter, Error, MacroConfig, Opcode,
)
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.models.golden import GoldenMacro


__all__ = ["CONFIGS", "hand_program", "hand_expected", "STALLS", "random_program", "init_program",
           "error_programs", "compare", "compare_timing"]


# bus_bits only matters to the baseline; each configuration gives it a different bus.
CONFIGS = {
    "l8r1": MacroConfig(bus_bits=8),
    "l8r2": MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32,
                        bus_bits=16),
    "l4r4q1": MacroConfig(lanes=4, rows_per_cycle=4, depth=32, act_depth=128, bias_depth=16,
                          bus_bits=64, requantizers=1),
    "l12r1q2": MacroConfig(lanes=12, rows_per_cycle=1, depth=48, act_depth=64, bias_depth=24,
                           requantizers=2),
}


def hand_program(config):
    """Identity weights (lane l reads activation l) and all -128 weights, with results written
    out by hand: y = x for the first, y = -128 * sum(x) for the second, then requantized."""
    lanes, r = config.lanes, config.rows_per_cycle
    k = lanes                                    # one activation per lane
    eye = np.zeros((lanes, k), dtype=np.int8)
    eye[np.arange(lanes), np.arange(lanes)] = 1
    x = np.array([(-1) ** i * (i + 1) for i in range(k)], dtype=np.int8)  # 1, -2, 3, -4, ...
    words = asm.encode_write_weights(0, asm.weight_rows(eye, config), config)
    words += asm.encode_write_weights(k // r, asm.weight_rows(np.full((lanes, k), -128), config),
                                      config)
    words += asm.encode_load_act(0, x)
    words += asm.encode_load_bias(0, [100] * lanes)
    words += asm.encode_matvec(0, 0, k // r)             # acc = x
    words += asm.encode_emit_raw(lanes)                   # 1, -2, 3, ...
    words += asm.encode_emit_raw(lanes, bias=0)           # 101, 98, 103, ...
    words += asm.encode_matvec(k // r, 0, k // r, accumulate=True)   # acc = x - 128 * sum(x)
    words += asm.encode_emit_raw(lanes)
    # -128 * sum(x): sum(1, -2, 3, ..., -lanes) = -lanes / 2
    words += asm.encode_emit_int8(lanes, mult=1, shift=1, relu=False)
    return words


def hand_expected(config):
    lanes = config.lanes
    x = [(-1) ** i * (i + 1) for i in range(lanes)]
    total = -128 * (-lanes // 2)                          # 64 * lanes
    after = [v + total for v in x]
    # mult 1, shift 1: (v + 1) >> 1, then saturate at 127 (every value here is positive).
    return [x, [v + 100 for v in x], after, [min((v + 1) // 2, 127) for v in after]]


#: (name, source idle probability, sink backpressure probability): the four combinations.
STALLS = [
    ("smooth", 0.0, 0.0),
    ("idle", 0.3, 0.0),
    ("backpressure", 0.0, 0.5),
    ("both", 0.3, 0.5),
]


def init_program(config, rng):
    """Fill every memory with random data, so the result does not depend on earlier contents."""
    words = asm.encode_write_weights(
        0, rng.integers(-128, 128, (config.depth, config.rows_per_cycle, config.lanes)), config)
    words += asm.encode_load_act(0, rng.integers(-128, 128, config.act_depth))
    words += asm.encode_load_bias(0, rng.integers(-2**31, 2**31, config.bias_depth))
    return words


def random_program(config: MacroConfig, seed, *, commands=30, init=True, invalid=0.1):
    """A seeded random program using every command; about ``invalid`` of them fail a check."""
    rng = np.random.default_rng(seed)
    cfg = config
    r, lanes = cfg.rows_per_cycle, cfg.lanes
    words = init_program(cfg, rng) if init else []
    words += asm.encode_read_counters(clear=True)

    def span(limit, most):
        count = int(rng.integers(1, min(limit, most) + 1))
        return int(rng.integers(0, limit - count + 1)), count

    for _ in range(commands):
        kind = rng.choice(["weights", "act", "bias", "matvec", "matvec", "matvec", "raw", "int8",
                           "writeback", "counters", "status"])
        if rng.random() < invalid:
            words += _invalid_command(cfg, rng)
            continue
        if kind == "weights":
            row, count = span(cfg.depth, 6)
            words += asm.encode_write_weights(
                row, rng.integers(-128, 128, (count, r, lanes)), cfg)
        elif kind == "act":
            addr, count = span(cfg.act_depth // 4, 8)
            words += asm.encode_load_act(4 * addr, rng.integers(-128, 128, 4 * count - 3
                                                                 + int(rng.integers(0, 4))))
        elif kind == "bias":
            addr, count = span(cfg.bias_depth, 8)
            words += asm.encode_load_bias(addr, rng.integers(-2**31, 2**31, count))
        elif kind == "matvec":
            count = int(rng.integers(1, min(cfg.depth, cfg.act_depth // r, 40) + 1))
            row = int(rng.integers(0, cfg.depth - count + 1))
            act = r * int(rng.integers(0, cfg.act_depth // r - count + 1))
            words += asm.encode_matvec(row, act, count, accumulate=bool(rng.integers(0, 2)))
        elif kind in ("raw", "int8", "writeback"):
            count = int(rng.integers(1, lanes + 1))
            bias = (int(rng.integers(0, cfg.bias_depth - count + 1))
                    if cfg.bias_depth >= count and rng.random() < 0.7 else None)
            quant = dict(mult=int(rng.integers(0, 1 << REQUANT_MULT_BITS)),
                         shift=int(rng.integers(0, REQUANT_SHIFT_MAX + 1)),
                         relu=bool(rng.integers(0, 2)))
            if kind == "raw":
                words += asm.encode_emit_raw(count, bias=bias)
            elif kind == "int8":
                words += asm.encode_emit_int8(count, bias=bias, **quant)
            else:
                act = int(rng.integers(0, cfg.act_depth - count + 1))
                words += asm.encode_writeback(count, act, bias=bias, **quant)
        elif kind == "counters":
            words += asm.encode_read_counters(clear=bool(rng.integers(0, 2)))
        else:
            words += asm.encode_status()
    words += asm.encode_status() + asm.encode_read_counters()
    return words


def _invalid_command(cfg, rng):
    """One command that fails a check (any of them), with its announced payload."""
    choice = int(rng.integers(0, 6))
    if choice == 0:
        return [int(rng.choice([0x00, 0x0A, 0x7F, 0xFF]))]
    if choice == 1:
        return [asm.header(Opcode.MATVEC, flags=0x80, count=1), 0]
    if choice == 2:
        return asm.encode_emit_raw(0)
    if choice == 3:
        return asm.encode_matvec(0, 1, 1) if cfg.rows_per_cycle > 1 else asm.encode_load_act(2, [1])
    if choice == 4:
        return asm.encode_write_weights(cfg.depth - 1, np.ones((2, cfg.rows_per_cycle,
                                                               cfg.lanes)), cfg)
    return asm.encode_emit_int8(1, mult=1, shift=REQUANT_SHIFT_MAX + 1)


def error_programs(config: MacroConfig):
    """``{name: (program, command index, expected error)}``: one trigger per error code.

    Each program then runs a command that must still work, and a MATVEC/EMIT over the memory
    the failed command would have touched, so writing it anyway shows up as a mismatch."""
    cfg = config
    rows = np.full((1, cfg.rows_per_cycle, cfg.lanes), 7)
    tail = (asm.encode_load_act(0, np.ones(cfg.rows_per_cycle * 2, dtype=np.int8))
            + asm.encode_matvec(cfg.depth - 2, 0, 2) + asm.encode_emit_raw(cfg.lanes))
    cases = {
        "bad_opcode": ([0x00000077], Error.BAD_OPCODE),
        "bad_field_flags": ([asm.header(Opcode.LOAD_ACT, flags=0x01, count=1), 0, 5],
                            Error.BAD_FIELD),
        "bad_field_shift": (asm.encode_emit_int8(1, mult=1, shift=REQUANT_SHIFT_MAX + 1),
                            Error.BAD_FIELD),
        "bad_length_zero": (asm.encode_write_weights(0, rows[:0], cfg), Error.BAD_LENGTH),
        "bad_length_lanes": (asm.encode_emit_raw(cfg.lanes + 1), Error.BAD_LENGTH),
        "misaligned_act": (asm.encode_load_act(2, [1, 2, 3]), Error.MISALIGNED),
        "bad_address_weights": (asm.encode_write_weights(cfg.depth - 1, np.concatenate(
            [rows, rows]), cfg), Error.BAD_ADDRESS),
        "bad_address_matvec": (asm.encode_matvec(0, cfg.act_depth - cfg.rows_per_cycle, 2),
                               Error.BAD_ADDRESS),
    }
    if cfg.rows_per_cycle > 1:
        cases["misaligned_matvec"] = (asm.encode_matvec(0, 1, 1), Error.MISALIGNED)
    return {name: (prefix + tail + asm.encode_status(), 0, error)
            for name, (prefix, error) in cases.items()}


def compare(words, out, config, *, arch="pim", where=""):
    """Assert that ``out`` (the DUT's output for program ``words`` on ``arch``) matches the
    golden model.

    Responses are compared one by one; counters only where the model is exact (not time)."""
    expected = asm.parse_responses(GoldenMacro(config, arch=arch).run(words))
    actual = _parse(out, where)
    assert len(actual) == len(expected), (
        f"{where}: the macro answered {len(actual)} commands, the golden model {len(expected)}")
    for i, (got, exp) in enumerate(zip(actual, expected)):
        name = _name(exp.opcode)
        assert (got.opcode, got.error) == (exp.opcode, exp.error), (
            f"{where}: command {i} ({name}) should answer {exp.error.name}, "
            f"got opcode {got.opcode:#x} {got.error.name}")
        if exp.opcode == Opcode.READ_COUNTERS.value and exp.ok:
            for counter in Counter:
                if counter in GoldenMacro.UNTIMED:
                    continue
                assert got.data[counter.value] == exp.data[counter.value], (
                    f"{where}: command {i} READ_COUNTERS: {counter.name} should be "
                    f"{exp.data[counter.value]}, got {got.data[counter.value]}")
        else:
            assert got.data == exp.data, (
                f"{where}: command {i} ({name}) data should be "
                f"{[hex(w) for w in exp.data]}, got {[hex(w) for w in got.data]}")
    return actual


def _parse(out, where):
    """The DUT's responses; a stream that ends inside one (a missing or an extra word) fails
    the comparison like any other difference."""
    try:
        return asm.parse_responses(out)
    except ValueError as exc:
        raise AssertionError(f"{where}: {exc}") from None


def compare_timing(words, out, config, *, arch="pim", where=""):
    """Assert that every ``READ_COUNTERS`` after a clearing one reports exactly the counters
    (``CYCLES`` and the stalls included) that :mod:`pim_macro.sw.models.cycle_model` predicts. Valid
    for runs where the source never idles and the sink never refuses. Returns how many were
    compared."""
    model = CycleModel(config, arch=arch)
    expected = asm.parse_responses(model.run(words))
    actual = _parse(out, where)
    assert len(actual) == len(expected), f"{where}: response counts differ"
    for i in model.timed:
        got, exp = actual[i].counters(), expected[i].counters()
        assert got == exp, (f"{where}: command {i} READ_COUNTERS: the RTL reports {got}, the "
                            f"cycle model predicts {exp}")
    return len(model.timed)


def _name(opcode):
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode:#x}"
