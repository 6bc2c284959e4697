"""Tests of the post-training quantizer (pim_macro.sw.compiler.quantize): TFLite's activation
parameters by hand, the per-channel scheme on a hand-made layer, a digits MLPClassifier
quantized end to end, small float ONNX models (CNN and MatMul
MLP) checked against onnxruntime, and the one-line errors for unsupported graphs and files."""

import warnings

import numpy as np
import pytest

from pim_macro.sw.compiler.network import Conv, Dense, forward, load_network, save_network
from pim_macro.sw.compiler.quantize import FloatLayer, _quantize_layers
from pim_macro.sw.compiler.quantize import (
    activation_params, float_forward, load_float_model, quantize_file, quantize_input,
    quantize_mlp, quantize_onnx, report,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


# -- TFLite's parameters, by hand -----------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, expected", [
    # [0, 2.55]: scale 2.55 / 255 = 0.01; zero point from the minimum -128 - 0 = -128 (error 128
    # against 127 + 255 from the maximum)
    (0.0, 2.55, (0.01, -128)),
    # [-1, 1]: scale 2 / 255; from the minimum -128 + 127.5 = -0.5 (error 255.5), from the
    # maximum 127 - 127.5 = -0.5 (error 254.5, smaller): round half away from zero: -1
    (-1.0, 1.0, (2 / 255, -1)),
    # [-2.55, 0]: scale 0.01, from the maximum 127 - 0 = 127 (error 127 < 128 + 255)
    (-2.55, 0.0, (0.01, 127)),
    # a range without 0 is widened to include it: [0.5, 2.55] -> [0, 2.55]
    (0.5, 2.55, (0.01, -128)),
    (-3.0, -1.0, (3 / 255, 127)),
    # [-1, 3]: scale 4 / 255; from the minimum -128 + 63.75 = -64.25 (error 191.75), from the
    # maximum 127 - 191.25 = -64.25 (error 318.25): -64
    (-1.0, 3.0, (4 / 255, -64)),
    (0.0, 0.0, (1 / 255, -128)),            # all zero: taken as [0, 1]
])
def test_activation_params_by_hand(lo, hi, expected):
    scale, zero_point = activation_params(lo, hi)
    assert zero_point == expected[1] and isinstance(zero_point, int)
    assert scale == float(np.float32(expected[0])), "the scale is a float32, as in a .tflite"


def test_per_channel_scheme_by_hand():
    """One dense layer, worked out by hand. Weights [[1, -0.6], [0.02, 0.011]]: channel scales
    1 / 127 and 0.02 / 127, so w_int8 = [[127, -76], [127, 70]] (-76.2 and 69.85 rounded).
    Calibration inputs span [0, 2.55]: s_in 0.01, zero point -128. Outputs (bias 0.5, 0): at
    (0, 2.55) -1.03 and 0.028, at (2.55, 0) 3.05 and 0.051, at (1, 1) 0.9 and 0.031: the range
    [-1.03, 3.05] gives s_out 4.08 / 255 = 0.016 and zero point -128 + 64.375 = -63.625
    (from the minimum; from the maximum the same, with the larger error): -64. Bias 0.5 at
    0.01 / 127: 6350. Requantization scales 0.01 / 127 / 0.016 and 0.0002 / 127 / 0.016."""
    layer = FloatLayer(np.array([[1.0, -0.6], [0.02, 0.011]]), np.array([0.5, 0.0]))
    calib = np.array([[0.0, 2.55], [2.55, 0.0], [1.0, 1.0]])
    net = _quantize_layers([layer], calib)
    (d,) = net.layers
    assert d.w.tolist() == [[127, -76], [127, 70]]
    assert net.input_scale == float(np.float32(0.01)) and d.input_zero_point == -128
    assert d.output_zero_point == -64 and net.output_scale == pytest.approx(0.016, rel=1e-6)
    assert d.b.tolist() == [6350, 0]
    assert (d.act_min, d.act_max, d.double_rounding) == (-128, 127, False)
    # TFLite's QuantizeMultiplier of each channel's scale, in double precision
    for c, scale in enumerate([0.01 / 127 / 0.016, 0.0002 / 127 / 0.016]):
        m0, shift = int(d.multiplier[c]), int(d.shift[c])
        assert 1 << 30 <= m0 < 1 << 31
        assert m0 * 2.0 ** (shift - 31) == pytest.approx(scale, rel=1e-6)
    # (2.55, 0) -> int8 (127, -128): y = 3.05 / 0.016 - 64 = 126.6 and 0.051 / 0.016 - 64 =
    # -60.8; (1, 1) -> (-28, -28): y = 0.9 / 0.016 - 64 = -7.75 and 0.031 / 0.016 - 64 = -62.06
    xq = quantize_input(net, np.array([[2.55, 0.0], [1.0, 1.0]]))
    assert xq.tolist() == [[127, -128], [-28, -28]]
    y = forward(net, xq)[0].astype(int)
    assert np.abs(y - [[126.6, -60.8], [-7.75, -62.06]]).max() <= 1.5


def test_fused_relu_and_rounding_by_layer_kind():
    """A fused ReLU clamps at the output zero point; convolutions take double rounding, dense
    layers single (LiteRT's reference kernels)."""
    rng = np.random.default_rng(0)
    conv = FloatLayer(rng.normal(size=(3, 1, 2, 2)), rng.normal(size=3), relu=True,
                      in_shape=(1, 3, 3))
    dense = FloatLayer(rng.normal(size=(2, 12)), rng.normal(size=2))
    net = _quantize_layers([conv, dense], rng.normal(size=(20, 1, 3, 3)))
    c, d = net.layers
    assert c.act_min == c.output_zero_point == -128, "ReLU output spans [0, max]: zp -128"
    assert c.double_rounding and not d.double_rounding
    assert d.input_zero_point == c.output_zero_point and d.act_min == -128
    assert [np.abs(row).max() for row in c.w.reshape(3, -1)] == [127] * 3, "per channel"


# -- digits MLPClassifier -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    return clf, x_train, x_test, y_train, y_test


def test_mlp_digits(digits_mlp, tmp_path):
    clf, x_train, x_test, _, y_test = digits_mlp
    net = quantize_mlp(clf, x_train)
    assert [type(layer) for layer in net.layers] == [Dense, Dense]
    assert [layer.relu for layer in net.layers] == [True, False]
    assert net.layers[0].w.shape == (32, 64) and net.layers[1].w.shape == (10, 32)
    for layer in net.layers:
        assert layer.w.dtype == np.int8 and layer.b.dtype == np.int32
        rows = np.abs(layer.w.astype(int)).max(axis=1)
        assert np.all((rows == 127) | (rows == 0)), "each channel's scale uses the full range"
        assert np.all((layer.multiplier >= 1 << 30) & (layer.multiplier < 1 << 31))
    assert net.input_scale == pytest.approx(x_train.max() / 255)       # [0, 1]: zero point -128
    assert net.layers[0].input_zero_point == -128
    assert net.layers[0].act_min == net.layers[0].output_zero_point, "the hidden ReLU"

    path = tmp_path / "mlp.npz"
    save_network(path, net)
    loaded = load_network(path)
    assert loaded.input_scale == net.input_scale and loaded.output_scale == net.output_scale
    for a, b in zip(net.layers, loaded.layers):
        assert np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)
        assert np.array_equal(a.multiplier, b.multiplier) and np.array_equal(a.shift, b.shift)
        assert a.quant() == b.quant() and a.input_zero_point == b.input_zero_point

    xq = quantize_input(loaded, x_test)
    assert xq.dtype == np.int8 and xq.shape == x_test.shape
    y, acts = forward(loaded, xq)
    assert y.dtype == np.int8 and y.shape == (len(x_test), 10) and len(acts) == 2
    int8_acc = np.mean(clf.classes_[y.argmax(axis=1)] == y_test)
    float_acc = clf.score(x_test, y_test)
    # measured: float 0.9733, int8 0.9711 (450 test digits)
    assert int8_acc > 0.9
    assert abs(int8_acc - float_acc) <= 0.02

    # float_forward gives the pre-softmax logits, report agrees with the direct computation
    logits = float_forward(clf)(x_test)
    assert np.array_equal(clf.classes_[logits.argmax(axis=1)], clf.predict(x_test))
    rep = report(loaded, float_forward(clf), x_test, y_test, classes=clf.classes_)
    assert rep["int8_accuracy"] == pytest.approx(int8_acc)
    assert rep["float_accuracy"] == pytest.approx(float_acc)
    assert rep["samples"] == len(x_test)
    assert 0 < rep["mean_abs_error"] <= rep["max_abs_error"] < 0.1 * rep["output_range"]
    assert rep["agreement"] > 0.95


def test_mlp_pickle_file(digits_mlp, tmp_path):
    import joblib

    clf, x_train, _, _, _ = digits_mlp
    path = tmp_path / "mlp.joblib"
    joblib.dump(clf, path)
    assert type(load_float_model(path)) is type(clf)
    a, b = quantize_file(path, x_train), quantize_mlp(clf, x_train)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.w, lb.w) and np.array_equal(la.multiplier, lb.multiplier)


def test_mlp_rejects():
    from sklearn.neural_network import MLPClassifier

    with pytest.raises(ValueError, match="not fitted"):
        quantize_mlp(MLPClassifier(), np.ones((4, 3)))


# -- ONNX -----------------------------------------------------------------------------------------

def _array(value):
    value = np.asarray(value)
    return value.astype(np.int64 if value.dtype.kind in "iu" else np.float32)


def _model(nodes, inits, in_shape, out_shape, inputs=None):
    graph = helper.make_graph(
        nodes, "test",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(_array(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ort(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.asarray(x, np.float32)})[0]


def _cnn(rng):
    inits = {"w1": rng.normal(0, 0.4, (4, 1, 3, 3)), "b1": rng.normal(0, 0.1, 4),
             "w2": rng.normal(0, 0.2, (8, 4, 3, 3)), "b2": rng.normal(0, 0.1, 8),
             "w3": rng.normal(0, 0.1, (10, 128)), "b3": rng.normal(0, 0.1, 10)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="dense", transB=1),
    ]
    return _model(nodes, inits, ["N", 1, 8, 8], ["N", 10])


def _close(model, net, x):
    ref = _ort(model, x)
    y = forward(net, quantize_input(net, x))[0].astype(np.float64)
    got = net.output_scale * (y - net.layers[-1].output_zero_point)
    assert got.shape == ref.shape
    corr = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert corr > 0.99, corr
    assert rel < 0.05, rel
    return ref


def test_onnx_cnn():
    rng = np.random.default_rng(1)
    model = _cnn(rng)
    onnx.checker.check_model(model, full_check=True)
    calib = rng.uniform(0, 1, (256, 1, 8, 8))
    net = quantize_onnx(model, calib)
    assert [type(layer) for layer in net.layers] == [Conv, Conv, Dense]
    c1, c2, d = net.layers
    assert (c1.in_shape, c1.stride, c1.pad, c1.relu) == ((1, 8, 8), (1, 1), (1, 1), True)
    assert (c2.in_shape, c2.stride, c2.pad, c2.relu) == ((4, 8, 8), (2, 2), (1, 1), True)
    assert c2.out_shape == (8, 4, 4) and d.w.shape == (10, 128) and not d.relu
    x = rng.uniform(0, 1, (64, 1, 8, 8))
    ref = _close(model, net, x)
    # the numpy float reference matches onnxruntime; report measures the same error
    assert np.allclose(float_forward(model)(x), ref, atol=1e-4)
    rep = report(net, float_forward(model), x)
    assert rep["relative_error"] < 0.05 and rep["agreement"] > 0.9


def test_onnx_cnn_file_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    model = _cnn(rng)
    path = tmp_path / "cnn.onnx"
    onnx.save(model, str(path))
    calib = rng.uniform(0, 1, (128, 64))          # flat samples are reshaped to (1, 8, 8)
    net = quantize_file(path, calib)
    save_network(tmp_path / "cnn.npz", net)
    loaded = load_network(tmp_path / "cnn.npz")
    assert [layer.in_shape for layer in loaded.layers[:2]] == [(1, 8, 8), (4, 8, 8)]
    _close(model, loaded, rng.uniform(0, 1, (32, 1, 8, 8)))


def test_onnx_matmul_mlp():
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(0, 0.3, (20, 16)), "b1": rng.normal(0, 0.1, 16),
             "w2": rng.normal(0, 0.3, (5, 16)), "b2": rng.normal(0, 0.1, 5)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b1"], ["a"], name="bias"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="out", transB=1, alpha=0.5),
    ]
    model = _model(nodes, inits, ["N", 20], ["N", 5])
    onnx.checker.check_model(model, full_check=True)
    net = quantize_onnx(model, rng.normal(0, 1, (256, 20)))
    assert [type(layer) for layer in net.layers] == [Dense, Dense]
    assert [layer.relu for layer in net.layers] == [True, False]
    assert net.layers[0].w.shape == (16, 20) and net.layers[1].w.shape == (5, 16)
    _close(model, net, rng.normal(0, 1, (64, 20)))


def test_onnx_reshape_flatten():
    rng = np.random.default_rng(4)
    inits = {"w": rng.normal(0, 0.3, (3, 2, 3, 3)), "shape": np.array([-1, 48]),
             "w2": rng.normal(0, 0.3, (48, 4)), "cb": rng.normal(0, 0.3, (3, 1, 1))}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", strides=[1, 1]),
        helper.make_node("Add", ["cb", "c"], ["a"], name="conv_bias"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "w2"], ["y"], name="matmul"),
    ]
    model = _model(nodes, inits, ["N", 2, 6, 6], ["N", 4])
    onnx.checker.check_model(model, full_check=True)
    net = quantize_onnx(model, rng.normal(0, 1, (128, 2, 6, 6)))
    conv = net.layers[0]
    assert conv.relu and np.any(conv.b != 0)
    assert (conv.in_shape, conv.stride, conv.pad, conv.out_shape) == \
        ((2, 6, 6), (1, 1), (0, 0), (3, 4, 4))
    _close(model, net, rng.normal(0, 1, (32, 2, 6, 6)))


def _tiny(nodes, inits, in_shape=("N", 4), out_shape=("N", 3)):
    return _model(nodes, inits, list(in_shape), list(out_shape))


def test_onnx_unsupported_op():
    rng = np.random.default_rng(5)
    model = _tiny([helper.make_node("Gemm", ["x", "w"], ["g"], name="fc", transB=1),
                   helper.make_node("Sigmoid", ["g"], ["y"], name="squash")],
                  {"w": rng.normal(size=(3, 4))})
    with pytest.raises(ValueError, match=r"'squash' \(Sigmoid\): op Sigmoid is not supported"):
        quantize_onnx(model, rng.normal(size=(8, 4)))


def test_onnx_grouped_conv():
    rng = np.random.default_rng(6)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=2)],
                   {"w": rng.normal(size=(2, 1, 3, 3))}, ["N", 2, 5, 5], ["N", 2, 3, 3])
    with pytest.raises(ValueError, match=r"'dw' \(Conv\).*group"):
        quantize_onnx(model, rng.normal(size=(8, 2, 5, 5)))


@pytest.mark.parametrize("case, pattern", [
    ("dilation", r"'c' \(Conv\).*dilation"),
    ("relu_first", r"'r' \(Relu\).*directly follow"),
    ("reshape", r"'rs' \(Reshape\).*flattening"),
    ("two_inputs", r"the model has 2 inputs \('x', 'z'\)"),
    ("residual", r"'add' \(Add\).*only a chain of layers"),
])
def test_onnx_rejects(case, pattern):
    rng = np.random.default_rng(7)
    w = {"w": rng.normal(size=(3, 4))}
    gemm = helper.make_node("Gemm", ["x", "w"], ["g"], name="g", transB=1)
    if case == "dilation":
        model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", dilations=[2, 2])],
                       {"w": rng.normal(size=(2, 1, 3, 3))}, ["N", 1, 7, 7], ["N", 2, 3, 3])
        calib = rng.normal(size=(4, 1, 7, 7))
    elif case == "relu_first":
        model = _tiny([helper.make_node("Relu", ["x"], ["r"], name="r"),
                       helper.make_node("Gemm", ["r", "w"], ["y"], name="g", transB=1)], w)
        calib = rng.normal(size=(4, 4))
    elif case == "reshape":
        model = _tiny([gemm, helper.make_node("Reshape", ["g", "s"], ["y"], name="rs")],
                      {**w, "s": np.array([-1, 3, 1])}, out_shape=("N", 3, 1))
        calib = rng.normal(size=(4, 4))
    elif case == "two_inputs":
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xz"]
        model = _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1)], w,
                       None, ["N", 3], inputs=inputs)
        calib = rng.normal(size=(4, 4))
    else:
        model = _tiny([helper.make_node("Gemm", ["x", "w"], ["g"], name="g", transB=1),
                       helper.make_node("Gemm", ["x", "w"], ["h"], name="h", transB=1),
                       helper.make_node("Add", ["g", "h"], ["y"], name="add")], w)
        calib = rng.normal(size=(4, 4))
    with pytest.raises(ValueError, match=pattern) as info:
        quantize_onnx(model, calib)
    assert "\n" not in str(info.value)


def test_load_float_model_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown float model type"):
        load_float_model(tmp_path / "model.h5")
    with pytest.raises(ValueError, match="no such file"):
        load_float_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00not a protobuf")
    with pytest.raises(ValueError, match="cannot read ONNX model"):
        load_float_model(bad)


def test_quantize_input():
    rng = np.random.default_rng(8)
    model = _tiny([helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1)],
                  {"w": rng.normal(size=(3, 4))})
    calib = rng.normal(size=(64, 4))
    net = quantize_onnx(model, calib)
    scale, zp = activation_params(calib.min(), calib.max())
    assert (net.input_scale, net.layers[0].input_zero_point) == (scale, zp)
    q = quantize_input(net, np.array([[0.0, scale * 2.4, scale * -2.5, -1e9, 1e9]]))
    assert q.dtype == np.int8
    assert q.tolist() == [[zp, zp + 2, zp - 3, -128, 127]], "half away from zero, clamped"


# -- issue 13: the container's classes, the int8-error warning -----------------------------------

def _one_layer(outputs):
    rng = np.random.default_rng(outputs)
    return Dense(rng.integers(-127, 128, (outputs, 4), dtype=np.int8),
                 np.zeros(outputs, np.int32), 1 << 30, -3)


@pytest.mark.parametrize("outputs, classes", [(3, np.array([3, 5, 9])),
                                              (1, np.array(["no", "yes"])),
                                              (2, np.array(["b", "a"]))])
def test_container_keeps_classes(tmp_path, outputs, classes):
    from pim_macro.sw.compiler.network import Network
    net = Network((_one_layer(outputs),), classes=classes)
    save_network(tmp_path / "m.npz", net)
    with np.load(tmp_path / "m.npz") as data:
        assert data["classes"].dtype.kind == classes.dtype.kind, "int64 or unicode, no pickle"
    loaded = load_network(tmp_path / "m.npz")
    assert loaded.classes.tolist() == classes.tolist()
    assert load_network(tmp_path / "m.npz").classes.dtype == loaded.classes.dtype


@pytest.mark.parametrize("value, message", [
    (np.array([3, 5]), "2 classes for 3 outputs: expected 3"),
    (np.array([1.5, 2.0, 3.0]), "classes must be an int64 or unicode string array, not "
                                "float64"),
    (np.array([b"a", b"b", b"c"]), "classes must be an int64 or unicode string array"),
    (np.array([1, 1, 2]), "classes repeat a label"),
])
def test_container_refuses_bad_classes(tmp_path, value, message):
    from pim_macro.sw.compiler.network import Network
    save_network(tmp_path / "m.npz", Network((_one_layer(3),)))
    with np.load(tmp_path / "m.npz") as data:
        arrays = dict(data)
    np.savez(tmp_path / "bad.npz", **arrays, classes=value)
    with pytest.raises(ValueError, match=f"bad model .*bad.npz: {message}"):
        load_network(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", **arrays, classes=np.array([1, "a", None], object))
    with pytest.raises(ValueError, match="obj.npz"):        # pickled: never loaded
        load_network(tmp_path / "obj.npz")


def test_quantization_warnings_threshold_and_reason():
    from pim_macro.sw.compiler.quantize import RELATIVE_ERROR_WARN, feature_ranges, \
        quantization_warnings
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (100, 3)) * np.array([500.0, 1.0, 2.0])
    span, ratio, wide, narrow = feature_ranges(calib)
    assert (wide, narrow) == (0, 1) and ratio == pytest.approx(span[0] / span[1])
    assert span[1] == pytest.approx(calib[:, 1].max() - calib[:, 1].min())
    assert quantization_warnings({"relative_error": RELATIVE_ERROR_WARN}, calib) == []
    [line] = quantization_warnings({"relative_error": 0.3}, calib)
    assert "differ by" in line and "feature 1" in line and "standardize" in line
    [line] = quantization_warnings({"relative_error": 0.3}, calib[:, 1:])
    assert "differ by" not in line and "calibration data covers" in line
    assert feature_ranges(np.zeros((5, 4)))[1] == 1.0


def test_non_finite_weights_are_refused():
    rng = np.random.default_rng(2)
    for field in ("w", "b"):
        layer = FloatLayer(rng.normal(size=(3, 4)), rng.normal(size=3), name="fc")
        getattr(layer, field)[1] = np.nan
        what = "weights hold" if field == "w" else "bias holds"
        with pytest.raises(ValueError, match=f"layer 0 \\(fc\\): the {what} a non-finite "
                                             f"value \\(nan\\)"):
            _quantize_layers([layer], rng.normal(size=(10, 4)))
