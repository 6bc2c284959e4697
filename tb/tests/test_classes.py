"""The one decoding rule of classifier outputs (pim_macro.sw.compiler.classes), against
scikit-learn's own predictions, and the checks of labels and classes. numpy only: about 2 s."""

import warnings

import numpy as np
import pytest

from pim_macro.sw.compiler.classes import (accuracy, as_classes, check_labels, classes_from_json,
                                           classes_json, predict)


def test_single_logit_is_decoded_by_its_sign():
    # main took the argmax of the single column: always class 0
    logits = np.array([[-2.0], [0.5], [0.0], [3.0]])
    assert predict(logits).tolist() == [0, 1, 0, 1]
    assert predict(logits, ["no", "yes"]).tolist() == ["no", "yes", "no", "yes"]
    # int8 outputs against their zero point: real = scale * (q - zp), positive iff q > zp
    q = np.array([[-128], [-5], [-4], [127]], np.int8)
    assert predict(q, [3, 9], zero_point=-5).tolist() == [3, 3, 9, 9]


def test_argmax_takes_the_first_maximum_and_maps_classes():
    y = np.array([[1, 5, 5], [7, 0, 7], [0, 0, 1]], np.int8)
    assert predict(y).tolist() == [1, 0, 2]
    assert predict(y, [3, 5, 9]).tolist() == [5, 3, 9]
    assert predict(y.reshape(3, 1, 3)).tolist() == [1, 0, 2], "(B, ...) flattened per sample"


@pytest.mark.parametrize("n_classes, labels", [(2, "int"), (2, "str"), (3, "int"),
                                               (4, "str")])
def test_predict_equals_sklearn(n_classes, labels):
    """scikit-learn is the reference: predict() of its logits (the output layer's
    pre-activation, computed from coefs_) is clf.predict, for binary and multi-class."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(200, 4))
    index = np.digitize(x[:, 0] + 0.5 * x[:, 1], np.linspace(-1, 1, n_classes - 1))
    names = np.array([7, 3, 11, 5][:n_classes]) if labels == "int" else \
        np.array(["cat", "dog", "eel", "fox"][:n_classes])
    clf = MLPClassifier((8,), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, names[index])
    h = np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)
    logits = h @ clf.coefs_[1] + clf.intercepts_[1]
    assert logits.shape[1] == (1 if n_classes == 2 else n_classes)
    assert np.array_equal(predict(logits, clf.classes_), clf.predict(x))


def test_as_classes_kinds():
    assert as_classes([3, 5, 9]).dtype == np.int64
    assert as_classes(np.array([0.0, 1.0])).tolist() == [0, 1]
    assert as_classes([False, True]).tolist() == [0, 1]
    assert as_classes(["a", "b"]).dtype.kind == "U"
    assert classes_from_json(classes_json(np.array(["x", "y"]))).tolist() == ["x", "y"]
    assert classes_from_json("[3, 5]").tolist() == [3, 5]
    for bad, message in (([], "non-empty"), ([1, "a"], "all integers or all strings"),
                         ([0.5, 1.0], "not floats"), ([1, 1], "repeat"),
                         (np.array([b"a", b"b"]), "integers or strings"),
                         (np.zeros((2, 2)), "1-D"), ([float("nan"), 1.0], "not floats")):
        with pytest.raises(ValueError, match=message):
            as_classes(bad)
    with pytest.raises(ValueError, match="JSON list"):
        classes_from_json('{"a": 1}')
    with pytest.raises(ValueError, match="not valid JSON"):
        classes_from_json("[1,")


def test_check_labels():
    ok = np.array([3, 9, 5])
    assert check_labels(ok, [3, 5, 9], 3) is ok
    assert check_labels(np.array(["b", "a"]), ["a", "b"], 1).tolist() == ["b", "a"]
    assert check_labels(np.array([0, 1]), None, 1).tolist() == [0, 1]
    cases = [
        (np.array([0, 1, 2]), [3, 5, 9], 3, "label 0 is not one of the model's classes"),
        (np.array(["a"]), [3, 5, 9], 3, "labels are strings but the model's classes are "
                                        "integers"),
        (np.array([3]), ["a", "b"], 1, "labels are integers but the model's classes are "
                                       "strings"),
        (np.array([3, 5, 9]), None, 3, "label 3 is not a class index 0..2"),
        (np.array([2]), None, 1, "label 2 is not a class index 0..1"),
        (np.array(["a"]), None, 2, "string labels need the model's classes"),
        (np.array([0.0, 0.5]), None, 2, "^labels must be integers or strings, not floats "
                                         "such as 0.5$"),
        (np.array([1.0, np.nan]), [0, 1], 2, "not floats such as nan"),
        (np.array([np.inf]), None, 2, "not floats such as inf"),
        (np.array([1e30]), None, 2, "not floats such as 1e\\+30"),
        (np.array([True, False]), ["a", "b"], 2, "labels are integers but the model's classes "
                                                  "are strings"),
        (np.array([True, False]), [3, 5], 2, "label 1 is not one of the model's classes"),
        (np.array([2.0]), None, 1, "label 2 is not a class index 0..1"),
        (np.array([[0]]), None, 2, "1-D"),
        (np.array([1]), [1, 2, 3], 2, "3 classes for 2 outputs"),
        (np.array([1]), [1, 2, 3], 1, "3 classes for one logit"),
    ]
    for labels, classes, outputs, message in cases:
        with pytest.raises(ValueError, match=message):
            check_labels(labels, classes, outputs)


def test_labels_converted_as_classes_are():
    """Booleans and integral floats: the labels a classifier was fitted on (``y = t > 0``, or
    ``y`` read as floats) are taken, converted as :func:`as_classes` converts its classes, and
    score as the classes' predictions."""
    for y, want in ((np.array([False, True, True]), [0, 1, 1]),
                    (np.array([3.0, 5.0, -1.0]), [3, 5, -1])):
        classes = as_classes(np.unique(y))
        labels = check_labels(y, classes, 3 if y.dtype.kind == "f" else 1)
        assert labels.dtype == np.int64 and labels.tolist() == want
        assert set(want) <= set(classes.tolist())
    bools = np.array([True, False, True, True])
    labels = check_labels(bools, as_classes([False, True]), 1)
    assert labels.tolist() == [1, 0, 1, 1]
    logits = np.array([[2.0], [-1.0], [-3.0], [0.5]])       # sign: True False False True
    assert accuracy(predict(logits, as_classes([False, True])), labels) == 0.75
    assert check_labels(np.array([1.0, 0.0]), None, 2).tolist() == [1, 0]
    assert check_labels(np.zeros(0), None, 2).dtype == np.int64
    with pytest.raises(ValueError, match="^classes must be integers or strings, not floats "
                                         "such as 1e\\+30$"):
        as_classes([1e30, 0.0])


def test_accuracy_and_predict_errors():
    assert accuracy(np.array(["a", "b"]), np.array(["a", "a"])) == 0.5
    with pytest.raises(ValueError, match="2 labels for 3 predictions"):
        accuracy(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="batch"):
        predict(np.zeros(3))
    with pytest.raises(ValueError, match="2 classes for 3 outputs"):
        predict(np.zeros((1, 3)), [1, 2])
