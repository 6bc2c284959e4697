"""Unit tests of the macro's submodules in Amaranth's own simulator (fast, no Verilog)."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.isa import Counter, MacroConfig
from hw.counters import PerfCounters
from hw.mac_array import MacArray
from hw.requantizer import Requantizer
from sw.golden import requantize


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# Corners of the requantization rule: rounding of .5 both ways, shift 0 and 31, mult 0 and
# 65535, saturation at both ends, the extreme accumulators.
REQUANT_CORNERS = [
    # value, mult, shift, relu, expected (worked out by hand from the rule in hw/isa.py)
    (-3, 1, 1, False, -1),        # (-3 + 1) >> 1 = -1
    (3, 1, 1, False, 2),          # (3 + 1) >> 1 = 2
    (-1, 1, 1, False, 0),         # (-1 + 1) >> 1 = 0
    (5, 3, 0, False, 15),         # no rounding term at shift 0
    (100, 0, 5, False, 0),        # mult 0
    (200, 1, 0, False, 127),      # saturate high
    (-200, 1, 0, False, -128),    # saturate low
    (-200, 1, 0, True, 0),        # ReLU after saturation
    (-2**31, 65535, 31, False, -128),  # (-2**31 * 65535 + 2**30) >> 31 = -65535: saturates
    (2**31 - 1, 65535, 31, False, 127),
    (2**31 - 1, 1, 31, False, 1),  # (2**31 - 1 + 2**30) >> 31 = 1
    (2**30, 1, 31, False, 1),     # exactly .5 rounds up
    (2**30 - 1, 1, 31, False, 0),
    (-2**30, 1, 31, False, 0),    # exactly -.5 rounds up to 0
    (-2**30 - 1, 1, 31, False, -1),
    (77, 1, 2, True, 19),         # (77 + 2) >> 2 = 19
]


@pytest.mark.parametrize("value,mult,shift,relu,expected", REQUANT_CORNERS)
def test_requant_rule_corners(value, mult, shift, relu, expected):
    assert int(requantize(np.array([value]), mult, shift, relu)[0]) == expected, \
        "the golden requantization should follow the rule in hw/isa.py"


def test_requantizer_matches_rule():
    """Corners, then seeded random values, streamed one per cycle through the pipeline."""
    rng = np.random.default_rng(7)
    cases = [case[:4] for case in REQUANT_CORNERS]
    for _ in range(400):
        cases.append((int(rng.integers(-2**31, 2**31)), int(rng.integers(0, 2**16)),
                      int(rng.integers(0, 32)), bool(rng.integers(0, 2))))
    dut = Requantizer()
    got = []

    async def bench(ctx):
        # Hold mult/shift/relu for the pipeline's latency after each value, as the contract asks.
        for value, mult, shift, relu in cases:
            ctx.set(dut.value, value)
            ctx.set(dut.mult, mult)
            ctx.set(dut.shift, shift)
            ctx.set(dut.relu, relu)
            ctx.set(dut.i_valid, 1)
            await ctx.tick()
            ctx.set(dut.i_valid, 0)
            for _ in range(Requantizer.LATENCY - 1):
                await ctx.tick()
            assert ctx.get(dut.o_valid), "o_valid should follow i_valid after LATENCY cycles"
            got.append(ctx.get(dut.result))
            await ctx.tick()

    simulate(dut, bench)
    for (value, mult, shift, relu), result in zip(cases, got):
        expected = int(requantize(np.array([value]), mult, shift, relu)[0])
        assert result == expected, f"requantize({value}, {mult}, {shift}, {relu}) = {expected}"


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_mac_array_latency_and_clear(rows):
    """Rows stream in back to back; acc shows their sum LATENCY cycles after each, and `first`
    restarts the sum without a bubble."""
    config = MacroConfig(lanes=4, rows_per_cycle=rows)
    rng = np.random.default_rng(rows)
    weights = rng.integers(-128, 128, (6, rows, 4))
    acts = rng.integers(-128, 128, (6, rows))
    firsts = [1, 0, 0, 1, 0, 0]
    dut = MacArray(config)
    seen = []

    async def bench(ctx):
        for cycle in range(6 + MacArray.LATENCY + 1):
            if cycle < 6:
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, firsts[cycle])
                for r in range(rows):
                    ctx.set(dut.acts[r], int(acts[cycle, r]))
                    for lane in range(4):
                        ctx.set(dut.weights[r][lane], int(weights[cycle, r, lane]))
            else:
                ctx.set(dut.valid, 0)
            await ctx.tick()
            seen.append([ctx.get(dut.acc[lane]) for lane in range(4)])

    simulate(dut, bench)
    running = np.zeros(4, dtype=np.int64)
    for cycle in range(6):
        contribution = (weights[cycle] * acts[cycle][:, None]).sum(axis=0)
        running = contribution if firsts[cycle] else running + contribution
        assert seen[cycle + MacArray.LATENCY - 1] == list(running), (
            f"row {cycle} should reach the accumulators {MacArray.LATENCY} cycles later")


def test_counters_snapshot_and_clear():
    dut = PerfCounters()
    beats = 1 << Counter.BEATS_IN.value

    async def bench(ctx):
        ctx.set(dut.events, beats)
        await ctx.tick().repeat(5)
        ctx.set(dut.snapshot, 1)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.snapshot, 0)
        ctx.set(dut.clear, 0)
        ctx.set(dut.events, 0)
        assert ctx.get(dut.snap[Counter.CYCLES.value]) == 5, "5 cycles before the snapshot"
        assert ctx.get(dut.snap[Counter.BEATS_IN.value]) == 5, "5 beats before the snapshot"
        await ctx.tick().repeat(3)
        ctx.set(dut.snapshot, 1)
        await ctx.tick()
        # After the clear: the clearing cycle's own event, then 3 quiet cycles.
        assert ctx.get(dut.snap[Counter.BEATS_IN.value]) == 1, "clear keeps its own cycle's beat"
        assert ctx.get(dut.snap[Counter.CYCLES.value]) == 4, "cycles restart at the clear"

    simulate(dut, bench)


@pytest.mark.parametrize("kwargs,message", [
    (dict(lanes=7), "lanes must be a multiple of 4 from 4 to 256, not 7"),
    (dict(lanes=0), "lanes must be a multiple of 4 from 4 to 256, not 0"),
    (dict(rows_per_cycle=3), "rows_per_cycle must be 1, 2 or 4, not 3"),
    (dict(depth=0), "depth must be an integer from 1 to 65536, not 0"),
    (dict(act_depth=10), "act_depth must be a multiple of 4 from 4 to 65536, not 10"),
    (dict(bias_depth=70000), "bias_depth must be an integer from 1 to 65536, not 70000"),
    (dict(lanes=8.0), "lanes must be a multiple of 4 from 4 to 256, not 8.0"),
])
def test_config_rejects(kwargs, message):
    with pytest.raises(ValueError) as info:
        MacroConfig(**kwargs)
    assert str(info.value) == message


def test_make_macro_rejects_unknown_arch():
    from hw import make_macro
    with pytest.raises(ValueError, match="arch must be one of pim, baseline, not 'gpu'"):
        make_macro(MacroConfig(), arch="gpu")


def test_bias_memory_reads_four_consecutive_words():
    """Every start address, every bank alignment: rd_data[j] == word[addr + j] a cycle later."""
    from hw.bias_memory import BiasMemory, BIAS_READS
    depth = 23
    words = [int(v) for v in np.random.default_rng(3).integers(-2**31, 2**31, depth)]
    dut = BiasMemory(depth)

    async def bench(ctx):
        for addr, word in enumerate(words):
            ctx.set(dut.wr_en, 1)
            ctx.set(dut.wr_addr, addr)
            ctx.set(dut.wr_data, word)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        for addr in range(depth - BIAS_READS + 1):
            ctx.set(dut.rd_en, 1)
            ctx.set(dut.rd_addr, addr)
            await ctx.tick()
            ctx.set(dut.rd_en, 0)
            got = [ctx.get(dut.rd_data[j]) for j in range(BIAS_READS)]
            assert got == words[addr:addr + BIAS_READS], f"read at {addr}"

    simulate(dut, bench)


@pytest.mark.parametrize("kind,count,act,expected", [
    ("EMIT_RAW", 7, 0, 7),         # one int32 word per lane
    ("EMIT_INT8", 7, 0, 2),        # four lanes per output word
    ("EMIT_INT8", 8, 0, 2),
    ("WRITEBACK", 8, 0, 2),        # aligned: two activation words
    ("WRITEBACK", 6, 3, 3),        # bytes 3..8 touch words 0, 1 and 2
    ("WRITEBACK", 1, 5, 1),
])
def test_output_groups(kind, count, act, expected):
    from hw.output_engine import ResponseKind, groups
    assert groups(getattr(ResponseKind, kind), count, act) == expected
