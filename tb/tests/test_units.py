"""Unit tests of the macro's submodules in Amaranth's own simulator (fast, no Verilog)."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.hw.counters import PerfCounters
from pim_macro.hw.mac_array import MacArray
from pim_macro.hw.requantizer import Requantizer
from pim_macro.sw.models.golden import requantize


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


@pytest.mark.parametrize("soft", [False, True], ids=["mul", "soft"])
def test_requantizer_matches_rule(soft):
    """Corners, then seeded random values, streamed one per cycle through the pipeline."""
    rng = np.random.default_rng(7)
    cases = [case[:4] for case in REQUANT_CORNERS]
    for _ in range(400):
        cases.append((int(rng.integers(-2**31, 2**31)), int(rng.integers(0, 2**16)),
                      int(rng.integers(0, 32)), bool(rng.integers(0, 2))))
    for _ in range(600):    # values whose result lies near the saturation and ReLU edges
        mult, shift = int(rng.integers(1, 2**16)), int(rng.integers(0, 32))
        target = int(rng.integers(-140, 141))
        value = ((target << shift) // mult) + int(rng.integers(-2, 3))
        if -2**31 <= value < 2**31:
            cases.append((value, mult, shift, bool(rng.integers(0, 2))))
    dut = Requantizer(soft=soft)
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
def test_bias_memory_reads_consecutive_words(reads):
    """Every start address, every bank alignment: rd_data[j] == word[addr + j] a cycle later."""
    from pim_macro.hw.bias_memory import BiasMemory
    depth = 23
    words = [int(v) for v in np.random.default_rng(3).integers(-2**31, 2**31, depth)]
    dut = BiasMemory(depth, reads)

    async def bench(ctx):
        for addr, word in enumerate(words):
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, word)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        for addr in range(depth - reads + 1):
            ctx.set(dut.read.en, 1)
            ctx.set(dut.read.addr, addr)
            await ctx.tick()
            ctx.set(dut.read.en, 0)
            got = [ctx.get(dut.read.data[j]) for j in range(reads)]
            assert got == words[addr:addr + reads], f"read at {addr}"

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
