"""The ``make sim`` regression: real workloads on both simulators, checked and reported.

Every workload is compiled to one command stream, played on Icarus and on Verilator (all the
workloads of one configuration in one simulator run), checked word for word against the golden
model, and reported with the macro's own performance counters: cycles, MACs, MAC-lane
utilization (useful MACs / (lanes x R x cycles)), SRAM row reads and stream beats. The report is
printed and written to ``build/report/regression.md`` and ``regression.json``.

Run: ``make sim`` (or ``python -m tb.regression [--sim icarus] [--quick]``).
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from hw.isa import MacroConfig
from sw import asm
from sw.gemv import compile_gemv
from sw.rtl import BUILD_ROOT, SIMULATORS, Job, run_rtl
from tb.programs import compare


@dataclass
class Workload:
    name: str
    config: MacroConfig
    words: list
    macs: int           # useful multiply-accumulates (padding excluded)
    extract: callable   # output words -> counters dict


def _gemv(name, config, n, k, batch=1, *, seed, quant=True, bias=True):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    x = rng.integers(-128, 128, (batch, k), dtype=np.int8)
    b = rng.integers(-2**20, 2**20, n, dtype=np.int32) if bias else None
    q = dict(mult=int(rng.integers(1, 1 << 16)), shift=24, relu=True) if quant else {}
    program = compile_gemv(w, x, config, bias=b, **q)
    return Workload(name, config, program.words, batch * n * k,
                    lambda out: program.extract(out)[1])


def _mlp_on_chip(name, config, sizes, *, seed):
    """Layers chained through WRITEBACK: only the first input goes in and the last output
    comes out; every layer fits one tile (outputs <= lanes) and the SRAM at once."""
    rng = np.random.default_rng(seed)
    r = config.rows_per_cycle
    words = asm.encode_read_counters(clear=True)
    row, act_in, macs = 0, 0, 0
    weights = [rng.integers(-128, 128, (n_out, n_in), dtype=np.int8)
               for n_in, n_out in zip(sizes, sizes[1:])]
    for w in weights:
        n_out, n_in = w.shape
        tile = np.zeros((config.lanes, n_in), dtype=np.int8)
        tile[:n_out] = w
        rows = asm.weight_rows(tile, config)
        words += asm.encode_write_weights(row, rows, config)
        words += asm.encode_load_bias(row % config.bias_depth,
                                      rng.integers(-1000, 1000, n_out))
        layer_rows = row, len(rows)
        row += len(rows)
    words += asm.encode_read_counters(clear=True)      # time the inference, not the loading
    words += asm.encode_load_act(0, rng.integers(-128, 128, sizes[0]))
    row = 0
    for i, w in enumerate(weights):
        n_out, n_in = w.shape
        rows = -(-n_in // r)
        # Each layer's input sits at act_in; its output goes to the next aligned slot, where
        # the padding past n_out is whatever was there: its weights are zero, so it adds 0.
        act_out = act_in + -(-max(rows * r, 4) // 4) * 4
        words += asm.encode_matvec(row, act_in, rows)
        bias = row % config.bias_depth
        if i == len(weights) - 1:
            words += asm.encode_emit_int8(n_out, bias=bias, mult=1 << 10, shift=16)
        else:
            words += asm.encode_writeback(n_out, act_out, bias=bias, mult=1 << 10, shift=16,
                                          relu=True)
        row += rows
        act_in = act_out
        macs += n_out * n_in
    words += asm.encode_read_counters()

    def counters(out):
        responses = asm.parse_responses(out)
        bad = [resp for resp in responses if not resp.ok]
        if bad:
            raise RuntimeError(f"{name}: {bad[0].error.name}")
        return responses[-1].counters()
    return Workload(name, config, words, macs, counters)


def workloads(quick=False):
    small = MacroConfig()
    wide = MacroConfig(lanes=32, rows_per_cycle=2, depth=512, act_depth=2048, bias_depth=512)
    deep = MacroConfig(lanes=16, rows_per_cycle=4, depth=128, act_depth=1024, bias_depth=256)
    items = [
        _gemv("gemv 8x64 int8", small, 8, 64, seed=1),
        _gemv("gemv 30x200 raw", small, 30, 200, seed=2, quant=False),
        _gemv("gemv 64x256 R=2", wide, 64, 256, seed=3),
        _gemv("batch 4 x 32x100", wide, 32, 100, batch=4, seed=4),
        _gemv("gemv 16x1000 K chunked", deep, 16, 1000, seed=5),
        _gemv("spill 40x300 (3 passes)", small, 40, 300, seed=6),
        _mlp_on_chip("mlp 64-32-16-10 on chip", wide, [64, 32, 16, 10], seed=7),
    ]
    return items[:3] if quick else items


def run(sims, quick=False):
    rows = []
    by_config = {}
    for workload in workloads(quick):
        by_config.setdefault(workload.config, []).append(workload)
    total = sum(len(v) for v in by_config.values()) * len(sims)
    done = 0
    for sim in sims:
        for config, items in by_config.items():
            start = time.time()
            print(f"[{done}/{total}] {sim}: {len(items)} workload(s) on {config.tag()} ...",
                  flush=True)
            results = run_rtl([Job(w.words, max_cycles=5_000_000) for w in items], config,
                              sim=sim)
            for workload, result in zip(items, results):
                done += 1
                match = _matches(workload, result)
                counters = workload.extract(result.out) if result.finished else {}
                cycles = counters.get("cycles", 0)
                rows.append({
                    "workload": workload.name, "sim": sim, "config": config.as_dict(),
                    "cycles": cycles, "macs": workload.macs,
                    "utilization": workload.macs / (config.macs_per_cycle * cycles)
                    if cycles else 0.0,
                    "row_reads": counters.get("row_reads", 0),
                    "beats_in": counters.get("beats_in", 0),
                    "beats_out": counters.get("beats_out", 0),
                    "golden_match": match,
                })
            print(f"        done in {time.time() - start:.1f} s", flush=True)
    return rows


def _matches(workload, result):
    """Every response equals the golden model's, except the timed counters."""
    if not result.finished:
        return False
    try:
        compare(workload.words, result.out, workload.config, where=workload.name)
    except AssertionError:
        return False
    return True


def markdown(rows):
    lines = ["| workload | sim | lanes x R | cycles | MACs | utilization | row reads | "
             "beats in | beats out | matches golden |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        cfg = row["config"]
        lines.append(
            f"| {row['workload']} | {row['sim']} | {cfg['lanes']} x {cfg['rows_per_cycle']} | "
            f"{row['cycles']} | {row['macs']} | {row['utilization']:.3f} | {row['row_reads']} | "
            f"{row['beats_in']} | {row['beats_out']} | "
            f"{'yes' if row['golden_match'] else '**NO**'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tb.regression", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=SIMULATORS, action="append",
                        help="simulator (repeatable; default: both)")
    parser.add_argument("--quick", action="store_true", help="only the first three workloads")
    args = parser.parse_args(argv)
    sims = args.sim or list(SIMULATORS)
    rows = run(sims, quick=args.quick)
    report_dir = BUILD_ROOT / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (report_dir / "regression.md").write_text("# Regression\n\n" + table + "\n")
    (report_dir / "regression.json").write_text(json.dumps(rows, indent=2))
    print()
    print(table)
    print(f"\nreport: {report_dir / 'regression.md'} and regression.json")
    failed = [row for row in rows if not row["golden_match"]]
    if failed:
        print(f"FAILED: {len(failed)} workload run(s) differ from the golden model",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
