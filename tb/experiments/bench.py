"""Simulation speed: simulated cycles per second of the RTL, per simulator, architecture and
stall pattern, through the per-word cocotb player and through the persistent session.

``python -m pim_macro.tb.experiments.bench [--cycles N] [--sims icarus,verilator] [--json]``
(``make bench``). The stream is MATVEC-heavy, as a network's is: the SRAM is filled once, then
``MATVEC`` over every row and ``EMIT_RAW`` repeat until the stream lasts about ``--cycles``
cycles on the PIM macro (Icarus gets a tenth of them: it is two orders of magnitude slower).
Every run's output is compared with the golden model's (the bench fails on a mismatch).

Two engines play the same words:

* ``player``: :func:`pim_macro.sw.runtime.rtl.run_rtl`, the per-word cocotb player
  (:mod:`pim_macro.tb.harness.player`): Python drives the clock and both streams every cycle
  (every transaction when smooth);
* ``session``: :class:`pim_macro.sw.runtime.rtl.RTLSession`, the source and sink inside the
  simulated top (:mod:`pim_macro.tb.harness.session_top`), the clock in the simulator's C code:
  Python touches the start and the end of the request.

``cycles/s`` divides the testbench cycles by the wall time of the run alone; ``with start``
adds the simulator's start-up (the player starts one per run; a session once). Builds are
done (and cached) before any timing.
"""

import argparse
import json
import sys
import time

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, RTLSession, run_rtl


#: The benchmarked macro: 16 lanes, 256 rows (a 4 KiB SRAM), R = 1.
CONFIG = MacroConfig(lanes=16, rows_per_cycle=1, depth=256, act_depth=1024, bias_depth=64)
#: Stall patterns: (name, idle, backpressure).
STALLS = (("smooth", 0.0, 0.0), ("stalled", 0.2, 0.3))
#: PIM cycles of one MATVEC over the whole SRAM and its EMIT_RAW (a little more in fact).
_ROUND_CYCLES = CONFIG.depth + 24


def stream(cycles, seed=0):
    """The benchmark's words: fill the SRAM and the activations, then ``MATVEC`` over every
    row and ``EMIT_RAW`` of every lane, repeated to last about ``cycles`` PIM cycles."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (CONFIG.lanes, CONFIG.depth), dtype=np.int8)
    a = rng.integers(-128, 128, CONFIG.depth, dtype=np.int8)
    words = (asm.encode_write_weights(0, asm.weight_rows(w, CONFIG), CONFIG)
             + asm.encode_load_act(0, a))
    round_ = asm.encode_matvec(0, 0, CONFIG.depth) + asm.encode_emit_raw(CONFIG.lanes)
    return words + round_ * max(1, cycles // _ROUND_CYCLES)


def _measure(sim, arch, words, expected, budget):
    """Rows of the table for ``sim`` and ``arch``: each engine, each stall pattern."""
    rows = []
    run_rtl([Job(asm.encode_read_counters())], CONFIG, sim=sim, arch=arch)   # build, warm
    for stall, idle, bp in STALLS:
        start = time.perf_counter()
        result, = run_rtl([Job(words, idle=idle, backpressure=bp, seed=1, max_cycles=budget,
                               drain_cycles=0)], CONFIG, sim=sim, arch=arch)
        wall = time.perf_counter() - start
        rows.append(_row(sim, arch, stall, "player", result, expected, wall, wall))
    RTLSession(CONFIG, sim=sim, arch=arch).close()                            # build
    begin = time.perf_counter()
    with RTLSession(CONFIG, sim=sim, arch=arch) as session:
        started = time.perf_counter() - begin
        for stall, idle, bp in STALLS:
            session.play(asm.encode_read_counters())      # anything: the session is warm
            start = time.perf_counter()
            result = session.play(words, idle=idle, backpressure=bp, seed=1,
                                  max_cycles=budget, drain_cycles=0)
            wall = time.perf_counter() - start
            rows.append(_row(sim, arch, stall, "session", result, expected, wall,
                             wall + started))
    return rows


def _row(sim, arch, stall, engine, result, expected, wall, with_start):
    if not result.finished:
        raise RuntimeError(f"{sim} {arch} {stall} {engine}: the macro did not finish")
    if result.out != expected:
        raise RuntimeError(f"{sim} {arch} {stall} {engine}: the output differs from the "
                           f"golden model's")
    return {"sim": sim, "arch": arch, "stall": stall, "engine": engine,
            "cycles": result.cycles, "seconds": round(wall, 3),
            "cycles_per_s": round(result.cycles / wall),
            "cycles_per_s_with_start": round(result.cycles / with_start)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.experiments.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=400_000,
                        help="PIM cycles of the stream on Verilator (Icarus: a tenth)")
    parser.add_argument("--sims", default=",".join(SIMULATORS),
                        help="comma-separated simulators (default: all)")
    parser.add_argument("--archs", default=",".join(ARCHES),
                        help="comma-separated architectures (default: all)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    sims = [s for s in args.sims.split(",") if s]
    archs = [a for a in args.archs.split(",") if a]
    for name, values, allowed in (("sims", sims, SIMULATORS), ("archs", archs, ARCHES)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            print(f"pim: error: --{name} takes {', '.join(allowed)}, not {args.__dict__[name]!r}",
                  file=sys.stderr)
            return 2
    if args.cycles < _ROUND_CYCLES:
        print(f"pim: error: --cycles must be at least {_ROUND_CYCLES}", file=sys.stderr)
        return 2
    rows = []
    for sim in sims:
        words = stream(args.cycles if sim == "verilator" else args.cycles // 10)
        for arch in archs:
            expected = GoldenMacro(CONFIG, arch=arch).run(words)
            budget = 40 * args.cycles * CONFIG.beats_per_row + 1_000_000
            rows.extend(_measure(sim, arch, words, expected, budget))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"RTL simulation speed, macro {CONFIG.tag()}: simulated cycles per wall second")
    print(f"{'sim':10} {'arch':9} {'stall':8} {'engine':8} {'cycles':>9} {'s':>7} "
          f"{'cycles/s':>10} {'with start':>10} {'speedup':>8}")
    base = {}
    for r in rows:
        key = (r["sim"], r["arch"], r["stall"])
        if r["engine"] == "player":
            base[key] = r["cycles_per_s"]
        speedup = r["cycles_per_s"] / base[key] if key in base else 1.0
        print(f"{r['sim']:10} {r['arch']:9} {r['stall']:8} {r['engine']:8} {r['cycles']:>9} "
              f"{r['seconds']:>7.2f} {r['cycles_per_s']:>10} "
              f"{r['cycles_per_s_with_start']:>10} {speedup:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
