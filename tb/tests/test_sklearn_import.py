"""from_sklearn (pim_macro.sw.compiler.sklearn_import): scikit-learn MLPs and Pipelines as
canonical float ONNX models, checked against scikit-learn itself (predict, predict_proba) through
onnxruntime, and their refusals. Small models fitted here (seeded): about 5 s."""

import json
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

from pim_macro.sw.compiler.classes import predict  # noqa: E402
from pim_macro.sw.compiler.quantize import quantize_mlp, report, float_forward  # noqa: E402
from pim_macro.sw.compiler.sklearn_import import from_sklearn  # noqa: E402
from pim_macro.sw.compiler.tflite_import import UnsupportedModel  # noqa: E402


def _data(n_classes=3, labels="int", seed=0, n=240, features=5, spread=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * (spread if spread is not None else 1.0) \
        + rng.normal(size=features) * 3
    z = (x - x.mean(0)) / x.std(0)
    index = np.digitize(z[:, 0] + 0.7 * z[:, 1], np.linspace(-0.8, 0.8, n_classes - 1))
    names = np.array([3, 5, 9, 12][:n_classes]) if labels == "int" else \
        np.array(["ant", "bee", "cow", "dog"][:n_classes])
    return x, names[index]


def _fit(estimator, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def _run_ort(model, x):
    """onnxruntime's float outputs, one sample at a time (the batch is fixed to 1)."""
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: row[None].astype(np.float32)})[0]
                           for row in x])


def _check_canonical(model, features, outputs):
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert len(graph.input) == 1 and len(graph.output) == 1
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, features]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, outputs]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    shaped = {v.name for v in graph.value_info} | {graph.output[0].name}
    for node in graph.node:
        assert node.op_type in ("Gemm", "Relu")
        assert all(o in shaped for o in node.output), "every node output has a static shape"
        if node.op_type == "Gemm":
            assert {(a.name, a.i) for a in node.attribute} == {("transB", 1)}
            w, b = inits[node.input[1]], inits[node.input[2]]
            assert w.dtype == b.dtype == np.float32 and b.shape == (w.shape[0],)
            assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))


def _classes(model):
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props["pim_macro.classes"]) if "pim_macro.classes" in props else None


@pytest.mark.parametrize("n_classes, labels, activation", [
    (2, "int", "relu"), (2, "str", "relu"), (3, "int", "relu"), (4, "str", "identity")])
def test_classifier_matches_sklearn(n_classes, labels, activation):
    x, y = _data(n_classes, labels)
    clf = _fit(MLPClassifier((12, 6), activation=activation, max_iter=400, random_state=0),
               x, y)
    model = from_sklearn(clf)
    outputs = 1 if n_classes == 2 else n_classes
    _check_canonical(model, x.shape[1], outputs)
    assert _classes(model) == clf.classes_.tolist()
    logits = _run_ort(model, x)
    proba = clf.predict_proba(x)
    if n_classes == 2:              # one logit: the logistic of it is P(classes_[1])
        got = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
        assert np.allclose(got, proba[:, 1], atol=1e-5)
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        assert np.allclose(e / e.sum(axis=1, keepdims=True), proba, atol=1e-5)
    assert np.array_equal(predict(logits, _classes(model)), clf.predict(x))


def test_regressor_matches_sklearn():
    x, _ = _data()
    target = np.stack([x[:, 0] - 2 * x[:, 1], x[:, 2] * 0.5], axis=1)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(10,), max_iter=300, random_state=0), x, target)
    model = from_sklearn(reg)
    _check_canonical(model, x.shape[1], 2)
    assert _classes(model) is None
    assert np.allclose(_run_ort(model, x), reg.predict(x), atol=1e-4)


@pytest.mark.parametrize("with_mean, with_std", [(True, True), (False, True), (True, False)])
def test_pipeline_scaler_is_folded_exactly(with_mean, with_std):
    x, y = _data(3, "str", spread=np.array([100.0, 1.0, 0.01, 5.0, 1.0]))
    pipe = _fit(make_pipeline(StandardScaler(with_mean=with_mean, with_std=with_std),
                              MLPClassifier((8,), max_iter=400, random_state=0)), x, y)
    model = from_sklearn(pipe)
    _check_canonical(model, x.shape[1], 3)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm"], "no scaler op"
    logits = _run_ort(model, x)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.allclose(e / e.sum(axis=1, keepdims=True), pipe.predict_proba(x), atol=1e-4)
    assert np.array_equal(predict(logits, _classes(model)), pipe.predict(x))
    # the float reference of the quantizer is the same function
    assert np.allclose(float_forward(pipe)(x), logits, atol=1e-3)


def test_quantize_mlp_goes_through_from_sklearn():
    """One path: a pipeline quantizes, keeps its classes, and its int8 predictions agree with
    scikit-learn's."""
    x, y = _data(3, "int", n=400)
    pipe = _fit(Pipeline([("scale", StandardScaler()),
                          ("mlp", MLPClassifier((16,), max_iter=400, random_state=0))]), x, y)
    net = quantize_mlp(pipe, x)
    assert net.classes.tolist() == [3, 5, 9]
    summary = report(net, float_forward(pipe), x, y)
    assert summary["float_accuracy"] == pytest.approx(pipe.score(x, y))
    assert summary["int8_accuracy"] >= summary["float_accuracy"] - 0.03
    assert summary["agreement"] > 0.95


def _bad(what):
    x, y = _data(2)
    if what == "estimator":
        return _fit(LogisticRegression(), x, y)
    if what == "step":
        return _fit(make_pipeline(MinMaxScaler(), MLPClassifier((4,), max_iter=50)), x, y)
    if what == "two scalers":
        return _fit(make_pipeline(StandardScaler(), StandardScaler(),
                                  MLPClassifier((4,), max_iter=50)), x, y)
    if what == "tanh":
        return _fit(MLPClassifier((4,), activation="tanh", max_iter=50), x, y)
    if what == "unfitted":
        return MLPClassifier()
    if what == "multilabel":
        return _fit(MLPClassifier((4,), max_iter=50), x, np.stack([y == 3, y == 5], 1))
    clf = _fit(MLPClassifier((4,), max_iter=50), x, y)
    if what == "nan weight":
        clf.coefs_[1][2, 0] = np.nan
        return clf
    if what == "inf bias":
        clf.intercepts_[0][1] = np.inf
        return clf
    pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier((4,), max_iter=50)), x, y)
    pipe[0].mean_[0] = np.nan
    return pipe


@pytest.mark.parametrize("what, message", [
    ("estimator", "LogisticRegression is not supported"),
    ("step", "Pipeline step 'minmaxscaler': MinMaxScaler is not supported"),
    ("two scalers", "a second StandardScaler is not supported"),
    ("tanh", "activation='tanh' is not supported"),
    ("unfitted", "MLPClassifier is not fitted"),
    ("multilabel", "multi-label classifier is not supported"),
    ("nan weight", r"MLPClassifier.coefs_\[1\] holds a non-finite value \(nan at \(2, 0\)\)"),
    ("inf bias", r"intercepts_\[0\] holds a non-finite value \(inf at \(1,\)\)"),
    ("nan mean", r"StandardScaler.mean_ holds a non-finite value"),
])
def test_refusals(what, message):
    estimator = _bad(what)
    with pytest.raises(UnsupportedModel, match=message) as info:
        from_sklearn(estimator)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        quantize_mlp(estimator, np.ones((4, 5)))
