"""``make spill``: how the PIM advantage falls when the weights stop fitting the macro.

Part 1, in RTL. A fixed macro (:data:`RTL_CONFIG`, 4 KiB of weight SRAM) and a family of
networks of ``n`` dense 32 -> 32 layers (1 KiB of weights each), from a quarter of the capacity to
four times it, run in steady state (``preloaded``: weights that fit are already in the macro;
weights that spill are rewritten for every chunk of samples, through the 32-bit input stream),
for one sample and for a batch of 8, on both architectures. Every output is checked against the
numpy reference and every cycle count (and every counter that costs energy) against the exact
cycle model.

Part 2, at full scale, with the steady-state model (:mod:`pim_macro.sw.models.scale_model`, no RTL):
AlexNet, VGG-16 and ResNet-50 (:mod:`pim_macro.sw.models.zoo`) on macros of 40 MiB and smaller,
against the baseline, with spilled weights reloaded at a configurable external bandwidth.

Both parts give the dynamic energy per inference of both architectures
(:func:`pim_macro.sw.models.energy.energy`, 45 nm and 7 nm tables): in RTL from the macro's own
counters, at full scale from the steady-state model's counts. At full scale the *reload share*
(:data:`RELOAD_SHARE`) is the part of an inference's energy that reloading the weights adds once
they do not fit (every stored weight is then rewritten for every inference).

Writes ``build/report/spill.md``, ``spill.json`` and ``spill.png``.
Run: ``make spill`` (or
``python -m pim_macro.tb.experiments.spill [--sim verilator] [--bandwidth 4 64]
[--energy-table 45nm 7nm]``).
"""

import argparse
import json
import sys
import time

import numpy as np

from pim_macro.hw.isa import ARCHES, Counter, MacroConfig
from pim_macro.sw.compiler.compiler import compile_network
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.compiler.network import Dense, Network, forward
from pim_macro.sw.paths import REPORT_DIR
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl
from pim_macro.sw.models.scale_model import estimate, shapes_of
from pim_macro.sw.models.zoo import NETWORKS
from pim_macro.sw.models.energy import DEFAULT_TABLE, TABLES, EnergyTableError, energy, load_table


RTL_CONFIG = MacroConfig(lanes=16, rows_per_cycle=1, depth=256, act_depth=8192,
                         bias_depth=512, bus_bits=32)
LAYER_COUNTS = (1, 2, 3, 4, 5, 6, 8, 12, 16)
BATCHES = (1, 8)
WIDTH = 32
MIB = 1 << 20
#: Full-scale macros: 256 lanes x 4 sub-arrays (1 KiB rows, 1024 MACs), a 64-bit baseline bus.
SCALE_SIZES_MIB = (40, 16, 4)
#: Energy tables of the full-scale table (the first also prices the RTL family and the plot).
ENERGY_TABLES = (DEFAULT_TABLE, "7nm")
#: The counters that cost energy (and that the RTL and the exact cycle model must agree on).
ENERGY_COUNTERS = (Counter.MAC_ACTIVE, Counter.ROW_READS, Counter.BUS_BEATS,
                   Counter.WEIGHT_WORDS, Counter.BEATS_IN, Counter.BEATS_OUT)
#: What the reload share counts, stated once for the report.
RELOAD_SHARE = ("reload share: the part of an inference's energy that reloading the weights "
                "adds once they do not fit (the compiler then rewrites every stored weight for "
                "every inference, in passes of the SRAM's size): their DRAM reads, their SRAM "
                "writes, and the stream words that carry them in (weights, reloaded channels "
                "and those commands, with the commands' status words out), over the "
                "inference's total; 0 when they fit")


def family_energy(pim_counters, baseline_counters, batch, config=None, table=DEFAULT_TABLE):
    """Energy per inference (pJ) of a family case, from each architecture's counters of its
    ``batch`` samples (mappings as :func:`pim_macro.sw.models.energy.energy` takes them):
    ``pim_pj``, ``baseline_pj`` and ``energy_ratio`` (baseline / PIM, 0 when PIM is 0)."""
    config = config or RTL_CONFIG
    pim = energy(pim_counters, config, "pim", table).per(batch).total_pj
    base = energy(baseline_counters, config, "baseline", table).per(batch).total_pj
    return {"pim_pj": pim, "baseline_pj": base, "energy_ratio": base / pim if pim else 0.0}


def scale_energy(pim, baseline, config, batch=1, table=DEFAULT_TABLE):
    """Energy per inference (pJ) of a full-scale case from the steady-state model's
    :class:`pim_macro.sw.models.scale_model.Estimate` of each architecture (``batch`` samples):
    ``pim_pj``, ``baseline_pj``, ``energy_ratio`` (baseline / PIM), and each architecture's
    reload share (:data:`RELOAD_SHARE`), ``pim_reload_share`` and ``baseline_reload_share``
    (fractions), with ``reload_pj`` (the same for both: the reload's events do not cross the
    baseline's bus)."""
    row = {}
    for arch, est in (("pim", pim), ("baseline", baseline)):
        total = energy(est.counters, config, arch, table).per(batch).total_pj
        reload = energy(est.reload_counters, config, arch, table).per(batch).total_pj
        row[f"{arch}_pj"] = total
        row[f"{arch}_reload_share"] = reload / total if total else 0.0
        row["reload_pj"] = reload
    row["energy_ratio"] = row["baseline_pj"] / row["pim_pj"] if row["pim_pj"] else 0.0
    return row


def scale_config(mib):
    return MacroConfig(lanes=256, rows_per_cycle=4, depth=mib * MIB // 1024, act_depth=65536,
                       bias_depth=65536, bus_bits=64)


def family_network(n, seed):
    rng = np.random.default_rng(seed)
    # TFLite-like layers: per-channel scales of 2**-9 .. 2**-8, zero points -128 with ReLU
    layers = tuple(Dense(rng.integers(-128, 128, (WIDTH, WIDTH), dtype=np.int8),
                         rng.integers(-4000, 4000, WIDTH, dtype=np.int32),
                         rng.integers(1 << 30, 1 << 31, WIDTH), -8, input_zero_point=-128,
                         output_zero_point=-128, act_min=-128) for _ in range(n))
    return Network(layers)


def run_family(sim, energy_table=DEFAULT_TABLE):
    cases = []
    for n in LAYER_COUNTS:
        net = family_network(n, seed=n)
        for batch in BATCHES:
            x = np.random.default_rng(100 + n).integers(-128, 128, (batch, WIDTH), dtype=np.int8)
            program = compile_network(net, x, RTL_CONFIG, preloaded=True)
            cases.append((n, batch, net, x, program))
    rows = {}
    for arch in ARCHES:
        start = time.time()
        print(f"  RTL family: {len(cases)} programs on {sim} {arch} ...", flush=True)
        results = run_rtl([Job(c[4].words, max_cycles=20_000_000) for c in cases], RTL_CONFIG,
                          sim=sim, arch=arch)
        for (n, batch, net, x, program), result in zip(cases, results):
            y, counters = program.extract(result.out) if result.finished else (None, {})
            model = program.extract(CycleModel(RTL_CONFIG, arch=arch).run(program.words))[1]
            rows[n, batch, arch] = {
                "correct": result.finished and bool(np.array_equal(y, forward(net, x)[0])),
                "cycles": counters.get("cycles", 0), "model_cycles": model["cycles"],
                "counters": counters,
                "model_counts": all(counters.get(c.name.lower()) == model[c.name.lower()]
                                    for c in ENERGY_COUNTERS),
                "passes": program.passes, "weight_loads": program.weight_loads,
                "estimate": estimate(shapes_of(net), RTL_CONFIG, arch, batch=batch,
                                     chunk=program.chunk),
            }
        print(f"  done in {time.time() - start:.1f} s", flush=True)
    table = []
    capacity = RTL_CONFIG.depth * RTL_CONFIG.row_bytes
    for n in LAYER_COUNTS:
        for batch in BATCHES:
            pim, base = rows[n, batch, "pim"], rows[n, batch, "baseline"]
            joules = family_energy(pim["counters"], base["counters"], batch,
                                   table=energy_table)
            table.append({
                "layers": n, "batch": batch, "weight_bytes": n * WIDTH * WIDTH,
                "weights_over_capacity": n * WIDTH * WIDTH / capacity,
                "passes": pim["passes"], "weight_loads": pim["weight_loads"],
                "pim_cycles": pim["cycles"], "baseline_cycles": base["cycles"],
                "speedup": base["cycles"] / pim["cycles"] if pim["cycles"] else 0.0,
                "estimated_speedup": base["estimate"].cycles / pim["estimate"].cycles,
                "correct": pim["correct"] and base["correct"],
                "model_exact": (pim["cycles"] == pim["model_cycles"]
                                and base["cycles"] == base["model_cycles"]
                                and pim["model_counts"] and base["model_counts"]),
                "pim_pj_per_inference": joules["pim_pj"],
                "baseline_pj_per_inference": joules["baseline_pj"],
                "energy_ratio": joules["energy_ratio"],
                "estimated_energy_ratio": family_energy(
                    pim["estimate"].counters, base["estimate"].counters, batch,
                    table=energy_table)["energy_ratio"],
                "pim_counters": pim["counters"], "baseline_counters": base["counters"],
            })
    return table


def run_scale(bandwidths, tables=ENERGY_TABLES):
    """The full-scale rows; ``energy`` holds :func:`scale_energy` by table name for each of
    ``tables`` (names, paths or :class:`pim_macro.sw.models.energy.EnergyTable` s), the
    breakdowns (pJ by kind) are priced with the first."""
    tables = [load_table(t) for t in tables]
    table = []
    for name, layers in NETWORKS.items():
        for mib in SCALE_SIZES_MIB:
            config = scale_config(mib)
            row = None
            for bandwidth in bandwidths:
                pim = estimate(layers, config, "pim", bandwidth=bandwidth)
                base = estimate(layers, config, "baseline", bandwidth=bandwidth)
                if row is None:
                    row = {"network": name, "macro_mib": mib,
                           "weight_mb": pim.weight_bytes / 1e6,
                           "weights_over_capacity": pim.stored_bytes / pim.capacity_bytes,
                           "fits": pim.fits, "passes": pim.passes,
                           "reloaded_mb": pim.reloaded_bytes / 1e6,
                           "ideal": config.beats_per_row, "by_bandwidth": [],
                           # the counts, hence the energy, do not depend on the bandwidth
                           "energy": {t.name: scale_energy(pim, base, config, table=t)
                                      for t in tables},
                           "pim_breakdown_pj": energy(pim.counters, config, "pim",
                                                      tables[0]).pj,
                           "baseline_breakdown_pj":
                               energy(base.counters, config, "baseline", tables[0]).pj}
                row["by_bandwidth"].append({"bandwidth": bandwidth, "pim_cycles": pim.cycles,
                                            "baseline_cycles": base.cycles,
                                            "speedup": base.cycles / pim.cycles})
            table.append(row)
    return table


def family_markdown(rows):
    lines = ["| layers | weights / capacity | batch | passes | weight loads | PIM cycles | "
             "baseline cycles | speedup | estimate | PIM nJ / inference | "
             "baseline nJ / inference | energy baseline / PIM | estimate | outputs | "
             "cycle model |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['weights_over_capacity']:.2f} | {r['batch']} | {r['passes']} "
            f"| {r['weight_loads']} | {r['pim_cycles']} | {r['baseline_cycles']} | "
            f"{r['speedup']:.2f} | {r['estimated_speedup']:.2f} | "
            f"{r['pim_pj_per_inference'] / 1e3:.2f} | "
            f"{r['baseline_pj_per_inference'] / 1e3:.2f} | {r['energy_ratio']:.2f} | "
            f"{r['estimated_energy_ratio']:.2f} | "
            f"{'exact' if r['correct'] else '**WRONG**'} | "
            f"{'exact' if r['model_exact'] else '**OFF**'} |")
    return "\n".join(lines)


def scale_markdown(rows):
    bandwidths = [b["bandwidth"] for b in rows[0]["by_bandwidth"]]
    head = " | ".join(f"PIM cycles, speedup @ {b:g} B/cycle" for b in bandwidths)
    lines = [f"| network | int8 weights | macro | fits | passes | reloaded per inference | "
             f"{head} |", "|---|---:|---:|---|---:|---:|" + "---:|" * len(bandwidths)]
    for r in rows:
        cells = " | ".join(f"{b['pim_cycles']:.3g}, **{b['speedup']:.1f}x**"
                           for b in r["by_bandwidth"])
        lines.append(
            f"| {r['network']} | {r['weight_mb']:.1f} MB | {r['macro_mib']} MiB | "
            f"{'yes' if r['fits'] else 'no'} | {r['passes']} | {r['reloaded_mb']:.1f} MB | "
            f"{cells} |")
    return "\n".join(lines)


def scale_energy_markdown(rows, tables=None):
    """The full-scale energy table: per inference, for each of ``tables`` (default: the tables
    the rows hold), PIM and baseline (mJ), their ratio and the reload shares (PIM / baseline)."""
    tables = tables or list(rows[0]["energy"])
    head = " | ".join(f"PIM mJ ({t}) | baseline mJ ({t}) | baseline / PIM ({t}) | "
                      f"reload share PIM / baseline ({t})" for t in tables)
    lines = [f"| network | macro | weights / capacity | {head} |",
             "|---|---:|---:|" + "---:|" * (4 * len(tables))]
    for r in rows:
        cells = " | ".join(
            f"{e['pim_pj'] / 1e9:.3g} | {e['baseline_pj'] / 1e9:.3g} | "
            f"**{e['energy_ratio']:.2f}x** | {100 * e['pim_reload_share']:.0f} % / "
            f"{100 * e['baseline_reload_share']:.0f} %"
            for e in (r["energy"][t] for t in tables))
        lines.append(f"| {r['network']} | {r['macro_mib']} MiB | "
                     f"{r['weights_over_capacity']:.2f} | {cells} |")
    return "\n".join(lines)


def _energy_axes(axes, ylabel, title):
    """An energy panel's frame: log-log against weights / capacity, the capacity marked."""
    axes.axvline(1.0, color="0.5", linestyle="--")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("weights / weight SRAM capacity")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)


def plot(family, scale, path, table=DEFAULT_TABLE):
    """The four panels: speedup (top) and energy per inference priced with ``table`` (a name
    in each full-scale row's ``energy``; the family rows' energies are priced with it already)
    against weights / capacity, RTL family (left) and full scale (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ((left, right), (left_e, right_e)) = plt.subplots(2, 2, figsize=(11, 8.8), dpi=110)
    for batch, colour in zip(BATCHES, ("tab:blue", "tab:orange")):
        pts = [r for r in family if r["batch"] == batch]
        x = [r["weights_over_capacity"] for r in pts]
        left.plot(x, [r["speedup"] for r in pts], "o-", color=colour,
                  label=f"RTL, batch {batch}")
        left.plot(x, [r["estimated_speedup"] for r in pts], ":", color=colour,
                  label=f"scale model, batch {batch}" if batch == BATCHES[0] else None)
    left.axvline(1.0, color="0.5", linestyle="--")
    left.axhline(RTL_CONFIG.beats_per_row, color="0.7", linestyle=":",
                 label=f"ideal ({RTL_CONFIG.beats_per_row})")
    left.set_xlabel("weights / weight SRAM capacity")
    left.set_ylabel("speedup (baseline / PIM cycles)")
    left.set_title(f"RTL: {RTL_CONFIG.lanes} lanes, 4 KiB SRAM, 32-bit bus")
    left.set_xscale("log", base=2)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    markers = {"alexnet": "s", "vgg16": "^", "resnet50": "o"}
    bandwidth = scale[0]["by_bandwidth"][0]["bandwidth"]
    for name, marker in markers.items():
        pts = [r for r in scale if r["network"] == name]
        speedups = [r["by_bandwidth"][0]["speedup"] for r in pts]
        right.plot([r["weights_over_capacity"] for r in pts], speedups, marker=marker,
                   linestyle="-", label=name)
        for r, speedup in zip(pts, speedups):
            right.annotate(f"{r['macro_mib']} MiB", (r["weights_over_capacity"], speedup),
                           fontsize=6, textcoords="offset points", xytext=(4, 4))
    right.axvline(1.0, color="0.5", linestyle="--")
    right.set_xscale("log", base=2)
    right.set_yscale("log", base=2)
    right.set_xlabel("weights / weight SRAM capacity")
    right.set_ylabel("speedup (baseline / PIM cycles)")
    right.set_title(f"full scale (model): 1024 MACs, 64-bit bus, reload {bandwidth:g} B/cycle")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    # Energy per inference beside each speedup panel (45 nm table, log scale).
    for batch, colour in zip(BATCHES, ("tab:blue", "tab:orange")):
        pts = [r for r in family if r["batch"] == batch]
        x = [r["weights_over_capacity"] for r in pts]
        left_e.plot(x, [r["pim_pj_per_inference"] / 1e3 for r in pts], "o-", color=colour,
                    label=f"PIM, batch {batch}")
        left_e.plot(x, [r["baseline_pj_per_inference"] / 1e3 for r in pts], "s--",
                    color=colour, mfc="none", label=f"baseline, batch {batch}")
    # The two architectures' energies lie close on a log scale: their ratio on its own axis.
    ratio_axis = left_e.twinx()
    for batch, colour in zip(BATCHES, ("tab:blue", "tab:orange")):
        pts = [r for r in family if r["batch"] == batch]
        ratio_axis.plot([r["weights_over_capacity"] for r in pts],
                        [r["energy_ratio"] for r in pts], ":", color=colour, alpha=0.7)
    ratio_axis.set_ylabel("dotted: energy baseline / PIM")
    _energy_axes(left_e, f"energy per inference (nJ, {table} table)",
                 "RTL: energy from the macro's counters")
    for (name, marker), colour in zip(markers.items(), ("tab:blue", "tab:orange", "tab:green")):
        pts = [r for r in scale if r["network"] == name]
        x = [r["weights_over_capacity"] for r in pts]
        right_e.plot(x, [r["energy"][table]["pim_pj"] / 1e9 for r in pts],
                     marker=marker, linestyle="-", color=colour, label=f"{name}, PIM")
        right_e.plot(x, [r["energy"][table]["baseline_pj"] / 1e9 for r in pts],
                     marker=marker, linestyle="--", color=colour, mfc="none",
                     label=f"{name}, baseline")
    _energy_axes(right_e, f"energy per inference (mJ, {table} table)",
                 "full scale (model): energy per inference, reloads included")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.experiments.spill",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=SIMULATORS, default="verilator")
    parser.add_argument("--bandwidth", type=float, nargs="+", default=[4.0, 64.0],
                        help="external bytes per cycle for weight reloads at full scale "
                             "(default: 4, the macro's input stream, and 64)")
    parser.add_argument("--energy-table", nargs="+", default=list(ENERGY_TABLES),
                        metavar="TABLE",
                        help="energy tables (a name: " + ", ".join(TABLES) + "; or the path of "
                             "a TOML file in their format); the first prices the RTL family and "
                             "the plot (default: " + " ".join(ENERGY_TABLES) + ")")
    args = parser.parse_args(argv)
    if min(args.bandwidth) <= 0:
        parser.error("--bandwidth must be positive")
    try:        # before the RTL runs: a bad table is refused at once
        tables = [load_table(t) for t in args.energy_table]
    except EnergyTableError as e:      # one line, not the whole usage
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if len({t.name for t in tables}) < len(tables):
        parser.exit(2, f"{parser.prog}: error: --energy-table: two tables have the same name\n")
    print(f"spill: RTL family on {args.sim}, then the full-scale model", flush=True)
    family = run_family(args.sim, tables[0])
    scale = run_scale(args.bandwidth, tables)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    plot(family, scale, REPORT_DIR / "spill.png", tables[0].name)
    text = "\n".join([
        "# Fit vs spill", "", f"## RTL ({args.sim}, {RTL_CONFIG.tag('baseline')})", "",
        family_markdown(family), "",
        f"Energy: dynamic energy per inference of the counted events ({tables[0].name} table, "
        f"pim_macro.sw.models.energy) from each run's own counters; the estimate column is the "
        f"steady-state model's ratio.", "",
        "## Full scale (steady-state model)", "",
        scale_markdown(scale), "", "### Energy per inference", "",
        scale_energy_markdown(scale), "", f"{RELOAD_SHARE[0].upper()}{RELOAD_SHARE[1:]}.", "",
        "![speedup and energy vs weights / capacity](spill.png)", ""])
    (REPORT_DIR / "spill.md").write_text(text)
    (REPORT_DIR / "spill.json").write_text(json.dumps({"family": family, "scale": scale},
                                                      indent=2))
    print()
    print(text)
    bad = [r for r in family if not (r["correct"] and r["model_exact"])]
    for r in bad:
        print(f"FAILED: {r['layers']} layers, batch {r['batch']}: outputs, cycles or counters "
              f"differ from the reference and the cycle model", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
