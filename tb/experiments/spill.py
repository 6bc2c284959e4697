"""``make spill``: how the PIM advantage falls when the weights stop fitting the macro.

Part 1, in RTL. A fixed macro (:data:`RTL_CONFIG`, 4 KiB of weight SRAM) and a family of
networks of ``n`` dense 32 -> 32 layers (1 KiB of weights each), from a quarter of the capacity to
four times it, run in steady state (``preloaded``: weights that fit are already in the macro;
weights that spill are rewritten for every chunk of samples, through the 32-bit input stream),
for one sample and for a batch of 8, on both architectures. Every output is checked against the
numpy reference and every cycle count against the exact cycle model.

Part 2, at full scale, with the steady-state model (:mod:`pim_macro.sw.models.scale_model`, no RTL):
AlexNet, VGG-16 and ResNet-50 (:mod:`pim_macro.sw.models.zoo`) on macros of 40 MiB and smaller,
against the baseline, with spilled weights reloaded at a configurable external bandwidth.

Writes ``build/report/spill.md``, ``spill.json`` and ``spill.png``.
Run: ``make spill`` (or
``python -m pim_macro.tb.experiments.spill [--sim verilator] [--bandwidth 4 64]``).
"""

import argparse
import json
import sys
import time

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.compiler.compiler import compile_network
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.compiler.network import Dense, Network, forward
from pim_macro.sw.paths import REPORT_DIR
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl
from pim_macro.sw.models.scale_model import estimate, shapes_of
from pim_macro.sw.models.zoo import NETWORKS


RTL_CONFIG = MacroConfig(lanes=16, rows_per_cycle=1, depth=256, act_depth=8192,
                         bias_depth=512, bus_bits=32)
LAYER_COUNTS = (1, 2, 3, 4, 5, 6, 8, 12, 16)
BATCHES = (1, 8)
WIDTH = 32
MIB = 1 << 20
#: Full-scale macros: 256 lanes x 4 sub-arrays (1 KiB rows, 1024 MACs), a 64-bit baseline bus.
SCALE_SIZES_MIB = (40, 16, 4)


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


def run_family(sim):
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
                "passes": program.passes, "weight_loads": program.weight_loads,
                "estimate": estimate(shapes_of(net), RTL_CONFIG, arch, batch=batch,
                                     chunk=program.chunk).cycles,
            }
        print(f"  done in {time.time() - start:.1f} s", flush=True)
    table = []
    capacity = RTL_CONFIG.depth * RTL_CONFIG.row_bytes
    for n in LAYER_COUNTS:
        for batch in BATCHES:
            pim, base = rows[n, batch, "pim"], rows[n, batch, "baseline"]
            table.append({
                "layers": n, "batch": batch, "weight_bytes": n * WIDTH * WIDTH,
                "weights_over_capacity": n * WIDTH * WIDTH / capacity,
                "passes": pim["passes"], "weight_loads": pim["weight_loads"],
                "pim_cycles": pim["cycles"], "baseline_cycles": base["cycles"],
                "speedup": base["cycles"] / pim["cycles"] if pim["cycles"] else 0.0,
                "estimated_speedup": base["estimate"] / pim["estimate"],
                "correct": pim["correct"] and base["correct"],
                "model_exact": (pim["cycles"] == pim["model_cycles"]
                                and base["cycles"] == base["model_cycles"]),
            })
    return table


def run_scale(bandwidths):
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
                           "ideal": config.beats_per_row, "by_bandwidth": []}
                row["by_bandwidth"].append({"bandwidth": bandwidth, "pim_cycles": pim.cycles,
                                            "baseline_cycles": base.cycles,
                                            "speedup": base.cycles / pim.cycles})
            table.append(row)
    return table


def family_markdown(rows):
    lines = ["| layers | weights / capacity | batch | passes | weight loads | PIM cycles | "
             "baseline cycles | speedup | estimate | outputs | cycle model |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['weights_over_capacity']:.2f} | {r['batch']} | {r['passes']} "
            f"| {r['weight_loads']} | {r['pim_cycles']} | {r['baseline_cycles']} | "
            f"{r['speedup']:.2f} | {r['estimated_speedup']:.2f} | "
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


def plot(family, scale, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
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
    args = parser.parse_args(argv)
    if min(args.bandwidth) <= 0:
        parser.error("--bandwidth must be positive")
    print(f"spill: RTL family on {args.sim}, then the full-scale model", flush=True)
    family = run_family(args.sim)
    scale = run_scale(args.bandwidth)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    plot(family, scale, REPORT_DIR / "spill.png")
    text = "\n".join([
        "# Fit vs spill", "", f"## RTL ({args.sim}, {RTL_CONFIG.tag('baseline')})", "",
        family_markdown(family), "", "## Full scale (steady-state model)", "",
        scale_markdown(scale), "", "![speedup vs weights / capacity](spill.png)", ""])
    (REPORT_DIR / "spill.md").write_text(text)
    (REPORT_DIR / "spill.json").write_text(json.dumps({"family": family, "scale": scale},
                                                      indent=2))
    print()
    print(text)
    bad = [r for r in family if not (r["correct"] and r["model_exact"])]
    for r in bad:
        print(f"FAILED: {r['layers']} layers, batch {r['batch']}: outputs or cycles differ",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
