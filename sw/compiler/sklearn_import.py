"""scikit-learn MLPs (and ``Pipeline(StandardScaler, MLP)``) as canonical float ONNX models.

:func:`from_sklearn` turns a fitted ``MLPClassifier`` / ``MLPRegressor`` into the canonical
float ONNX form the quantizer takes (see :mod:`pim_macro.sw.compiler.quantize`): a chain of
``Gemm(X, W, B)`` (``transB=1``, W float32 ``(N, K)``, B float32 ``(N,)``) with a ``Relu`` after
every hidden layer, whose single output is the last layer's pre-activation: the logits before
scikit-learn's softmax / logistic (classifiers) or the regression outputs (``MLPRegressor``,
whose output activation is the identity). The ONNX operators are those of the ONNX operator
specification (``Gemm``: ``Y = X @ B.T + C`` with ``transB=1``; ``Relu``).

A ``sklearn.pipeline.Pipeline`` of an optional ``StandardScaler`` (``with_mean`` and
``with_std`` either way) followed by the MLP is folded: the scaler's ``(x - mean_) / scale_``
goes exactly into the first layer, ``W' = W / scale_`` (per input column), ``b' = b - W' @
mean_``, computed in float64 and then rounded to float32. (``'passthrough'`` / ``None`` steps
are skipped.) Note that the folded model's inputs are still the raw features: the int8 input
scale of the quantized model is one for all of them (see :func:`pim_macro.sw.compiler.
quantize.quantization_warnings`). With ``fold_scaler=False`` (what the graph quantizer asks
for) the scaler is kept apart instead, in ``metadata_props`` :data:`STANDARDIZE_KEY`, and stays
float in the ``.tflite``.

Why our own converter rather than ``skl2onnx``: skl2onnx writes the classifier's full
``predict`` / ``predict_proba`` graph (``ArgMax``, ``ZipMap``, ``Cast``, ``Softmax`` and a
probability output) that the macro does not run and that would have to be cut away again, and it
is one more dependency; an MLP's weights are two numpy lists.

For a classifier, ``model.metadata_props`` carries ``pim_macro.classes``: the JSON list of its
``classes_`` (ints as ints, strings as strings; :mod:`pim_macro.sw.compiler.classes`).

Errors: :class:`pim_macro.sw.compiler.tflite_import.UnsupportedModel` (a ``ValueError``), one
line naming the estimator or step, for anything else: another estimator or pipeline step, an
activation other than ``relu`` / ``identity``, a multi-label classifier, an unfitted model, and
non-finite weights, biases or scaler statistics (a NaN weight would make every int8 weight
collapse).
"""

import json

import numpy as np

from pim_macro.sw.compiler.classes import METADATA_KEY, as_classes, classes_json
from pim_macro.sw.compiler.tflite_import import UnsupportedModel


__all__ = ["from_sklearn", "INPUT_NAME", "OUTPUT_NAME", "STANDARDIZE_KEY"]

#: Names of the ONNX graph's input and output (scikit-learn names neither).
INPUT_NAME, OUTPUT_NAME = "input", "logits"
#: The ONNX opset of the models made here (Gemm and Relu have been stable since 13).
OPSET = 13
#: Its IR version: 7, that of opset 13 (onnx's ``helper.VERSION_TABLE``), not the newest one
#: ``make_model`` writes, which older onnxruntime builds refuse.
IR_VERSION = 7


def _finite(what, value):
    value = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(value)):
        bad = np.argwhere(~np.isfinite(value))[0]
        raise UnsupportedModel(f"{what} holds a non-finite value ({value[tuple(bad)]} at "
                               f"{tuple(int(i) for i in bad)})")
    return value


def _mlp(estimator, where):
    """The float64 layers ``[(W (N, K), b (N,)), ...]`` and the hidden ReLU flag of an MLP."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    name = type(estimator).__name__
    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise UnsupportedModel(f"{where}{name} is not supported: from_sklearn takes an "
                               f"MLPClassifier or MLPRegressor (optionally in a Pipeline after a "
                               f"StandardScaler)")
    coefs = getattr(estimator, "coefs_", None)
    intercepts = getattr(estimator, "intercepts_", None)
    if coefs is None or intercepts is None:
        raise UnsupportedModel(f"{where}{name} is not fitted (no coefs_)")
    if estimator.activation not in ("relu", "identity"):
        raise UnsupportedModel(f"{where}{name}: activation={estimator.activation!r} is not "
                               f"supported (relu or identity)")
    if isinstance(estimator, MLPClassifier):
        binarizer = getattr(estimator, "_label_binarizer", None)
        if getattr(binarizer, "y_type_", None) == "multilabel-indicator":
            raise UnsupportedModel(f"{where}{name}: a multi-label classifier is not supported "
                                   f"(its outputs are not one prediction)")
    layers = []
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        w = _finite(f"{where}{name}.coefs_[{i}]", w)
        b = _finite(f"{where}{name}.intercepts_[{i}]", b)
        layers.append((w.T, b))
    return layers, estimator.activation == "relu"


def _scaler(step, where, features):
    """``(mean (K,), scale (K,))`` of a fitted StandardScaler (zeros / ones where it does not
    center / scale)."""
    mean = getattr(step, "mean_", None) if step.with_mean else None
    scale = getattr(step, "scale_", None) if step.with_std else None
    if not hasattr(step, "n_features_in_"):
        raise UnsupportedModel(f"{where}StandardScaler is not fitted")
    mean = np.zeros(features) if mean is None else _finite(f"{where}StandardScaler.mean_", mean)
    scale = np.ones(features) if scale is None else \
        _finite(f"{where}StandardScaler.scale_", scale)
    if np.any(scale == 0):
        raise UnsupportedModel(f"{where}StandardScaler.scale_ holds a zero")
    return mean, scale


def _steps(estimator):
    """``(scaler or None, scaler's label, mlp, mlp's label)`` of an estimator or pipeline."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    if not isinstance(estimator, Pipeline):
        return None, "", estimator, ""
    steps = [(name, step) for name, step in estimator.steps
             if step is not None and not (isinstance(step, str) and step == "passthrough")]
    if not steps:
        raise UnsupportedModel("the Pipeline has no steps")
    *before, (last_name, last) = steps
    scaler, scaler_label = None, ""
    for name, step in before:
        label = f"Pipeline step {name!r}: "
        if isinstance(step, StandardScaler) and scaler is None:
            scaler, scaler_label = step, label
        else:
            what = "a second StandardScaler" if isinstance(step, StandardScaler) \
                else type(step).__name__
            raise UnsupportedModel(f"{label}{what} is not supported (a Pipeline may hold one "
                                   f"StandardScaler, then the MLP)")
    return scaler, scaler_label, last, f"Pipeline step {last_name!r}: "


#: The ``metadata_props`` key of an unfolded scaler (``from_sklearn(..., fold_scaler=False)``):
#: JSON ``{"mean": [K floats], "scale": [K floats]}``; the model's input is then
#: ``(x - mean) / scale``, which the graph quantizer keeps in float before ``QUANTIZE``.
STANDARDIZE_KEY = "pim_macro.standardize"


def from_sklearn(estimator, *, fold_scaler=True):
    """The canonical float ONNX model (``onnx.ModelProto``) of a fitted scikit-learn
    ``MLPClassifier`` / ``MLPRegressor`` (``activation`` ``relu`` or ``identity``) or a
    ``Pipeline`` of an optional ``StandardScaler`` and such an MLP (see the module).

    Graph input ``input``: float32 ``(1, n_features_in_)``; graph output ``logits``: float32
    ``(1, n_outputs)``, the last layer's pre-activation (for a classifier of two classes, one
    logit whose sign is the prediction; of more, one per class, whose argmax is). Its float
    outputs equal the estimator's ``decision_function``-like logits to float32 rounding. A
    classifier's ``classes_`` go into ``metadata_props`` ``pim_macro.classes`` (JSON).

    ``fold_scaler=False``: a pipeline's ``StandardScaler`` is not folded; the model then takes
    the standardized features and its ``metadata_props`` :data:`STANDARDIZE_KEY` holds the
    scaler (the graph quantizer keeps it as float ``SUB`` and ``MUL`` before ``QUANTIZE``, so
    features of very different ranges keep their resolution in int8).

    Raises :class:`~pim_macro.sw.compiler.tflite_import.UnsupportedModel` (one line) for
    anything else (see the module)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    scaler, scaler_label, mlp, where = _steps(estimator)
    layers, relu = _mlp(mlp, where)
    features = layers[0][0].shape[1]
    if scaler is not None:
        if getattr(scaler, "n_features_in_", features) != features:
            raise UnsupportedModel(f"{scaler_label}StandardScaler takes "
                                   f"{scaler.n_features_in_} features, the MLP {features}")
        mean, scale = _scaler(scaler, scaler_label, features)
        if fold_scaler:
            w, b = layers[0]
            w = w / scale                   # (N, K) / (K,): x' = (x - mean) / scale
            layers[0] = (w, b - w @ mean)
    classes = None
    if hasattr(mlp, "classes_"):
        try:
            classes = as_classes(mlp.classes_, f"{where}{type(mlp).__name__}.classes_")
        except ValueError as exc:
            raise UnsupportedModel(str(exc)) from None

    nodes, inits = [], []
    current = INPUT_NAME
    for i, (w, b) in enumerate(layers):
        w32, b32 = w.astype(np.float32), b.astype(np.float32)
        if not (np.all(np.isfinite(w32)) and np.all(np.isfinite(b32))):
            raise UnsupportedModel(f"layer {i}: the folded weights overflow float32")
        inits += [numpy_helper.from_array(w32, f"dense{i}.weight"),
                  numpy_helper.from_array(b32, f"dense{i}.bias")]
        last = i == len(layers) - 1
        out = OUTPUT_NAME if last else f"dense{i}"
        nodes.append(helper.make_node("Gemm", [current, f"dense{i}.weight", f"dense{i}.bias"],
                                      [out], name=f"dense{i}", transB=1))
        current = out
        if relu and not last:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    graph = helper.make_graph(
        nodes, type(mlp).__name__,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                       [1, layers[-1][0].shape[0]])],
        inits)
    model = helper.make_model(graph, producer_name="pim_macro.sklearn_import",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION           # what onnxruntime releases of opset 13 on read
    props = {}
    if classes is not None:
        props[METADATA_KEY] = classes_json(classes)
    if scaler is not None and not fold_scaler:
        props[STANDARDIZE_KEY] = json.dumps({"mean": np.float32(mean).tolist(),
                                             "scale": np.float32(scale).tolist()})
    if props:
        helper.set_model_props(model, props)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model
