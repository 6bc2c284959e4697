"""Float models for the handwritten digits demo, trained on scikit-learn's bundled digits set.

The data
========

:func:`sklearn.datasets.load_digits` (no download): 1797 8x8 images with pixel values 0..16 and
labels 0..9. :func:`split` scales them to float32 in [0, 1] (divided by 16), shapes them
``(N, 1, 8, 8)`` and splits them with ``train_test_split(test_size=0.2, random_state=0,
stratify=y)``: 1437 training and 360 test images, every class in the same proportion in both.

The models
==========

* An MLP (:func:`train_mlp`): scikit-learn's ``MLPClassifier`` on the 64 flattened pixels, one
  hidden layer of 32 ReLU units, 10 logits. :func:`mlp_to_onnx` exports it as
  ``Gemm -> Relu -> Gemm`` (input ``x`` ``(N, 64)``, output ``logits``, pre-softmax).
* A small CNN (:func:`train_cnn`), trained by a pure-numpy loop (im2col convolutions, softmax
  cross-entropy, Adam on mini-batches)::

      x (N, 1, 8, 8)
      conv1  1 -> 8 channels, 3x3, pad 1, stride 1, ReLU     (N, 8, 8, 8)
      conv2  8 -> 16 channels, 3x3, pad 1, stride 2, ReLU    (N, 16, 4, 4)
      flatten in (C, H, W) order                             (N, 256)
      dense  256 -> 10                                       (N, 10) logits

  Its parameters are a dict of float32 arrays: ``w1`` (8, 1, 3, 3), ``b1`` (8,), ``w2``
  (16, 8, 3, 3), ``b2`` (16,), ``w3`` (10, 256), ``b3`` (10,) (3818 parameters in all).
  :func:`cnn_forward` evaluates it; :func:`cnn_to_onnx` exports it as ``Conv -> Relu -> Conv ->
  Relu -> Flatten -> Gemm`` (input ``x`` ``(N, 1, 8, 8)``, output ``logits``).

:func:`ensure_models` trains and exports both once into a directory (``digits_mlp.onnx``,
``digits_cnn.onnx``) and afterwards just returns the existing files.
"""

import warnings
from pathlib import Path

import numpy as np

OPSET = 17
MLP_FILE = "digits_mlp.onnx"
CNN_FILE = "digits_cnn.onnx"

# CNN geometry: (name, out_ch, in_ch, stride); all 3x3 kernels with padding 1.
CONV_LAYERS = (("1", 8, 1, 1), ("2", 16, 8, 2))
KERNEL = 3
PAD = 1
CNN_EPOCHS = 20


# -- data ----------------------------------------------------------------------------------------

def split():
    """The fixed train/test split of the digits set: ``(x_train, x_test, y_train, y_test)``.

    Images are float32 ``(N, 1, 8, 8)`` in [0, 1]; labels int64 ``(N,)``. The split is
    ``train_test_split(test_size=0.2, random_state=0, stratify=labels)`` (1437 / 360 images).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def accuracy(logits, y):
    """Fraction of rows of ``logits`` whose argmax equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))


# -- MLP -----------------------------------------------------------------------------------------

def train_mlp(x_train, y_train):
    """A fitted ``MLPClassifier`` (32 ReLU hidden units, Adam, ``random_state=0``) on the
    flattened images."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(32,), activation="relu", solver="adam",
                        max_iter=600, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(np.asarray(x_train, dtype=np.float32).reshape(len(x_train), -1), y_train)
    return clf


def mlp_logits(clf, x):
    """The MLP's pre-softmax outputs ``(N, 10)`` computed from its weights, in float64."""
    h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        h = h @ w + b
        if i < len(clf.coefs_) - 1:
            h = np.maximum(h, 0.0)
    return h


def mlp_to_onnx(clf):
    """ONNX model of ``clf``: input ``x`` float ``(N, 64)``, ``Gemm -> Relu -> ... -> Gemm``,
    output ``logits`` ``(N, n_classes)`` (pre-softmax; the argmax is ``clf.predict``'s index
    into ``clf.classes_``)."""
    from onnx import TensorProto, helper, numpy_helper

    if clf.activation != "relu" or clf.out_activation_ != "softmax":
        raise ValueError("only ReLU MLPs with a softmax output (>= 3 classes) are supported")
    n_in = clf.coefs_[0].shape[0]
    n_out = clf.coefs_[-1].shape[1]
    nodes, inits = [], []
    name = "x"
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        inits += [numpy_helper.from_array(np.asarray(w, dtype=np.float32), f"w{i}"),
                  numpy_helper.from_array(np.asarray(b, dtype=np.float32), f"b{i}")]
        last = i == len(clf.coefs_) - 1
        out = "logits" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [name, f"w{i}", f"b{i}"], [out], name=f"gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            out = f"r{i}"
        name = out
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])],
        initializer=inits)
    return _finish(graph, "digits MLP (sklearn MLPClassifier), pre-softmax logits")


# -- CNN: numpy forward / backward --------------------------------------------------------------

def _im2col(x, stride):
    """``(N, C, H, W)`` -> columns ``(N * Ho * Wo, C * 3 * 3)`` for a 3x3, pad-1 convolution."""
    n, c, h, w = x.shape
    ho = (h + 2 * PAD - KERNEL) // stride + 1
    wo = (w + 2 * PAD - KERNEL) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    cols = np.empty((n, c, KERNEL, KERNEL, ho, wo), dtype=x.dtype)
    for i in range(KERNEL):
        for j in range(KERNEL):
            cols[:, :, i, j] = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * KERNEL * KERNEL), ho, wo


def _col2im(dcols, shape, stride, ho, wo):
    """The adjoint of :func:`_im2col`: scatter-add column gradients back to ``(N, C, H, W)``."""
    n, c, h, w = shape
    d = dcols.reshape(n, ho, wo, c, KERNEL, KERNEL).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * PAD, w + 2 * PAD), dtype=dcols.dtype)
    for i in range(KERNEL):
        for j in range(KERNEL):
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += d[:, :, i, j]
    return dxp[:, :, PAD:PAD + h, PAD:PAD + w]


def _conv_forward(x, w, b, stride):
    cols, ho, wo = _im2col(x, stride)
    out = cols @ w.reshape(w.shape[0], -1).T + b                  # (N*Ho*Wo, out_ch)
    out = out.reshape(x.shape[0], ho, wo, w.shape[0]).transpose(0, 3, 1, 2)
    return out, (cols, ho, wo)


def _forward(params, x):
    """Forward pass keeping what the backward pass needs. Computes in ``params``' dtype."""
    dtype = params["w1"].dtype
    a = np.asarray(x, dtype=dtype).reshape(-1, 1, 8, 8)
    cache = []
    for name, _, _, stride in CONV_LAYERS:
        z, conv_cache = _conv_forward(a, params["w" + name], params["b" + name], stride)
        cache.append((a.shape, conv_cache, z > 0))
        a = np.maximum(z, 0)
    flat = a.reshape(a.shape[0], -1)                              # (C, H, W) order
    logits = flat @ params["w3"].T + params["b3"]
    return logits, (cache, flat)


def cnn_forward(params, x):
    """Logits ``(N, 10)`` of the CNN ``params`` on images ``x`` ``(N, 1, 8, 8)`` (or ``(N, 64)``),
    computed in the parameters' dtype."""
    return _forward(params, x)[0]


def cnn_loss_and_grads(params, x, y):
    """Mean softmax cross-entropy of the CNN on ``(x, y)`` and its gradient with respect to
    every parameter (a dict like ``params``), computed in the parameters' dtype."""
    logits, (cache, flat) = _forward(params, x)
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = np.asarray(y)
    loss = -logp[np.arange(n), y].mean()

    dlogits = np.exp(logp)
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    grads = {"w3": dlogits.T @ flat, "b3": dlogits.sum(axis=0)}
    da = (dlogits @ params["w3"]).reshape(cache[-1][2].shape)
    for (name, _, _, stride), (in_shape, (cols, ho, wo), mask) in zip(
            reversed(CONV_LAYERS), reversed(cache)):
        w = params["w" + name]
        dz = (da * mask).transpose(0, 2, 3, 1).reshape(-1, w.shape[0])  # (N*Ho*Wo, out_ch)
        grads["w" + name] = (dz.T @ cols).reshape(w.shape)
        grads["b" + name] = dz.sum(axis=0)
        if name != CONV_LAYERS[0][0]:                             # no gradient for the images
            da = _col2im(dz @ w.reshape(w.shape[0], -1), in_shape, stride, ho, wo)
    return loss, {k: grads[k].astype(params[k].dtype, copy=False) for k in params}


def init_cnn(seed=0, dtype=np.float32):
    """He-initialized CNN parameters (zero biases) from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, out_ch, in_ch, _ in CONV_LAYERS:
        fan_in = in_ch * KERNEL * KERNEL
        params["w" + name] = rng.normal(0, np.sqrt(2 / fan_in), (out_ch, in_ch, KERNEL, KERNEL))
        params["b" + name] = np.zeros(out_ch)
    params["w3"] = rng.normal(0, np.sqrt(1 / 256), (10, 256))
    params["b3"] = np.zeros(10)
    return {k: v.astype(dtype) for k, v in params.items()}


def train_cnn(x_train, y_train, *, epochs=CNN_EPOCHS, seed=0, batch_size=32, lr=3e-3):
    """Train the CNN with Adam on shuffled mini-batches; returns float32 parameters.

    Deterministic for a given ``seed`` (initialization and shuffling use
    ``np.random.default_rng(seed)``). The learning rate decays linearly to 10% over the epochs.
    """
    x = np.asarray(x_train, dtype=np.float32).reshape(-1, 1, 8, 8)
    y = np.asarray(y_train, dtype=np.int64)
    params = init_cnn(seed)
    rng = np.random.default_rng(seed + 1)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    step = 0
    for epoch in range(epochs):
        rate = lr * (1 - 0.9 * epoch / max(epochs - 1, 1))
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            _, grads = cnn_loss_and_grads(params, x[idx], y[idx])
            step += 1
            c1 = 1 - beta1 ** step
            c2 = 1 - beta2 ** step
            for k, g in grads.items():
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                update = rate * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
                params[k] = (params[k] - update).astype(np.float32)
    return params


def cnn_to_onnx(params):
    """ONNX model of the CNN: input ``x`` float ``(N, 1, 8, 8)``, ``Conv -> Relu -> Conv -> Relu
    -> Flatten -> Gemm(transB=1)``, output ``logits`` ``(N, 10)``; weights as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(params[k], dtype=np.float32), k)
             for k in ("w1", "b1", "w2", "b2", "w3", "b3")]
    nodes = []
    name = "x"
    for layer, _, _, stride in CONV_LAYERS:
        nodes.append(helper.make_node(
            "Conv", [name, "w" + layer, "b" + layer], ["conv" + layer], name="conv" + layer,
            kernel_shape=[KERNEL, KERNEL], pads=[PAD] * 4, strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", ["conv" + layer], ["relu" + layer],
                                      name="relu" + layer))
        name = "relu" + layer
    nodes.append(helper.make_node("Flatten", [name], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="dense",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits)
    return _finish(graph, "digits CNN (numpy-trained), pre-softmax logits")


# -- ONNX helpers --------------------------------------------------------------------------------

def _finish(graph, doc):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pim_macro.sw.models.digits", doc_string=doc)
    model.ir_version = 8                     # the IR version of opset 17 (onnx 1.12)
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_logits(model, x):
    """Run an ONNX model (a ``ModelProto`` or a path) on ``x`` with onnxruntime (CPU)."""
    import onnxruntime as ort

    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(str(data) if isinstance(data, Path) else data,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]


def ensure_models(directory):
    """Paths ``(mlp_path, cnn_path)`` of ``digits_mlp.onnx`` and ``digits_cnn.onnx`` in
    ``directory``; if either is missing, train both models on :func:`split`'s training set,
    export them and save them there first."""
    import onnx

    directory = Path(directory)
    mlp_path, cnn_path = directory / MLP_FILE, directory / CNN_FILE
    if mlp_path.is_file() and cnn_path.is_file():
        return mlp_path, cnn_path
    x_train, _, y_train, _ = split()
    mlp = mlp_to_onnx(train_mlp(x_train, y_train))
    cnn = cnn_to_onnx(train_cnn(x_train, y_train))
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp, mlp_path)
    onnx.save(cnn, cnn_path)
    return mlp_path, cnn_path
