"""``make onnx``: float ONNX exports through the whole flow, checked against both references.

For each model (by default the export-shaped models of :mod:`pim_macro.tb.harness.onnx_build`,
random weights from a seed; or your own: ``--model F.onnx [--calib X.npy]``):

1. :func:`~pim_macro.sw.compiler.onnx_import.normalize` (fixed batch, onnxruntime's basic
   optimizations, BN folding, transposes...) and
   :func:`~pim_macro.sw.compiler.graph_quantizer.quantize_graph` (calibrated on ``--calib``,
   else on 256 standard-normal samples) into an int8 ``.tflite``;
2. ``-n`` inputs through LiteRT's reference kernels (``BUILTIN_REF``) and ``Graph.run``: every
   op's int8 output compared, value by value;
3. the same inputs through onnxruntime on the ORIGINAL float model: the int8 model's error
   (max and mean, relative to the output range) and the argmax agreement;
4. cycles of PIM and baseline on the cycle model at the default macro (``--rtl`` inputs on
   Verilator too, both architectures: outputs against ``Graph.run``, cycles against the model).

Prints a table and writes ``build/report/onnx.md``. Exit 1 on any mismatch.

Run: ``make onnx`` or ``python -m pim_macro.tb.experiments.onnx_exports [--model F.onnx
[--calib X.npy] [--input X.npy]] [-n 20] [--rtl 1] [--seed 0]``. Time: a few seconds per
model on the models, plus about 5 s per Verilator run.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.compiler.graph_compiler import run_graph
from pim_macro.sw.compiler.graph_quantizer import quantize_graph, to_model_layout, to_user_layout
from pim_macro.sw.compiler.onnx_import import load_onnx, normalize
from pim_macro.sw.compiler.tflite_import import load_tflite
from pim_macro.sw.paths import REPORT_DIR


#: The default models: onnx_build's builders, with the arguments that make them run.
DEFAULT_MODELS = {
    "lenet5": ("lenet5", {}), "small_resnet": ("small_resnet", {}),
    "keras_mlp": ("keras_mlp", {}), "keras_mlp_softmax": ("keras_mlp_softmax", {}),
    "bn1d_mlp": ("bn1d_mlp", {}),
    "transposed_matmul": ("transposed_matmul", {}), "pooling_cnn": ("pooling_cnn", {"size": 15}),
    "depthwise_cnn": ("depthwise_cnn", {}),
}


def _input_shape(model):
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) for d in dims)[1:]


def _onnxruntime(model, x):
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: s[None].astype(np.float32)})[0]
                           for s in x])


def check_model(name, original, calib, x, rtl=0):
    """The row of one model (a dict); ``x``: float test inputs in ONNX's layout."""
    import ai_edge_litert.interpreter as litert
    canonical = normalize(original)
    t0 = time.time()
    data = quantize_graph(canonical, calib)
    g = load_tflite(data)
    row = {"model": name, "ops": len(g.ops), "macro_ops": len(g.macro_ops),
           "weight_bytes": g.weight_bytes, "macs": g.macs,
           "quantize_s": round(time.time() - t0, 2)}
    it = litert.Interpreter(model_content=data,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                            experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    xs = to_model_layout(g, x).astype(np.float32)
    mismatches, compared, ys = 0, 0, []
    for s in xs:
        out, values = g.run([s[None]], keep=True)
        it.set_tensor(g.inputs[0], s[None])
        it.invoke()
        for op in g.ops:
            want = it.get_tensor(op.output)
            mismatches += int(np.sum(values[op.output] != want))
            compared += want.size
        ys.append(out[0])
    y = to_user_layout(g, np.concatenate(ys))
    ref = _onnxruntime(original, x).reshape(y.shape)
    span = float(np.abs(ref).max()) or 1.0
    err = np.abs(y - ref)
    row.update(litert_values=compared, litert_mismatches=mismatches,
               max_error=float(err.max() / span), mean_error=float(err.mean() / span),
               argmax_agreement=(float(np.mean(y.reshape(len(y), -1).argmax(1)
                                               == ref.reshape(len(ref), -1).argmax(1)))
                                 if y[0].size > 1 else None))
    config = MacroConfig()
    for arch in ARCHES:
        result = run_graph(g, xs[:1], config, sim="model", arch=arch)
        row[f"cycles_{arch}"] = int(result.cycles[0])
        row["passes"] = result.passes
        if rtl:
            ref_int8 = [g.run([s[None]])[0] for s in xs[:rtl]]
            got = run_graph(g, xs[:rtl], config, sim="verilator", arch=arch)
            model = run_graph(g, xs[:rtl], config, sim="model", arch=arch)
            same = all(np.array_equal(a[0], b) for a, b in zip(ref_int8, got.outputs[0]))
            row[f"rtl_{arch}"] = bool(same and got.cycles == model.cycles)
    row["speedup"] = row["cycles_baseline"] / row["cycles_pim"]
    return row


def table(rows):
    lines = ["| model | ops (macro) | weights B | MACs | LiteRT mismatches | int8 error max / "
             "mean (of range) | argmax agree | PIM / baseline cycles | speedup |"
             + (" Verilator |" if any("rtl_pim" in r for r in rows) else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if any("rtl_pim" in r for r in rows)
                                                         else "")]
    for r in rows:
        agree = "-" if r["argmax_agreement"] is None else f"{r['argmax_agreement']:.2f}"
        line = (f"| {r['model']} | {r['ops']} ({r['macro_ops']}) | {r['weight_bytes']:,} | "
                f"{r['macs']:,} | {r['litert_mismatches']} of {r['litert_values']:,} | "
                f"{r['max_error']:.3f} / {r['mean_error']:.4f} | {agree} | "
                f"{r['cycles_pim']:,} / {r['cycles_baseline']:,} | {r['speedup']:.2f}x |")
        if "rtl_pim" in r:
            line += (" bit-exact, cycles exact |" if r["rtl_pim"] and r["rtl_baseline"]
                     else " MISMATCH |")
        lines.append(line)
    return "\n".join(lines)


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--model", metavar="F.onnx", help="your own float ONNX model")
    parser.add_argument("--calib", metavar="X.npy", help="its calibration inputs (float)")
    parser.add_argument("--input", metavar="X.npy", help="its test inputs (float)")
    parser.add_argument("-n", type=_positive, default=20, help="test inputs (default 20)")
    parser.add_argument("--rtl", type=int, default=0, metavar="K",
                        help="inputs also run on Verilator, both architectures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rtl < 0:
        parser.error(f"argument --rtl: must be at least 0, not {args.rtl}")
    rng = np.random.default_rng(args.seed)
    if args.model:
        try:
            models = {Path(args.model).stem: load_onnx(args.model)}
        except ValueError as exc:
            parser.exit(2, f"make onnx: error: {exc}\n")
    else:
        from pim_macro.tb.harness import onnx_build
        models = {name: onnx_build.BUILDERS[builder](rng, **kw)
                  for name, (builder, kw) in DEFAULT_MODELS.items()}
    rows = []
    for name, original in models.items():
        try:
            shape = _input_shape(normalize(original))
            calib = (np.load(args.calib) if args.calib else
                     rng.normal(0, 1, (256, *shape))).astype(np.float64)
            x = (np.load(args.input)[:args.n] if args.input else
                 rng.normal(0, 1, (args.n, *shape))).astype(np.float32)
            rows.append(check_model(name, original, calib.reshape(len(calib), *shape),
                                    x.reshape(len(x), *shape), args.rtl))
        except (ValueError, OSError) as exc:
            parser.exit(2, f"make onnx: error: {name}: {str(exc).splitlines()[0]}\n")
        print(f"{name}: done", file=sys.stderr)
    text = table(rows)
    print(text)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / "onnx.md").write_text(text + "\n")
    bad = [r["model"] for r in rows if r["litert_mismatches"] or r.get("rtl_pim") is False
           or r.get("rtl_baseline") is False]
    if bad:
        print(f"MISMATCH: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
