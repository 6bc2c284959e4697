"""The TFLite importer and the host ops against LiteRT's reference kernels, bit for bit.

Every model here is built in the test (pim_macro.sw.compiler.tflite_builder, seeded) and run by
LiteRT with the reference op resolver (``BUILTIN_REF``) and every intermediate tensor kept; the
graph of :func:`load_tflite` runs the same inputs in numpy and EVERY op's output tensor is
compared, not only the model's output. The rounding tests also show that the other rounding
differs on the same model (so the comparison can tell them apart), and the error tests that an
unsupported model fails with one line before anything runs. About 10 s.
"""

import dataclasses

import numpy as np
import pytest

from pim_macro.sw.compiler.graph import DOUBLE_ROUNDING
from pim_macro.sw.compiler.tflite_import import UnsupportedModel, load_tflite
from pim_macro.sw.models.requant import quantize_multiplier, requantize
from pim_macro.sw.compiler.tflite_builder import ModelBuilder

import ai_edge_litert.interpreter as litert        # a pinned dependency: missing is a failure


def interpreter(data):
    it = litert.Interpreter(model_content=data,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                            experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


def random_input(tensor, rng):
    if tensor.dtype == np.int8:
        return rng.integers(-128, 128, tensor.shape).astype(np.int8)
    # Float: values on and between the quantization steps (ties included), beyond the range too.
    steps = rng.integers(-300, 300, tensor.shape) / 2
    return (steps * np.float32(0.05) + rng.normal(0, 0.004, tensor.shape)
            * (rng.random(tensor.shape) < 0.5)).astype(np.float32)


def run_both(data, samples=3, seed=0, inputs=None):
    """``(graph, [(litert tensors, graph tensors) per sample])``."""
    g = load_tflite(data)
    it = interpreter(data)
    rng = np.random.default_rng(seed)
    runs = []
    for s in range(samples):
        xs = inputs[s] if inputs is not None else [random_input(g.tensors[i], rng)
                                                    for i in g.inputs]
        for i, x in zip(g.inputs, xs):
            it.set_tensor(i, x)
        it.invoke()
        _, values = g.run(xs, keep=True)
        ref = {op.output: it.get_tensor(op.output) for op in g.ops}
        runs.append((ref, values))
    return g, runs


def check(b, inputs, outputs, samples=3, seed=0):
    """Build, run on LiteRT and the graph, and require every op's output to be equal."""
    data = b.to_bytes(inputs, outputs)
    g, runs = run_both(data, samples, seed)
    assert g.ops, "nothing was imported"
    for ref, values in runs:
        for op in g.ops:
            want, got = ref[op.output], values[op.output]
            assert got.dtype == want.dtype and got.shape == want.shape, op.name
            diff = np.flatnonzero(got != want)
            assert diff.size == 0, (f"{op.name} -> tensor {op.output}: {diff.size} of "
                                    f"{want.size} differ (first at {diff[0]}: "
                                    f"{got.flat[diff[0]]} vs LiteRT {want.flat[diff[0]]})")
    return g, runs


def mismatches(g, runs, op, **changes):
    """Outputs of ``op`` that differ from LiteRT when its parameters are ``changes``."""
    other = dataclasses.replace(op, **changes)
    total = 0
    for ref, values in runs:
        got = np.asarray(other.run(*(values[i] for i in op.inputs)))
        total += int((got.reshape(ref[op.output].shape) != ref[op.output]).sum())
    return total


def weights(rng, shape):
    return rng.integers(-127, 128, shape)


ACTS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


# --- macro ops ---------------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("act", ACTS)
def test_fully_connected(per_channel, act):
    rng = np.random.default_rng(len(act) + per_channel)
    b = ModelBuilder()
    x = b.input((1, 64), scale=0.05, zero_point=-128)           # zero point at the extreme
    ws = rng.uniform(0.002, 0.02, 24) if per_channel else 0.011
    y = b.fully_connected(x, weights(rng, (24, 64)), rng.integers(-9000, 9000, 24), w_scale=ws,
                          out_scale=0.06, out_zero_point=127 if act == "NONE" else -128,
                          activation=act)
    # No bias, rows from the leading dimensions, a right shift and a left shift (scale > 1).
    r = b.reshape(y, (1, 4, 6))
    z = b.fully_connected(r, weights(rng, (5, 6)), None, w_scale=0.9, out_scale=0.02,
                          out_zero_point=3, keep_num_dims=True)
    flat = b.fully_connected(r, weights(rng, (3, 6)), rng.integers(-99, 99, 3), w_scale=0.05,
                             out_scale=0.03, out_zero_point=-1)
    g, runs = check(b, [x], [z, flat], samples=4)
    fc = [op for op in g.ops if op.name == "FULLY_CONNECTED"]
    assert fc[0].shift.max() < 0 < fc[1].shift.min()
    assert fc[1].out_shape() == (1, 4, 5) and fc[1].positions() == 4
    assert fc[2].out_shape() == (4, 3) and fc[2].positions() == 4


@pytest.mark.parametrize("kernel,stride,padding", [
    ((1, 1), (1, 1), "VALID"), ((1, 1), (2, 2), "SAME"), ((3, 3), (1, 1), "SAME"),
    ((3, 3), (2, 2), "SAME"), ((3, 3), (2, 2), "VALID"), ((2, 3), (1, 2), "SAME")])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_conv2d(kernel, stride, padding, per_channel):
    rng = np.random.default_rng(sum(kernel) * 7 + sum(stride) + per_channel)
    b = ModelBuilder()
    x = b.input((1, 9, 10, 5), scale=0.03, zero_point=127)       # odd sizes: uneven SAME pads
    ws = rng.uniform(0.002, 0.03, 8) if per_channel else 0.017
    y = b.conv2d(x, weights(rng, (8, *kernel, 5)), rng.integers(-5000, 5000, 8), w_scale=ws,
                 out_scale=0.04, out_zero_point=-7, stride=stride, padding=padding,
                 activation="RELU6")
    g, _ = check(b, [x], [y])
    assert g.ops[0].double_rounding == DOUBLE_ROUNDING["CONV_2D"]


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("stride,padding", [((1, 1), "SAME"), ((2, 2), "SAME"),
                                            ((2, 1), "VALID")])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_depthwise_conv2d(multiplier, stride, padding, per_channel):
    rng = np.random.default_rng(multiplier * 11 + sum(stride) + per_channel)
    b = ModelBuilder()
    x = b.input((1, 7, 8, 4), scale=0.02, zero_point=-128)
    n = 4 * multiplier
    ws = rng.uniform(0.005, 0.05, n) if per_channel else 0.02
    y = b.depthwise_conv2d(x, weights(rng, (1, 3, 3, n)), rng.integers(-3000, 3000, n),
                           w_scale=ws, out_scale=0.05, out_zero_point=10, stride=stride,
                           padding=padding, activation="RELU")
    g, _ = check(b, [x], [y])
    assert g.ops[0].depth_multiplier == multiplier


# --- the rounding: measured per op, and each test can tell the two apart -----------------------

def tie_model(kind, rng):
    """A model whose first layer's effective scale is exactly 0.25 (``M0 = 2**30``, shift -1):
    every accumulator ``2 mod 4`` is a tie, half of them negative, and the double rounding's
    first rounding shows on the odd ones; the second layer has left shifts."""
    b = ModelBuilder()
    x = b.input((1, 6, 6, 4), scale=0.5, zero_point=0)
    if kind == "FULLY_CONNECTED":
        y = b.fully_connected(b.reshape(x, (1, 144)), rng.integers(-1, 2, (64, 144)),
                              rng.integers(-50, 50, 64), w_scale=0.25, out_scale=0.5,
                              out_zero_point=0)
        z = b.fully_connected(y, rng.integers(-3, 4, (8, 64)), None, w_scale=0.5,
                              out_scale=0.05, out_zero_point=1)
    elif kind == "CONV_2D":
        y = b.conv2d(x, rng.integers(-2, 3, (8, 3, 3, 4)), rng.integers(-50, 50, 8),
                     w_scale=0.25, out_scale=0.5, out_zero_point=0)
        z = b.conv2d(y, rng.integers(-3, 4, (4, 1, 1, 8)), rng.integers(-9, 9, 4),
                     w_scale=[0.5, 0.25, 0.5, 1.0],
                     out_scale=0.05, out_zero_point=1)
    else:
        y = b.depthwise_conv2d(x, rng.integers(-3, 4, (1, 3, 3, 8)), rng.integers(-50, 50, 8),
                               w_scale=0.25, out_scale=0.5, out_zero_point=0)
        z = b.depthwise_conv2d(y, rng.integers(-3, 4, (1, 3, 3, 8)), rng.integers(-9, 9, 8),
                               w_scale=0.5,
                               out_scale=0.1, out_zero_point=1)
    return b, x, z


def half_up_mismatches(runs, op):
    """Outputs of ``op`` that differ from LiteRT under TFLITE_SINGLE_ROUNDING's half-up rule,
    ``(acc * M0 + 2**(30 - shift)) >> (31 - shift)``, written out here: the macro does not
    have it."""
    total = 0
    for ref, values in runs:
        acc = op.accumulate(values[op.input]).astype(object)
        m, s = op.multiplier.astype(object), op.shift.astype(object)
        y = np.array([[(int(a) * int(mm) + (1 << (30 - int(ss)))) >> (31 - int(ss))
                       for a, mm, ss in zip(row, m, s)] for row in acc], dtype=np.int64)
        y = np.minimum(np.maximum(y + op.output_zero_point, op.act_min), op.act_max)
        total += int((y.reshape(ref[op.output].shape) != ref[op.output]).sum())
    return total


ROUNDINGS = {"double": dict(double_rounding=True),
             "single, ties away": dict(double_rounding=False)}


@pytest.mark.parametrize("kind", ["FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"])
def test_rounding_of_macro_ops(kind):
    """LiteRT's rounding of each macro op (graph.DOUBLE_ROUNDING), on negative ties and on a
    left shift; each other rounding (the macro's other one, and TFLITE_SINGLE_ROUNDING's half
    up) must differ on these models."""
    b, x, z = tie_model(kind, np.random.default_rng(5))
    g, runs = check(b, [x], [z], samples=4)
    ops = g.macro_ops
    assert ops[0].multiplier[0] == 1 << 30 and ops[0].shift[0] == -1
    assert ops[1].shift.max() > 0
    first = ops[0]
    accs = np.concatenate([first.accumulate(v[first.input]).ravel() for _, v in runs])
    assert ((accs < 0) & (accs % 4 == 2) & (accs > -512)).sum() >= 10     # negative ties
    measured = dict(double_rounding=DOUBLE_ROUNDING[kind])
    assert first.double_rounding == measured["double_rounding"]
    assert mismatches(g, runs, first) == 0
    for name, rounding in ROUNDINGS.items():
        if rounding != measured:
            assert mismatches(g, runs, first, **rounding) > 0, name
    assert half_up_mismatches(runs, first) > 0


def test_add_rounding_and_requantization():
    """ADD's rescaling (left shift 20, three multipliers) in double rounding: every pair of
    int8 values, for scales where single rounding gives other results."""
    a_vals, b_vals = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    xs = [[a_vals.reshape(1, 256, 256, 1).astype(np.int8),
           b_vals.reshape(1, 256, 256, 1).astype(np.int8)]]
    seen = 0
    # Two scale sets found by a random search where single rounding differs (on 1 and 2
    # pairs), and zero points at the extremes with a fused RELU.
    for scales, zps, act in [((0.6577755818607169, 0.5627033971176476, 0.1509122010420308),
                              (63, -18, 45), "NONE"),
                             ((0.7757883785302168, 0.318828454014759, 0.9242926796103174),
                              (100, -71, -8), "NONE"),
                             ((0.02, 0.05, 0.011), (-128, 127, -128), "RELU")]:
        b = ModelBuilder()
        a = b.input((1, 256, 256, 1), scale=scales[0], zero_point=zps[0])
        c = b.input((1, 256, 256, 1), scale=scales[1], zero_point=zps[1])
        y = b.add(a, c, out_scale=scales[2], out_zero_point=zps[2], activation=act)
        g, runs = run_both(b.to_bytes([a, c], [y]), samples=1, inputs=xs)
        ref, values = runs[0]
        assert np.array_equal(values[y], ref[y])
        seen += mismatches(g, runs, g.ops[0], double_rounding=not g.ops[0].double_rounding)
    assert seen > 0


def test_fully_connected_multiplier_from_double_product():
    """The effective scale is ``double(in) * double(w) / double(out)``: accumulators (set
    through the bias, zero weights) where the float32 product's multiplier rounds otherwise."""
    rng = np.random.default_rng(4)
    while True:
        a, w = rng.uniform(0.001, 0.1, 2).astype(np.float32)
        o = np.float32(a * w / 1e-4 * rng.uniform(0.9, 1.1))
        single = quantize_multiplier(float(np.float32(a * w)) / float(o))
        double = quantize_multiplier(float(a) * float(w) / float(o))
        if single[1] == double[1] and abs(single[0] - double[0]) > 40:
            break
    acc = np.arange(-1_300_000, 1_300_000)
    differ = acc[requantize(acc, *single) != requantize(acc, *double)]
    assert differ.size > 0
    b = ModelBuilder()
    x = b.input((1, 8), scale=float(a), zero_point=0)
    y = b.fully_connected(x, np.zeros((differ.size, 8)), differ, w_scale=float(w),
                          out_scale=float(o), out_zero_point=0)
    g, runs = check(b, [x], [y], samples=1)
    assert g.ops[0].multiplier[0] == double[0]


# --- host ops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("filt,stride,padding,act", [
    ((2, 2), (2, 2), "VALID", "NONE"), ((3, 3), (2, 2), "SAME", "RELU"),
    ((3, 3), (1, 1), "SAME", "RELU6"), ((8, 8), (8, 8), "VALID", "NONE"),
    ((2, 3), (1, 2), "SAME", "NONE")])
def test_pooling(kind, filt, stride, padding, act):
    """Windows cut at the border (SAME counts only the taps inside), the average rounded half
    away from zero (negative ties included: random int8 sums over 4, 6 and 9 taps)."""
    b = ModelBuilder()
    x = b.input((1, 8, 8, 6), scale=0.1, zero_point=-3)
    y = b.pool(kind, x, filter=filt, stride=stride, padding=padding, activation=act)
    check(b, [x], [y], samples=4)


@pytest.mark.parametrize("paddings", [((0, 0), (1, 2), (2, 1), (0, 0)),
                                      ((0, 0), (0, 0), (3, 0), (0, 0))])
@pytest.mark.parametrize("value", [None, -128, 5])
def test_pad_then_valid_conv(paddings, value):
    """PAD (asymmetric, as the graph quantizer writes for ONNX pads that are not TFLite's SAME)
    or PADV2 (a constant) then a VALID CONV_2D: the padding holds the zero point or the
    constant, as LiteRT's."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.input((1, 6, 5, 3), scale=0.05, zero_point=37)
    p = b.pad(x, paddings, value)
    y = b.conv2d(p, weights(rng, (4, 3, 3, 3)), rng.integers(-500, 500, 4), w_scale=0.01,
                 out_scale=0.1, out_zero_point=-5, padding="VALID")
    g, _ = check(b, [x], [y], samples=3)
    assert [op.name for op in g.ops] == ["PAD", "CONV_2D"]
    assert g.ops[0].value == (37 if value is None else value)


def test_float_standardization_before_quantize():
    """SUB and MUL in float32 on the model's float input (a scaler kept in float), then
    QUANTIZE: every value as LiteRT's, ties of the quantization included."""
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    x = b.input((1, 6), np.float32)
    mean = (rng.normal(size=6) * [1, 1000, 0.001, 5, 0, 1]).astype(np.float32)
    inverse = (1 / np.abs(rng.normal(size=6) * [1, 1000, 0.001, 5, 1, 1])).astype(np.float32)
    q = b.quantize(b.mul(b.sub(x, mean), inverse), scale=0.05, zero_point=3)
    y = b.fully_connected(q, rng.integers(-127, 128, (4, 6)), None, w_scale=0.01,
                          out_scale=0.1, out_zero_point=0)
    g, runs = check(b, [x], [y], samples=6)
    assert [op.name for op in g.ops] == ["SUB", "MUL", "QUANTIZE", "FULLY_CONNECTED"]


def test_int8_arithmetic_refused():
    """SUB/MUL of int8 tensors (not the float input's standardization) is refused."""
    b = ModelBuilder()
    x = b.input((1, 4), scale=0.1, zero_point=0)
    c = b.tensor((4,), np.int8, scale=0.1, zero_point=0, data=np.ones(4))
    y = b.tensor((1, 4), scale=0.1, zero_point=0)
    b.op("SUB", [x, c], [y], "SubOptions", FusedActivationFunction=0)
    with pytest.raises(UnsupportedModel, match=r"op 0 \(SUB\): arithmetic other than float32"):
        load_tflite(b.to_bytes([x], [y]))


@pytest.mark.parametrize("zero_point", [-128, -7, 0, 127])
def test_relu(zero_point):
    """RELU with the output quantized as the input: max(x, zero_point), as LiteRT's."""
    b = ModelBuilder()
    x = b.input((1, 4, 4, 8), scale=0.05, zero_point=zero_point)
    y = b.relu(x)
    g, _ = check(b, [x], [y], samples=3)
    assert g.ops[0].act_min == zero_point


def test_metadata_entry_read():
    """The model's ``pim_macro`` Metadata entry (JSON) is Graph.metadata; other entries are
    ignored; one that is not a JSON object is refused in one line."""
    import json
    from pim_macro.sw.compiler.tflite_import import METADATA_NAME
    b = ModelBuilder()
    x = b.input((1, 4), scale=0.1, zero_point=0)
    y = b.fully_connected(x, np.ones((2, 4), np.int8), None, w_scale=0.1, out_scale=0.2,
                          out_zero_point=0)
    assert load_tflite(b.to_bytes([x], [y])).metadata == {}
    b.metadata["min_runtime_version"] = b"1.5.0"
    b.metadata[METADATA_NAME] = json.dumps({"classes": [3, 5], "input_layout": "NCHW"}).encode()
    data = b.to_bytes([x], [y])
    assert load_tflite(data).metadata == {"classes": [3, 5], "input_layout": "NCHW"}
    interpreter(data)       # LiteRT reads the model with its metadata
    b.metadata[METADATA_NAME] = b"[1, 2]"
    with pytest.raises(UnsupportedModel, match="'pim_macro' metadata is not a JSON object"):
        load_tflite(b.to_bytes([x], [y]))


@pytest.mark.parametrize("scale,beta,depth", [(0.1, 1.0, 40), (0.02, 1.0, 10), (0.005, 1.0, 4),
                                               (0.03, 0.3, 16), (1.7, 2.0, 8), (0.001, 1.0, 3)])
def test_softmax(scale, beta, depth):
    """SOFTMAX int8 in gemmlowp fixed point, input scales and betas from saturated outputs to
    outputs spread over every level (small scale, few classes), rows of equal values too."""
    b = ModelBuilder()
    x = b.input((1, 64, depth), scale=scale, zero_point=-128 if depth % 2 else 127)
    y = b.softmax(x, beta=beta)
    g, runs = check(b, [x], [y], samples=3)
    levels = np.unique(np.concatenate([ref[y].ravel() for ref, _ in runs]))
    assert levels.size > 3


def test_softmax_after_reshape():
    """RESHAPE between an FC and a SOFTMAX over its last dimension; equal inputs in a row."""
    b = ModelBuilder()
    x = b.input((1, 4, 40), scale=0.1, zero_point=-128)
    y = b.fully_connected(x, np.eye(40, dtype=np.int64) * 3, None, w_scale=0.1,
                          out_scale=0.15, out_zero_point=-20, keep_num_dims=True)
    z = b.softmax(b.reshape(y, (4, 40)))
    check(b, [x], [z], samples=4)
    g, runs = run_both(b.to_bytes([x], [z]), samples=1,
                       inputs=[[np.full((1, 4, 40), 7, dtype=np.int8)]])
    assert np.array_equal(runs[0][1][z], runs[0][0][z])


def test_quantize_dequantize_edges():
    """QUANTIZE float32 -> int8 at the input (ties both ways, values beyond the range) and
    DEQUANTIZE at the output, around a network."""
    rng = np.random.default_rng(9)
    b = ModelBuilder()
    f = b.input((1, 6, 6, 3), np.float32)
    x = b.quantize(f, scale=0.05, zero_point=-2)
    y = b.conv2d(x, weights(rng, (4, 3, 3, 3)), rng.integers(-900, 900, 4), w_scale=0.02,
                 out_scale=0.1, out_zero_point=-128, stride=(2, 2))
    p = b.pool("AVERAGE_POOL_2D", y, filter=(3, 3), stride=(3, 3))
    r = b.reshape(p, (1, 4))
    out = b.dequantize(b.softmax(b.fully_connected(r, weights(rng, (4, 4)), None, w_scale=0.1,
                                                   out_scale=0.2, out_zero_point=0)))
    g, runs = check(b, [f], [out], samples=4)
    assert g.tensors[g.inputs[0]].dtype == np.float32
    assert runs[0][1][out].dtype == np.float32


def test_residual_network():
    """A small ResNet-style block: conv, conv, ADD of the skip, average pool, FC, softmax."""
    rng = np.random.default_rng(12)
    b = ModelBuilder()
    x = b.input((1, 8, 8, 3), scale=1.0, zero_point=-128)
    c1 = b.conv2d(x, weights(rng, (8, 3, 3, 3)), rng.integers(-9000, 9000, 8),
                  w_scale=rng.uniform(0.001, 0.01, 8), out_scale=0.08, out_zero_point=-128,
                  activation="RELU")
    c2 = b.conv2d(c1, weights(rng, (8, 3, 3, 8)), rng.integers(-900, 900, 8),
                  w_scale=rng.uniform(0.001, 0.01, 8), out_scale=0.09, out_zero_point=4)
    s = b.add(c1, c2, out_scale=0.12, out_zero_point=-100, activation="RELU")
    p = b.pool("AVERAGE_POOL_2D", s, filter=(8, 8), stride=(8, 8))
    fc = b.fully_connected(b.reshape(p, (1, 8)), weights(rng, (10, 8)),
                           rng.integers(-500, 500, 10), w_scale=0.004, out_scale=0.1,
                           out_zero_point=5)
    g, _ = check(b, [x], [b.softmax(fc)], samples=4)
    assert [op.name for op in g.ops] == ["CONV_2D", "CONV_2D", "ADD", "AVERAGE_POOL_2D",
                                         "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert len(g.macro_ops) == 3 and g.macs == 64 * 8 * 27 + 64 * 8 * 72 + 80


# --- what the importer refuses: one line, before anything runs ---------------------------------

def unsupported(build):
    b = ModelBuilder()
    x = b.input((1, 6, 6, 4), scale=0.1, zero_point=0)
    out = build(b, x, np.random.default_rng(0))
    return b.to_bytes([x], [out])


CASES = {
    "dilation": (lambda b, x, r: b.conv2d(x, weights(r, (4, 3, 3, 4)), None, w_scale=0.1,
                                          out_scale=0.1, out_zero_point=0, dilation=(2, 2)),
                 r"op 0 \(CONV_2D\): dilation 2x2 is not supported"),
    "tanh": (lambda b, x, r: b.conv2d(x, weights(r, (4, 1, 1, 4)), None, w_scale=0.1,
                                      out_scale=0.1, out_zero_point=0, activation="TANH"),
             r"op 0 \(CONV_2D\): fused activation TANH is not supported"),
    "unknown op": (lambda b, x, r: (b.op("TANH", [x], [t := b.tensor((1, 6, 6, 4), scale=1 / 128,
                                                                      zero_point=0)]), t)[1],
                   r"op 0 \(TANH\) is not supported"),
    "weights zero point": (lambda b, x, r: b.fully_connected(
        b.reshape(x, (1, 144)), weights(r, (4, 144)), None, w_scale=0.1, out_scale=0.1,
        out_zero_point=0, w_zero_point=3), r"op 1 \(FULLY_CONNECTED\): filter .* zero point 3"),
    "grouped": (lambda b, x, r: b.conv2d(x, weights(r, (4, 3, 3, 2)), None, w_scale=0.1,
                                         out_scale=0.1, out_zero_point=0),
                r"op 0 \(CONV_2D\): a grouped convolution \(2 filter channels, 4 input\)"),
    "float in the middle": (lambda b, x, r: b.quantize(b.dequantize(x), scale=0.1, zero_point=0),
                            r"op 0 \(DEQUANTIZE\): a float tensor in the middle"),
    "int16": (lambda b, x, r: b.add(x, b.tensor((1, 6, 6, 4), np.int16, scale=0.1, zero_point=0,
                                                data=np.zeros((1, 6, 6, 4))),
                                    out_scale=0.1, out_zero_point=0),
              r"op 0 \(ADD\): tensor 't1' of type INT16"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unsupported(case):
    build, message = CASES[case]
    with pytest.raises(UnsupportedModel, match=message) as e:
        load_tflite(unsupported(build))
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)


def fc_model(in_shape, out_shape=None):
    b = ModelBuilder()
    x = b.input(in_shape, scale=0.1, zero_point=0)
    k = in_shape[-1]
    y = b.fully_connected(x, weights(np.random.default_rng(0), (3, k)), None, w_scale=0.01,
                          out_scale=0.1, out_zero_point=0, out_shape=out_shape)
    return b.to_bytes([x], [y])


@pytest.mark.parametrize("in_shape, out_shape, message", [
    # run_graph feeds one sample at a time: a batch of 3 failed at run time in a reshape.
    ((3, 10), None, r"model input: tensor 't0' of shape \(3, 10\) \(the batch dimension must "
                    r"be 1\)"),
    ((1, 4), (1, 7), r"op 0 \(FULLY_CONNECTED\): output shape \(1, 7\) for input \(1, 4\) "
                     r"and filter \(3, 4\)"),
    ((1, 0, 4), (0, 3), r"op 0 \(FULLY_CONNECTED\): tensor 't0' of zero-size shape "
                        r"\(1, 0, 4\)"),
])
def test_shapes_refused_at_import(in_shape, out_shape, message):
    with pytest.raises(UnsupportedModel, match=message) as e:
        load_tflite(fc_model(in_shape, out_shape))
    assert "\n" not in str(e.value)


def test_not_a_model(tmp_path):
    path = tmp_path / "x.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(UnsupportedModel, match="not a TFLite flatbuffer"):
        load_tflite(path)
    with pytest.raises(UnsupportedModel, match="not a TFLite flatbuffer"):
        load_tflite(b"TFL")


# --- the layer-by-layer check command (run on the MLPerf Tiny models outside the suite) -------

def test_tflite_check_command(tmp_path, capsys):
    from pim_macro.tb.experiments.tflite_check import main
    b, x, z = tie_model("CONV_2D", np.random.default_rng(1))
    good = tmp_path / "tie.tflite"
    good.write_bytes(b.to_bytes([x], [z]))
    assert main([str(good), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "0 mismatches of" in out and "| 1 | CONV_2D | macro | 1x6x6x4 | 432 | 0 | 0 |" in out
    bad = tmp_path / "dilated.tflite"
    bad.write_bytes(unsupported(CASES["dilation"][0]))
    assert main([str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pim: error: ") and "dilation 2x2" in err
    assert main([str(tmp_path / "missing.tflite")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_tflite_check_reports_mismatches(tmp_path, capsys, monkeypatch):
    from pim_macro.tb.experiments import tflite_check
    b, x, z = tie_model("CONV_2D", np.random.default_rng(1))
    path = tmp_path / "tie.tflite"
    path.write_bytes(b.to_bytes([x], [z]))

    def single_rounding(data):
        g = load_tflite(data)
        return dataclasses.replace(g, ops=[dataclasses.replace(op, double_rounding=False)
                                           for op in g.ops])
    monkeypatch.setattr(tflite_check, "load_tflite", single_rounding)
    assert tflite_check.main([str(path), "-n", "2"]) == 1
    assert " 0 mismatches" not in capsys.readouterr().out


def test_readme_op_table():
    """README's importer table lists exactly the ops load_tflite reads, where each runs, and
    the measured rounding of each op that has one."""
    from pathlib import Path
    from pim_macro.sw.compiler.tflite_import import OPS
    import pim_macro.sw.compiler.graph as graph_module
    readme = (Path(graph_module.__file__).resolve().parents[2] / "README.md").read_text()
    lines = readme[readme.index("| Op | Runs on |"):].splitlines()[2:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if line.startswith("|")][:sum(map(len, OPS.values()))]
    assert {(r[0].strip("`"), r[1]) for r in rows} == {(op, where) for where, ops in OPS.items()
                                                        for op in ops}
    for r in rows:
        op = r[0].strip("`")
        if op in DOUBLE_ROUNDING:
            assert ("double rounding" in r[3]) == DOUBLE_ROUNDING[op], op
            assert ("ties away" in r[3]) == (not DOUBLE_ROUNDING[op]), op


def test_add_of_a_constant_broadcast():
    """ADD of a constant per-channel int8 tensor, broadcast over the image."""
    rng = np.random.default_rng(13)
    b = ModelBuilder()
    x = b.input((1, 5, 5, 6), scale=0.04, zero_point=-20)
    c = b.tensor((1, 1, 1, 6), np.int8, scale=0.09, zero_point=11,
                 data=rng.integers(-128, 128, (1, 1, 1, 6)))
    y = b.add(x, c, out_scale=0.1, out_zero_point=-128, activation="RELU6")
    g, _ = check(b, [x], [y], samples=3)
    assert g.ops[0].inputs == (x, c)


def test_graph_run_checks_its_inputs():
    b = ModelBuilder()
    x = b.input((1, 4), scale=0.1, zero_point=0)
    g = load_tflite(b.to_bytes([x], [b.softmax(x)]))
    with pytest.raises(ValueError, match="needs 4 values"):
        g.run([np.zeros(5, dtype=np.int8)])
    with pytest.raises(ValueError, match="takes int8 values"):
        g.run([np.array([0, 1, 2, 200])])
    with pytest.raises(ValueError, match="takes 1 input"):
        g.run([])
    assert g.run([np.array([[0, 1, 2, 3]])])[0].dtype == np.int8


def random_model(seed):
    """A random chain of the supported ops: random shapes, kernels, strides, paddings, scales
    (effective scales from about 1e-4 to 4: right and left shifts), zero points, activations."""
    rng = np.random.default_rng(1000 + seed)
    b = ModelBuilder()
    h, w, c = (int(v) for v in rng.integers(3, 9, 3))
    x = b.input((1, h, w, c), scale=float(rng.uniform(0.005, 0.5)),
                zero_point=int(rng.integers(-128, 128)))

    def out_q():
        return dict(out_scale=float(10 ** rng.uniform(-2.5, 0)),
                    out_zero_point=int(rng.integers(-128, 128)))

    def w_scale(n):
        base = 10 ** rng.uniform(-3.5, -0.5)
        return float(base) if rng.random() < 0.5 else list(base * rng.uniform(0.3, 3, n))

    t = x
    for _ in range(int(rng.integers(2, 5))):
        _, h, w, c = b.shape(t)
        kind = rng.choice(["conv", "dw", "pool", "add"])
        act = str(rng.choice(ACTS))
        k = (int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1)))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = str(rng.choice(["SAME", "VALID"]))
        if kind == "conv":
            n = int(rng.integers(1, 9))
            t = b.conv2d(t, weights(rng, (n, *k, c)), rng.integers(-30000, 30000, n),
                         w_scale=w_scale(n), stride=stride, padding=pad, activation=act,
                         **out_q())
        elif kind == "dw":
            n = c * int(rng.integers(1, 3))
            t = b.depthwise_conv2d(t, weights(rng, (1, *k, n)), rng.integers(-30000, 30000, n),
                                   w_scale=w_scale(n), stride=stride, padding=pad,
                                   activation=act, **out_q())
        elif kind == "pool":
            t = b.pool(str(rng.choice(["AVERAGE_POOL_2D", "MAX_POOL_2D"])), t, filter=k,
                       stride=stride, padding=pad, activation=act)
        else:
            n = c
            other = b.conv2d(t, weights(rng, (n, 1, 1, c)), rng.integers(-3000, 3000, n),
                             w_scale=w_scale(n), **out_q())
            t = b.add(t, other, activation=act, **out_q())
    size = int(np.prod(b.shape(t)))
    n = int(rng.integers(2, 12))
    fc = b.fully_connected(b.reshape(t, (1, size)), weights(rng, (n, size)),
                           rng.integers(-30000, 30000, n), w_scale=w_scale(n),
                           activation=str(rng.choice(ACTS)), **out_q())
    return b, x, b.softmax(fc, beta=float(rng.uniform(0.2, 2)))


@pytest.mark.parametrize("seed", range(12))
def test_random_models(seed):
    b, x, y = random_model(seed)
    check(b, [x], [y], samples=3, seed=seed)


def test_corrupt_files():
    """Truncated files and flipped bytes: a graph or one UnsupportedModel line, no traceback
    (3,000 trials passed once; 400 here)."""
    b, x, y = random_model(3)
    data = b.to_bytes([x], [y])
    rng = np.random.default_rng(0)
    refused = 0
    for trial in range(400):
        d = bytearray(data)
        if trial % 2:
            d = d[:int(rng.integers(8, len(d)))]
        else:
            for _ in range(3):
                d[int(rng.integers(8, len(d)))] = int(rng.integers(0, 256))
        try:
            load_tflite(bytes(d))
        except UnsupportedModel as e:
            assert "\n" not in str(e)
            refused += 1
    assert refused > 200


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_tiles_use_their_column_range(multiplier):
    """What a compiler relies on: a tile of output channels of a depthwise op has zero weights
    outside :meth:`k_range`, so the columns inside give the same accumulators."""
    rng = np.random.default_rng(multiplier)
    b = ModelBuilder()
    x = b.input((1, 5, 5, 4), scale=0.05, zero_point=-7)
    n = 4 * multiplier
    y = b.depthwise_conv2d(x, weights(rng, (1, 3, 3, n)), rng.integers(-99, 99, n),
                           w_scale=0.02, out_scale=0.05, out_zero_point=0)
    g, runs = check(b, [x], [y], samples=1)
    op = g.ops[0]
    xv = runs[0][1][x]
    cols = op.patches(xv).astype(np.int64)
    for first in range(n):
        for stop in range(first + 1, n + 1):
            k0, k1 = op.k_range(first, stop)
            w = op.weights[first:stop].astype(np.int64)
            assert not w[:, :k0].any() and not w[:, k1:].any()
            part = cols[:, k0:k1] @ w[:, k0:k1].T + op.folded_bias()[first:stop]
            assert np.array_equal(part, op.accumulate(xv)[:, first:stop])
