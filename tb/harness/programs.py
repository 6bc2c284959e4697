"""Command streams for the RTL tests and the regression, and the DUT-vs-model comparison.

Layers, as the tests use them: :func:`hand_program` (results written out by hand,
:func:`hand_expected`), :func:`error_programs` (one command per error code, each followed by proof
that nothing happened and that the next command runs), :func:`random_program` (seeded random mixes
of every command, a few of them invalid). Every program is checked against
:class:`pim_macro.sw.models.golden.GoldenMacro` with :func:`compare`.
"""

import numpy as np

from pim_macro.hw.isa import (
    REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN, Counter, Error, Flag, MacroConfig,
    Opcode, QuantArg, pack,
)
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.models.golden import GoldenMacro


__all__ = ["CONFIGS", "hand_program", "hand_expected", "HAND_RESPONSES", "STALLS",
           "random_program", "random_channels", "random_quant", "rounding_program", "init_program",
           "error_programs",
           "compare", "compare_timing"]


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
    out by hand: y = x for the first, y = -128 * sum(x) for the second, then requantized twice:
    by 1/2 (channels ``0 .. lanes - 1``), and by 1/8 and 1/16 alternately in double rounding
    with a zero point and a clamp (channels ``lanes .. 2 * lanes - 1``; ``bias_depth`` must be
    at least ``2 * lanes``)."""
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
    # M0 = 2**30 with shift 0 is 1/2; with shift -2 and -3, 1/8 and 1/16.
    words += asm.encode_load_quant(0, [2**30] * lanes, [0] * lanes)
    words += asm.encode_load_quant(lanes, [2**30] * lanes, [-2, -3] * (lanes // 2))
    words += asm.encode_emit_int8(lanes, channel=0, bias=False)
    words += asm.encode_emit_int8(lanes, channel=lanes, bias=False, zero_point=-10, act_min=-100,
                                  act_max=50, double_rounding=True)
    return words


#: Responses of :func:`hand_program` that carry data, by name.
HAND_RESPONSES = {"raw": 5, "raw_bias": 6, "raw_sum": 8, "int8": 11, "int8_double": 12}


def hand_expected(config):
    """The data of :data:`HAND_RESPONSES`, in its order, worked out by hand."""
    lanes = config.lanes
    x = [(-1) ** i * (i + 1) for i in range(lanes)]
    total = -128 * (-lanes // 2)                          # 64 * lanes
    after = [v + total for v in x]
    # v / 2, half up: (v + 1) >> 1, then saturate at 127 (every value here is positive).
    half = [min((v + 1) // 2, 127) for v in after]
    # Double rounding of v / 8 and v / 16 (v > 0): h = v / 2 half up (the doubling high
    # multiply by 2**30), then h / 4 and h / 8 half away from zero (here: half up); - 10, and
    # clamped to -100 .. 50.
    double = []
    for i, v in enumerate(after):
        h, e = (v + 1) // 2, 2 + i % 2
        double.append(min(max((h + (1 << (e - 1))) >> e, -100 + 10) - 10, 50))
    return [x, [v + 100 for v in x], after, half, double]


#: (name, source idle probability, sink backpressure probability): the four combinations.
STALLS = [
    ("smooth", 0.0, 0.0),
    ("idle", 0.3, 0.0),
    ("backpressure", 0.0, 0.5),
    ("both", 0.3, 0.5),
]


def random_channels(rng, count):
    """``count`` random channel requantizations ``(multipliers, shifts)``: multipliers over
    the whole 31-bit range or TFLite's ``[2**30, 2**31)``, and shifts mostly those that bring
    a random accumulator (with or without a random bias) near the int8 range, the rest any
    shift the channel memory holds."""
    multipliers = np.where(rng.random(count) < 0.5, rng.integers(0, 1 << REQUANT_MULT_BITS, count),
                           rng.integers(1 << 30, 1 << REQUANT_MULT_BITS, count))
    shifts = np.where(rng.random(count) < 0.75, rng.integers(-31, -6, count),
                      rng.integers(REQUANT_SHIFT_MIN, REQUANT_SHIFT_MAX + 1, count))
    return multipliers, shifts


def random_quant(rng):
    """Random keyword arguments of a requantizing command's :data:`QuantArg` and rounding: the
    zero point anywhere, the clamp full, a ReLU, or random (``act_min > act_max`` included)."""
    zero_point = int(rng.integers(-128, 128))
    clamp = int(rng.integers(0, 3))
    if clamp == 0:
        act_min, act_max = -128, 127
    elif clamp == 1:
        act_min, act_max = zero_point, 127
    else:
        act_min, act_max = (int(v) for v in rng.integers(-128, 128, 2))
    return dict(zero_point=zero_point, act_min=act_min, act_max=act_max,
                double_rounding=bool(rng.integers(0, 2)))


def rounding_program(config, rng, *, row, act, channel, lanes, rows=1, bias=None):
    """Commands whose requantized results often land exactly between two integers, where the
    roundings differ (the rule's hardest corner, which random data almost never reaches):
    activations -3 .. 3 at byte ``act`` (a multiple of 4 and of R), a MATVEC of ``rows`` rows
    from ``row`` (small accumulators), channels ``channel ..`` set to multipliers ``2**30``
    (plus a few units sometimes) and shifts -1 .. -6, then an ``EMIT_INT8`` of ``lanes``
    lanes in a random rounding, zero point and clamp (with ``bias``: the bias of channel
    ``bias``, which should be small, else none)."""
    r = config.rows_per_cycle
    words = asm.encode_load_act(act, rng.integers(-3, 4, rows * r))
    words += asm.encode_matvec(row, act, rows)
    multipliers = (1 << 30) + np.where(rng.random(lanes) < 0.7, 0, rng.integers(-3, 4, lanes))
    words += asm.encode_load_quant(channel, multipliers, rng.integers(-6, 0, lanes))
    quant = random_quant(rng)
    if rng.random() < 0.5:
        quant.update(act_min=-128, act_max=127)
    return words + asm.encode_emit_int8(lanes, channel=channel, bias=bias is not None, **quant)


def init_program(config, rng):
    """Fill every memory with random data, so the result does not depend on earlier contents."""
    words = asm.encode_write_weights(
        0, rng.integers(-128, 128, (config.depth, config.rows_per_cycle, config.lanes)), config)
    words += asm.encode_load_act(0, rng.integers(-128, 128, config.act_depth))
    words += asm.encode_load_bias(0, rng.integers(-2**31, 2**31, config.bias_depth))
    words += asm.encode_load_quant(0, *random_channels(rng, config.bias_depth))
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
        kind = rng.choice(["weights", "act", "bias", "quant", "matvec", "matvec", "matvec", "raw",
                           "int8", "int8", "writeback", "writeback", "ties", "counters",
                           "status"])
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
        elif kind == "quant":
            addr, count = span(cfg.bias_depth, 8)
            words += asm.encode_load_quant(addr, *random_channels(rng, count))
        elif kind == "ties":
            rows = int(rng.integers(1, min(cfg.depth, cfg.act_depth // r, 3) + 1))
            span_bytes = -(-rows * r // 4) * 4
            act = 4 * int(rng.integers(0, (cfg.act_depth - span_bytes) // 4 + 1))
            count = int(rng.integers(1, min(lanes, cfg.bias_depth) + 1))
            words += rounding_program(cfg, rng, row=int(rng.integers(0, cfg.depth - rows + 1)),
                                      act=act, channel=int(rng.integers(0, cfg.bias_depth
                                                                        - count + 1)),
                                      lanes=count, rows=rows)
        elif kind == "matvec":
            count = int(rng.integers(1, min(cfg.depth, cfg.act_depth // r, 40) + 1))
            row = int(rng.integers(0, cfg.depth - count + 1))
            act = r * int(rng.integers(0, cfg.act_depth // r - count + 1))
            words += asm.encode_matvec(row, act, count, accumulate=bool(rng.integers(0, 2)))
        elif kind in ("raw", "int8", "writeback"):
            count = int(rng.integers(1, min(lanes, cfg.bias_depth) + 1))
            channel = int(rng.integers(0, cfg.bias_depth - count + 1))
            with_bias = rng.random() < 0.7
            if kind == "raw":
                words += asm.encode_emit_raw(count, bias=channel if with_bias else None)
            elif kind == "int8":
                words += asm.encode_emit_int8(count, channel=channel, bias=with_bias,
                                              **random_quant(rng))
            else:
                act = int(rng.integers(0, cfg.act_depth - count + 1))
                words += asm.encode_writeback(count, act, channel=channel, bias=with_bias,
                                              **random_quant(rng))
        elif kind == "counters":
            words += asm.encode_read_counters(clear=bool(rng.integers(0, 2)))
        else:
            words += asm.encode_status()
    words += asm.encode_status() + asm.encode_read_counters()
    return words


def _invalid_command(cfg, rng):
    """One command that fails a check (any of them), with its announced payload."""
    choice = int(rng.integers(0, 9))
    if choice == 0:
        return [int(rng.choice([0x00, 0x0B, 0x7F, 0xFF]))]
    if choice == 1:
        return [asm.header(Opcode.MATVEC, flags=0x80, count=1), 0]
    if choice == 2:
        return asm.encode_emit_raw(0)
    if choice == 3:
        return asm.encode_matvec(0, 1, 1) if cfg.rows_per_cycle > 1 else asm.encode_load_act(2, [1])
    if choice == 4:
        return asm.encode_write_weights(cfg.depth - 1, np.ones((2, cfg.rows_per_cycle,
                                                               cfg.lanes)), cfg)
    if choice == 5:         # channels past the memory, without BIAS: still BAD_ADDRESS
        count = min(cfg.lanes, cfg.bias_depth)
        return asm.encode_writeback(count, 0, channel=cfg.bias_depth - count + 1, bias=False)
    if choice == 6:         # LOAD_QUANT past the memory: its payload is skipped
        return asm.encode_load_quant(cfg.bias_depth - 1, [2**30] * 2, [0, 0])
    if choice == 7:         # DOUBLE_ROUND where it is not allowed
        return [asm.header(Opcode.EMIT_RAW, flags=Flag.DOUBLE_ROUND.value, count=1), 0]
    return _quant_reserved(1)


def _quant_reserved(count):
    """An EMIT_INT8 whose QuantArg has a reserved bit set (``BAD_FIELD``)."""
    words = asm.encode_emit_int8(count, channel=0)
    words[2] |= 1 << QuantArg["reserved"].offset
    return words


def error_programs(config: MacroConfig):
    """``{name: (program, command index, expected error)}``: one trigger per error code.

    Each program first sets the last ``lanes`` channels (so that it does not depend on what
    earlier programs left there), then runs the failing command, then a command that must still
    work, and a MATVEC/EMIT over the memory the failed command would have touched, so writing
    it anyway shows up as a mismatch. ``bias_depth`` must be at least ``lanes``."""
    cfg = config
    rows = np.full((1, cfg.rows_per_cycle, cfg.lanes), 7)
    last = cfg.bias_depth - cfg.lanes
    pre = asm.encode_load_quant(last, [2**30 + 12345 * i for i in range(cfg.lanes)],
                                [-1 - i % 3 for i in range(cfg.lanes)])
    pre += asm.encode_load_bias(last, [1000 * i - 3000 for i in range(cfg.lanes)])
    tail = (asm.encode_load_act(0, np.ones(cfg.rows_per_cycle * 2, dtype=np.int8))
            + asm.encode_matvec(cfg.depth - 2, 0, 2) + asm.encode_emit_raw(cfg.lanes)
            + asm.encode_emit_int8(cfg.lanes, channel=last, zero_point=3))
    cases = {
        "bad_opcode": ([0x00000077], Error.BAD_OPCODE),
        "bad_field_flags": ([asm.header(Opcode.LOAD_ACT, flags=0x01, count=1), 0, 5],
                            Error.BAD_FIELD),
        "bad_field_double_round": ([asm.header(Opcode.EMIT_RAW, flags=Flag.DOUBLE_ROUND.value,
                                               count=1), last], Error.BAD_FIELD),
        "bad_field_quant_reserved": (_quant_reserved(1), Error.BAD_FIELD),
        "bad_address_channels": (asm.encode_emit_int8(cfg.lanes, channel=last + 1, bias=False),
                                 Error.BAD_ADDRESS),
        "bad_address_quant": (asm.encode_load_quant(last + 1, [5] * cfg.lanes,
                                                    [7] * cfg.lanes), Error.BAD_ADDRESS),
        "bad_address_bias": (asm.encode_load_bias(last + 1, [99] * cfg.lanes),
                             Error.BAD_ADDRESS),
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
    return {name: (pre + prefix + tail + asm.encode_status(), 2, error)
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


def compare_timing(words, out, config, *, arch="pim", fabric="portable", where=""):
    """Assert that every ``READ_COUNTERS`` after a clearing one reports exactly the counters
    (``CYCLES`` and the stalls included) that :mod:`pim_macro.sw.models.cycle_model` predicts
    for ``fabric`` (a name in :data:`pim_macro.hw.fabric.FABRICS`). Valid for runs where the
    source never idles and the sink never refuses. Returns how many were compared."""
    model = CycleModel(config, arch=arch, fabric=fabric)
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
