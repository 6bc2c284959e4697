"""The ONNX front end (:mod:`pim_macro.sw.compiler.onnx_import`) on models shaped like real
exports (:mod:`pim_macro.tb.harness.onnx_build`).

The float reference is onnxruntime on the source model with every graph optimization off
(``ORT_DISABLE_ALL``), so that the reference does not share the rewrites under test. numpy and
onnxruntime only: about a second in all.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pim_macro.sw.compiler.onnx_import import check_canonical, load_onnx, normalize
from pim_macro.sw.compiler.tflite_import import UnsupportedModel
from pim_macro.tb.harness import onnx_build as ob


def _run(model, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _input_shape(model):
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def _assert_same_outputs(source, canonical, n=4, seed=0):
    """onnxruntime on both models agrees within 1e-5 of the output range on ``n`` inputs."""
    rng = np.random.default_rng(seed)
    shape = _input_shape(canonical)
    for _ in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        want, got = _run(source, x), _run(canonical, x)
        assert got.shape == want.shape
        span = float(want.max() - want.min()) or 1.0
        assert np.abs(got - want).max() <= 1e-5 * span, np.abs(got - want).max() / span


def _ops(model):
    return [n.op_type for n in model.graph.node]


LENET = ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Reshape", "Gemm", "Relu", "Gemm",
         "Relu", "Gemm"]
EXPECTED_OPS = {
    "lenet5": LENET,
    "lenet5_flatten": LENET,
    "lenet5_static": LENET,
    "lenet5_view": LENET,
    "small_resnet": ["Conv", "Relu", "Conv", "Relu", "Conv", "Add", "Relu", "Conv", "Conv",
                     "Relu", "Conv", "Add", "Relu", "GlobalAveragePool", "Reshape", "Gemm"],
    "keras_mlp": ["Gemm", "Relu", "Gemm", "Relu", "Gemm"],
    "keras_mlp_softmax": ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"],
    "bn1d_mlp": ["Gemm", "Relu", "Gemm"],
    "bn1d_mlp_matmul": ["Gemm", "Relu", "Gemm"],
    "transposed_matmul": ["Gemm", "Relu", "Gemm"],
    "pooling_cnn": ["Conv", "Relu", "AveragePool", "Conv", "Relu", "MaxPool", "AveragePool",
                    "GlobalAveragePool", "Reshape", "Gemm"],
    "depthwise_cnn": ["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "GlobalAveragePool",
                      "Reshape", "Gemm"],
}


def test_every_builder_has_expected_ops():
    assert set(EXPECTED_OPS) == set(ob.BUILDERS)


@pytest.mark.parametrize("name", sorted(ob.BUILDERS))
def test_normalize_builders(name):
    source = ob.BUILDERS[name](np.random.default_rng(13))
    source.metadata_props.add(key="pim_macro.classes", value="[3, 5, 9]")
    before = source.SerializeToString()
    canonical = normalize(source)
    assert source.SerializeToString() == before             # the argument is left alone
    check_canonical(canonical)
    onnx.checker.check_model(canonical, full_check=True)
    assert _ops(canonical) == EXPECTED_OPS[name]
    assert [v.name for v in canonical.graph.input] == ["input"]
    assert [v.name for v in canonical.graph.output] == ["output"]
    src_dims = source.graph.input[0].type.tensor_type.shape.dim
    assert _input_shape(canonical) == [1] + [d.dim_value for d in src_dims[1:]]
    assert {p.key: p.value for p in canonical.metadata_props} == {"pim_macro.classes":
                                                                  "[3, 5, 9]"}
    assert [(o.domain, o.version) for o in canonical.opset_import] == \
        [(o.domain, o.version) for o in source.opset_import]
    shaped = {v.name for v in canonical.graph.value_info}
    for node in canonical.graph.node:
        assert node.output[0] in shaped or node.output[0] == "output"
    _assert_same_outputs(source, canonical)
    again = normalize(canonical)                             # canonical is a fixed point
    assert _ops(again) == _ops(canonical)
    _assert_same_outputs(canonical, again, n=1)


@pytest.mark.parametrize("name,opset", [("lenet5", 13), ("lenet5", 15), ("small_resnet", 13),
                                        ("keras_mlp", 17), ("keras_mlp_softmax", 13),
                                        ("pooling_cnn", 19),
                                        ("transposed_matmul", 21)])
def test_normalize_other_opsets(name, opset):
    source = ob.BUILDERS[name](np.random.default_rng(opset), opset=opset)
    canonical = normalize(source)
    assert _ops(canonical) == EXPECTED_OPS[name]
    assert canonical.opset_import[0].version == opset
    _assert_same_outputs(source, canonical)


def test_column_vector_ops():
    """``relu(W1 @ x.T + b1 (N, 1)).T`` then a Gemm: the Add and Relu on the column move to the
    row (and the Add into the Gemm's bias)."""
    rng = np.random.default_rng(12)
    inits = {"W1": rng.standard_normal((5, 7)).astype(np.float32),
             "b1": rng.standard_normal((5, 1)).astype(np.float32),
             "W2": rng.standard_normal((3, 5)).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["input"], ["xt"], name="t0", perm=[1, 0]),
             helper.make_node("MatMul", ["W1", "xt"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["hr"], name="relu"),
             helper.make_node("Transpose", ["hr"], ["row"], name="t1"),
             helper.make_node("Gemm", ["row", "W2"], ["output"], name="fc", transB=1)]
    source = ob.make_model(nodes, [("input", [1, 7])], [("output", [1, 3])], inits)
    canonical = normalize(source)
    assert _ops(canonical) == ["Gemm", "Relu", "Gemm"]
    _assert_same_outputs(source, canonical)


@pytest.mark.parametrize("opset", [11, 13])
def test_clip_at_zero_is_relu(opset):
    node = helper.make_node("Clip", ["input", "lo"], ["output"], name="clip")
    source = ob.make_model([node], [("input", [1, 6])], [("output", [1, 6])],
                           {"lo": np.array(0.0, np.float32)}, opset=opset)
    canonical = normalize(source)
    assert _ops(canonical) == ["Relu"]
    _assert_same_outputs(source, canonical)
    relu6 = ob.make_model([helper.make_node("Clip", ["input", "lo", "hi"], ["output"],
                                            name="clip")],
                          [("input", [1, 6])], [("output", [1, 6])],
                          {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)})
    _refused(relu6, r"^node 'clip' \(Clip\): op Clip is not supported")


def test_normalize_reads_paths_and_bytes(tmp_path):
    source = ob.keras_mlp(np.random.default_rng(1))
    path = tmp_path / "mlp.onnx"
    onnx.save(source, path)
    from_path = normalize(path)
    from_str = normalize(str(path))
    from_bytes = normalize(source.SerializeToString())
    assert from_path == from_str == from_bytes
    _assert_same_outputs(source, from_path, n=2)


def test_bn_fold_is_exact_in_float64():
    """The folded Gemm equals BatchNormalization's formula computed in float64 (not ORT)."""
    source = ob.bn1d_mlp(np.random.default_rng(2), features=6, hidden=5, classes=3)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64)
             for i in source.graph.initializer}
    canonical = normalize(source)
    gemm = canonical.graph.node[0]
    got_w, got_b = (numpy_helper.to_array(next(i for i in canonical.graph.initializer
                                                if i.name == n)) for n in gemm.input[1:])
    s = inits["bn1.weight"] / np.sqrt(inits["bn1.running_var"] + 1e-5)
    want_w = inits["fc1.weight"] * s[:, None]
    want_b = (inits["fc1.bias"] - inits["bn1.running_mean"]) * s + inits["bn1.bias"]
    np.testing.assert_array_equal(got_w, want_w.astype(np.float32))
    np.testing.assert_array_equal(got_b, want_b.astype(np.float32))


def _gemm_model(rng, *, attrs, w_shape, c=None):
    inits = {"W": rng.standard_normal(w_shape).astype(np.float32)}
    if c is not None:
        inits["C"] = c
    return ob.one_node("Gemm", ["batch", 6], initializers=inits, attrs=attrs)


@pytest.mark.parametrize("attrs,w_shape,c_shape", [
    ({}, (6, 4), None),                                            # no bias, W (K, N)
    ({"alpha": 0.5, "beta": 2.0, "transB": 1}, (4, 6), (1, 4)),    # scaled, C (1, N)
    ({"beta": -1.0}, (6, 4), ()),                                  # scalar C
])
def test_gemm_attributes_folded(attrs, w_shape, c_shape):
    rng = np.random.default_rng(3)
    c = None if c_shape is None else rng.standard_normal(c_shape).astype(np.float32)
    source = _gemm_model(rng, attrs=attrs, w_shape=w_shape, c=c)
    canonical = normalize(source)
    assert _ops(canonical) == ["Gemm"]
    assert {a.name: helper.get_attribute_value(a) for a in canonical.graph.node[0].attribute} \
        == {"transB": 1}
    _assert_same_outputs(source, canonical)


def test_matmul_without_bias_and_constant_mul_after_gemm():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    scale = rng.uniform(0.5, 2, 5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["input", "W"], ["h"], name="mm"),
             helper.make_node("Mul", ["h", "s"], ["h2"], name="mul"),
             helper.make_node("Sub", ["h2", "t"], ["h3"], name="sub"),
             helper.make_node("Relu", ["h3"], ["output"], name="relu")]
    source = ob.make_model(nodes, [("input", ["n", 6])], [("output", ["n", 5])],
                           {"W": w, "s": scale, "t": np.float32(0.25)})
    canonical = normalize(source)
    assert _ops(canonical) == ["Gemm", "Relu"]
    _assert_same_outputs(source, canonical)


def test_input_normalization_folded_into_gemm():
    """``(x - mean) / std`` then BatchNorm1d then a Linear: folded forward into the Gemm."""
    rng = np.random.default_rng(13)
    inits = {"mean": rng.standard_normal(6).astype(np.float32),
             "std": rng.uniform(0.5, 3, (1, 6)).astype(np.float32),
             "W": rng.standard_normal((4, 6)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32)}
    inits.update({f"bn.{k}": rng.uniform(0.5, 1.5, 6).astype(np.float32) for k in "sbmv"})
    nodes = [helper.make_node("Sub", ["input", "mean"], ["centred"], name="sub"),
             helper.make_node("Div", ["centred", "std"], ["scaled"], name="div"),
             helper.make_node("BatchNormalization", ["scaled", "bn.s", "bn.b", "bn.m", "bn.v"],
                              ["normal"], name="bn"),
             helper.make_node("Gemm", ["normal", "W", "b"], ["output"], name="fc", transB=1)]
    source = ob.make_model(nodes, [("input", ["n", 6])], [("output", ["n", 4])], inits)
    canonical = normalize(source)
    assert _ops(canonical) == ["Gemm"]
    _assert_same_outputs(source, canonical)


@pytest.mark.parametrize("group,pads,ok", [(1, [0, 0, 0, 0], True), (3, [0, 0, 0, 0], True),
                                           (1, [1, 1, 1, 1], False)])
def test_input_normalization_before_conv(group, pads, ok):
    """Folded into a Conv only without padding (a padded border would see 0, not the shift)."""
    rng = np.random.default_rng(14)
    inits = {"scale": rng.uniform(0.5, 2, (3, 1, 1)).astype(np.float32),
             "shift": rng.standard_normal((1, 3, 1, 1)).astype(np.float32),
             "w": rng.standard_normal((6, 3 // group, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["input", "scale"], ["a"], name="mul"),
             helper.make_node("Add", ["shift", "a"], ["b"], name="add"),
             helper.make_node("Conv", ["b", "w"], ["output"], name="conv", group=group,
                              pads=pads)]
    source = ob.make_model(nodes, [("input", ["n", 3, 6, 6])], [("output", None)], inits)
    if not ok:
        _refused(source, r"^node 'add' \(Add\): a constant Add is supported only next to a "
                         r"Gemm, MatMul or Conv")
        return
    canonical = normalize(source)
    assert _ops(canonical) == ["Conv"]
    _assert_same_outputs(source, canonical)


def test_ir3_initializers_as_inputs():
    """IR 3 lists initializers among the graph inputs: one real input remains."""
    rng = np.random.default_rng(15)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input.1", "fc.weight", "fc.bias"], ["17"], transB=1)], "g",
        [value("input.1", TensorProto.FLOAT, [None, 4]),
         value("fc.weight", TensorProto.FLOAT, [3, 4]), value("fc.bias", TensorProto.FLOAT, [3])],
        [value("17", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    source.ir_version = 3
    canonical = normalize(source)
    assert [v.name for v in canonical.graph.input] == ["input.1"]
    assert [v.name for v in canonical.graph.output] == ["17"]
    _assert_same_outputs(source, canonical)


def test_identity_to_graph_output_and_squeeze_flatten():
    """GAP -> Squeeze(axes [2, 3]) is a flatten; an Identity feeding the graph output goes."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((2, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Squeeze", ["g", "axes"], ["s"], name="squeeze"),
             helper.make_node("Gemm", ["s", "fc"], ["y"], name="fc", transB=1),
             helper.make_node("Identity", ["y"], ["output"], name="id")]
    source = ob.make_model(nodes, [("input", ["n", 3, 6, 6])], [("output", ["n", 2])],
                           {"w": w, "axes": np.array([2, 3], np.int64), "fc": fc})
    canonical = normalize(source)
    assert _ops(canonical) == ["Conv", "GlobalAveragePool", "Reshape", "Gemm"]
    _assert_same_outputs(source, canonical)


@pytest.mark.parametrize("opset,keepdims", [(17, 0), (18, 1), (18, 0)])
def test_reduce_mean_is_global_average_pool(opset, keepdims):
    """PyTorch's ``x.mean((2, 3))``: axes an attribute up to opset 17, an input from 18."""
    rng = np.random.default_rng(16)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "fc": rng.standard_normal((2, 4)).astype(np.float32)}
    if opset >= 18:
        inits["axes"] = np.array([-1, 2], np.int64)
        mean = helper.make_node("ReduceMean", ["c", "axes"], ["m"], name="mean",
                                keepdims=keepdims)
    else:
        mean = helper.make_node("ReduceMean", ["c"], ["m"], name="mean", axes=[2, 3],
                                keepdims=keepdims)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv"), mean]
    if keepdims:
        nodes.append(helper.make_node("Flatten", ["m"], ["f"], name="flatten"))
    nodes.append(helper.make_node("Gemm", [nodes[-1].output[0], "fc"], ["output"], name="fc",
                                  transB=1))
    source = ob.make_model(nodes, [("input", ["n", 3, 6, 6])], [("output", ["n", 2])], inits,
                           opset=opset)
    canonical = normalize(source)
    assert _ops(canonical) == ["Conv", "GlobalAveragePool", "Reshape", "Gemm"]
    _assert_same_outputs(source, canonical)


def test_order_keeping_transpose_chain_is_one_reshape():
    """GAP (1, C, 1, 1) -> Transpose [0, 2, 3, 1] -> Reshape (1, 1, C) -> Flatten: one Reshape."""
    rng = np.random.default_rng(17)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["g"], name="gap"),
             helper.make_node("Transpose", ["g"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "s"], ["r"], name="reshape"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["output"], name="fc", transB=1)]
    source = ob.make_model(nodes, [("input", ["n", 5, 4, 4])], [("output", ["n", 2])],
                           {"s": np.array([1, 1, 5], np.int64),
                            "fc": rng.standard_normal((2, 5)).astype(np.float32)})
    canonical = normalize(source)
    assert _ops(canonical) == ["GlobalAveragePool", "Reshape", "Gemm"]
    _assert_same_outputs(source, canonical)


def test_unflattening_reshape_refused():
    rng = np.random.default_rng(18)
    nodes = [helper.make_node("Reshape", ["input", "s"], ["img"], name="unflatten"),
             helper.make_node("Conv", ["img", "w"], ["output"], name="conv")]
    source = ob.make_model(nodes, [("input", ["n", 64])], [("output", None)],
                           {"s": np.array([-1, 1, 8, 8], np.int64),
                            "w": rng.standard_normal((2, 1, 3, 3)).astype(np.float32)})
    _refused(source, r"^node 'unflatten' \(Reshape\): a reshape of \(1, 64\) to "
                     r"\(1, 1, 8, 8\) is not supported: only flattening to \(1, n\)$")


@pytest.mark.parametrize("op,auto_pad,size,stride", [
    ("Conv", "SAME_LOWER", 7, 2), ("Conv", "SAME_UPPER", 6, 2), ("Conv", "VALID", 7, 2),
    ("MaxPool", "SAME_UPPER", 7, 2), ("MaxPool", "SAME_LOWER", 6, 2),
    ("AveragePool", "SAME_LOWER", 6, 2)])
def test_auto_pad_resolved(op, auto_pad, size, stride):
    """The ONNX spec's SAME_UPPER / SAME_LOWER rule (odd padding at the end / beginning)."""
    rng = np.random.default_rng(6)
    attrs = {"auto_pad": auto_pad, "strides": [stride, stride], "kernel_shape": [4, 4]}
    inits = {}
    if op == "Conv":
        inits = {"w": rng.standard_normal((2, 3, 4, 4)).astype(np.float32)}
    source = ob.one_node(op, [1, 3, size, size], initializers=inits, attrs=attrs)
    canonical = normalize(source)
    attrs = {a.name: helper.get_attribute_value(a) for a in canonical.graph.node[0].attribute}
    assert "auto_pad" not in attrs
    _assert_same_outputs(source, canonical)


def test_ceil_mode_accepted_when_it_changes_nothing():
    source = ob.one_node("MaxPool", [1, 2, 8, 8], attrs={"kernel_shape": [2, 2],
                                                        "strides": [2, 2], "ceil_mode": 1})
    canonical = normalize(source)
    _assert_same_outputs(source, canonical)


def test_depthwise_multiplier():
    source = ob.depthwise_cnn(np.random.default_rng(7), multiplier=2)
    canonical = normalize(source)
    check_canonical(canonical)
    _assert_same_outputs(source, canonical)


# -- errors -----------------------------------------------------------------------------------


def _with_constant_node(value):
    """A Gemm whose bias comes from a Constant node holding ``value``."""
    w = np.ones((3, 4), np.float32)
    nodes = [helper.make_node("Constant", [], ["b"], name="bias_const",
                              value=numpy_helper.from_array(value)),
             helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="fc", transB=1)]
    return ob.make_model(nodes, [("input", [1, 4])], [("output", [1, 3])], {"W": w})


def test_nan_weight_refused():
    model = ob.lenet5(np.random.default_rng(8))
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "fc1.weight"))
    w = w.copy()
    w[3, 7] = np.nan
    bad = ob.set_initializer(model, "fc1.weight", w)
    message = "initializer 'fc1.weight' holds NaN: a model's weights and biases must be finite"
    for call in (load_onnx, normalize):
        with pytest.raises(ValueError) as info:
            call(bad)
        assert str(info.value) == message


def test_inf_bias_refused():
    model = ob.keras_mlp(np.random.default_rng(9))
    name = "sequential/dense/BiasAdd/ReadVariableOp:0"
    b = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name)).copy()
    b[0] = -np.inf
    with pytest.raises(ValueError, match=f"^initializer '{name}' holds -inf: a model's weights "
                                         f"and biases must be finite$"):
        load_onnx(ob.set_initializer(model, name, b))


def test_inf_in_constant_node_refused():
    bad = _with_constant_node(np.array([1.0, np.inf, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"^node 'bias_const' \(Constant\): attribute 'value' "
                                         r"holds inf: a model's weights and biases must be "
                                         r"finite$"):
        normalize(bad)
    good = _with_constant_node(np.array([1.0, 2.0, 0.0], np.float32))
    _assert_same_outputs(good, normalize(good), n=1)


def _gemm_bn(gemm_attrs=None, bn_attrs=None):
    """Gemm 'fc' (attributes ``gemm_attrs``) then BatchNormalization 'bn' (``bn_attrs``)."""
    rng = np.random.default_rng(21)
    inits = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(3, np.float32),
             "s": np.ones(3, np.float32), "bb": np.zeros(3, np.float32),
             "mu": np.zeros(3, np.float32), "var": np.ones(3, np.float32)}
    nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["g"], name="fc", transB=1,
                              **(gemm_attrs or {})),
             helper.make_node("BatchNormalization", ["g", "s", "bb", "mu", "var"], ["output"],
                              name="bn", **(bn_attrs or {}))]
    return ob.make_model(nodes, [("input", ["N", 4])], [("output", ["N", 3])], inits)


@pytest.mark.parametrize("model, message", [
    (_gemm_bn({"alpha": float("nan")}), "node 'fc' (Gemm): attribute 'alpha' holds NaN"),
    (_gemm_bn({"beta": float("inf")}), "node 'fc' (Gemm): attribute 'beta' holds inf"),
    (_gemm_bn({"beta": float("-inf")}), "node 'fc' (Gemm): attribute 'beta' holds -inf"),
    (_gemm_bn(bn_attrs={"epsilon": float("nan")}),
     "node 'bn' (BatchNormalization): attribute 'epsilon' holds NaN"),
    # any op, even one normalize refuses anyway: the finite check comes first
    (ob.one_node("LeakyRelu", [1, 4], attrs={"alpha": float("inf")}),
     "node 'node' (LeakyRelu): attribute 'alpha' holds inf"),
])
def test_nonfinite_float_attribute_names_the_node(model, message):
    """A NaN / inf FLOAT or FLOATS attribute of any node (which the passes would fold into the
    weights, where only an internal initializer name is left) is refused by load_onnx and by
    normalize, in one line naming the node and the attribute."""
    for call in (load_onnx, normalize):
        with pytest.raises(ValueError) as info:
            call(model)
        text = str(info.value)
        assert message in text and "\n" not in text, text
        assert text.endswith("a node's attributes must be finite"), text


def test_constant_value_floats_nan_refused():
    nodes = [helper.make_node("Constant", [], ["b"], name="bias_const",
                              value_floats=[0.0, float("nan"), 1.0]),
             helper.make_node("Gemm", ["input", "W", "b"], ["output"], name="fc", transB=1)]
    model = ob.make_model(nodes, [("input", [1, 4])], [("output", [1, 3])],
                          {"W": np.ones((3, 4), np.float32)})
    with pytest.raises(ValueError, match=r"^node 'bias_const' \(Constant\): attribute "
                                         r"'value_floats' holds NaN: a model's weights and "
                                         r"biases must be finite$"):
        normalize(model)


def _gemm_in(elem, np_type, rng):
    """``model.double()`` / ``.half()`` behind a float32 interface: Cast 'cast_in' to ``elem``,
    a Gemm 'fc' on weights of ``np_type``, Cast 'cast_out' back to float."""
    return ob.make_model(
        [helper.make_node("Cast", ["input"], ["xc"], to=elem, name="cast_in"),
         helper.make_node("Gemm", ["xc", "w", "b"], ["g"], transB=1, name="fc"),
         helper.make_node("Relu", ["g"], ["r"], name="relu"),
         helper.make_node("Cast", ["r"], ["output"], to=TensorProto.FLOAT, name="cast_out")],
        [("input", ["N", 6])], [("output", ["N", 3])],
        {"w": rng.normal(size=(3, 6)).astype(np_type), "b": rng.normal(size=3).astype(np_type)})


@pytest.mark.parametrize("elem, np_type, kind", [
    (TensorProto.DOUBLE, np.float64, "DOUBLE (float64)"),
    (TensorProto.FLOAT16, np.float16, "FLOAT16 (float16)")])
def test_float64_and_float16_computation_refused(elem, np_type, kind):
    """A model computing in float64 / float16 is refused in one line naming the node that first
    makes such data (not "the normalized model is not valid ONNX", kept for our own bugs)."""
    model = _gemm_in(elem, np_type, np.random.default_rng(22))
    _run(model, np.ones((1, 6), np.float32))           # a valid model onnxruntime runs
    with pytest.raises(UnsupportedModel) as info:
        normalize(model)
    assert str(info.value) == (f"node 'cast_in' (Cast): output 'xc' is {kind}: only float32 "
                               f"models are supported (export the model in float32, e.g. "
                               f"model.float() in PyTorch)")


def test_float16_weights_cast_to_float32_accepted():
    """Weights stored as float16 and cast to float32 are constants, not float16 computation:
    accepted, and the canonical model computes what the source does."""
    rng = np.random.default_rng(23)
    model = ob.make_model(
        [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT, name="cast_w"),
         helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1, name="fc")],
        [("input", ["N", 6])], [("output", ["N", 3])],
        {"w16": rng.normal(size=(3, 6)).astype(np.float16),
         "b": rng.normal(size=3).astype(np.float32)})
    canonical = normalize(model)
    assert _ops(canonical) == ["Gemm"]
    _assert_same_outputs(model, canonical)


def _refused(model, pattern):
    with pytest.raises(UnsupportedModel, match=pattern) as info:
        normalize(model)
    assert "\n" not in str(info.value)


def test_dilated_conv_refused():
    model = ob.one_node("Conv", [1, 2, 8, 8], initializers={
        "w": np.ones((4, 2, 3, 3), np.float32)}, attrs={"dilations": [2, 2]})
    _refused(model, r"^node 'node' \(Conv\): dilation \[2, 2\] is not supported$")


def test_grouped_conv_refused():
    model = ob.one_node("Conv", [1, 4, 8, 8], initializers={
        "w": np.ones((4, 2, 3, 3), np.float32)}, attrs={"group": 2})
    _refused(model, r"^node 'node' \(Conv\): grouped convolution \(group 2 of 4 input "
                    r"channels\) is not supported")


def test_training_mode_dropout_refused():
    model = ob.one_node("Dropout", [1, 4], initializers={
        "ratio": np.array(0.5, np.float32), "training": np.array(True)}, n_outputs=2)
    _refused(model, r"^node 'node' \(Dropout\): training mode \(training_mode=True\) is not "
                    r"supported")


def test_two_inputs_refused():
    node = helper.make_node("Add", ["a", "b"], ["output"], name="add")
    model = ob.make_model([node], [("a", [1, 4]), ("b", [1, 4])], [("output", [1, 4])])
    _refused(model, r"^the model has 2 inputs \('a', 'b'\): one is supported$")


def test_symbolic_feature_dim_refused():
    model = ob.one_node("Relu", ["batch", "features"])
    _refused(model, r"^input 'input' has a symbolic dimension 'features' at axis 1: only the "
                    r"batch dimension \(axis 0\) may be symbolic$")


def test_fixed_batch_above_one_refused():
    _refused(ob.one_node("Relu", [8, 4]), r"^input 'input' has a fixed batch of 8")


def test_integer_input_refused():
    node = helper.make_node("Cast", ["input"], ["output"], name="cast", to=TensorProto.FLOAT)
    value = helper.make_tensor_value_info("input", TensorProto.INT64, [1, 4])
    model = ob.make_model([node], [value], [("output", [1, 4])])
    _refused(model, r"^input 'input' is INT64: only float32 inputs are supported$")


def test_sigmoid_refused():
    _refused(ob.one_node("Sigmoid", [1, 4]), r"^node 'node' \(Sigmoid\): op Sigmoid is not "
                                             r"supported")


def test_4d_transpose_refused():
    model = ob.one_node("Transpose", [1, 2, 3, 4], attrs={"perm": [0, 2, 3, 1]})
    _refused(model, r"^node 'node' \(Transpose\): a 4-D Transpose \(perm \[0, 2, 3, 1\]\)")


def test_ceil_mode_that_changes_shape_refused():
    model = ob.one_node("MaxPool", [1, 2, 7, 7], attrs={"kernel_shape": [2, 2],
                                                       "strides": [2, 2], "ceil_mode": 1})
    _refused(model, r"^node 'node' \(MaxPool\): ceil_mode=1 is not supported")


def test_bn_not_after_linear_refused():
    rng = np.random.default_rng(10)
    inits = {k: rng.uniform(0.5, 1.5, 4).astype(np.float32) for k in "sbmv"}
    model = ob.one_node("BatchNormalization", [1, 4], initializers=inits)
    _refused(model, r"^node 'node' \(BatchNormalization\): BatchNormalization is supported "
                    r"only next to a Gemm, MatMul or Conv")


def test_garbage_file_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"this is not a protobuf \xff\xfe\x00" * 7)
    with pytest.raises(ValueError, match=r"^cannot read ONNX model '.*model\.onnx': not an "
                                         r"ONNX model") as info:
        load_onnx(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^cannot read ONNX model bytes: not an ONNX model"):
        normalize(b"\x08\x07garbage")


def test_directory_and_missing_file_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^cannot read ONNX model '.*': it is a directory$"):
        load_onnx(tmp_path)
    with pytest.raises(ValueError, match=r"^cannot read ONNX model '.*nope\.onnx': no such "
                                         r"file$"):
        load_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match=r"^expected a path, bytes or an onnx.ModelProto, not "
                                         r"int$"):
        load_onnx(3)


def test_check_canonical_refuses_non_canonical():
    """check_canonical on its own: the source models are not canonical, each for a reason."""
    rng = np.random.default_rng(11)
    with pytest.raises(UnsupportedModel, match=r"graph input 'input' has no static batch-1"):
        check_canonical(ob.lenet5(rng))                          # symbolic batch
    infer = onnx.shape_inference.infer_shapes
    with pytest.raises(UnsupportedModel, match=r"^node '/conv1/Conv' \(Conv\): output "
                                               r"'/conv1/Conv_output_0' has no static"):
        check_canonical(ob.lenet5(rng, dynamic_batch=False))     # no value_info
    with pytest.raises(UnsupportedModel, match=r"^node '/Constant' \(Constant\): op Constant is "
                                               r"not supported"):
        check_canonical(infer(ob.lenet5(rng, dynamic_batch=False)))
    with pytest.raises(UnsupportedModel, match=r"^initializer 'sequential/dropout_1/"
                                               r"training_mode' is bool: canonical is float32"):
        check_canonical(infer(ob.keras_mlp(rng, dynamic_batch=False)))
    with pytest.raises(UnsupportedModel, match=r"\(Transpose\): op Transpose is not supported"):
        check_canonical(infer(ob.transposed_matmul(rng, dynamic_batch=False)))
    with pytest.raises(UnsupportedModel, match=r"^node '/fc1/Gemm' \(Gemm\): attributes "
                                               r"\['alpha', 'beta', 'transB'\], canonical"):
        check_canonical(infer(ob.bn1d_mlp(rng, dynamic_batch=False)))
