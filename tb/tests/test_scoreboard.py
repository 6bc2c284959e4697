"""Span overlap and the write-back scoreboard, against a plain Python model."""

import itertools

import numpy as np
from amaranth import Module, Signal
from amaranth.sim import Simulator

from pim_macro.hw.scoreboard import Span, SpanQuery, WritebackScoreboard, less_than_sum


def test_span_overlap_every_pair():
    """Every pair of non-empty spans over 0..5: they overlap iff they share an element."""
    m = Module()
    a, b = Signal(Span(3)), Signal(Span(3))
    hit = Signal()
    m.d.comb += hit.eq(a.overlaps(b))
    spans = [(lo, hi) for lo in range(6) for hi in range(lo + 1, 7)]
    wrong = []

    async def bench(ctx):
        for (alo, ahi), (blo, bhi) in itertools.product(spans, spans):
            ctx.set(a, {"lo": alo, "hi": ahi})
            ctx.set(b, {"lo": blo, "hi": bhi})
            shared = bool(set(range(alo, ahi)) & set(range(blo, bhi)))
            if ctx.get(hit) != shared:
                wrong.append(((alo, ahi), (blo, bhi)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, f"[lo, hi) spans should overlap iff they share an element: {wrong[:5]}"


def test_less_than_sum_every_value():
    """``a < b + c`` through the carry-save form, for every a, b, c of 5, 4 and 6 bits (the
    widest sum and the widest subtrahend at their extremes included)."""
    m = Module()
    a, b, c, hit = Signal(5), Signal(4), Signal(6), Signal()
    m.d.comb += hit.eq(less_than_sum(a, b, c))
    wrong = []

    async def bench(ctx):
        for x, y, z in itertools.product(range(32), range(16), range(64)):
            ctx.set(a, x), ctx.set(b, y), ctx.set(c, z)
            if ctx.get(hit) != (x < y + z):
                wrong.append((x, y, z))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, f"a < b + c should hold exactly when it does: {wrong[:5]}"


def test_span_query_overlap_every_pair():
    """A span against every query over 0..7, as a span and as a start and a length."""
    m = Module()
    a, q = Signal(Span(3)), Signal(SpanQuery(3))
    hit = Signal()
    m.d.comb += hit.eq(a.overlaps_query(q))
    spans = [(lo, hi) for lo in range(8) for hi in range(lo + 1, 9)]
    wrong = []

    async def bench(ctx):
        for (alo, ahi), (blo, bhi), as_sum in itertools.product(spans, spans, (0, 1)):
            if as_sum and bhi - blo > 8:
                continue
            ctx.set(a, {"lo": alo, "hi": ahi})
            ctx.set(q, {"lo": blo, "hi": bhi - blo if as_sum else bhi, "sum": as_sum})
            shared = bool(set(range(alo, ahi)) & set(range(blo, bhi)))
            if ctx.get(hit) != shared:
                wrong.append(((alo, ahi), (blo, bhi), as_sum))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, f"a span and a query should overlap iff they share an element: {wrong[:5]}"


def test_writeback_scoreboard_against_model():
    """Random adds, completions and checks: ``pending`` and ``conflict`` follow a model that
    keeps the union of the spans added since the count was last zero."""
    rng = np.random.default_rng(5)
    dut = WritebackScoreboard(slots=8)
    count, lo, hi = 0, 0, 0
    seen = {"conflict": 0, "clear": 0}

    async def bench(ctx):
        nonlocal count, lo, hi
        for cycle in range(4000):
            add = count < 8 and rng.random() < 0.4
            done = count > 0 and rng.random() < 0.35
            new_lo = int(rng.integers(0, 60))
            new_hi = new_lo + int(rng.integers(1, 8))
            check_lo = int(rng.integers(0, 70))
            check_hi = check_lo + int(rng.integers(1, 12))
            # Half the checks come as a start and a length (SpanQuery.sum), as the decoder asks
            # in the cycle a first argument word arrives.
            as_sum = bool(rng.integers(0, 2))
            ctx.set(dut.add, add)
            ctx.set(dut.done, done)
            ctx.set(dut.add_span, {"lo": new_lo, "hi": new_hi})
            ctx.set(dut.check, {"lo": check_lo, "sum": as_sum,
                                "hi": check_hi - check_lo if as_sum else check_hi})
            conflict = count > 0 and check_lo < hi and lo < check_hi
            assert ctx.get(dut.pending) == (count > 0), f"cycle {cycle}: {count} pending"
            assert ctx.get(dut.conflict) == conflict, (
                f"cycle {cycle}: [{check_lo}, {check_hi}) against pending [{lo}, {hi})")
            seen["conflict" if conflict else "clear"] += 1
            await ctx.tick()
            if add:
                lo, hi = (new_lo, new_hi) if count == 0 else (min(lo, new_lo), max(hi, new_hi))
            count += add - done

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert min(seen.values()) > 500, f"both outcomes should be exercised: {seen}"
