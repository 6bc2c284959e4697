"""The ``make sim`` regression: the PIM macro against the Von Neumann baseline, in RTL.

Part 1, workloads. Real workloads (GEMVs with and without preloaded weights, batches, K chunks,
SRAM spills, a three-layer MLP chained on chip) are compiled once to a command stream, and the
same stream is played on both architectures and both simulators (all the workloads of one
configuration in one simulator run). Every run is checked word for word against the golden
model (so PIM and baseline outputs are identical), and its counters against the exact cycle
model (:mod:`pim_macro.sw.models.cycle_model`).

Part 2, the sweep. One preloaded GEMV (``lanes`` outputs, K = 256, 64 vectors) over lanes in
{8, 16, 32, 64} x bus_bits in {8, 16, 32} x R in {1, 2}, on one simulator: measured speedup
against the ideal ``lanes x R x 8 / bus_bits`` (the beats a weight row needs on the bus), with
a plot (speedup, fraction of the ideal, and the energy ratio per point).

Energy. Every run's final ``READ_COUNTERS`` (the RTL's) is priced by
:func:`pim_macro.sw.models.energy.energy` (``--energy-table``, default 45 nm): dynamic energy of
the counted events per inference (a workload's batch of vectors divides it: one vector is one
inference), for PIM and baseline, their ratio, the breakdown by event kind and the bytes moved
per level. The counters priced are those the run already checks against the cycle model, every
counter of every timed ``READ_COUNTERS`` (:func:`pim_macro.tb.harness.programs.compare_timing`):
a difference fails the run.

The report is printed and written to ``build/report/regression.md``, ``regression.json`` and
``sweep.png``. Definitions: *speedup* = baseline cycles / PIM cycles; *utilization* = useful
MACs / (lanes x R x PIM cycles); *energy ratio* = baseline energy / PIM energy; cycles are the
macro's own ``CYCLES`` counter between the program's clearing and final ``READ_COUNTERS``.

Run: ``make sim`` (or ``python -m pim_macro.tb.experiments.regression [--sim icarus]
[--sweep-sim verilator] [--quick] [--no-sweep] [--jobs N] [--energy-table 45nm|7nm|PATH]``).
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig, Opcode
from pim_macro.sw.runtime import asm
from pim_macro.sw.compiler.gemv import compile_gemv
from pim_macro.sw.models.energy import (DEFAULT_TABLE, TABLES, EnergyTableError, energy,
                                        largest_kinds, load_table)
from pim_macro.sw.paths import REPORT_DIR
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl
from pim_macro.tb.harness.programs import compare, compare_timing


#: Measured speedup must be within this fraction of the ideal in every bus-bound sweep point.
SWEEP_TOLERANCE = 0.03


@dataclass
class Workload:
    name: str
    config: MacroConfig
    words: list
    macs: int           # useful multiply-accumulates (padding excluded)
    batch: int = 1      # vectors (inferences) the program runs: energy is given per vector


def _gemv(name, config, n, k, batch=1, *, seed, quant=True, bias=True, preloaded=False):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    x = rng.integers(-128, 128, (batch, k), dtype=np.int8)
    b = rng.integers(-2**20, 2**20, n, dtype=np.int32) if bias else None
    # Per channel, as TFLite's converter gives them: M0 in [2**30, 2**31), a right shift that
    # brings the accumulators near int8, a zero point with a fused ReLU.
    q = (dict(multiplier=rng.integers(1 << 30, 1 << 31, n), shift=rng.integers(-24, -20, n),
              zero_point=-5, act_min=-5, act_max=127) if quant else {})
    program = compile_gemv(w, x, config, bias=b, preloaded=preloaded, **q)
    return Workload(name, config, program.words, batch * n * k, batch)


def _mlp_on_chip(name, config, sizes, *, seed):
    """Layers chained through WRITEBACK: only the first input goes in and the last output
    comes out; every layer fits one tile (outputs <= lanes) and the SRAM at once. The counters
    are cleared once the weights are in: this times the inference."""
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
        # 1/64 per channel (M0 = 2**30, shift -5), as the old mult 1024, shift 16 was.
        words += asm.encode_load_quant(row % config.bias_depth, [1 << 30] * n_out, [-5] * n_out)
        row += len(rows)
    words += asm.encode_read_counters(clear=True)
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
            words += asm.encode_emit_int8(n_out, channel=bias)
        else:
            words += asm.encode_writeback(n_out, act_out, channel=bias, act_min=0)
        row += rows
        act_in = act_out
        macs += n_out * n_in
    words += asm.encode_read_counters()
    return Workload(name, config, words, macs)


def workloads(quick=False):
    small = MacroConfig()
    wide = MacroConfig(lanes=32, rows_per_cycle=2, depth=512, act_depth=2048, bias_depth=512)
    deep = MacroConfig(lanes=16, rows_per_cycle=4, depth=128, act_depth=1024, bias_depth=256)
    items = [
        _gemv("tile 8x64, 64 vectors, preloaded", small, 8, 64, 64, seed=8, preloaded=True),
        _gemv("gemv 8x64 int8", small, 8, 64, seed=1),
        _gemv("gemv 30x200 raw", small, 30, 200, seed=2, quant=False),
        _gemv("tiles 64x256, 8 vectors, preloaded", wide, 64, 256, 8, seed=9, preloaded=True),
        _gemv("gemv 64x256", wide, 64, 256, seed=3),
        _gemv("batch 4 x 32x100", wide, 32, 100, batch=4, seed=4),
        _gemv("gemv 16x1000 K chunked", deep, 16, 1000, seed=5),
        _gemv("spill 40x300 (3 passes)", small, 40, 300, seed=6),
        _mlp_on_chip("mlp 64-32-16-10 on chip", wide, [64, 32, 16, 10], seed=7),
    ]
    return items[:2] if quick else items


def sweep_configs(quick=False):
    lanes_set, buses, rs = ((8, 64), (8, 32), (1,)) if quick else ((8, 16, 32, 64),
                                                                    (8, 16, 32), (1, 2))
    return [MacroConfig(lanes=lanes, rows_per_cycle=r, depth=512 // r, act_depth=2048,
                        bias_depth=64, bus_bits=bus)
            for r in rs for lanes in lanes_set for bus in buses]


def sweep_workload(config, quick=False):
    k, batch = (128, 4) if quick else (256, 64)
    return _gemv(f"sweep l{config.lanes} R{config.rows_per_cycle} bus{config.bus_bits}",
                 config, config.lanes, k, batch, seed=config.lanes, quant=False, bias=False,
                 preloaded=True)


# -- running ---------------------------------------------------------------------------------

def _play(sim, arch, config, programs):
    """One simulator run (in a worker process): ``[(finished, out), ...]``."""
    results = run_rtl([Job(words, max_cycles=20_000_000) for words in programs], config,
                      sim=sim, arch=arch)
    return [(r.finished, r.out) for r in results]


def _check(workload, arch, finished, out):
    """What one run measured (its final ``READ_COUNTERS``: ``counters``, what the energy prices),
    and whether it matched the golden model and the cycle model (``compare_timing``: every
    counter of every timed ``READ_COUNTERS``, so the energy's counts too)."""
    row = {"finished": finished, "golden": False, "model": False, "counters": {},
           "outputs": None}
    if not finished:
        return row
    try:
        compare(workload.words, out, workload.config, arch=arch, where=workload.name)
        row["golden"] = True
    except AssertionError as exc:
        row["golden_error"] = str(exc).splitlines()[0]
    try:
        row["model"] = compare_timing(workload.words, out, workload.config, arch=arch,
                                      where=workload.name) >= 1
    except AssertionError as exc:
        row["model_error"] = str(exc).splitlines()[0]
    responses = asm.parse_responses(out)
    row["counters"] = responses[-1].counters()
    row["outputs"] = [(r.opcode, r.error.value, r.data) for r in responses
                      if r.opcode not in (Opcode.READ_COUNTERS.value, Opcode.STATUS.value)]
    return row


def _run_tasks(tasks, jobs, label):
    """Run ``{key: (sim, arch, config, [workload])}`` in a process pool, printing a line per
    finished simulator run; returns ``{(key, workload name): check row}``."""
    results = {}
    start = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_play, sim, arch, config, [w.words for w in items]):
                   (key, sim, arch, config, items)
                   for key, (sim, arch, config, items) in tasks.items()}
        for done, future in enumerate(as_completed(futures), 1):
            key, sim, arch, config, items = futures[future]
            for workload, (finished, out) in zip(items, future.result()):
                results[key, workload.name] = _check(workload, arch, finished, out)
            print(f"  [{done:2}/{len(tasks)}] {label}: {sim:9} {arch:8} {config.tag(arch):24} "
                  f"{len(items)} workload(s)  ({time.time() - start:5.1f} s)", flush=True)
    return results


def _ratio(a, b):
    return a / b if b else 0.0


def energy_columns(pim_counters, baseline_counters, config, batch=1, table=DEFAULT_TABLE):
    """Energy per inference of a PIM and a baseline run of ``config`` whose final counters are
    ``pim_counters`` and ``baseline_counters`` over ``batch`` inferences (vectors), priced by
    :func:`~pim_macro.sw.models.energy.energy` with ``table``: ``energy`` (``{arch:
    Energy.as_dict()}``: pJ by kind, bytes by level, per inference), ``pim_pj`` and
    ``baseline_pj`` (pJ per inference) and ``energy_ratio`` (baseline / PIM; 0 when PIM is 0)."""
    per = {arch: energy(counters, config, arch, table).per(batch)
           for arch, counters in (("pim", pim_counters), ("baseline", baseline_counters))}
    return {"energy": {arch: e.as_dict() for arch, e in per.items()},
            "pim_pj": per["pim"].total_pj, "baseline_pj": per["baseline"].total_pj,
            "energy_ratio": _ratio(per["baseline"].total_pj, per["pim"].total_pj)}


def run_workloads(sims, jobs, quick=False, table=DEFAULT_TABLE):
    items = workloads(quick)
    by_config = {}
    for workload in items:
        by_config.setdefault(workload.config, []).append(workload)
    tasks = {(sim, arch, config): (sim, arch, config, group)
             for sim in sims for arch in ARCHES for config, group in by_config.items()}
    results = _run_tasks(tasks, jobs, "workloads")
    rows = []
    for sim in sims:
        for workload in items:
            cfg = workload.config
            pim = results[(sim, "pim", cfg), workload.name]
            base = results[(sim, "baseline", cfg), workload.name]
            pc, bc = pim["counters"].get("cycles", 0), base["counters"].get("cycles", 0)
            rows.append({
                "workload": workload.name, "sim": sim, "config": cfg.as_dict(),
                "macs": workload.macs, "pim_cycles": pc, "baseline_cycles": bc,
                "speedup": _ratio(bc, pc), "ideal": cfg.beats_per_row,
                "utilization": _ratio(workload.macs, cfg.macs_per_cycle * pc),
                "row_reads": pim["counters"].get("row_reads", 0),
                "bus_beats": base["counters"].get("bus_beats", 0),
                "golden_match": pim["golden"] and base["golden"],
                "outputs_identical": pim["outputs"] is not None
                and pim["outputs"] == base["outputs"],
                "model_match": pim["model"] and base["model"],
                "errors": [r[k] for r in (pim, base) for k in ("golden_error", "model_error")
                           if k in r],
                "batch": workload.batch,
                "counters": {"pim": pim["counters"], "baseline": base["counters"]},
                **energy_columns(pim["counters"], base["counters"], cfg, workload.batch, table),
            })
    return rows


def run_sweep(sim, jobs, quick=False, table=DEFAULT_TABLE):
    configs = sweep_configs(quick)
    loads = {config: sweep_workload(config, quick) for config in configs}
    tasks = {}
    for config in configs:
        # The PIM macro does not depend on bus_bits: one run per (lanes, R) serves every bus.
        pim_config = dataclasses.replace(config, bus_bits=configs[0].bus_bits)
        tasks.setdefault(("pim", pim_config.tag("pim")),
                         (sim, "pim", config, [loads[config]]))
        tasks[("baseline", config.tag("baseline"))] = (sim, "baseline", config, [loads[config]])
    results = _run_tasks(tasks, jobs, "sweep")
    rows = []
    for config in configs:
        workload = loads[config]
        pim = results[("pim", config.tag("pim")), _pim_name(tasks, config)]
        base = results[("baseline", config.tag("baseline")), workload.name]
        pc, bc = pim["counters"].get("cycles", 0), base["counters"].get("cycles", 0)
        speedup = _ratio(bc, pc)
        ideal = config.beats_per_row
        rows.append({
            "lanes": config.lanes, "rows_per_cycle": config.rows_per_cycle,
            "bus_bits": config.bus_bits, "sim": sim, "macs": workload.macs,
            "pim_cycles": pc, "baseline_cycles": bc, "speedup": speedup, "ideal": ideal,
            "of_ideal": _ratio(speedup, ideal),
            "utilization": _ratio(workload.macs, config.macs_per_cycle * pc),
            "bus_beats": base["counters"].get("bus_beats", 0),
            "bus_bound": ideal > 1,
            "model_match": pim["model"] and base["model"],
            "golden_match": pim["golden"] and base["golden"]
            and pim["outputs"] == base["outputs"],
            "batch": workload.batch,
            "counters": {"pim": pim["counters"], "baseline": base["counters"]},
            **energy_columns(pim["counters"], base["counters"], config, workload.batch, table),
        })
    return rows


def _pim_name(tasks, config):
    """The name of the workload the shared PIM run of ``config``'s (lanes, R) played."""
    return tasks[("pim", config.tag("pim"))][3][0].name


# -- the report ------------------------------------------------------------------------------

def _yes(flag):
    return "yes" if flag else "**NO**"


def workloads_markdown(rows):
    lines = ["| workload | sim | lanes x R, bus | PIM cycles | baseline cycles | speedup | "
             "ideal | PIM utilization | row reads | bus beats | cycle model | outputs |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        cfg = row["config"]
        outputs = ("golden, identical" if row["golden_match"] and row["outputs_identical"]
                   else "**MISMATCH**")
        lines.append(
            f"| {row['workload']} | {row['sim']} | {cfg['lanes']} x {cfg['rows_per_cycle']}, "
            f"{cfg['bus_bits']} | {row['pim_cycles']} | {row['baseline_cycles']} | "
            f"{row['speedup']:.2f} | {row['ideal']} | {row['utilization']:.3f} | "
            f"{row['row_reads']} | {row['bus_beats']} | "
            f"{'exact' if row['model_match'] else '**OFF**'} | {outputs} |")
    return "\n".join(lines)


def _nj(pj):
    """pJ as nJ with three significant figures or more (no exponent)."""
    nj = pj / 1000
    return f"{nj:,.0f}" if nj >= 100 else f"{nj:.1f}" if nj >= 10 else f"{nj:.2f}"


def energy_markdown(rows):
    """One line per workload (the energy of the first simulator's runs; every simulator's
    counters are checked against the cycle model, so they agree when all say exact)."""
    lines = ["| workload | vectors | PIM nJ / vector | baseline nJ / vector | baseline / PIM | "
             "PIM: largest kinds | baseline: largest kinds | off-chip bytes / vector | "
             "counters = cycle model |",
             "|---|---:|---:|---:|---:|---|---|---:|---|"]
    by_workload = {}
    for row in rows:
        by_workload.setdefault(row["workload"], []).append(row)
    for name, group in by_workload.items():
        row = group[0]
        exact = [r["sim"] for r in group if r["model_match"]]
        off = [r["sim"] for r in group if not r["model_match"]]
        check = (f"exact ({', '.join(exact)})" if not off
                 else f"**OFF** ({', '.join(off)})")
        pim, base = row["energy"]["pim"], row["energy"]["baseline"]
        lines.append(
            f"| {name} | {row['batch']} | {_nj(row['pim_pj'])} | {_nj(row['baseline_pj'])} | "
            f"{row['energy_ratio']:.2f} | {largest_kinds(pim['pj'])} | "
            f"{largest_kinds(base['pj'])} | {pim['bytes']['offchip']:,.0f} | {check} |")
    return "\n".join(lines)


def sweep_markdown(rows):
    lines = ["| lanes | R | bus bits | PIM cycles | baseline cycles | speedup | ideal | "
             "of ideal | PIM utilization | energy ratio | cycle model |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(
            f"| {row['lanes']} | {row['rows_per_cycle']} | {row['bus_bits']} | "
            f"{row['pim_cycles']} | {row['baseline_cycles']} | {row['speedup']:.2f} | "
            f"{row['ideal']} | {row['of_ideal']:.3f} | {row['utilization']:.3f} | "
            f"{row['energy_ratio']:.3f} | "
            f"{'exact' if row['model_match'] else '**OFF**'} |")
    return "\n".join(lines)


def plot_sweep(rows, path):
    """Left: measured speedup against the ideal (log-log, with y = x). Middle: the fraction of
    the ideal reached, with the 3 % tolerance. Right: the energy ratio (baseline / PIM per
    vector) at the same points. Colour: lanes; marker: R."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4.4), dpi=110)
    ideals = [row["ideal"] for row in rows]
    lo, hi = min(ideals) / 1.4, max(ideals) * 1.4
    left.plot([lo, hi], [lo, hi], color="0.6", linestyle="--", label="ideal")
    right.axhline(1.0, color="0.6", linestyle="--")
    right.axhline(1 - SWEEP_TOLERANCE, color="tab:red", linestyle=":",
                  label=f"{1 - SWEEP_TOLERANCE:.0%} of ideal")
    colours = dict(zip(sorted({row["lanes"] for row in rows}),
                       ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]))
    markers = {1: "o", 2: "x", 4: "^"}
    for r in sorted({row["rows_per_cycle"] for row in rows}):
        for lanes, colour in colours.items():
            pts = [row for row in rows if row["lanes"] == lanes and row["rows_per_cycle"] == r]
            if not pts:
                continue
            style = dict(color=colour, marker=markers.get(r, "s"), s=46, linewidths=1.6,
                         label=f"{lanes} lanes, R={r}")
            left.scatter([p["ideal"] for p in pts], [p["speedup"] for p in pts], **style)
            right.scatter([p["ideal"] for p in pts], [p["of_ideal"] for p in pts], **style)
            third.scatter([p["ideal"] for p in pts], [p["energy_ratio"] for p in pts], **style)
    for ax in (left, right, third):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ideal speedup = lanes x R x 8 / bus_bits")
        ax.grid(True, which="both", alpha=0.3)
    left.set_yscale("log", base=2)
    left.set_ylabel("measured speedup (baseline / PIM cycles)")
    left.set_title("PIM vs Von Neumann baseline (RTL)")
    left.legend(fontsize=7, ncol=2)
    right.set_ylabel("measured / ideal")
    right.set_ylim(min(0.95, min(row["of_ideal"] for row in rows) - 0.01), 1.005)
    right.set_title("fraction of the ideal reached")
    right.legend(fontsize=7, loc="lower left")
    third.axhline(1.0, color="0.6", linestyle="--")
    third.set_ylim(0, max(1.5, max(row["energy_ratio"] for row in rows) * 1.1))
    third.set_ylabel("energy ratio (baseline / PIM, per vector)")
    third.set_title(f"energy ({rows[0]['energy']['pim'].get('table', '')} table)"
                    if rows[0].get("energy") else "energy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(workload_rows, sweep_rows, directory=REPORT_DIR):
    directory.mkdir(parents=True, exist_ok=True)
    parts = ["# PIM vs baseline regression", "",
             "Speedup = baseline cycles / PIM cycles; ideal = lanes x R x 8 / bus_bits; "
             "utilization = useful MACs / (lanes x R x PIM cycles); energy ratio = baseline "
             "energy / PIM energy (see the energy section). Cycles are the macro's "
             "CYCLES counter; *cycle model* says whether `pim_macro.sw.models.cycle_model` "
             "predicted every counter of both runs exactly; *outputs* whether both architectures "
             "matched the golden model word for word.", "", "## Workloads", "",
             workloads_markdown(workload_rows)]
    if workload_rows:
        table = workload_rows[0]["energy"]["pim"]
        parts += ["", f"## Energy per vector ({table['table']} table: {table['node']})", "",
                  "Dynamic energy of the counted events (MACs, SRAM reads and writes, the "
                  "baseline's bus, the streams, registers, off-chip weight fetches) priced by "
                  "`pim_macro.sw.models.energy` from each run's final READ_COUNTERS, divided "
                  "over the workload's vectors; no leakage, no clock tree, no FPGA power. "
                  "*Counters = cycle model*: every counter of both runs equals the cycle "
                  "model's prediction.", "", energy_markdown(workload_rows)]
    if sweep_rows:
        plot_sweep(sweep_rows, directory / "sweep.png")
        parts += ["", f"## Sweep ({sweep_rows[0]['sim']})", "",
                  sweep_markdown(sweep_rows), "", "![speedup vs ideal](sweep.png)"]
    text = "\n".join(parts) + "\n"
    (directory / "regression.md").write_text(text)
    (directory / "regression.json").write_text(json.dumps(
        {"workloads": workload_rows, "sweep": sweep_rows}, indent=2))
    return text


def failures(workload_rows, sweep_rows, *, check_ideal=True):
    """Everything that makes the regression fail, one line each (the sweep's distance to the
    ideal only with ``check_ideal``: the quick sweep is too short to amortize fill and drain)."""
    problems = []
    for row in workload_rows:
        what = f"{row['workload']} on {row['sim']}"
        if not (row["golden_match"] and row["outputs_identical"]):
            problems.append(f"{what}: outputs differ from the golden model "
                            f"{row['errors'][:1]}")
        if not row["model_match"]:
            problems.append(f"{what}: the cycle model is off {row['errors'][-1:]}")
    for row in sweep_rows:
        what = f"sweep lanes={row['lanes']} R={row['rows_per_cycle']} bus={row['bus_bits']}"
        if not (row["golden_match"] and row["model_match"]):
            problems.append(f"{what}: outputs or cycle model mismatch")
        if check_ideal and row["bus_bound"] and row["of_ideal"] < 1 - SWEEP_TOLERANCE:
            problems.append(f"{what}: speedup {row['speedup']:.2f} is below "
                            f"{1 - SWEEP_TOLERANCE:.0%} of the ideal {row['ideal']}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.experiments.regression",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=SIMULATORS, action="append",
                        help="simulator of the workloads (repeatable; default: both)")
    parser.add_argument("--sweep-sim", choices=SIMULATORS, default="verilator",
                        help="simulator of the sweep (default: verilator)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep")
    parser.add_argument("--quick", action="store_true", help="a few small workloads only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="simulator runs in parallel (default: the CPU count)")
    parser.add_argument("--energy-table", default=DEFAULT_TABLE, metavar="NAME|PATH",
                        help=f"per-event energy table: {', '.join(TABLES)} or a TOML file in "
                             f"their format (default: {DEFAULT_TABLE})")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        # Before any simulator starts: a bad table is one line, not a traceback after minutes.
        table = load_table(args.energy_table)
    except EnergyTableError as exc:      # one line, not the whole usage
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    sims = args.sim or list(SIMULATORS)
    print(f"regression: workloads on {', '.join(sims)} x {', '.join(ARCHES)}", flush=True)
    workload_rows = run_workloads(sims, args.jobs, args.quick, table)
    sweep_rows = []
    if not args.no_sweep:
        print(f"regression: sweep on {args.sweep_sim}", flush=True)
        sweep_rows = run_sweep(args.sweep_sim, args.jobs, args.quick, table)
    text = write_report(workload_rows, sweep_rows)
    print()
    print(text)
    print(f"report: {REPORT_DIR / 'regression.md'}, regression.json"
          + (", sweep.png" if sweep_rows else ""))
    problems = failures(workload_rows, sweep_rows, check_ideal=not args.quick)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
