"""``make demo``: handwritten digits, end to end, on the RTL of both architectures.

1. Float models: an MLP (scikit-learn) and a small CNN (numpy), trained on scikit-learn's bundled
   digits set and kept as ONNX files in ``models/`` (trained here only if missing).
2. Quantization (:mod:`pim_macro.sw.compiler.quantize`: TFLite's per-channel int8 scheme) with
   the training split as calibration data.
3. Compilation (:mod:`pim_macro.sw.compiler.compiler`) of the test split, in batches, into command
   streams.
4. The streams run on Verilator (every test image) and Icarus (a slice), on the PIM macro and on
   the Von Neumann baseline. Every RTL output must equal the golden model's, image by image;
   the cycles must equal the cycle model's.

Prints float vs int8 accuracy and the cycles of both architectures, and writes
``build/report/demo.md`` and ``demo.json``. Exits non-zero on any mismatch.

Run: ``make demo`` (or
``python -m pim_macro.tb.experiments.demo [--icarus-images 40] [--batch 40]``).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.compiler.compiler import compile_network
from pim_macro.sw.models.digits import ensure_models, split
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.compiler.network import forward, save_network
from pim_macro.sw.compiler.quantize import (float_forward, load_float_model, quantize_file,
                                            quantize_input, report)
from pim_macro.sw.paths import BUILD_ROOT, MODELS_DIR, REPORT_DIR
from pim_macro.sw.runtime.rtl import Job, run_rtl
from pim_macro.tb.harness.programs import compare_timing


#: The macro the demo runs on: 16 lanes x 2 sub-arrays, 256 rows (8 KiB of weights), room for
#: three CNN samples in the activation buffer; the baseline's bus is 32 bits (8 beats a row).
CONFIG = MacroConfig(lanes=16, rows_per_cycle=2, depth=256, act_depth=8192, bias_depth=64,
                     bus_bits=32)


class Progress:
    """A one-line progress bar on stderr (a line per update when stderr is not a terminal)."""

    def __init__(self, total, label):
        self.total, self.label, self.done, self.start = total, label, 0, time.time()
        self.tty = sys.stderr.isatty()

    def advance(self, n, note=""):
        self.done += n
        width = 30
        filled = width * self.done // self.total
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                f" images {time.time() - self.start:5.1f} s {note}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        if self.tty and self.done >= self.total:
            print(file=sys.stderr)


def run_model(name, path, data, sims, batch, icarus_images):
    x_train, x_test, _, y_test = data
    network = quantize_file(path, x_train)
    quality = report(network, float_forward(load_float_model(path)), x_test, y_test)
    (BUILD_ROOT / "demo").mkdir(parents=True, exist_ok=True)
    save_network(BUILD_ROOT / "demo" / f"{name}.npz", network)
    xq = quantize_input(network, x_test)
    reference, _ = forward(network, xq)
    rows = []
    for sim in sims:
        count = len(xq) if sim == "verilator" else min(icarus_images, len(xq))
        for arch in ARCHES:
            progress = Progress(count, f"{name:3} {sim:9} {arch:8}")
            cycles = 0
            golden_equal = rtl_equal = timing = True
            predictions = []
            for first in range(0, count, batch):
                xb = xq[first:min(count, first + batch)]
                program = compile_network(network, xb, CONFIG)
                golden, _ = program.extract(GoldenMacro(CONFIG, arch=arch).run(program.words))
                result, = run_rtl([Job(program.words, max_cycles=50_000_000)], CONFIG, sim=sim,
                                  arch=arch)
                if not result.finished:
                    raise RuntimeError(f"{name} on {sim} {arch}: the macro did not finish")
                y, counters = program.extract(result.out)
                golden_equal &= bool(np.array_equal(golden, reference[first:first + len(xb)]))
                rtl_equal &= bool(np.array_equal(y, golden))
                try:
                    timing &= compare_timing(program.words, result.out, CONFIG, arch=arch) == 1
                except AssertionError:
                    timing = False
                cycles += counters["cycles"]
                predictions.append(y.argmax(axis=1))
                progress.advance(len(xb))
            predictions = np.concatenate(predictions)
            rows.append({
                "model": name, "sim": sim, "arch": arch, "images": count, "cycles": cycles,
                "cycles_per_image": cycles / count,
                "accuracy": float(np.mean(predictions == y_test[:count])),
                "rtl_equals_golden": rtl_equal, "golden_equals_reference": golden_equal,
                "cycle_model_exact": timing,
            })
    return {"model": name, "float_accuracy": quality["float_accuracy"],
            "int8_accuracy": quality["int8_accuracy"], "weight_bytes": network.weight_bytes,
            "macs_per_image": network.macs, "runs": rows}


def markdown(results):
    lines = ["| model | sim | images | float acc. | int8 acc. (RTL) | PIM cycles/image | "
             "baseline cycles/image | speedup | RTL == golden | cycle model |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for res in results:
        by = {(r["sim"], r["arch"]): r for r in res["runs"]}
        for sim in sorted({r["sim"] for r in res["runs"]}, reverse=True):
            pim, base = by[sim, "pim"], by[sim, "baseline"]
            lines.append(
                f"| {res['model']} | {sim} | {pim['images']} | {res['float_accuracy']:.4f} | "
                f"{pim['accuracy']:.4f} | {pim['cycles_per_image']:.0f} | "
                f"{base['cycles_per_image']:.0f} | {base['cycles'] / pim['cycles']:.2f} | "
                f"{'yes' if pim['rtl_equals_golden'] and base['rtl_equals_golden'] else '**NO**'}"
                f" | {'exact' if pim['cycle_model_exact'] and base['cycle_model_exact'] else '**OFF**'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.experiments.demo",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--icarus-images", type=int, default=40,
                        help="test images also run on Icarus (default: 40; 0 skips Icarus)")
    parser.add_argument("--batch", type=int, default=60,
                        help="images per command stream (default: 60)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.icarus_images < 0:
        parser.error("--batch must be at least 1 and --icarus-images at least 0")
    paths = ensure_models(MODELS_DIR)
    data = split()
    sims = ["verilator"] + (["icarus"] if args.icarus_images else [])
    print(f"demo: digits test split ({len(data[1])} images) on {CONFIG.tag()}, "
          f"{', '.join(sims)} x {', '.join(ARCHES)}", flush=True)
    results = [run_model(name, path, data, sims, args.batch, args.icarus_images)
               for name, path in zip(("mlp", "cnn"), paths)]
    table = markdown(results)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "demo.md").write_text("# Digits demo\n\n" + table + "\n")
    (REPORT_DIR / "demo.json").write_text(json.dumps(results, indent=2))
    print()
    print(table)
    print(f"\nreport: {REPORT_DIR / 'demo.md'} and demo.json")
    bad = [f"{r['model']} {r['sim']} {r['arch']}" for res in results for r in res["runs"]
           if not (r["rtl_equals_golden"] and r["golden_equals_reference"]
                   and r["cycle_model_exact"])]
    for what in bad:
        print(f"FAILED: {what}: RTL, golden, reference or cycle model disagree", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
