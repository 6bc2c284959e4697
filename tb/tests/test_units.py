"""Unit tests of the macro's submodules in Amaranth's own simulator (fast, no Verilog)."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.hw.counters import PerfCounters, SNAPPED
from pim_macro.hw.mac_array import MacArray
from pim_macro.hw.requantizer import Requantizer
from pim_macro.sw.models.requant import requantize


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# Corners of TFLite's requantization (hw/isa.py; requant.py is the rule the requantizer must
# equal): negative ties in both roundings, the extreme shifts, multipliers and accumulators,
# zero points at both ends, an empty clamp. (value, multiplier, shift, zero_point, act_min,
# act_max); every one runs in both roundings.
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
REQUANT_CORNERS = [
    (-3, 2**30, 0, 0, -128, 127),               # -1.5: both round half up at shift 0 -> -1
    (-1, 2**30, 0, 0, -128, 127),               # -0.5 -> 0
    (-5, 2**30, -1, 0, -128, 127),              # -1.25 -> -1
    (-6, 2**30, -2, 0, -128, 127),              # -0.75 -> -1
    (-4, 2**30, -2, 0, -128, 127),              # -0.5: single 0, double -1 (away from zero)
    (-12, 2**30, -3, 0, -128, 127),             # -0.75 -> -1
    (-8, 2**30, -3, 0, -128, 127),              # -0.5: single 0, double -1
    (INT32_MIN, 2**31 - 1, -32, 0, -128, 127),  # shift -32: just above -0.5 -> 0
    (INT32_MAX, 2**31 - 1, -32, 0, -128, 127),  # just below 0.5 -> 0
    (INT32_MIN, 2**30, -32, 0, -128, 127),      # -0.25 -> 0
    (-3 << 28, 2**31 - 1, -31, 5, -128, 127),   # shift -31: -0.375 -> 0, + 5
    (INT32_MIN, 2**31 - 1, -31, 0, -128, 127),  # just above -1 -> -1
    (1 << 30, 2**30, -31, -128, -128, 127),     # 0.25 -> 0, zero point -128
    (100, 2**30, 0, 0, -128, 127),              # shift 0: 50
    (101, 2**30, 0, 0, -128, 127),              # 50.5, a positive tie -> 51
    (-101, 2**30, 0, 0, -128, 127),             # -50.5: -51 single (ties away), -50 double
    (3, 2**31 - 1, 30, 0, -128, 127),           # shift 30: double rounding wraps 3 << 30
    (1, 2**30, 30, 0, -128, 127),
    (2, 2**30, 30, 0, -128, 127),               # 2 << 30 wraps to INT32_MIN in double
    (1, 2**30, 31, 0, -128, 127),               # shift 31: 1 << 31 wraps to INT32_MIN
    (-1, 2**31 - 1, 31, 0, -128, 127),
    (INT32_MAX, 2**31 - 1, 31, 0, -128, 127),   # 2**62: saturates (single), wraps (double)
    (INT32_MIN, 2**31 - 1, 31, 0, -128, 127),
    (INT32_MIN, 2**31 - 1, 0, 0, -128, 127),    # M0 = 2**31 - 1, v = INT32_MIN / INT32_MAX
    (INT32_MAX, 2**31 - 1, 0, 0, -128, 127),
    (INT32_MAX, 0, 31, 0, -128, 127),           # M0 = 0: only the zero point remains
    (INT32_MIN, 0, -32, 77, -128, 127),
    (200, 2**30, 0, 127, -128, 127),            # 100 + 127 clamps at 127
    (-200, 2**30, 0, -128, -128, 127),          # -100 - 128 clamps at -128
    (-200, 2**30, 0, 127, -128, 127),           # 27
    (1000, 2**30, 0, -128, -128, 127),          # 500 - 128 = 372 -> 127
    (1022, 2**30, 0, -128, -128, 127),          # 511 - 128: the edge of the kept bits
    (1024, 2**30, 0, -128, -128, 127),          # 512 - 128: saturated, still 127
    (-1026, 2**30, 0, 127, -128, 127),          # -513 + 127
    (-1024, 2**30, 0, 127, -128, 127),          # -512 + 127
    (10, 2**30, 0, 0, 0, 127),                  # ReLU: 5
    (-10, 2**30, 0, 0, 0, 127),                 # ReLU: 0
    (50, 2**30, 0, -3, -3, 6),                  # ReLU6 with a zero point: 6
    (5, 2**30, 0, 0, 20, -20),                  # act_min > act_max: act_max
    (-500, 2**30, 0, 0, 20, -20),
]


def test_requant_corners_are_corners():
    """The corner list holds what it claims: negative ties the two roundings round apart, and
    values past the requantizer's kept bits."""
    from pim_macro.sw.models.requant import multiply_by_quantized_multiplier as mbqm
    ties = [(v, m0, s) for v, m0, s, *_ in REQUANT_CORNERS if s < 31 and v * m0 < 0
            and (v * m0) % (1 << (31 - s)) == 1 << (30 - s)]
    assert any(int(mbqm(*c)) != int(mbqm(*c, double_rounding=True)) for c in ties)
    assert any(abs(int(mbqm(v, m0, s))) > 2**40 for v, m0, s, *_ in REQUANT_CORNERS)


def _requant_cases(seed, count):
    """The corners in both roundings, then seeded random cases: fully random, near the int8
    edges, and exact ties (value * M0 an odd multiple of 2**(k - 1))."""
    rng = np.random.default_rng(seed)
    cases = [(*c, d) for c in REQUANT_CORNERS for d in (False, True)]
    for _ in range(count):
        zp, lo, hi = (int(v) for v in rng.integers(-128, 128, 3))
        kind = int(rng.integers(0, 3))
        s = int(rng.integers(-32, 32))
        m0 = int(rng.choice([int(rng.integers(0, 2**31)), int(rng.integers(2**30, 2**31))]))
        if kind == 0:
            v = int(rng.integers(INT32_MIN, INT32_MAX + 1))
        elif kind == 1:             # |y| near 128 .. 512
            target = int(rng.integers(-600, 600))
            v = int(target * 2.0 ** (31 - s) / max(m0, 1)) + int(rng.integers(-2, 3))
            v = min(max(v, INT32_MIN), INT32_MAX)
        else:                       # ties: M0 = 2**30, v an odd multiple of 2**(-s)
            m0, s = 2**30, int(rng.integers(-31, 1))
            v = (2 * int(rng.integers(-2**20, 2**20)) + 1) << min(-s, 10)
        if rng.random() < 0.3:
            lo, hi = -128, 127
        cases.append((v, m0, s, zp, lo, hi, bool(rng.integers(0, 2))))
    return cases


def _run_requantizer(dut, cases, *, gap):
    """Stream ``cases`` through ``dut``, one every ``gap`` cycles (zero point and clamp held
    while a value is in flight, as the contract asks); return the results."""
    got = []

    async def bench(ctx):
        for v, m0, s, zp, lo, hi, d in cases:
            for port, value in ((dut.value, v), (dut.multiplier, m0), (dut.shift, s),
                                (dut.double, d), (dut.zero_point, zp), (dut.act_min, lo),
                                (dut.act_max, hi), (dut.i_valid, 1)):
                ctx.set(port, value)
            await ctx.tick()
            ctx.set(dut.i_valid, 0)
            for _ in range(dut.latency - 1):
                assert not ctx.get(dut.o_valid), "o_valid should come LATENCY cycles after"
                await ctx.tick()
            assert ctx.get(dut.o_valid), "o_valid should follow i_valid after LATENCY cycles"
            got.append(ctx.get(dut.result))
            await ctx.tick()

    async def pipelined(ctx):
        # Back to back at the interval, zero point and clamp fixed: the pipeline must not mix
        # values up.
        outs = []
        _, _, _, zp, lo, hi, _ = cases[0]
        for port, value in ((dut.zero_point, zp), (dut.act_min, lo), (dut.act_max, hi)):
            ctx.set(port, value)
        for v, m0, s, _, _, _, d in cases:
            for port, value in ((dut.value, v), (dut.multiplier, m0), (dut.shift, s),
                                (dut.double, d), (dut.i_valid, 1)):
                ctx.set(port, value)
            for _ in range(dut.interval):
                await ctx.tick()
                # Between values the inputs change (as the output engine's do): the
                # requantizer must work from what it sampled.
                ctx.set(dut.i_valid, 0)
                for port, value in ((dut.value, ~v), (dut.multiplier, m0 ^ 0x5555_5555),
                                    (dut.shift, -1 - s), (dut.double, not d)):
                    ctx.set(port, value)
                if ctx.get(dut.o_valid):
                    outs.append(ctx.get(dut.result))
        for _ in range(dut.latency + 1):
            await ctx.tick()
            if ctx.get(dut.o_valid):
                outs.append(ctx.get(dut.result))
        got.extend(outs)

    simulate(dut, bench if gap is None else pipelined)
    return got


def _expected(cases):
    return [int(requantize(np.array([v]), m0, s, zp, lo, hi, double_rounding=d)[0])
            for v, m0, s, zp, lo, hi, d in cases]


@pytest.mark.parametrize("soft,passes", [(False, 1), (True, 1), (False, 2), (True, 4)],
                         ids=["mul", "soft", "mul-2pass", "soft-4pass"])
def test_requantizer_matches_rule(soft, passes):
    """Corners, ties, edges and random values, one at a time, against requant.requantize."""
    cases = _requant_cases(7 + passes, 300)
    got = _run_requantizer(Requantizer(soft=soft, passes=passes), cases, gap=None)
    for case, result, expected in zip(cases, got, _expected(cases)):
        assert result == expected, f"requantize{case} should be {expected}, got {result}"


@pytest.mark.parametrize("passes", [1, 2, 4])
def test_requantizer_back_to_back(passes):
    """Values at the requantizer's interval (one per pass count), zero point and clamp fixed."""
    zp, lo, hi = -5, -100, 90
    cases = [(v, m0, s, zp, lo, hi, d) for v, m0, s, _, _, _, d in _requant_cases(passes, 200)]
    got = _run_requantizer(Requantizer(passes=passes), cases, gap=passes)
    assert got == _expected(cases), "pipelined results should equal the rule, in order"


def test_requantizer_rejects_passes():
    with pytest.raises(ValueError, match=r"passes must be one of \(1, 2, 4\), not 3"):
        Requantizer(passes=3)


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


@pytest.mark.parametrize("snapped", ["default", "all"])
def test_counters_snapshot_and_clear(snapped):
    """A snapped counter (BEATS_OUT; with snapped=all BEATS_IN too) keeps counting while its
    snapshot is read, and its clear keeps the clearing cycle's event."""
    dut = PerfCounters() if snapped == "default" else PerfCounters(snapped=tuple(Counter))
    counter = Counter.BEATS_OUT if snapped == "default" else Counter.BEATS_IN
    beats = 1 << counter.value

    async def bench(ctx):
        ctx.set(dut.events, beats)
        await ctx.tick().repeat(5)
        ctx.set(dut.snapshot, 1)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.snapshot, 0)
        ctx.set(dut.clear, 0)
        assert ctx.get(dut.snap[Counter.CYCLES.value]) == 5, "5 cycles before the snapshot"
        assert ctx.get(dut.snap[counter.value]) == 5, "5 beats before the snapshot"
        await ctx.tick()        # one more beat while the snapshot is read: not in it
        assert ctx.get(dut.snap[counter.value]) == 5, "the snapshot holds still"
        ctx.set(dut.events, 0)
        await ctx.tick().repeat(2)
        ctx.set(dut.snapshot, 1)
        await ctx.tick()
        # After the clear: the clearing cycle's own event and the next, then 2 quiet cycles.
        assert ctx.get(dut.snap[counter.value]) == 2, "clear keeps its own cycle's beat"
        assert ctx.get(dut.snap[Counter.CYCLES.value]) == 4, "cycles restart at the clear"

    simulate(dut, bench)


def test_quiet_counters_clear_when_released():
    """A quiet counter (no snapshot register; no event from a snapshot until `release`) reads
    its value as of the snapshot until `release`, and a clear takes effect with the release."""
    assert Counter.MAC_ACTIVE not in SNAPPED
    dut = PerfCounters()
    mac, rows = Counter.MAC_ACTIVE.value, Counter.ROW_READS.value
    seen = []

    async def snapshot(ctx, clear):
        ctx.set(dut.snapshot, 1)
        ctx.set(dut.clear, clear)
        await ctx.tick()
        ctx.set(dut.snapshot, 0)
        ctx.set(dut.clear, 0)
        for _ in range(3):      # read while quiet: the values hold
            seen.append((ctx.get(dut.snap[mac]), ctx.get(dut.snap[rows])))
            await ctx.tick()
        ctx.set(dut.release, 1)
        await ctx.tick()
        ctx.set(dut.release, 0)

    async def bench(ctx):
        ctx.set(dut.events, (1 << mac) | (1 << rows))
        await ctx.tick().repeat(6)
        ctx.set(dut.events, 0)
        await snapshot(ctx, 1)                          # 6, 6, then cleared
        ctx.set(dut.events, 1 << mac)
        await ctx.tick().repeat(2)
        ctx.set(dut.events, 0)
        await snapshot(ctx, 0)                          # MAC_ACTIVE 2, ROW_READS 0
        ctx.set(dut.events, 1 << rows)
        await ctx.tick()
        ctx.set(dut.events, 0)
        await snapshot(ctx, 0)                          # not cleared: MAC_ACTIVE 2, ROW_READS 1
        ctx.set(dut.release, 1)                         # a release with no clear pending
        await ctx.tick()
        ctx.set(dut.release, 0)
        await snapshot(ctx, 1)                          # the same
        await snapshot(ctx, 0)                          # cleared: 0, 0

    simulate(dut, bench)
    assert seen == ([(6, 6)] * 3 + [(2, 0)] * 3 + [(2, 1)] * 3 + [(2, 1)] * 3 + [(0, 0)] * 3)


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


def test_config_tags_round_trip():
    """``MacroConfig.from_tag`` reads what ``tag`` writes (the baseline's tag carries the bus
    width; the PIM one leaves it at 32), and refuses other strings in one line."""
    configs = [MacroConfig(), MacroConfig(lanes=256, rows_per_cycle=4, depth=65536,
                                          act_depth=65536, bias_depth=65536, bus_bits=64),
               MacroConfig(lanes=12, rows_per_cycle=2, depth=3, act_depth=8, bias_depth=1,
                           requantizers=2, bus_bits=16)]
    for config in configs:
        assert MacroConfig.from_tag(config.tag("baseline")) == config
        assert MacroConfig.from_tag(config.tag("pim")).as_dict() == {**config.as_dict(),
                                                                     "bus_bits": 32}
    assert MacroConfig.from_tag("l12r4d300a512b64q2w16") == MacroConfig(
        lanes=12, rows_per_cycle=4, depth=300, act_depth=512, bias_depth=64, requantizers=2,
        bus_bits=16)
    for bad, message in (("l8r1", "is not a configuration tag"), ("l8r1d256a1024b256x", "is not"),
                         ("l8r3d4a4b4", "l8r3d4a4b4: rows_per_cycle must be 1, 2 or 4, not 3")):
        with pytest.raises(ValueError, match=message) as info:
            MacroConfig.from_tag(bad)
        assert "\n" not in str(info.value)


def test_make_macro_rejects_unknown_arch():
    from pim_macro.hw import make_macro
    with pytest.raises(ValueError, match="arch must be one of pim, baseline, not 'gpu'"):
        make_macro(MacroConfig(), arch="gpu")


@pytest.mark.parametrize("reads", [1, 2, 4])
def test_channel_memory_reads_consecutive_channels(reads):
    """Every start address, every bank alignment: data[j] == channel[addr + j] a cycle later,
    each field written on its own (a LOAD_QUANT word's reserved bits ignored)."""
    from pim_macro.hw.bias_memory import ChannelMemory
    from pim_macro.hw.isa import ChannelMultiplier, ChannelShift, pack
    depth = 23
    rng = np.random.default_rng(3)
    biases = [int(v) for v in rng.integers(-2**31, 2**31, depth)]
    multipliers = [int(v) for v in rng.integers(0, 2**31, depth)]
    shifts = [int(v) for v in rng.integers(-32, 32, depth)]
    dut = ChannelMemory(depth, reads)

    async def bench(ctx):
        for addr in range(depth):
            words = {"bias": biases[addr] & 0xFFFF_FFFF,
                     "multiplier": pack(ChannelMultiplier, multiplier=multipliers[addr],
                                        reserved=1),
                     "shift": pack(ChannelShift, shift=shifts[addr], reserved=0x2AAAAAA)}
            for field, word in words.items():
                ctx.set(dut.write.addr, addr)
                ctx.set(dut.write.data, word)
                ctx.set(getattr(dut.write, field), 1)
                await ctx.tick()
                ctx.set(getattr(dut.write, field), 0)
        for addr in range(depth - reads + 1):
            ctx.set(dut.read.en, 1)
            ctx.set(dut.read.addr, addr)
            await ctx.tick()
            ctx.set(dut.read.en, 0)
            got = [(ctx.get(dut.read.data[j].bias), ctx.get(dut.read.data[j].multiplier),
                    ctx.get(dut.read.data[j].shift)) for j in range(reads)]
            want = list(zip(biases, multipliers, shifts))[addr:addr + reads]
            assert got == want, f"read at {addr}"

    simulate(dut, bench)


@pytest.mark.parametrize("kind,count,act,g,expected", [
    ("EMIT_RAW", 7, 0, 4, 7),      # one int32 word per lane
    ("EMIT_INT8", 7, 0, 4, 2),     # four lanes per output word
    ("EMIT_INT8", 8, 0, 4, 2),
    ("WRITEBACK", 8, 0, 4, 2),     # aligned: two activation words
    ("WRITEBACK", 6, 3, 4, 3),     # bytes 3..8 touch words 0, 1 and 2
    ("WRITEBACK", 1, 5, 4, 1),
    ("EMIT_RAW", 7, 0, 1, 7),
    ("EMIT_INT8", 7, 0, 1, 7),     # one requantizer: one lane per cycle
    ("EMIT_INT8", 7, 0, 2, 4),     # two: lanes 0-1, 2-3, 4-5, 6
    ("WRITEBACK", 6, 3, 2, 4),     # bytes 3 | 4-5 | 6-7 | 8
    ("WRITEBACK", 6, 3, 1, 6),
])
def test_output_groups(kind, count, act, g, expected):
    from pim_macro.hw.output_engine import ResponseKind, groups
    assert groups(getattr(ResponseKind, kind), count, act, g) == expected


@pytest.mark.parametrize("depth,w_prob,r_prob", [(8, 0.5, 0.5), (8, 0.8, 0.3), (2, 0.4, 0.7),
                                                 (16, 0.6, 0.6)])
def test_block_fifo_behaves_like_sync_fifo(depth, w_prob, r_prob):
    """Random writes and reads (also while empty or full) to a BlockFIFO and an Amaranth
    SyncFIFO side by side: the same readiness, level and head data in every cycle."""
    from amaranth import Module
    from amaranth.lib.fifo import SyncFIFO
    from pim_macro.hw.fifo import BlockFIFO
    m = Module()
    m.submodules.ours = ours = BlockFIFO(width=12, depth=depth)
    m.submodules.ref = ref = SyncFIFO(width=12, depth=depth)
    rng = np.random.default_rng(depth)
    checked = []

    async def bench(ctx):
        for cycle in range(3000):
            w_en, r_en = int(rng.random() < w_prob), int(rng.random() < r_prob)
            data = int(rng.integers(0, 4096))
            for fifo in (ours, ref):
                ctx.set(fifo.w_en, w_en)
                ctx.set(fifo.r_en, r_en)
                ctx.set(fifo.w_data, data)
            got = [ctx.get(ours.w_rdy), ctx.get(ours.r_rdy), ctx.get(ours.level)]
            want = [ctx.get(ref.w_rdy), ctx.get(ref.r_rdy), ctx.get(ref.level)]
            assert got == want, f"cycle {cycle}: w_rdy, r_rdy, level {got} != {want}"
            if want[1]:
                assert ctx.get(ours.r_data) == ctx.get(ref.r_data), f"cycle {cycle}: head"
                checked.append(cycle)
            await ctx.tick()

    simulate(m, bench)
    assert len(checked) > 1000, "the FIFOs should hold data most of the time"


def test_block_fifo_rejects_bad_depth():
    from pim_macro.hw.fifo import BlockFIFO
    with pytest.raises(ValueError, match="depth must be a power of two"):
        BlockFIFO(width=8, depth=6)


def test_times_const():
    """Shifted adds equal the product, for constants with one to eight bits set."""
    from amaranth import Module, Signal
    from pim_macro.hw.constmul import times_const
    ks = (1, 2, 3, 7, 12, 255)
    m = Module()
    x = Signal(16)
    ys = [Signal(32, name=f"y{k}") for k in ks]
    for k, y in zip(ks, ys):
        m.d.comb += y.eq(times_const(x, k))

    async def bench(ctx):
        for v in (0, 1, 5, 1000, 65535):
            ctx.set(x, v)
            assert [ctx.get(y) for y in ys] == [v * k for k in ks], f"x = {v}"

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match="k must be a positive integer"):
        times_const(x, 0)


@pytest.mark.parametrize("make,message", [
    (lambda: __import__("pim_macro.hw", fromlist=["Macro"]).Macro(MacroConfig(), arch="gpu"),
     "arch must be one of"),
    (lambda: __import__("pim_macro.hw", fromlist=["Macro"]).Macro({"lanes": 8}),
     "config must be a MacroConfig"),
    (lambda: __import__("pim_macro.hw.fifo", fromlist=["BlockFIFO"]).BlockFIFO(width=8, depth=3),
     "depth must be a power of two"),
    (lambda: __import__("pim_macro.hw.uart", fromlist=["UARTRx"]).UARTRx(3), "divisor"),
    (lambda: __import__("pim_macro.hw.uart", fromlist=["UARTTx"]).UARTTx(2.5), "divisor"),
    (lambda: __import__("pim_macro.hw.uart_bridge", fromlist=["UARTBridge"]).UARTBridge(
        MacroConfig(), divisor=8, rx_fifo_depth=2), "rx_fifo_depth"),
    (lambda: __import__("pim_macro.hw.uart_bridge", fromlist=["UARTBridge"]).UARTBridge(
        MacroConfig(), divisor=1), "divisor"),
    (lambda: __import__("pim_macro.hw.uart_bridge", fromlist=["UARTBridge"]).UARTBridge(
        MacroConfig(), arch="gpu", divisor=8), "arch must be one of"),
    (lambda: __import__("pim_macro.hw.board", fromlist=["BoardTop"]).BoardTop(
        MacroConfig(), arch="gpu"), "arch must be one of"),
], ids=["macro-arch", "macro-config", "fifo", "uart-rx", "uart-tx", "bridge-fifo",
        "bridge-divisor", "bridge-arch", "board-arch"])
def test_rejected_components_leave_nothing_unused(make, message):
    """A constructor that rejects its arguments does so before the object exists: no
    UnusedElaboratable warning follows, and no private Amaranth attribute is touched."""
    import gc
    import warnings
    from amaranth.hdl import Fragment
    from pim_macro.hw.counters import PerfCounters
    # Amaranth arms the warning once anything has been elaborated (as in any real run).
    Fragment.get(PerfCounters(), None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises((ValueError, TypeError), match=message):
            make()
        gc.collect()
    assert not caught, f"a rejected object should not warn: {[str(w.message) for w in caught]}"


def test_block_fifo_stream_ports():
    """``w_stream``/``r_stream`` connect like ``amaranth.lib.fifo``'s: words pushed through the
    one come out of the other, in order."""
    from amaranth import Module
    from amaranth.lib import stream, wiring
    from pim_macro.hw.fifo import BlockFIFO
    m = Module()
    m.submodules.fifo = fifo = BlockFIFO(width=8, depth=4)
    source = stream.Signature(8).create()
    sink = stream.Signature(8).flip().create()
    wiring.connect(m, source, fifo.w_stream)
    wiring.connect(m, fifo.r_stream, sink)
    got = []

    async def bench(ctx):
        for word in (5, 6, 7):
            ctx.set(source.payload, word)
            ctx.set(source.valid, 1)
            assert ctx.get(source.ready), "an empty FIFO takes a word"
            await ctx.tick()
        ctx.set(source.valid, 0)
        ctx.set(sink.ready, 1)
        while ctx.get(sink.valid):
            got.append(ctx.get(sink.payload))
            await ctx.tick()

    simulate(m, bench)
    assert got == [5, 6, 7], "the words should come out in order"


@pytest.mark.parametrize("tag", ["l\u0664r1d4a4b4", "l8r1d256a1024b\u0662\u0665\u0666"])
def test_from_tag_takes_ascii_digits_only(tag):
    """`\\d` matches every Unicode digit: Arabic-Indic digits made a configuration."""
    with pytest.raises(ValueError, match="not a configuration tag"):
        MacroConfig.from_tag(tag)


def test_from_tag_echoes_a_long_tag_cut():
    with pytest.raises(ValueError) as info:
        MacroConfig.from_tag("l" + "9" * 5000 + "r1d4a4b4")
    assert len(str(info.value)) < 300
