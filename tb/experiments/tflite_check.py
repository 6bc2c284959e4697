"""Check the TFLite importer on real models: the graph's numpy run against LiteRT, layer by layer.

For each model, ``N`` seeded random inputs (int8 uniform over -128 .. 127; float inputs normal
around zero) run through LiteRT's reference kernels (``BUILTIN_REF``, every intermediate tensor
kept) and through :meth:`Graph.run` of :func:`load_tflite`; every op's output tensor is compared
bit for bit. Prints one table per model (op, where it runs, output shape, values compared,
mismatches, worst difference) and exits 1 if any value differs, 2 (``pim: error: ...``) if a model
cannot be read or is not supported.

Run: ``python -m pim_macro.tb.experiments.tflite_check MODEL.tflite [MODEL ...] [-n 200]``
(for the MLPerf Tiny models: ``../shared/models/mlperf-tiny/*.tflite``; they are not in the
repository, so this is no part of ``make test``). About 0.1 s per ResNet-8 input on one core.
"""

import argparse
import sys
import time

import numpy as np

from pim_macro.sw.compiler.graph import MacroOp
from pim_macro.sw.compiler.tflite_import import UnsupportedModel, load_tflite


def reference(data):
    """LiteRT's interpreter with the reference kernels and every tensor kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=data,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def random_inputs(graph, rng):
    out = []
    for i in graph.inputs:
        t = graph.tensors[i]
        if t.dtype == np.int8:
            out.append(rng.integers(-128, 128, t.shape).astype(np.int8))
        else:
            out.append(rng.normal(0.0, 1.0, t.shape).astype(t.dtype))
    return out


def check_model(path, n, seed):
    """``(graph, rows, seconds)``: per op ``[index, op, where, shape, compared, mismatches,
    worst |difference|]`` over ``n`` inputs."""
    with open(path, "rb") as f:
        data = f.read()
    graph = load_tflite(data)
    it = reference(data)
    rng = np.random.default_rng(seed)
    rows = [[k, op.name, "macro" if isinstance(op, MacroOp) else "host",
             "x".join(map(str, graph.tensors[op.output].shape)), 0, 0, 0]
            for k, op in enumerate(graph.ops)]
    start = time.perf_counter()
    for _ in range(n):
        xs = random_inputs(graph, rng)
        for i, x in zip(graph.inputs, xs):
            it.set_tensor(i, x)
        it.invoke()
        _, values = graph.run(xs, keep=True)
        for row, op in zip(rows, graph.ops):
            want = it.get_tensor(op.output)
            got = values[op.output]
            if got.shape != want.shape:
                raise AssertionError(f"op {row[0]} ({op.name}): shape {got.shape}, LiteRT "
                                     f"{want.shape}")
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            row[4] += want.size
            row[5] += int((got != want).sum())
            row[6] = max(row[6], float(diff.max()) if diff.size else 0.0)
    return graph, rows, time.perf_counter() - start


def table(rows):
    head = ["#", "op", "runs on", "output", "values", "mismatches", "max |diff|"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:,} | {r[5]} | {r[6]:g} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pim_macro.tb.experiments.tflite_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL.tflite")
    parser.add_argument("-n", type=int, default=200, help="random inputs per model (200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs (0)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    bad = 0
    for path in args.models:
        try:
            graph, rows, seconds = check_model(path, args.n, args.seed)
        except (OSError, UnsupportedModel) as e:
            print(f"pim: error: {path}: {e.strerror if isinstance(e, OSError) else e}",
                  file=sys.stderr)
            return 2
        mismatches = sum(r[5] for r in rows)
        bad += mismatches
        print(f"## {path}\n\n{len(graph.ops)} ops ({len(graph.macro_ops)} on the macro), "
              f"{graph.macs:,} MACs, {graph.weight_bytes:,} weight bytes; {args.n} random "
              f"inputs (seed {args.seed}) in {seconds:.1f} s: {mismatches} mismatches of "
              f"{sum(r[4] for r in rows):,} values\n")
        print(table(rows) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
