"""``make spram``: MLPerf Tiny's ResNet-8 on the iCEBreaker with its weights resident in the UP5K's
SPRAM, against the block-RAM configuration that must reload them, and the baseline of each.

The UP5K has 15 KB of block RAM and 128 KB of single-port SPRAM; the ResNet-8 has 77,360 int8
weights. The board's ``spram`` configuration (two sub-arrays of 4 lanes x 16384 rows, 64 bits a
row, on the four SB_SPRAM256KA; fabric :data:`pim_macro.hw.fabric.ICE40_SPRAM`) holds them all;
its twin ``bram512`` (the same macro with 512 rows of block RAM, 4 KB, on the board's
:data:`pim_macro.hw.fabric.ICE40_DUAL`) writes each pass's weights again every inference. Both
architectures run on both; only the weight memory differs (the requantizers take the iCE40's two
passes in both). Single-seed place-and-route of both with the one-cycle dispatch (before the
issue's pipelining and area work): ``spram`` PIM 5001 of the UP5K's 5280 logic cells, baseline
5264, both about 21 MHz; ``bram512`` PIM 5205 (25 of 30 block RAMs), baseline 5432 (does not
fit): the SPRAM also saves the block RAMs' glue logic.

Cycles come from the exact cycle model (:class:`pim_macro.sw.models.cycle_model.CycleModel`,
asserted equal to the RTL by the suite for every fabric, the SPRAM one included), not from the
RTL: a ResNet-8 inference is over a million cycles, hours on a simulator. ``cycles / inference``
is the sum of the macro's cycles over the inference's command segments
(:func:`pim_macro.sw.compiler.graph_compiler.run_graph` on ``sim="model"``); the host's ops
between them (the residual adds, the pooling, the softmax) are not counted. With the weights
resident the compiled program writes them once, in its set-up segment
(:meth:`GraphProgram.setup_words`), timed apart (``set-up cycles``) and not per inference; the
block-RAM program writes them in every inference's passes.

The single-port rule (``WRITE_WEIGHTS`` waits until no MATVEC is live) costs nothing where the
weights are resident (they are written once, before any MATVEC); its cost where it counts is
measured on the reloading program: ``bram512`` timed on the SPRAM fabric against block
RAM. The board's default block-RAM build (``l4``) is timed too, for reference.

Inferences per second are at ``--mhz`` (default: the board's place-and-route target; pass the
measured Fmax). Also checks that every case gives LiteRT's output (reference kernels) for the
input. Writes ``build/report/spram.md`` and ``spram.json``; exit 1 on a mismatch.

Run: ``make spram [SPRAM_ARGS='--mhz 40']`` or ``python -m pim_macro.tb.experiments.spram [--models
DIR] [--mhz F] [--seed S]``. Time: about two minutes (eight ResNet-8 inferences on the
cycle model).
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pim_macro.hw.board import BOARDS
from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.paths import REPORT_DIR
from pim_macro.tb.experiments.tiny import DEFAULT_DIR, find_models


#: The model, and the board configuration with its weights in SPRAM.
MODEL = "pretrainedResnet_quant.tflite"
BOARD = "icebreaker"
SPRAM_CONFIG = "spram"
#: Rows of the block-RAM twin: 4 KB of weights in eight of the UP5K's 30 block RAMs (the SPRAM
#: build uses 17 for the rest), the most a power of two leaves room for.
BRAM_DEPTH = 512


def configs(board):
    """``{name: (config, fabric)}``: the board's SPRAM configuration, and its twin with
    :data:`BRAM_DEPTH` rows of block RAM on the board's own fabric (nothing else differs)."""
    spram = board.config(SPRAM_CONFIG)
    bram = MacroConfig(**{**spram.as_dict(), "depth": BRAM_DEPTH})
    return {SPRAM_CONFIG: (spram, board.fabric_of(SPRAM_CONFIG)),
            f"bram{BRAM_DEPTH}": (bram, board.fabric)}


def cases(board):
    """``(label, arch, config name, config, fabric)`` of every row of the table: both
    architectures with the weights in SPRAM and in block RAM, then the block-RAM program on the
    SPRAM's single port (what the rule costs where weights are written every inference)."""
    (sname, (spram, sfab)), (bname, (bram, bfab)) = configs(board).items()
    single = replace(bfab, weight_memory="spram")
    out = []
    for arch in ARCHES:
        out += [(f"{arch}, SPRAM (resident)", arch, sname, spram, sfab),
                (f"{arch}, block RAM (reloading)", arch, bname, bram, bfab)]
    out += [(f"{arch}, block-RAM program on the single port", arch, bname, bram, single)
            for arch in ARCHES]
    # For reference, the board's default block-RAM build (fewer MACs per cycle, but it fits
    # with block RAM in both architectures).
    out += [(f"{arch}, the board's default (block RAM)", arch, board.default,
             board.config(board.default), board.fabric_of(board.default)) for arch in ARCHES]
    return out


def measure(graph, x, label, arch, name, config, fabric, mhz):
    """One inference of ``graph`` on input ``x`` (batch 1) on the cycle model: the table's row."""
    from pim_macro.sw.compiler.graph_compiler import compile_graph, run_graph
    program = compile_graph(graph, config)
    result = run_graph(graph, x, config, sim="model", arch=arch, program=program, fabric=fabric)
    cycles = result.cycles[0]
    return {
        "case": label, "arch": arch, "config_name": name, "config": config.tag(arch),
        "weight_memory": fabric.weight_memory, "weight_bytes_sram": config.weight_bytes,
        "resident": result.weights_resident, "passes": result.passes,
        "setup_cycles": result.setup_cycles,
        "setup_weight_words": result.setup_words_in.get("weights", 0),
        "weight_words": result.words_in.get("weights", 0),
        "cycles": cycles, "mhz": mhz, "inferences_per_s": mhz * 1e6 / cycles,
        "macs": result.macs, "output": result.outputs[0][0].tolist(),
    }


def _reference(path, x):
    from pim_macro.tb.experiments.tflite_check import reference
    from pim_macro.sw.compiler.tflite_import import load_tflite
    graph = load_tflite(str(path))
    it = reference(Path(path).read_bytes())
    it.set_tensor(graph.inputs[0], x)
    it.invoke()
    return np.array(it.get_tensor(graph.outputs[0])).reshape(-1).tolist()


def markdown(rows, mhz, board, ok):
    spram = {r["arch"]: r for r in rows if r["config_name"] == SPRAM_CONFIG}
    twin = f"bram{BRAM_DEPTH}"
    bram = {r["arch"]: r for r in rows if r["config_name"] == twin
            and r["weight_memory"] == "bram"}
    single = {r["arch"]: r for r in rows if r["config_name"] == twin
              and r["weight_memory"] == "spram"}
    default = {r["arch"]: r for r in rows if r["config_name"] == board.default}
    lines = [
        "# ResNet-8 on the iCEBreaker: weights resident in SPRAM vs reloaded into block RAM", "",
        f"MLPerf Tiny's ResNet-8 ({rows[0]['macs']:,} MACs per inference, 77,360 int8 weights) "
        f"on the {board.title}. `{SPRAM_CONFIG}`: the weights in the four SB_SPRAM256KA "
        f"(`{spram['pim']['config']}`, {spram['pim']['weight_bytes_sram']:,} B); "
        f"`{bram['pim']['config_name']}`: the same macro with "
        f"{bram['pim']['weight_bytes_sram']:,} B of block RAM, the weights written again in "
        "every inference. Cycles from the exact cycle model (equal to the RTL's, asserted by the "
        "suite), summed over the inference's macro segments (host ops apart); resident weights "
        "are written once, by the program's set-up segment, not counted per inference. "
        f"Inferences/s at {mhz:g} MHz.", "",
        "| case | config | weights | passes | weight words / inference | set-up cycles (once) | "
        "cycles / inference | inferences/s |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | `{r['config_name']}` | "
            f"{'resident' if r['resident'] else 'reloaded'} ({r['weight_memory']}) | "
            f"{r['passes']} | {r['weight_words']:,} | {r['setup_cycles']:,} | "
            f"{r['cycles']:,} | {r['inferences_per_s']:.1f} |")
    lines += ["",
              f"- PIM: resident in SPRAM {spram['pim']['cycles']:,} cycles vs reloading block RAM "
              f"{bram['pim']['cycles']:,}: {bram['pim']['cycles'] / spram['pim']['cycles']:.2f}x "
              "fewer cycles.",
              f"- Baseline: SPRAM {spram['baseline']['cycles']:,} vs block RAM "
              f"{bram['baseline']['cycles']:,} cycles; PIM over baseline "
              f"{spram['baseline']['cycles'] / spram['pim']['cycles']:.2f}x resident, "
              f"{bram['baseline']['cycles'] / bram['pim']['cycles']:.2f}x reloading.",
              "- The single-port rule (a weight write waits until no MATVEC is live) costs the "
              "resident program nothing: its weights are written once, before the first MATVEC. "
              "On the reloading program it costs "
              + ", ".join(f"{a} {single[a]['cycles'] - bram[a]['cycles']:+,} cycles "
                          f"({100 * (single[a]['cycles'] / bram[a]['cycles'] - 1):+.1f} %)"
                          for a in ARCHES)
              + " (the writes of a pass no longer overlap the previous pass's MATVECs).",
              f"- The board's default `{board.default}` (`{default['pim']['config']}`, block "
              f"RAM): PIM {default['pim']['cycles']:,}, baseline "
              f"{default['baseline']['cycles']:,} cycles per inference: the PIM SPRAM build "
              f"takes {default['pim']['cycles'] / spram['pim']['cycles']:.2f}x fewer.",
              f"- Outputs: every case equal to LiteRT's (reference kernels): "
              f"{'yes' if ok else 'NO'}.", ""]
    return "\n".join(lines)


def main(argv=None):
    board = BOARDS[BOARD]
    parser = argparse.ArgumentParser(prog="spram", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(DEFAULT_DIR),
                        help=f"folder of the MLPerf Tiny .tflite files (default {DEFAULT_DIR})")
    parser.add_argument("--mhz", type=float, default=board.target_mhz,
                        help="clock for inferences/s (default: the board's target, "
                             f"{board.target_mhz:g} MHz; give the measured Fmax)")
    parser.add_argument("--seed", type=int, default=0, help="of the random int8 input")
    parser.add_argument("--report-dir", default=str(REPORT_DIR))
    args = parser.parse_args(argv)
    if not 0 < args.mhz < float("inf"):
        parser.error(f"--mhz must be a positive number of MHz, not {args.mhz}")
    from pim_macro.sw.compiler.tflite_import import load_tflite
    path = find_models(args.models, names=(MODEL,), prog="spram")[MODEL]
    graph = load_tflite(str(path))
    t = graph.tensors[graph.inputs[0]]
    x = np.random.default_rng(args.seed).integers(-128, 128, (1, *t.shape[1:])).astype(np.int8)
    want = _reference(path, x)
    rows, started = [], time.time()
    for label, arch, name, config, fabric in cases(board):
        row = measure(graph, x, label, arch, name, config, fabric, args.mhz)
        row["matches_litert"] = row["output"] == want
        rows.append(row)
        print(f"{label:45s} {name}: {row['cycles']:>10,} cycles, "
              f"{row['inferences_per_s']:8.1f} inferences/s at {args.mhz:g} MHz "
              f"({time.time() - started:.0f} s)", flush=True)
    ok = all(r["matches_litert"] for r in rows)
    md = markdown(rows, args.mhz, board, ok)
    out = Path(args.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spram.md").write_text(md)
    (out / "spram.json").write_text(json.dumps({"model": MODEL, "board": BOARD, "mhz": args.mhz,
                                                "seed": args.seed, "litert_output": want,
                                                "rows": rows}, indent=1))
    print(md)
    print(f"wrote {out / 'spram.md'} and spram.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
