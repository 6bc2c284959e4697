"""Tests of the digits float models (pim_macro.sw.models.digits): the fixed split, the committed
ONNX models in models/ (valid, accurate under onnxruntime), the numpy CNN against its ONNX export,
the numpy backward pass against finite differences, and ensure_models' train-once behaviour."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from pim_macro.sw.models import digits
from pim_macro.sw.paths import MODELS_DIR

MODELS = MODELS_DIR


@pytest.fixture(scope="module")
def data():
    return digits.split()


@pytest.fixture(scope="module")
def tiny_cnn(data):
    x_train, _, y_train, _ = data
    return digits.train_cnn(x_train[:256], y_train[:256], epochs=1, seed=3)


# -- the split -----------------------------------------------------------------------------------

def test_split_shapes_and_range(data):
    x_train, x_test, y_train, y_test = data
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.all(np.isin(x * 16, np.arange(17)))          # original 0..16 pixel levels


def test_split_is_deterministic(data):
    again = digits.split()
    for a, b in zip(data, again):
        np.testing.assert_array_equal(a, b)


def test_split_is_stratified(data):
    _, _, y_train, y_test = data
    counts_train = np.bincount(y_train, minlength=10)
    counts_test = np.bincount(y_test, minlength=10)
    total = counts_train + counts_test
    assert total.sum() == 1797
    # every class split 80/20 up to rounding
    assert np.all(np.abs(counts_test - 0.2 * total) <= 1), counts_test
    assert counts_test.sum() == 360


# -- the committed models ------------------------------------------------------------------------

@pytest.mark.parametrize("name,ops,flat", [
    (digits.MLP_FILE, ["Gemm", "Relu", "Gemm"], True),
    (digits.CNN_FILE, ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"], False),
])
def test_committed_model(data, name, ops, flat):
    path = MODELS / name
    assert path.is_file(), f"{path} missing: run ensure_models('models')"
    assert path.stat().st_size < 64 * 1024
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ops
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]
    _, x_test, _, y_test = data
    x = x_test.reshape(len(x_test), -1) if flat else x_test
    logits = digits.onnx_logits(path, x)
    assert logits.shape == (360, 10)
    assert digits.accuracy(logits, y_test) > 0.95


def test_committed_cnn_attributes():
    model = onnx.load(MODELS / digits.CNN_FILE)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node]
    assert attrs[0]["pads"] == [1, 1, 1, 1] and attrs[0]["strides"] == [1, 1]
    assert attrs[2]["pads"] == [1, 1, 1, 1] and attrs[2]["strides"] == [2, 2]
    assert attrs[4]["axis"] == 1 and attrs[5]["transB"] == 1
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert shapes == {"w1": (8, 1, 3, 3), "b1": (8,), "w2": (16, 8, 3, 3), "b2": (16,),
                      "w3": (10, 256), "b3": (10,)}


# -- the numpy CNN -------------------------------------------------------------------------------

def test_cnn_forward_matches_onnxruntime(data, tiny_cnn):
    _, x_test, _, _ = data
    assert all(v.dtype == np.float32 for v in tiny_cnn.values())
    ours = digits.cnn_forward(tiny_cnn, x_test)
    theirs = digits.onnx_logits(digits.cnn_to_onnx(tiny_cnn), x_test)
    assert ours.shape == theirs.shape == (360, 10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_cnn_training_is_deterministic(data, tiny_cnn):
    x_train, _, y_train, _ = data
    again = digits.train_cnn(x_train[:256], y_train[:256], epochs=1, seed=3)
    other = digits.train_cnn(x_train[:256], y_train[:256], epochs=1, seed=4)
    assert all(np.array_equal(tiny_cnn[k], again[k]) for k in tiny_cnn)
    assert not np.array_equal(tiny_cnn["w1"], other["w1"])


def test_cnn_gradient_check(data):
    x_train, _, y_train, _ = data
    params = digits.init_cnn(seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    for k in params:                                   # non-zero biases exercise their paths
        params[k] = params[k] + 0.05 * rng.standard_normal(params[k].shape)
    x, y = x_train[:5].astype(np.float64), y_train[:5]
    loss, grads = digits.cnn_loss_and_grads(params, x, y)
    assert np.isfinite(loss)
    assert set(grads) == set(params)
    eps = 1e-6
    for k, p in params.items():
        assert grads[k].shape == p.shape and grads[k].dtype == np.float64
        flat_grad = grads[k].ravel()
        # the largest entry and up to 3 random ones; entries below 1e-5 are skipped, their
        # finite differences being dominated by rounding (|grad| ~ 1e-7 gives ~1e-4 error)
        candidates = np.flatnonzero(np.abs(flat_grad) > 1e-5)
        picks = {int(np.argmax(np.abs(flat_grad)))}
        picks.update(rng.choice(candidates, size=min(3, candidates.size), replace=False).tolist())
        for i in picks:
            saved = p.flat[i]
            p.flat[i] = saved + eps
            up, _ = digits.cnn_loss_and_grads(params, x, y)
            p.flat[i] = saved - eps
            down, _ = digits.cnn_loss_and_grads(params, x, y)
            p.flat[i] = saved
            numeric = (up - down) / (2 * eps)
            analytic = flat_grad[i]
            rel = abs(numeric - analytic) / max(abs(numeric) + abs(analytic), 1e-7)
            assert rel < 1e-3, (k, i, analytic, numeric)


# -- the MLP export and ensure_models ------------------------------------------------------------

def test_mlp_export_matches_sklearn(data):
    x_train, x_test, y_train, _ = data
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    clf = digits.train_mlp(x_train[:300], y_train[:300])
    logits = digits.onnx_logits(digits.mlp_to_onnx(clf), x_test)
    np.testing.assert_allclose(logits, digits.mlp_logits(clf, x_test), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(logits, axis=1),
                                  np.argmax(clf.predict_proba(x_test), axis=1))


def test_ensure_models_trains_once(tmp_path, monkeypatch):
    real_train_cnn, real_train_mlp = digits.train_cnn, digits.train_mlp
    # cheap stand-ins for the two trainings
    monkeypatch.setattr(digits, "train_cnn",
                        lambda x, y: real_train_cnn(x[:128], y[:128], epochs=1))
    monkeypatch.setattr(digits, "train_mlp", lambda x, y: real_train_mlp(x[:128], y[:128]))
    paths = digits.ensure_models(tmp_path / "m")
    assert [p.name for p in paths] == [digits.MLP_FILE, digits.CNN_FILE]
    for p in paths:
        onnx.checker.check_model(onnx.load(p), full_check=True)
    stamps = [p.stat().st_mtime_ns for p in paths]

    def fail(*args, **kwargs):
        raise AssertionError("retrained although the models exist")

    monkeypatch.setattr(digits, "train_cnn", fail)
    monkeypatch.setattr(digits, "train_mlp", fail)
    assert digits.ensure_models(tmp_path / "m") == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps
