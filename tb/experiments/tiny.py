"""``make tiny``: the MLPerf Tiny reference models on the macro, bit for bit against LiteRT.

For each model (the anomaly-detection autoencoder ``ad01_int8.tflite`` and the ResNet-8
``pretrainedResnet_quant.tflite``, read by :func:`pim_macro.sw.compiler.tflite_import.load_tflite`
and run by :func:`pim_macro.sw.compiler.graph_compiler.run_graph`) and two macros of the same
lanes and R: one that holds every weight and channel (``fit``: the depth and channel memory
rounded up to powers of two) and the default :class:`~pim_macro.hw.isa.MacroConfig` (``default``,
2 KiB of weight SRAM: the weights spill):

* ``-n`` random int8 inputs (seeded) through LiteRT's reference kernels (``BUILTIN_REF``, every
  tensor kept) and through the graph on ``--sim golden`` and ``--sim model`` at the ``fit``
  macro (``--spill-n`` of them at the ``default`` one): every macro op's output and the model's
  output compared value by value;
* cycles of both architectures at both macros on the cycle model (a macro's timing does not
  depend on the data: every input takes the same cycles, which the run checks);
* energy per inference of both architectures at both macros, from the same cycle-model runs'
  counters (:func:`pim_macro.sw.models.energy.energy`, ``--energy-table``, default 45 nm), with
  the same rule as the cycles: what one inference's commands count. At the ``fit`` macro the
  weights and channels are written once before the first inference (the set-up, reported apart
  and not per inference); at the ``default`` macro every inference writes its weights again,
  and those weight words are its off-chip bytes;
* ``--rtl`` inputs on Verilator (both architectures, the default macro) and ``--icarus`` of the
  smaller model on Icarus: outputs against LiteRT, cycles and every counter (what the energy
  prices) against the cycle model.

Prints the table (MACs, weight bytes against the SRAM, passes, cycles PIM and baseline with the
speedup, energy per inference PIM and baseline with their ratio, MAC utilization per layer kind,
the host ops' share of work and stream traffic), the energy breakdown and bytes moved per level,
and the checks, and writes ``build/report/tiny.md`` and ``tiny.json``. Exit 1 on any mismatch.

Run: ``make tiny [MODELS=dir]`` or ``python -m pim_macro.tb.experiments.tiny [--models DIR]
[-n 200] [--spill-n 10] [--rtl 3] [--icarus 1] [--jobs N] [--only ad01]
[--energy-table 45nm|7nm|PATH]``. Time (one core):
the AD01 about 0.3 s per inference; the ResNet-8 about 4 s per inference on ``golden`` and 6 s
on ``model`` at the ``fit`` macro, 12 and 14 s at the default one (tens of thousands of
commands each): ``-n 200`` takes about an hour, ``-n 3`` a few minutes.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.compiler.graph_compiler import compile_graph, run_graph
from pim_macro.sw.models.energy import (DEFAULT_TABLE, LEVELS, TABLES, EnergyTableError, energy,
                                        largest_kinds, load_table)
from pim_macro.sw.paths import REPO_ROOT, REPORT_DIR


#: The models, by file name, with what they are.
MODELS = {
    "ad01_int8.tflite": "anomaly detection (AD01 autoencoder)",
    "pretrainedResnet_quant.tflite": "image classification (ResNet-8)",
}
#: Where they are looked for when no folder is named (read-only, outside the repository).
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "models" / "mlperf-tiny"
HOW_TO_GET = (
    "get them from the MLPerf Tiny repository, https://github.com/mlcommons/tiny: "
    "benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite and "
    "benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite "
    "(Apache-2.0), put them in one folder and run `make tiny MODELS=<folder>`")


def find_models(folder, names=MODELS, prog="tiny"):
    """``{file name: path}`` of the models ``names`` in ``folder``; ``SystemExit`` (2), as
    ``prog``, saying how to get them when one is missing."""
    folder = Path(folder)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"{prog}: error: {', '.join(missing)} not found in {folder}; "
                         + HOW_TO_GET.replace("make tiny", f"make {prog}"))
    return {name: folder / name for name in names}


def fit_config(graph, base=MacroConfig()):
    """The macro of ``base``'s lanes and R that holds every weight and channel of ``graph``:
    its depth and channel memory rounded up to powers of two (``None`` if no legal depth
    does)."""
    program = compile_graph(graph, base)
    depth = 1 << max(program.weight_rows - 1, 0).bit_length()
    channels = 1 << max(program.channels - 1, 0).bit_length()
    try:
        config = MacroConfig(**{**base.as_dict(), "depth": max(depth, base.depth),
                                "bias_depth": max(channels, base.bias_depth)})
    except ValueError:
        return None
    return config if compile_graph(graph, config).weights_resident else None


# -- the reference and the runs, on worker processes ------------------------------------------

_STATE = {}


def _reference(path, xs):
    """LiteRT's outputs and every macro op's output for the inputs ``xs`` (a list over
    samples): ``{tensor index: (B, ...) array}``."""
    from pim_macro.tb.experiments.tflite_check import reference
    graph = _STATE["graph"]
    it = reference(Path(path).read_bytes())
    wanted = sorted({op.output for op in graph.macro_ops} | set(graph.outputs))
    out = {i: [] for i in wanted}
    (inp,) = graph.inputs
    for x in xs:
        it.set_tensor(inp, x[None])
        it.invoke()
        for i in wanted:
            out[i].append(np.array(it.get_tensor(i)).reshape(graph.tensors[i].shape[1:]))
    return {i: np.stack(v) for i, v in out.items()}


def _run(task):
    """One chunk of inputs on one back end: ``(first, tensors, outputs, cycles)``."""
    config, sim, arch, first, stop = task
    graph, xs = _STATE["graph"], _STATE["xs"]
    result = run_graph(graph, xs[first:stop], config, sim=sim, arch=arch,
                       program=_STATE["programs"].get(config))
    return first, result.tensors, result.outputs[0], result.cycles


#: Inputs per session at most: the chunks spread over the worker processes and show progress
#: (each session writes the resident weights again: set-up, not counted in the cycles).
CHUNK = 8


def _run_checked(config, sim, arch, count, jobs, ref):
    """The first ``count`` inputs on ``sim``, in chunks of at most :data:`CHUNK` (a session
    each) over ``jobs`` processes, each chunk compared with ``ref`` as it comes (progress on
    one line): ``(compared, mismatched, cycles)``."""
    graph = _STATE["graph"]
    step = max(1, min(CHUNK, -(-count // jobs)))
    tasks = [(config, sim, arch, a, min(a + step, count)) for a in range(0, count, step)]
    totals, cycles = [0, 0], []

    def check(part):
        first, tensors, outputs, part_cycles = part
        compared, bad = _compare(graph, ref, tensors, outputs, first, len(part_cycles))
        totals[0] += compared
        totals[1] += bad
        cycles.extend(part_cycles)
        if len(tasks) > 1:
            print(f"    {sim}: {len(cycles)} of {count} inputs, {totals[1]} mismatches",
                  end="\r", flush=True)
    if jobs > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            for part in pool.imap_unordered(_run, tasks):
                check(part)
    else:
        for task in tasks:
            check(_run(task))
    return totals[0], totals[1], cycles


def _compare(graph, ref, tensors, outputs, first, count):
    """Values compared and mismatches of inputs ``first ..`` (``count`` of them): every macro
    op's output and the model's output."""
    compared = mismatched = 0
    for op in graph.macro_ops:
        got, want = tensors[op.output], ref[op.output][first:first + count]
        compared += want.size
        mismatched += int((got != want).sum())
    (out,) = graph.outputs
    compared += outputs.size
    mismatched += int((outputs != ref[out][first:first + count]).sum())
    return compared, mismatched


# -- the table -----------------------------------------------------------------------------------

def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def energy_fields(runs, table=DEFAULT_TABLE):
    """Energy of the cycle-model runs ``{arch: GraphResult}`` of one macro, priced with
    ``table``: ``counters`` (``{arch: {counter: count}}`` per inference), ``energy`` (``{arch:
    Energy.as_dict()}`` per inference: pJ by kind, bytes by level), ``energy_pj`` (``{arch: pJ
    per inference}``), ``energy_ratio`` (baseline / PIM) and ``setup_energy`` (``{arch:
    Energy.as_dict()}`` of the one-time set-up that writes resident weights and channels, or
    ``None`` without one). Per inference follows the cycles' rule: the inferences' segments,
    divided by the batch; the set-up is not in it."""
    out = {"counters": {}, "energy": {}, "energy_pj": {}, "setup_energy": None}
    for arch, r in runs.items():
        e = energy(r.counters, r.config, arch, table).per(r.batch)
        out["counters"][arch] = {k: v // r.batch if v % r.batch == 0 else v / r.batch
                                 for k, v in r.counters.items()}
        out["energy"][arch] = e.as_dict()
        out["energy_pj"][arch] = e.total_pj
        if r.setup_counters:
            out["setup_energy"] = out["setup_energy"] or {}
            out["setup_energy"][arch] = energy(r.setup_counters, r.config, arch,
                                               table).as_dict()
    pim, base = out["energy_pj"].get("pim"), out["energy_pj"].get("baseline")
    out["energy_ratio"] = base / pim if pim else None
    return out


def measure(graph, config, table=DEFAULT_TABLE):
    """One inference on the cycle model of both architectures: the table's row for ``config``
    (cycles do not depend on the data; the bit-exact runs check that), with its energy
    (:func:`energy_fields`)."""
    x = _STATE["xs"][:1]
    runs = {arch: run_graph(graph, x, config, sim="model", arch=arch,
                            program=_STATE["programs"].get(config)) for arch in ARCHES}
    pim, base = runs["pim"], runs["baseline"]
    share = pim.host_share()
    return {
        **energy_fields(runs, table),
        "config": config.tag(), "sram_bytes": config.weight_bytes,
        "macs": pim.macs, "weight_bytes": pim.weight_bytes,
        "fits": pim.weights_resident, "passes": pim.passes,
        "setup_cycles": {a: r.setup_cycles for a, r in runs.items()},
        "cycles": {a: r.cycles[0] for a, r in runs.items()},
        "speedup": base.cycles[0] / pim.cycles[0],
        "utilization": {k: v["utilization"] for k, v in pim.utilization().items()},
        "active": {k: v["active"] for k, v in pim.utilization().items()},
        "host_work": share["work"], "host_traffic": share["traffic"],
        "words_in": pim.words_in, "words_out": pim.words_out,
    }


def matches_model(result, row, arch):
    """Whether a run's (``GraphResult``) cycles per inference and every counter summed over its
    inferences (what the energy prices) equal ``row``'s (:func:`measure`'s, the cycle model's
    one inference) as many times: a macro's counts do not depend on the data."""
    return (all(c == row["cycles"][arch] for c in result.cycles)
            and result.counters == {k: v * result.batch
                                    for k, v in row["counters"][arch].items()})


def _uj(pj):
    """pJ as uJ, three significant figures (no exponent)."""
    uj = pj / 1e6
    return f"{uj:,.0f}" if uj >= 100 else f"{uj:#.3g}"


def table(rows):
    head = ["model", "macro", "MACs", "weights / SRAM", "fits", "cycles PIM", "cycles baseline",
            "speedup", "uJ / inference PIM", "uJ / inference baseline", "energy ratio",
            "MAC utilization (PIM) by kind", "host work", "host traffic"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fits = "yes" if r["fits"] else f"no: {r['passes']} passes"
        util = ", ".join(f"{k} {_pct(v)}" for k, v in r["utilization"].items())
        lines.append("| " + " | ".join([
            r["model"], f"{r['label']} `{r['config']}`", f"{r['macs']:,}",
            f"{r['weight_bytes']:,} / {r['sram_bytes']:,} B", fits,
            f"{r['cycles']['pim']:,}", f"{r['cycles']['baseline']:,}", f"{r['speedup']:.2f}x",
            _uj(r["energy_pj"]["pim"]), _uj(r["energy_pj"]["baseline"]),
            f"{r['energy_ratio']:.2f}x" if r["energy_ratio"] else "-",
            util, _pct(r["host_work"]), _pct(r["host_traffic"])]) + " |")
    return "\n".join(lines)


def energy_table(rows):
    """Per model, macro and architecture: energy per inference, its largest kinds, bytes moved
    per level per inference, and the set-up's energy (resident weights written once)."""
    head = ["model", "macro", "arch", "uJ / inference", "largest kinds",
            *(f"{level} bytes" for level in LEVELS), "set-up uJ (once)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---|" + "---:|" * len(LEVELS)
             + "---:|"]
    for r in rows:
        for arch in ARCHES:
            e = r["energy"][arch]
            setup = (r["setup_energy"] or {}).get(arch)
            lines.append("| " + " | ".join([
                r["model"], r["label"], arch, _uj(e["total_pj"]), largest_kinds(e["pj"], 3),
                *(f"{e['bytes'][level]:,.0f}" for level in LEVELS),
                _uj(setup["total_pj"]) if setup else "-"]) + " |")
    return "\n".join(lines)


def checks_table(checks):
    head = ["model", "sim", "arch", "macro", "inputs", "values compared", "mismatches",
            "cycles = model (RTL: every counter)", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in checks:
        lines.append("| " + " | ".join(str(c.get(k, "-")) for k in (
            "model", "sim", "arch", "macro", "inputs", "compared", "mismatches", "cycles_ok",
            "result")) + " |")
    return "\n".join(lines)


def _count(least):
    """An argparse type: an integer of at least ``least`` (a count of 0 or less would leave a
    check that compares nothing, reported bit-exact)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return parse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(DEFAULT_DIR),
                        help=f"folder of the .tflite files (default {DEFAULT_DIR})")
    parser.add_argument("-n", type=_count(1), default=200,
                        help="random inputs per model on golden and model (fit macro)")
    parser.add_argument("--spill-n", type=_count(1), default=10,
                        help="of them, on golden and model at the default macro too")
    parser.add_argument("--rtl", type=_count(0), default=3,
                        help="inputs per model on Verilator (0: none)")
    parser.add_argument("--icarus", type=_count(0), default=1,
                        help="inputs of ad01 on Icarus (0: none)")
    parser.add_argument("--jobs", type=_count(1), default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", metavar="TEXT",
                        help="run only the models whose file name contains TEXT")
    parser.add_argument("--energy-table", default=DEFAULT_TABLE, metavar="NAME|PATH",
                        help=f"per-event energy table: {', '.join(TABLES)} or a TOML file in "
                             f"their format (default: {DEFAULT_TABLE})")
    args = parser.parse_args(argv)
    try:
        # Before the models load and run: a bad table is one line, not a late traceback.
        pricing = load_table(args.energy_table)
    except EnergyTableError as exc:      # one line, not the whole usage
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        from pim_macro.sw.compiler.tflite_import import load_tflite
    except ImportError:
        raise SystemExit("tiny: error: needs the TFLite importer "
                         "(pim_macro.sw.compiler.tflite_import)") from None
    paths = find_models(args.models)
    if args.only:
        paths = {k: v for k, v in paths.items() if args.only in k}
    rows, checks, failed = [], [], False
    started = time.time()
    for name, path in paths.items():
        graph = load_tflite(str(path))
        rng = np.random.default_rng(args.seed)
        t = graph.tensors[graph.inputs[0]]
        count = max(args.n, args.spill_n, args.rtl, args.icarus, 1)
        xs = rng.integers(-128, 128, (count, *t.shape[1:])).astype(np.int8)
        default, fit = MacroConfig(), fit_config(graph)
        macros = [("fit", fit)] if fit else []
        macros.append(("default", default))
        _STATE.update(graph=graph, xs=xs,
                      programs={c: compile_graph(graph, c) for _, c in macros})
        ref = _reference(path, xs)
        print(f"{name}: {graph.macs:,} MACs, {graph.weight_bytes:,} weight bytes; "
              f"LiteRT reference for {count} inputs done ({time.time() - started:.0f} s)",
              flush=True)
        for label, config in macros:
            row = measure(graph, config, pricing)
            row.update(model=name, label=label)
            rows.append(row)
            n = args.n if label == "fit" or not fit else args.spill_n
            for sim in ("golden", "model"):
                if not n:
                    continue
                compared, bad, cycles = _run_checked(config, sim, "pim", n, args.jobs, ref)
                cycles_ok = (all(c == row["cycles"]["pim"] for c in cycles)
                             if sim == "model" else "-")
                ok = bad == 0 and cycles_ok in (True, "-")
                failed |= not ok
                checks.append(dict(model=name, sim=sim, arch="pim", macro=label, inputs=n,
                                   compared=compared, mismatches=bad, cycles_ok=cycles_ok,
                                   result="bit-exact" if ok else "FAIL"))
                print(f"  {label} {sim}: {n} inputs, {bad} of {compared} values differ "
                      f"({time.time() - started:.0f} s)", flush=True)
        rtl = [("verilator", arch, args.rtl) for arch in ARCHES]
        if name.startswith("ad01"):
            rtl.append(("icarus", "pim", args.icarus))
        for sim, arch, n in rtl:
            if not n:
                continue
            check = dict(model=name, sim=sim, arch=arch, macro="default", inputs=n)
            try:
                result = run_graph(graph, xs[:n], default, sim=sim, arch=arch,
                                   program=_STATE["programs"][default])
            except ValueError as exc:
                if "not merged yet" not in str(exc):
                    raise
                check.update(result="waits for the RTL Session (rtl branch)")
                checks.append(check)
                print(f"  {sim} {arch}: {check['result']}", flush=True)
                continue
            compared, bad = _compare(graph, ref, result.tensors, result.outputs[0], 0, n)
            want = next(r for r in rows if r["model"] == name and r["label"] == "default")
            cycles_ok = matches_model(result, want, arch)
            ok = bad == 0 and cycles_ok
            failed |= not ok
            check.update(compared=compared, mismatches=bad, cycles_ok=cycles_ok,
                         result="bit-exact" if ok else "FAIL")
            checks.append(check)
            print(f"  {sim} {arch}: {bad} of {compared} values differ, cycles and counters "
                  f"{'equal' if cycles_ok else 'DIFFER from'} the model", flush=True)
    node = rows[0]["energy"]["pim"]["node"] if rows else ""
    text = (f"## MLPerf Tiny on the macro\n\n{table(rows)}\n\n"
            f"### Energy and bytes moved per inference ({pricing.name}: {node})\n\n"
            f"Dynamic energy of the counted events from the cycle model's counters (the source "
            f"of the cycles); the `fit` macro's weights are written once (set-up, apart), the "
            f"`default` macro's again every inference (their off-chip bytes). No leakage, no "
            f"clock tree, no FPGA power.\n\n{energy_table(rows)}\n\n### Checks against LiteRT "
            f"(BUILTIN_REF), every macro op's output and the model's\n\n{checks_table(checks)}\n"
            f"\n{time.time() - started:.0f} s in all.\n")
    print("\n" + text)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "tiny.md").write_text(text)
    (REPORT_DIR / "tiny.json").write_text(json.dumps({"rows": rows, "checks": checks},
                                                     indent=1, default=str))
    print(f"wrote {REPORT_DIR / 'tiny.md'} and tiny.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
