"""The command decoder against the golden model's checks, exhaustively over boundary classes.

For every opcode byte and every flag byte, and for every known opcode the cross product of the
boundary classes of ``count`` and of each argument field (0, 1, the limit and its neighbours,
misaligned values, reserved bits set, zero points and clamps at the int8 ends, 0xFFFF), the
decoder's error code, status word, announced payload and argument count must be those of
``GoldenMacro.check`` and the ISA table. Many cases run in one simulation, one command every
two or three cycles.
"""

import itertools

import pytest
from amaranth.sim import Simulator

from pim_macro.hw.decoder import CommandDecoder
from pim_macro.hw.isa import (OPCODES, Error, Flag, Header, MacroConfig,
                              Opcode, QuantArg, Status, arg_words, pack, payload_words,
                              response_words)
from pim_macro.sw.models.golden import GoldenMacro


CONFIGS = {
    "small": MacroConfig(lanes=4, rows_per_cycle=1, depth=8, act_depth=16, bias_depth=8),
    "r2": MacroConfig(lanes=8, rows_per_cycle=2, depth=5, act_depth=12, bias_depth=6),
    # Every limit at its largest: the ends of the spans need their widest sums here.
    "limits": MacroConfig(lanes=256, rows_per_cycle=4, depth=65536, act_depth=65536,
                          bias_depth=65536),
}

_MAX16 = 0xFFFF


def _around(*limits):
    """0, 1, 2, and each limit with its neighbours, as 16-bit field values."""
    values = {0, 1, 2, _MAX16 - 3, _MAX16 - 1, _MAX16}
    for limit in limits:
        values |= {limit - 1, limit, limit + 1}
    return sorted(v for v in values if 0 <= v <= _MAX16)


def _count_classes(op, config):
    info = OPCODES[op]
    R = config.rows_per_cycle
    limits = {"rows": (config.depth, config.act_depth // R, config.act_depth // R + 1),
              "bytes": (config.act_depth, 4, 5), "words": (config.bias_depth,),
              "lanes": (config.lanes, config.bias_depth, config.act_depth),
              None: ()}[info.counts]
    return _around(*limits)


def _field_classes(name, config):
    """Boundary classes of the 16-bit argument field ``name``; aligned and misaligned values
    near every limit come from the neighbours of the limits (multiples of 4 +- 1)."""
    R = config.rows_per_cycle
    if name == "reserved":
        return [0, 1, 0x8000]
    if name == "row":
        return _around(config.depth)
    if name == "addr":
        return _around(config.act_depth, config.bias_depth, 3, 4)
    if name == "act":
        return _around(config.act_depth, config.act_depth - R, R, 3)
    if name == "bias":
        return _around(config.bias_depth, config.bias_depth - config.lanes)
    raise AssertionError(name)


# The second argument word of a requantizing command: valid and invalid corners of every field.
_QUANT_FULL = [pack(QuantArg, zero_point=zp, act_min=lo, act_max=hi, reserved=reserved)
               for zp, lo, hi, reserved in itertools.product(
                   (-128, 0, 127), (-128, -1, 127), (-128, 0, 127), (0, 1, 0x80))]
_QUANT_FEW = [pack(QuantArg, zero_point=-128, act_min=127, act_max=-128),
              pack(QuantArg, zero_point=127, act_min=-128, act_max=127),
              pack(QuantArg),
              pack(QuantArg, reserved=1)]


def _flag_classes(op):
    """Every subset of the flags ``op`` accepts, and one flag it does not."""
    allowed = [f.value for f in Flag if f in OPCODES[op].flags]
    subsets = [sum(s) for n in range(len(allowed) + 1)
               for s in itertools.combinations(allowed, n)]
    stray = next(f for f in Flag if f not in OPCODES[op].flags)
    return subsets + [stray.value]


def _arg0_words(layout, config):
    names = [name for name, _ in layout]
    fields = [_field_classes(name, config) for name in names]
    return [pack(layout, **dict(zip(names, values))) for values in itertools.product(*fields)]


def full_cross(config):
    """Per known opcode: flag classes x count classes x every argument field's classes (the
    second, requantization, word through a few corners; all its corners in
    :func:`quant_cross`)."""
    cases = []
    for op, info in OPCODES.items():
        arg_sets = [[]]
        if info.args:
            arg_sets = [[w] for w in _arg0_words(info.args[0], config)]
        if len(info.args) > 1:
            arg_sets = [a + [q] for a in arg_sets for q in _QUANT_FEW]
        for flags, count, args in itertools.product(_flag_classes(op), _count_classes(op, config),
                                                    arg_sets):
            cases.append((op.value, flags, count, args))
    return cases


def quant_cross(config):
    """Every corner of the requantization word, with every flag class and a few counts."""
    cases = []
    for op, info in OPCODES.items():
        if len(info.args) < 2:
            continue
        for flags, count, quant in itertools.product(_flag_classes(op), (0, 1, config.lanes + 1),
                                                     _QUANT_FULL):
            cases.append((op.value, flags, count, [0, quant]))
    return cases


def every_header(config, *, all_flags):
    """Every opcode byte with every flag byte (or, without ``all_flags``, no flag, each single
    flag bit and all of them), the count running through its classes, zero arguments."""
    flag_bytes = range(256) if all_flags else [0, 0xFF] + [1 << b for b in range(8)]
    cases = []
    for i, (byte, flags) in enumerate(itertools.product(range(256), flag_bytes)):
        try:
            op = Opcode(byte)
        except ValueError:
            counts, n_args = _around(config.lanes), 0
        else:
            counts, n_args = _count_classes(op, config), arg_words(op)
        cases.append((byte, flags, counts[i % len(counts)], [0] * n_args))
    return cases


def expected(case, config, golden):
    byte, flags, count, args = case
    try:
        op = Opcode(byte)
    except ValueError:
        return Error.BAD_OPCODE, pack(Status, opcode=byte, error=Error.BAD_OPCODE), 0, 0
    error = golden.check(op, Flag(flags), count, args)
    data = response_words(op, count, config) if error == Error.OK else 0
    return (error, pack(Status, opcode=byte, error=error, count=data),
            payload_words(op, count, config), arg_words(op))


def decode_all(config, cases):
    """Run every case through one decoder; its (error, status, payload, word_args) each."""
    dut = CommandDecoder(config)
    results = []

    async def bench(ctx):
        for byte, flags, count, args in cases:
            ctx.set(dut.word, pack(Header, opcode=byte, flags=flags, count=count))
            ctx.set(dut.latch_header, 1)
            word_args = ctx.get(dut.word_args)
            await ctx.tick()
            ctx.set(dut.latch_header, 0)
            for i, arg in enumerate(args):
                latch = (dut.latch_arg0, dut.latch_arg1)[i]
                ctx.set(dut.word, arg)
                ctx.set(latch, 1)
                if i == 0:
                    assert ctx.get(dut.has_arg1) == (len(args) > 1), \
                        f"has_arg1 should say whether {byte:#04x} takes a second argument"
                await ctx.tick()
                ctx.set(latch, 0)
            results.append((ctx.get(dut.error), ctx.get(dut.status.as_value()),
                            ctx.get(dut.payload), word_args))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def check(config, cases):
    golden = GoldenMacro(config)
    got = decode_all(config, cases)
    wrong = []
    for case, result in zip(cases, got):
        want = expected(case, config, golden)
        if tuple(result) != want:
            wrong.append(f"opcode {case[0]:#04x} flags {case[1]:#04x} count {case[2]} args "
                         f"{[hex(a) for a in case[3]]}: (error, status, payload, args) "
                         f"{result[0]}, {result[1]:#010x}, {result[2]}, {result[3]}, "
                         f"golden {want[0]}, {want[1]:#010x}, {want[2]}, {want[3]}")
    assert not wrong, (f"{len(wrong)} of {len(cases)} commands decoded unlike the golden "
                       f"model, e.g.\n" + "\n".join(wrong[:10]))
    return len(cases)


@pytest.mark.parametrize("name", CONFIGS)
def test_decoder_fields_and_counts_exhaustive(name):
    config = CONFIGS[name]
    assert check(config, full_cross(config) + quant_cross(config)) > 5000


@pytest.mark.parametrize("name", CONFIGS)
def test_decoder_every_header(name):
    """Every opcode byte (unknown ones announce no arguments and no payload) with every flag
    byte (in one configuration; the flag classes in the others)."""
    config = CONFIGS[name]
    check(config, every_header(config, all_flags=name == "small"))


def test_classes_reach_every_error():
    """The domain is not vacuous: in each configuration it produces every error code."""
    for config in CONFIGS.values():
        golden = GoldenMacro(config)
        seen = {expected(case, config, golden)[0]
                for case in full_cross(config) + every_header(config, all_flags=False)}
        assert seen == set(Error), f"{config}: only {sorted(e.name for e in seen)}"


# Issue 11, fault 1: at R = 4 the RTL answered these OK (the MATVEC's activation end
# `act + count * R` wrapped in 17 bits) and the golden model BAD_ADDRESS. (config, header, arg).
FAULT_1 = [
    # MATVEC, count 49153, row 0, act 65532: 65532 + 4 * 49153 = 262144 = 2**18.
    (MacroConfig(lanes=4, rows_per_cycle=4, depth=49153), 0xC0010004, 0xFFFC0000),
    # MATVEC, count 65535, row 1, act 4: 4 + 4 * 65535 = 262144.
    (MacroConfig(lanes=4, rows_per_cycle=4, depth=65536), 0xFFFF0004, 0x00040001),
]


@pytest.mark.parametrize("index", range(len(FAULT_1)))
def test_fault_1_streams(index):
    config, header, arg = FAULT_1[index]
    case = (header & 0xFF, (header >> 8) & 0xFF, header >> 16, [arg])
    assert GoldenMacro(config).check(Opcode(case[0]), Flag(case[1]), case[2], [arg]) \
        == Error.BAD_ADDRESS, "the stream should name activation bytes past the buffer"
    check(config, [case])


def test_span_ends_hold_every_sum():
    """For every R, each span end the decoder sums holds the largest sum any header and
    argument word can make (a 16-bit field plus a 16-bit count times R, worked out here), and
    the scoreboard takes the MATVEC's end at that width: nothing can wrap before the range
    checks, at any legal configuration (the widths depend only on R)."""
    from amaranth.hdl import Fragment
    from pim_macro.hw.scoreboard import WritebackScoreboard

    def made(component):        # elaborated, so that Amaranth does not warn it went unused
        Fragment.get(component, None)
        return component
    for R in (1, 2, 4):
        config = MacroConfig(lanes=4, rows_per_cycle=R)
        dut = made(CommandDecoder(config))
        largest = {"lo_span": 0xFFFF + 0xFFFF, "hi_span": 0xFFFF + 0xFFFF,
                   "hi_rows_span": 0xFFFF + 0xFFFF * R}
        for name, total in largest.items():
            span = getattr(dut, name)
            assert 2 ** len(span.hi) > total, \
                f"R = {R}: {name} ends in {len(span.hi)} bits, too few for {total}"
            assert len(span.lo) == 16
        board = made(WritebackScoreboard(slots=2, check_bits=len(dut.hi_rows_span.hi)))
        assert len(board.check.hi) == len(dut.hi_rows_span.hi)
    assert 2 ** len(made(WritebackScoreboard(slots=2)).check.hi) > 0xFFFF + 0xFFFF * 4
