"""From a classifier's outputs to its predictions, in the user's labels: the one rule every
command (``pim quantize``, ``pim infer`` of ``.npz`` and ``.tflite`` models) decodes with.

* **Outputs** are a batch ``(B, n)`` (any ``(B, ...)`` is flattened per sample) of logits:
  float (onnxruntime, the numpy float reference), dequantized float, or int8 (the macro's).
* **One output column** (a binary classifier, e.g. scikit-learn's ``MLPClassifier`` trained on
  two classes: one logistic output) is decoded by its sign: class index 1 exactly when the logit
  is positive. scikit-learn's ``MLPClassifier.predict`` returns ``classes_[1]`` exactly when
  ``predict_proba`` > 0.5, i.e. when the pre-logistic logit is > 0. For int8 outputs whose
  ``real = scale * (q - zero_point)``, that is ``q > zero_point``.
* **Several columns**: the argmax, the first maximum on ties (``numpy.argmax``, as
  scikit-learn's ``predict``, which takes ``argmax`` of ``predict_proba``).
* **Classes** map class indices to labels: ``classes[i]`` is the label of output ``i`` (of a
  single logit: ``[negative, positive]``). They are integers (int64) or strings (a numpy unicode
  array); scikit-learn's ``classes_``. Without classes the predictions are the indices.

Labels (what ``--labels L.npy`` holds) are a 1-D integer or unicode string array (booleans
and floats of integral value are taken as integers, as in classes): ``np.load`` without pickle
cannot read object arrays, and they are refused here too. Their kind must be the
classes' kind. Without classes they must be class indices ``0 .. n-1`` (``0`` or ``1`` for a
single logit). Every error is a ``ValueError`` with a one-line message.
"""

import json

import numpy as np


__all__ = ["as_classes", "predict", "accuracy", "check_labels", "check_count", "classes_json",
           "classes_from_json", "METADATA_KEY"]

#: The ONNX ``metadata_props`` key holding the JSON list of a classifier's classes (a
#: ``.tflite`` keeps them in its ``pim_macro`` metadata entry:
#: :data:`pim_macro.sw.compiler.tflite_import.METADATA_NAME`).
METADATA_KEY = "pim_macro.classes"


def as_classes(values, what="classes"):
    """``values`` (a sequence or 1-D array of class labels) as a numpy array: int64 for
    integers (booleans, and floats of integral value, such as scikit-learn keeps when it was
    fitted on float labels, become integers), a unicode array for strings. Raises
    ``ValueError`` for anything else (an empty list, mixed kinds, bytes, objects, NaN, a 2-D
    array, repeated labels)."""
    if not isinstance(values, np.ndarray):
        # numpy would turn [1, "a"] into the strings ["1", "a"]: judge a list by its items
        items = list(values) if isinstance(values, (list, tuple)) else None
        if items and any(isinstance(v, str) for v in items) and \
                not all(isinstance(v, str) for v in items):
            raise ValueError(f"{what} must be all integers or all strings, not a mix of "
                             f"{sorted({type(v).__name__ for v in items})}")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} must be a list of integers or strings: {exc}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D list, not of shape {array.shape}")
    kind = array.dtype.kind
    if kind == "O":
        # A list mixing kinds, or an object array: only all-int or all-str lists are accepted.
        items = list(array)
        if all(isinstance(v, str) for v in items):
            array = np.array(items, dtype=str)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            array = np.array(items, dtype=np.int64)
        else:
            raise ValueError(f"{what} must be all integers or all strings, not a mix of "
                             f"{sorted({type(v).__name__ for v in items})}")
        kind = array.dtype.kind
    if kind in "bf":
        array = _as_integers(array, what)
    elif kind in "iu":
        if kind == "u" and array.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{what} hold an integer beyond int64")
        array = array.astype(np.int64)
    elif kind != "U":
        raise ValueError(f"{what} must be integers or strings, not {array.dtype}")
    if len(np.unique(array)) != array.size:
        raise ValueError(f"{what} repeat a label: {array.tolist()[:20]}")
    return array


def _as_integers(array, what):
    """A bool or float numpy ``array`` as int64: booleans as 0 / 1, floats of integral value
    (what scikit-learn keeps in ``classes_`` when fitted on float labels, and what numpy saves
    labels as when they passed through a float array) as those integers. The one conversion of
    both classes (:func:`as_classes`) and labels (:func:`check_labels`), so that the labels a
    classifier was fitted on always fit its classes. Raises ``ValueError`` (one line) for a
    float that is not an integer: a fraction, NaN, an infinity, or one beyond int64."""
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    with np.errstate(invalid="ignore"):
        # 2**63 is a float64 exactly; every float below it in magnitude and integral fits int64
        bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= 2.0 ** 63)
    if bad.any():
        raise ValueError(f"{what} must be integers or strings, not floats such as "
                         f"{array[bad][0]}")
    return array.astype(np.int64)


def classes_json(classes):
    """The JSON text of ``classes`` (:func:`as_classes`): a list of ints or strings."""
    return json.dumps(as_classes(classes).tolist())


def classes_from_json(text, what="classes"):
    """The classes of JSON ``text`` (a list of ints or strings); ``ValueError`` otherwise."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} are not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a JSON list, not {type(value).__name__}")
    return as_classes(value, what)


def _outputs(outputs):
    y = np.asarray(outputs)
    if y.ndim < 2 or y.shape[0] == 0 or y[0].size == 0:
        raise ValueError(f"the outputs must be a batch (B, n), not of shape {y.shape}")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"the outputs must be numbers, not {y.dtype}")
    return y.reshape(y.shape[0], -1)


def check_count(classes, n):
    """``ValueError`` unless the classes array ``classes`` has one label per output of ``n``
    outputs (two, ``[negative, positive]``, for a single logit)."""
    want = 2 if n == 1 else n
    if classes.size != want:
        what = "one logit (a binary classifier: [negative, positive])" if n == 1 else \
            f"{n} outputs"
        raise ValueError(f"{classes.size} classes for {what}: expected {want}")


def predict(outputs, classes=None, *, zero_point=0):
    """Predictions ``(B,)`` of classifier ``outputs`` ``(B, n)`` (see the module): for ``n ==
    1`` index ``outputs > zero_point`` (``zero_point``: the int8 output tensor's; 0 for float
    logits), else the argmax (first maximum); mapped through ``classes`` (index -> label, see
    :func:`as_classes`) when given, else the indices (int64). Raises ``ValueError`` for outputs
    that are not a batch of numbers, or a number of classes that does not fit ``n``."""
    y = _outputs(outputs)
    if y.shape[1] == 1:
        index = (y[:, 0] > zero_point).astype(np.int64)
    else:
        index = y.argmax(axis=1).astype(np.int64)
    if classes is None:
        return index
    classes = as_classes(classes)
    check_count(classes, y.shape[1])
    return classes[index]


def accuracy(predictions, labels):
    """The fraction (float, 0..1) of ``predictions`` equal to ``labels`` (both ``(B,)``, B > 0).
    Raises ``ValueError`` for arrays of different shapes."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or predictions.size == 0:
        raise ValueError(f"{labels.size} labels for {predictions.size} predictions"
                         if labels.ndim == predictions.ndim == 1 else
                         f"predictions {predictions.shape} and labels {labels.shape} differ in "
                         f"shape")
    return float(np.mean(predictions == labels))


def check_labels(labels, classes=None, outputs=None):
    """Check user ``labels`` against a model's ``classes`` (or, without classes, its number of
    ``outputs``, if known) and return them. ``labels``: a 1-D array of integers, unicode
    strings, booleans or floats of integral value; booleans and integral floats are returned
    as int64, converted as :func:`as_classes` converts classes (``False``/``True`` -> 0/1,
    ``3.0`` -> 3: the labels a classifier was fitted on, e.g. ``y = df.target > 0``, fit the
    classes it keeps); integer and string labels are returned unchanged. With ``classes``, the
    kinds must match and every label must be one of the classes (a label outside them is a
    sign of labels in another encoding, such as indices for a model of classes 3/5/9);
    without, labels must be integers, ``0 .. outputs - 1`` (``0`` or ``1`` for one output).
    Raises ``ValueError`` with one line saying what is wrong (e.g. a float that is not an
    integer)."""
    labels = np.asarray(labels)
    kind = labels.dtype.kind
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, not of shape {labels.shape}")
    if kind in "bf":
        labels = _as_integers(labels, "labels")
        kind = labels.dtype.kind
    if kind not in "iuU":
        hint = " (an object array: save the labels as integers or strings, " \
               "np.array(labels, dtype=str))" if kind == "O" else ""
        raise ValueError(f"labels must be integers or strings, not {labels.dtype}{hint}")
    if classes is not None:
        classes = as_classes(classes)
        if outputs is not None:
            check_count(classes, outputs)
        if (kind == "U") != (classes.dtype.kind == "U"):
            ckind = "strings" if classes.dtype.kind == "U" else "integers"
            lkind = "strings" if kind == "U" else "integers"
            raise ValueError(f"the labels are {lkind} but the model's classes are {ckind}: "
                             f"{_short(classes)}")
        unknown = labels[~np.isin(labels, classes)]
        if unknown.size:
            raise ValueError(f"label {unknown.tolist()[0]!r} is not one of the model's classes "
                             f"{_short(classes)}")
        return labels
    if kind == "U":
        raise ValueError("string labels need the model's classes, and this model has none "
                         "(quantize it again from the classifier to keep them)")
    if outputs is not None and labels.size:
        top = 1 if outputs == 1 else outputs - 1
        bad = labels[(labels < 0) | (labels > top)]
        if bad.size:
            raise ValueError(f"label {int(bad[0])} is not a class index 0..{top} of the model's "
                             f"{outputs} output{'s' if outputs > 1 else ''}, and the model "
                             f"has no classes to map it (quantize it again from the classifier "
                             f"to keep them)")
    return labels


def _short(classes, most=10):
    items = classes.tolist()
    text = ", ".join(map(repr, items[:most]))
    return f"[{text}{', ...' if len(items) > most else ''}]"
