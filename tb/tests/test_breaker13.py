"""Issue 13's breaker: each test is one fault found by probing, with the exact input that breaks.

Every test here failed on the branch it was written against (``brk`` at 08db51d) and passes
since the faults were fixed (each docstring still says what the fault was). References:
onnxruntime on the original float model, LiteRT's reference kernels on the written ``.tflite``. Cost: golden/numpy-level only, a few seconds in all.
"""

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pim_macro.sw.compiler.graph_quantizer import (quantize_graph, to_model_layout,
                                                   to_user_layout)
from pim_macro.sw.compiler.onnx_import import normalize
from pim_macro.sw.compiler.tflite_import import UnsupportedModel, load_tflite
from pim_macro.tb.harness.onnx_build import make_model


def _pim(*args):
    """``pim *args`` in this process: ``(exit code, stdout, stderr)``."""
    from pim_macro.sw import cli
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _w(rng, *shape):
    return rng.normal(0, 0.5, shape).astype(np.float32)


def _onnxruntime(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: s[None]})[0] for s in x])


def _quantize_and_compare(model, shape, seed=0):
    """normalize + quantize_graph on ``model``; Graph.run's dequantized outputs against
    onnxruntime on the original (saturated at the calibrated output range): max error within
    10 % of the output range."""
    rng = np.random.default_rng(seed)
    canonical = normalize(model)
    calib = rng.normal(0, 1, (256, *shape)).astype(np.float32)
    g = load_tflite(quantize_graph(canonical, calib))
    x = calib[:8]
    y = to_user_layout(g, np.concatenate([g.run([s[None]])[0] for s in to_model_layout(g, x)]))
    out = g.tensors[g.ops[-1].inputs[0]]
    ref = np.clip(_onnxruntime(model, x), out.scale * (-128 - out.zero_point),
                  out.scale * (127 - out.zero_point))
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 0.10 * np.abs(ref).max()


# -- 1. A Relu that is not right after a Gemm / Conv / Add ----------------------------------------

def _relu_after_maxpool(rng):
    """PyTorch's classic MNIST net: ``F.relu(F.max_pool2d(self.conv1(x), 2))``."""
    return make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Relu", ["p"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 1, 8, 8])], [("output", ["N", 4])],
        {"w": _w(rng, 4, 1, 3, 3), "b": _w(rng, 4), "fw": _w(rng, 4, 36), "fb": _w(rng, 4)})


def _relu_on_one_branch(rng):
    """A residual add with a Relu on one branch only: ``y + relu(y)``, y = Gemm(x)."""
    return make_model(
        [helper.make_node("Gemm", ["input", "w", "b"], ["g"], transB=1),
         helper.make_node("Relu", ["g"], ["r"]),
         helper.make_node("Add", ["r", "g"], ["output"])],
        [("input", ["N", 6])], [("output", ["N", 3])], {"w": _w(rng, 3, 6), "b": _w(rng, 3)})


def _relu_after_flatten(rng):
    return make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Relu", ["f"], ["r"]),
         helper.make_node("Gemm", ["r", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 1, 5, 5])], [("output", ["N", 3])],
        {"w": _w(rng, 2, 1, 3, 3), "b": _w(rng, 2), "fw": _w(rng, 3, 18), "fb": _w(rng, 3)})


@pytest.mark.parametrize("build, shape", [(_relu_after_maxpool, (1, 8, 8)),
                                          (_relu_on_one_branch, (6,)),
                                          (_relu_after_flatten, (1, 5, 5))],
                         ids=["relu_after_maxpool", "relu_on_one_branch", "relu_after_flatten"])
def test_relu_not_fused_is_quantized(build, shape):
    """FAULT: normalize accepts these (Relu is canonical; check_canonical passes), but
    quantize_graph refuses them: "a Relu must follow a Gemm, Conv or Add whose output nothing
    else uses". TFLite has a standalone int8 RELU (and Relu commutes with MaxPool / reshapes),
    so they should quantize and match onnxruntime within the int8 error."""
    _quantize_and_compare(build(np.random.default_rng(1)), shape)


# -- 2. NHWC calibration / test data read as NCHW by pim quantize ----------------------------------

def _small_cnn(rng):
    """3-channel 4x6 images (NCHW), Conv 3x3 -> Flatten -> Gemm (3 classes)."""
    return make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 3, 4, 6])], [("output", ["N", 3])],
        {"w": _w(rng, 2, 3, 3, 3), "b": _w(rng, 2), "fw": _w(rng, 3, 16), "fb": _w(rng, 3)})


@pytest.mark.parametrize("option", ["--test", "--calib"])
def test_quantize_nhwc_data_not_silently_misread(tmp_path, option):
    """FAULT: the model takes NCHW (B, 3, 4, 6). ``pim infer`` on the .tflite accepts an NHWC
    batch (B, 4, 6, 3) and computes it right, but ``pim quantize --test Xnhwc.npy`` (or
    ``--calib``) only compares the sample *size* (72 values) and reshapes the NHWC array to NCHW:
    exit 0 and a report (relative error, accuracy) of scrambled images. It should refuse the
    shape (one ``pim: error:`` line) or read it as pim infer does (the same report as NCHW)."""
    rng = np.random.default_rng(3)
    onnx.save(_small_cnn(rng), tmp_path / "m.onnx")
    x = rng.normal(size=(64, 3, 4, 6)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Xnhwc.npy", x.transpose(0, 2, 3, 1))
    base = ["quantize", "--model", tmp_path / "m.onnx", "--json"]
    code, out, err = _pim(*base, "--calib", tmp_path / "X.npy", "--out", tmp_path / "a.tflite")
    assert code == 0, err
    want = json.loads(out)
    other = {"--test": ["--calib", tmp_path / "X.npy", "--test", tmp_path / "Xnhwc.npy"],
             "--calib": ["--calib", tmp_path / "Xnhwc.npy", "--test", tmp_path / "X.npy"]}
    code, out, err = _pim(*base, *other[option], "--out", tmp_path / "b.tflite")
    if code == 0:
        got = json.loads(out)
        assert got["relative_error"] == want["relative_error"], \
            f"{option} NHWC accepted and misread: relative error {got['relative_error']:.4f} " \
            f"vs {want['relative_error']:.4f} on the same samples in NCHW"
    else:
        assert code == 2 and err.startswith("pim: error: ") and err.count("\n") == 1, err


# -- 3. A float64 model: the "our bug" message ----------------------------------------------------

def test_float64_weights_give_a_node_message():
    """FAULT: a model computing in float64 (input cast to double, float64 Gemm weights, cast
    back: what ``model.double()`` exports look like behind a float32 interface) fails in
    normalize with "the normalized model is not valid ONNX: [ShapeInferenceError] (op_type:Gemm):
    B has inconsistent type tensor(float)" -- the message normalize keeps for its own bugs (it
    converted the weights to float32 but left the Casts to double). It should either run (the
    casts dropped) or refuse in one line naming the node (e.g. the Cast) as the contract says."""
    rng = np.random.default_rng(4)
    model = make_model(
        [helper.make_node("Cast", ["input"], ["x64"], to=TensorProto.DOUBLE, name="cast_in"),
         helper.make_node("Gemm", ["x64", "w", "b"], ["g"], transB=1, name="fc"),
         helper.make_node("Cast", ["g"], ["output"], to=TensorProto.FLOAT, name="cast_out")],
        [("input", ["N", 6])], [("output", ["N", 3])],
        {"w": _w(rng, 3, 6).astype(np.float64), "b": _w(rng, 3).astype(np.float64)})
    try:
        canonical = normalize(model)
    except UnsupportedModel as exc:
        assert "not valid ONNX" not in str(exc) and "node '" in str(exc), str(exc)
        return
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(_onnxruntime(canonical, x), _onnxruntime(model, x), rtol=1e-5,
                               atol=1e-5)


# -- 4. --predictions refused under the name --out ------------------------------------------------

@pytest.mark.parametrize("target", ["input", "empty", "dir"])
def test_predictions_errors_name_predictions(tmp_path, target):
    """FAULT: ``pim infer --predictions X.npy`` where X.npy is the --input says "--out X.npy is
    the same file as --input X.npy: give --out another file" (no --out was given); likewise
    ``--predictions ''`` ("--out is empty") and ``--predictions DIR/`` ("--out DIR/ is a
    directory"). The one line must name the option the user gave: --predictions."""
    rng = np.random.default_rng(5)
    model = make_model([helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)],
                       [("input", ["N", 6])], [("output", ["N", 3])],
                       {"w": _w(rng, 3, 6), "b": _w(rng, 3)})
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "X.npy", rng.normal(size=(16, 6)))
    code, _, err = _pim("quantize", "--model", tmp_path / "m.onnx", "--calib",
                        tmp_path / "X.npy", "--out", tmp_path / "m.tflite")
    assert code == 0, err
    (tmp_path / "d").mkdir()
    predictions = {"input": tmp_path / "X.npy", "empty": "", "dir": f"{tmp_path / 'd'}/"}[target]
    code, out, err = _pim("infer", "--model", tmp_path / "m.tflite", "--input",
                          tmp_path / "X.npy", "--predictions", predictions)
    assert code == 2 and out == "" and err.startswith("pim: error: "), err
    assert "--predictions" in err and "--out" not in err, err


# -- 5. The labels a classifier was fitted on -----------------------------------------------------

def test_bool_labels_of_a_bool_classifier(tmp_path):
    """FAULT: an MLPClassifier fitted on boolean labels (``y = df.target > 0``; classes_
    [False, True]) quantizes, its classes kept as [0, 1] (as_classes turns booleans into ints),
    but ``pim quantize --labels L.npy`` with that same ``y`` is refused: "--labels: labels must
    be integers or strings, not bool". The labels the model was trained on should be taken
    (as the classes were), and the accuracy equal scikit-learn's within int8 agreement."""
    import warnings
    import joblib
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 4))
    y = x[:, 0] + x[:, 1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((8,), max_iter=300, random_state=0).fit(x, y)
    joblib.dump(clf, tmp_path / "c.pkl")
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "L.npy", y)
    code, out, err = _pim("quantize", "--model", tmp_path / "c.pkl", "--calib",
                          tmp_path / "X.npy", "--labels", tmp_path / "L.npy", "--out",
                          tmp_path / "m.tflite", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["float_accuracy"] == np.mean(clf.predict(x) == y)


# -- 6. A channel with near-zero weights and an ordinary bias -------------------------------------

def test_pruned_channel_bias_fits_as_tflite_does():
    """FAULT: a Conv + BatchNormalization where one channel's BN scale (gamma) was driven to
    1e-9 (L1 "network slimming" pruning does that; the BN shift beta stays 0.5). Folded, that
    channel's weights are ~1e-9 and its bias 0.5; at the bias scale input_scale * w_scale[c] the
    bias is ~1e12 and quantize_graph refuses the whole model: "the bias does not fit in int32".
    TFLite's own quantizer widens that channel's weight scale instead
    (tensorflow/lite/tools/optimize: utils::AdjustWeightsForBiasScale, called from
    quantize_model.cc before QuantizeBias): the model quantizes, and its outputs are within the
    int8 error of onnxruntime."""
    rng = np.random.default_rng(7)
    gamma = np.array([1.0, 1e-9, 0.8, 1.2], np.float32)
    model = make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
         helper.make_node("Relu", ["n"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 2, 6, 6])], [("output", ["N", 3])],
        {"w": _w(rng, 4, 2, 3, 3), "b": _w(rng, 4), "gamma": gamma,
         "beta": np.full(4, 0.5, np.float32), "mean": _w(rng, 4),
         "var": np.ones(4, np.float32), "fw": _w(rng, 3, 4), "fb": _w(rng, 3)})
    _quantize_and_compare(model, (2, 6, 6))


# -- 7. Error messages about the data that contradict themselves / the user's layout --------------

@pytest.fixture
def cnn_files(tmp_path):
    """(folder, X (3, 2, 4, 4) float32 NCHW) with m.onnx (Conv -> Relu -> MaxPool -> Gemm) and
    its m.tflite made by pim quantize."""
    rng = np.random.default_rng(8)
    model = make_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1)],
        [("input", ["N", 2, 4, 4])], [("output", ["N", 3])],
        {"w": _w(rng, 3, 2, 3, 3), "b": _w(rng, 3), "fw": _w(rng, 3, 12), "fb": _w(rng, 3)})
    onnx.save(model, tmp_path / "m.onnx")
    x = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    code, _, err = _pim("quantize", "--model", tmp_path / "m.onnx", "--calib", tmp_path / "X.npy",
                        "--out", tmp_path / "m.tflite")
    assert code == 0, err
    return tmp_path, x


def test_empty_test_batch_message(cnn_files):
    """FAULT: ``pim quantize --test E.npy`` with E of shape (0, 2, 4, 4) (no samples) says
    "the test samples must have 32 values (shape (2, 4, 4)), not shape (2, 4, 4)": the shape it
    names as wrong is the right one. It should say the test data holds no samples (as the
    empty --calib does: "must be a non-empty batch")."""
    folder, x = cnn_files
    np.save(folder / "E.npy", x[:0])
    code, _, err = _pim("quantize", "--model", folder / "m.onnx", "--calib", folder / "X.npy",
                        "--test", folder / "E.npy", "--out", folder / "m2.tflite")
    assert code == 2 and err.startswith("pim: error: ") and err.count("\n") == 1, err
    assert "not shape (2, 4, 4)" not in err and ("empty" in err or "no samples" in err), err


def test_infer_shape_error_in_the_users_layout(cnn_files):
    """FAULT: ``pim infer`` on a .tflite made from an ONNX model takes ONNX's NCHW batches
    (B, 2, 4, 4) (README; to_model_layout). Given one unbatched sample (2, 4, 4) it answers
    "input 'input' must have shape (B, 4, 4, 2), not (2, 4, 4)": the internal NHWC shape, which
    sends the ONNX user to transpose their data. The one line should name (B, 2, 4, 4)."""
    folder, x = cnn_files
    np.save(folder / "U.npy", x[0])
    code, _, err = _pim("infer", "--model", folder / "m.tflite", "--input", folder / "U.npy")
    assert code == 2 and err.startswith("pim: error: ") and err.count("\n") == 1, err
    assert "(B, 2, 4, 4)" in err, err


# -- 8. Classes that do not fit the outputs, written into the .tflite -----------------------------

@pytest.mark.parametrize("classes", ['["a", "b"]', '["a", "b", "c", "d"]'])
def test_quantize_refuses_classes_of_the_wrong_count(tmp_path, classes):
    """FAULT: an ONNX model with 3 outputs whose ``pim_macro.classes`` metadata lists 2 (or 4)
    classes: ``pim quantize --out m.tflite`` exits 0 and writes them into the .tflite (its
    report even prints them); only later does ``pim infer --predictions`` fail ("2 classes for 3
    outputs: expected 3"). quantize should refuse in one line and write nothing (as it refuses
    repeated or mixed classes), so that no .tflite carries classes it cannot decode."""
    rng = np.random.default_rng(9)
    model = make_model([helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)],
                       [("input", ["N", 6])], [("output", ["N", 3])],
                       {"w": _w(rng, 3, 6), "b": _w(rng, 3)})
    helper.set_model_props(model, {"pim_macro.classes": classes})
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "X.npy", rng.normal(size=(10, 6)))
    code, out, err = _pim("quantize", "--model", tmp_path / "m.onnx", "--calib",
                          tmp_path / "X.npy", "--out", tmp_path / "m.tflite")
    assert code == 2 and out == "" and err.startswith("pim: error: "), (code, out, err)
    assert not (tmp_path / "m.tflite").exists()


# -- 9. A non-finite attribute blamed on an initializer the user's model does not have ------------

@pytest.mark.parametrize("case", ["gemm_alpha_nan", "gemm_beta_inf", "bn_epsilon_nan"])
def test_nonfinite_attribute_names_the_node(case):
    """FAULT: load_onnx's finite check looks at FLOAT attributes of Constant nodes only. A Gemm
    named 'fc' with alpha=NaN (or beta=inf), or a BatchNormalization named 'bn' with
    epsilon=NaN, passes it, and normalize fails later on its own folded copy: "initializer
    'fc.weight' is not finite" / "initializer 'weight' is not finite" -- initializers the user's
    model does not have (its are 'w', 'b'), the node and attribute unnamed. The contract: one
    line naming the node (name and op) and what is wrong (issue 13: "give the real one")."""
    rng = np.random.default_rng(10)
    inits = {"w": _w(rng, 3, 6), "b": _w(rng, 3)}
    if case == "bn_epsilon_nan":
        nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["g"], transB=1, name="fc"),
                 helper.make_node("BatchNormalization", ["g", "s", "bb", "mu", "var"],
                                  ["output"], epsilon=float("nan"), name="bn")]
        inits.update(s=_w(rng, 3), bb=_w(rng, 3), mu=_w(rng, 3), var=np.ones(3, np.float32))
        node = "'bn' (BatchNormalization)"
    else:
        attr = {"gemm_alpha_nan": {"alpha": float("nan")}, "gemm_beta_inf": {"beta": np.inf}}
        nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1, name="fc",
                                  **attr[case])]
        node = "'fc' (Gemm)"
    model = make_model(nodes, [("input", ["N", 6])], [("output", ["N", 3])], inits)
    with pytest.raises(ValueError) as info:
        normalize(model)
    assert node in str(info.value), str(info.value)


# -- 10. A model whose output is a fused Relu: KeyError traceback ---------------------------------

def _ends_in_relu(rng, kind):
    if kind == "gemm_relu":             # Keras Dense(3, activation="relu") as the last layer
        return make_model([helper.make_node("Gemm", ["input", "w", "b"], ["g"], transB=1),
                           helper.make_node("Relu", ["g"], ["output"])],
                          [("input", ["N", 6])], [("output", ["N", 3])],
                          {"w": _w(rng, 3, 6), "b": _w(rng, 3)}), (6,)
    if kind == "clamp_min0":            # torch.clamp(x, min=0): Clip(x, 0), made Relu
        return make_model([helper.make_node("Gemm", ["input", "w", "b"], ["g"], transB=1),
                           helper.make_node("Clip", ["g", "lo"], ["output"])],
                          [("input", ["N", 6])], [("output", ["N", 3])],
                          {"w": _w(rng, 3, 6), "b": _w(rng, 3),
                           "lo": np.array(0, np.float32)}), (6,)
    return make_model([helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[3, 3],
                                        pads=[1] * 4),      # an image out: Conv + ReLU
                       helper.make_node("Relu", ["c"], ["output"])],
                      [("input", ["N", 2, 4, 4])], [("output", ["N", 3, 4, 4])],
                      {"w": _w(rng, 3, 2, 3, 3), "b": _w(rng, 3)}), (2, 4, 4)


@pytest.mark.parametrize("kind", ["gemm_relu", "clamp_min0", "conv_relu_image"])
def test_model_ending_in_relu(tmp_path, kind):
    """FAULT: when the graph output is a Relu fused into the Gemm / Conv before it,
    _Quantizer.build looks the output up through its alias (the Gemm's own output, 'g'), which
    holds no tensor: ``KeyError: 'g'``. ``pim quantize --model m.onnx --calib X.npy --out
    o.tflite`` prints a Python traceback (exit 1). Such models are everyday: a last Dense with
    activation="relu", torch.clamp(min=0), a Conv + ReLU feature map. They should quantize
    (exit 0) and match onnxruntime within the int8 error."""
    model, shape = _ends_in_relu(np.random.default_rng(11), kind)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "X.npy", np.random.default_rng(12).normal(size=(64, *shape)))
    try:
        code, _, err = _pim("quantize", "--model", tmp_path / "m.onnx", "--calib",
                            tmp_path / "X.npy", "--out", tmp_path / "o.tflite")
    except KeyError as exc:
        pytest.fail(f"pim quantize raised KeyError {exc} (a traceback for the user)")
    assert code == 0, err
    _quantize_and_compare(model, shape)
