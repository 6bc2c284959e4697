"""Span overlap and the write-back scoreboard, against a plain Python model."""

import itertools

import numpy as np
from amaranth import Module, Signal
from amaranth.sim import Simulator

from pim_macro.hw.scoreboard import Span, WritebackScoreboard


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
            ctx.set(dut.add, add)
            ctx.set(dut.done, done)
            ctx.set(dut.add_span, {"lo": new_lo, "hi": new_hi})
            ctx.set(dut.check, {"lo": check_lo, "hi": check_hi})
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
