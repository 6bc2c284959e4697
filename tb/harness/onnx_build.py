"""Float ONNX test models shaped the way real exporters write them (no PyTorch or TensorFlow).

Each builder returns an ``onnx.ModelProto`` that ``onnx.checker`` accepts and onnxruntime runs,
with one graph input named ``"input"`` (float32) and one graph output named ``"output"``
(float32). Node, tensor and initializer names follow the exporter they imitate
(``torch.onnx.export``: ``/conv1/Conv``, ``conv1.weight``; tf2onnx: ``sequential/dense/MatMul``).
Weights are drawn from the caller's seeded ``numpy.random.Generator``:

* conv / dense weights He-scaled, ``N(0, 2 / fan_in)``; biases ``U(-1/sqrt(fan_in),
  1/sqrt(fan_in))`` (PyTorch's default bias init);
* BatchNormalization with non-trivial statistics: ``scale ~ U(0.5, 1.5)``, ``B ~ N(0, 0.2)``,
  ``mean ~ N(0, 0.3)``, ``var ~ U(0.5, 2)``, ``epsilon = 1e-5`` (its default).

Every builder takes ``opset`` (13..21; the default is what the exporter imitated writes: 17
for torch.onnx.export, 13 for tf2onnx). The ``ir_version`` is the lowest that the opset needs
(``onnx.helper.find_min_ir_version_for``), what the exporters write; onnxruntime 1.32 runs all
of them.

Builders (shapes are NCHW for images, ``(batch, features)`` for vectors):

* :func:`lenet5` -- PyTorch's LeNet-5, with the dynamic-batch flatten chain or ``Flatten``;
* :func:`small_resnet` -- stem, a basic residual block and a downsampling block, unfused BN;
* :func:`keras_mlp` -- tf2onnx's MatMul + Add layers with Identity and Dropout nodes;
* :func:`bn1d_mlp` -- a Gemm (or MatMul + Add) followed by BatchNorm1d;
* :func:`transposed_matmul` -- ``(W @ x.T).T`` and a MatMul with a transposed constant;
* :func:`pooling_cnn` -- AveragePool / MaxPool with pads, ``auto_pad`` SAME_UPPER, GAP;
* :func:`depthwise_cnn` -- a MobileNet-style depthwise Conv then a pointwise Conv;
* :func:`one_node` -- a one-node model (for error tests); :func:`make_model` -- any graph;
  :func:`set_initializer` -- replace an initializer's value (e.g. with a NaN).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


__all__ = ["lenet5", "small_resnet", "keras_mlp", "bn1d_mlp", "transposed_matmul",
           "pooling_cnn", "depthwise_cnn", "one_node", "make_model", "set_initializer",
           "BUILDERS"]


def make_model(nodes, inputs, outputs, initializers=(), *, opset=17, name="model",
               producer="pytorch"):
    """A checked ``onnx.ModelProto`` from ``onnx.helper`` parts.

    ``inputs`` / ``outputs``: ``(name, shape)`` pairs (float32; a shape entry may be a string,
    a symbolic dimension, or ``shape`` may be ``None`` for an unknown shape) or ready
    ``ValueInfoProto``. ``initializers``: ``{name: numpy array}`` or ``TensorProto`` list.
    ``opset``: the default domain's opset; the ``ir_version`` is the lowest it needs.
    Raises ``onnx.checker.ValidationError`` for an invalid graph (a bug in the caller).
    """
    def value_info(v):
        if isinstance(v, onnx.ValueInfoProto):
            return v
        vname, shape = v
        return helper.make_tensor_value_info(vname, TensorProto.FLOAT, shape)

    if isinstance(initializers, dict):
        initializers = [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()]
    graph = helper.make_graph(list(nodes), name, [value_info(v) for v in inputs],
                              [value_info(v) for v in outputs], list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    if not all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        # the checker wants every graph output's shape: shape inference fills them in
        model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def set_initializer(model, name, array):
    """A copy of ``model`` with initializer ``name`` replaced by ``array`` (dtype kept as given).
    Raises ``KeyError`` if there is no such initializer."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name == name:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(array), name))
            return out
    raise KeyError(name)


def one_node(op, input_shape, *, initializers=None, attrs=None, inputs=None, n_outputs=1,
             opset=17, output_shape=None):
    """A model of one node ``op`` whose first input is the graph input ``"input"`` (float32,
    ``input_shape``) and whose first output is the graph output ``"output"`` (shape
    ``output_shape``, or unknown). ``initializers``: ``{name: array}`` appended to the node's
    inputs in order (use ``inputs`` to give the full input list, ``""`` for an omitted optional
    input); ``attrs``: the node's attributes; extra outputs (``n_outputs`` > 1) are unused.
    The node is named ``"node"``."""
    initializers = dict(initializers or {})
    node_inputs = list(inputs) if inputs is not None else ["input", *initializers]
    outs = ["output"] + [f"output_{i}" for i in range(1, n_outputs)]
    node = helper.make_node(op, node_inputs, outs, name="node", **(attrs or {}))
    return make_model([node], [("input", list(input_shape))], [("output", output_shape)],
                      initializers, opset=opset, name=f"one_{op}")


class _Graph:
    """Accumulates nodes and initializers; names tensors the way the exporter does."""

    def __init__(self, rng, style="torch"):
        self.rng = rng
        self.style = style
        self.nodes = []
        self.inits = {}

    def init(self, name, array):
        self.inits[name] = np.asarray(array)
        return name

    def node(self, op, inputs, scope, n_outputs=1, **attrs):
        """Appends node ``op`` under ``scope``; returns its output name (or names)."""
        if self.style == "torch":
            name = f"/{scope}/{op}" if scope else f"/{op}"
            outs = [f"{name}_output_{i}" for i in range(n_outputs)]
        else:                                      # tf2onnx: "scope/op", outputs "scope/op:0"
            name = f"{scope}/{op}"
            outs = [f"{name}:{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_outputs == 1 else outs

    def constant(self, scope, value):
        """A ``Constant`` node holding ``value`` (as torch.onnx.export writes small shapes)."""
        value = np.asarray(value)
        name = f"/{scope}/Constant" if scope else "/Constant"
        name = self._unique(name)
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], name=name,
                                           value=numpy_helper.from_array(value)))
        return out

    def _unique(self, name):
        names = {n.name for n in self.nodes}
        if name not in names:
            return name
        i = 1
        while f"{name}_{i}" in names:
            i += 1
        return f"{name}_{i}"

    def rename_last(self, output):
        """Renames the last node's output to ``output`` (the graph output's name)."""
        self.nodes[-1].output[0] = output
        return output

    # -- layers with weights ------------------------------------------------------------------
    def he(self, shape, fan_in):
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(self, n, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return self.rng.uniform(-bound, bound, n).astype(np.float32)

    def conv(self, x, scope, cin, cout, k, *, stride=1, pad=0, group=1, bias=True,
             auto_pad=None):
        fan_in = cin // group * k * k
        w = self.init(f"{scope}.weight", self.he((cout, cin // group, k, k), fan_in))
        ins = [x, w]
        if bias:
            ins.append(self.init(f"{scope}.bias", self.bias(cout, fan_in)))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], group=group,
                     dilations=[1, 1])
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = [pad] * 4
        return self.node("Conv", ins, scope.replace(".", "/"), **attrs)

    def bn(self, x, scope, c):
        rng = self.rng
        ins = [x,
               self.init(f"{scope}.weight", rng.uniform(0.5, 1.5, c).astype(np.float32)),
               self.init(f"{scope}.bias", rng.normal(0, 0.2, c).astype(np.float32)),
               self.init(f"{scope}.running_mean", rng.normal(0, 0.3, c).astype(np.float32)),
               self.init(f"{scope}.running_var", rng.uniform(0.5, 2.0, c).astype(np.float32))]
        return self.node("BatchNormalization", ins, scope.replace(".", "/"), epsilon=1e-5,
                         momentum=0.9)

    def gemm(self, x, scope, k, n):
        w = self.init(f"{scope}.weight", self.he((n, k), k))
        b = self.init(f"{scope}.bias", self.bias(n, k))
        return self.node("Gemm", [x, w, b], scope, alpha=1.0, beta=1.0, transB=1)

    def relu(self, x, scope):
        return self.node("Relu", [x], scope)

    def model(self, input_shape, output_shape, *, opset, name, producer="pytorch"):
        if not 13 <= opset <= 21:
            raise ValueError(f"opset must be 13..21 (Unsqueeze takes axes as an input from 13), "
                             f"not {opset}")
        return make_model(self.nodes, [("input", input_shape)], [("output", output_shape)],
                          self.inits, opset=opset, name=name, producer=producer)


def _batch(dynamic, symbol="batch_size"):
    return symbol if dynamic else 1


def _flatten(g, x, shape_const, scope, flatten, dynamic_batch):
    """PyTorch's ``x.view(x.size(0), -1)`` (``flatten="reshape"``), ``x.view(-1, n)``
    (``"view"``) or ``torch.flatten(x, 1)`` (``"flatten"``) as ``torch.onnx.export`` writes it
    (opset >= 13: Unsqueeze axes an input)."""
    if flatten == "flatten":
        return g.node("Flatten", [x], scope, axis=1)
    if flatten == "view":                       # x.view(-1, n): a constant shape, batch -1
        target = g.constant(scope, np.array([-1, shape_const], dtype=np.int64))
        return g.node("Reshape", [x, target], scope)
    if flatten != "reshape":
        raise ValueError(f"flatten must be 'reshape', 'view' or 'flatten', not {flatten!r}")
    if dynamic_batch:
        shape = g.node("Shape", [x], scope)
        index = g.constant(scope, np.array(0, dtype=np.int64))
        n = g.node("Gather", [shape, index], scope, axis=0)
        axes = g.constant(scope, np.array([0], dtype=np.int64))
        n1 = g.node("Unsqueeze", [n, axes], scope)
        minus1 = g.constant(scope, np.array([-1], dtype=np.int64))
        target = g.node("Concat", [n1, minus1], scope, axis=0)
    else:
        target = g.constant(scope, np.array([1, shape_const], dtype=np.int64))
    return g.node("Reshape", [x, target], scope)


def lenet5(rng, *, size=28, dynamic_batch=True, flatten="reshape", opset=17):
    """LeNet-5 as ``torch.onnx.export`` (opset 17) writes it: input ``(batch, 1, size, size)``,
    Conv(1->6, 5x5, pad 2) Relu MaxPool(2) Conv(6->16, 5x5) Relu MaxPool(2), a flatten (the
    dynamic-batch ``Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> Reshape`` chain, a
    static ``Reshape([1, n])`` without a dynamic batch, ``Reshape([-1, n])`` with
    ``flatten="view"``, or ``Flatten`` with ``flatten="flatten"``), Gemm(120, transB=1) Relu
    Gemm(84) Relu Gemm(10) -> output ``(batch, 10)``. ``batch`` is the symbol ``"batch_size"``
    when ``dynamic_batch``, else 1. ``size`` >= 12."""
    if size < 12:
        raise ValueError(f"size must be >= 12, not {size}")
    g = _Graph(rng)
    x = g.conv("input", "conv1", 1, 6, 5, pad=2)
    x = g.relu(x, "relu1")
    x = g.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2], pads=[0] * 4,
               ceil_mode=0)
    x = g.conv(x, "conv2", 6, 16, 5)
    x = g.relu(x, "relu2")
    x = g.node("MaxPool", [x], "pool2", kernel_shape=[2, 2], strides=[2, 2], pads=[0] * 4,
               ceil_mode=0)
    side = (size // 2 - 4) // 2
    flat = 16 * side * side
    x = _flatten(g, x, flat, "", flatten, dynamic_batch)
    x = g.relu(g.gemm(x, "fc1", flat, 120), "relu3")
    x = g.relu(g.gemm(x, "fc2", 120, 84), "relu4")
    g.gemm(x, "fc3", 84, 10)
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, 1, size, size], [batch, 10], opset=opset, name="main_graph")


def small_resnet(rng, *, size=16, channels=8, classes=10, dynamic_batch=True, opset=17):
    """A ResNet-style CNN as ``torch.onnx.export(..., training=TrainingMode.EVAL,
    do_constant_folding=False)`` writes it, BatchNormalization left as separate nodes and convs
    without bias: input ``(batch, 3, size, size)``; stem Conv(3->c, 3x3, pad 1) BN Relu; a basic
    block Conv BN Relu Conv BN, Add(identity skip), Relu; a downsampling block Conv(c->2c,
    stride 2) BN Relu Conv BN, its skip Conv(c->2c, 1x1, stride 2) BN, Add, Relu;
    GlobalAveragePool, Flatten, Gemm(classes) -> output ``(batch, classes)``. Opset 17;
    ``size`` even."""
    c = channels
    g = _Graph(rng)
    x = g.conv("input", "conv1", 3, c, 3, pad=1, bias=False)
    x = g.relu(g.bn(x, "bn1", c), "relu")
    # layer1: basic block, identity skip
    y = g.conv(x, "layer1.0.conv1", c, c, 3, pad=1, bias=False)
    y = g.relu(g.bn(y, "layer1.0.bn1", c), "layer1/0/relu")
    y = g.bn(g.conv(y, "layer1.0.conv2", c, c, 3, pad=1, bias=False), "layer1.0.bn2", c)
    x = g.relu(g.node("Add", [y, x], "layer1/0"), "layer1/0/relu_1")
    # layer2: downsampling block, 1x1 stride-2 conv + BN skip
    y = g.conv(x, "layer2.0.conv1", c, 2 * c, 3, stride=2, pad=1, bias=False)
    y = g.relu(g.bn(y, "layer2.0.bn1", 2 * c), "layer2/0/relu")
    y = g.bn(g.conv(y, "layer2.0.conv2", 2 * c, 2 * c, 3, pad=1, bias=False),
             "layer2.0.bn2", 2 * c)
    s = g.conv(x, "layer2.0.downsample.0", c, 2 * c, 1, stride=2, bias=False)
    s = g.bn(s, "layer2.0.downsample.1", 2 * c)
    x = g.relu(g.node("Add", [y, s], "layer2/0"), "layer2/0/relu_1")
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "", axis=1)
    g.gemm(x, "fc", 2 * c, classes)
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, 3, size, size], [batch, classes], opset=opset, name="main_graph")


def keras_mlp(rng, *, features=20, hidden=(32, 16), classes=3, dynamic_batch=True, opset=13,
              softmax=False):
    """A Keras ``Sequential`` of Dense(relu) layers with Dropout, as tf2onnx (opset 13) writes
    it: per layer ``MatMul(x, W (K, N))``, ``Add(b (N,))``, ``Relu``; an ``Identity`` after each
    hidden layer; a ``Dropout`` after each hidden layer in inference mode (the first with one
    input and one output, the others with ``ratio`` and ``training_mode=False`` inputs and the
    optional mask output); the last layer MatMul + Add (logits), and with ``softmax`` a
    ``Softmax`` (``Dense(activation="softmax")``: probabilities). Input ``(batch, features)``,
    batch the symbol ``"unk__0"`` when ``dynamic_batch``; output ``(batch, classes)``."""
    g = _Graph(rng, style="tf")
    x = "input"
    k = features
    for i, n in enumerate(hidden):
        scope = f"sequential/dense{'_' + str(i) if i else ''}"
        w = g.init(f"{scope}/MatMul/ReadVariableOp:0", g.he((k, n), k))
        b = g.init(f"{scope}/BiasAdd/ReadVariableOp:0", g.bias(n, k))
        x = g.node("MatMul", [x, w], scope)
        x = g.node("Add", [x, b], scope + "/BiasAdd")
        x = g.node("Relu", [x], scope)
        x = g.node("Identity", [x], scope)
        dscope = f"sequential/dropout{'_' + str(i) if i else ''}"
        if i == 0:
            x = g.node("Dropout", [x], dscope)
        else:
            ratio = g.init(f"{dscope}/ratio", np.array(0.5, dtype=np.float32))
            mode = g.init(f"{dscope}/training_mode", np.array(False))
            x = g.node("Dropout", [x, ratio, mode], dscope, n_outputs=2)[0]
        k = n
    scope = f"sequential/dense_{len(hidden)}"
    w = g.init(f"{scope}/MatMul/ReadVariableOp:0", g.he((k, classes), k))
    b = g.init(f"{scope}/BiasAdd/ReadVariableOp:0", g.bias(classes, k))
    x = g.node("MatMul", [x, w], scope)
    x = g.node("Add", [x, b], scope + "/BiasAdd")
    if softmax:
        g.node("Softmax", [x], scope + "/Softmax", axis=-1 if opset >= 13 else 1)
    g.rename_last("output")
    batch = _batch(dynamic_batch, "unk__0")
    return g.model([batch, features], [batch, classes], opset=opset, name="tf2onnx",
                   producer="tf2onnx")


def bn1d_mlp(rng, *, features=16, hidden=32, classes=4, variant="gemm", dynamic_batch=True,
             opset=17):
    """An MLP with PyTorch's BatchNorm1d, not folded by the exporter (opset 17): ``Gemm ->
    BatchNormalization -> Relu -> Gemm`` (``variant="gemm"``), or with the first layer as
    ``MatMul(x, W (K, N)) -> Add(b)`` (``variant="matmul"``). Input ``(batch, features)``,
    output ``(batch, classes)``."""
    g = _Graph(rng)
    if variant == "gemm":
        x = g.gemm("input", "fc1", features, hidden)
    elif variant == "matmul":
        w = g.init("fc1.weight_t", g.he((features, hidden), features))
        b = g.init("fc1.bias", g.bias(hidden, features))
        x = g.node("Add", [g.node("MatMul", ["input", w], "fc1"), b], "fc1")
    else:
        raise ValueError(f"variant must be 'gemm' or 'matmul', not {variant!r}")
    x = g.relu(g.bn(x, "bn1", hidden), "relu")
    g.gemm(x, "fc2", hidden, classes)
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, features], [batch, classes], opset=opset, name="main_graph")


def transposed_matmul(rng, *, features=12, hidden=10, classes=5, dynamic_batch=True, opset=17):
    """Transposed weights as hand-written PyTorch code exports them (opset 17): layer 1 is
    ``(W1 @ x.T).T + b1`` -- ``Transpose(perm [1, 0])``, ``MatMul`` with the constant ``W1
    (hidden, features)`` on the LEFT, ``Transpose`` back, ``Add(b1)`` -- then Relu; layer 2 is
    ``h @ W2.T + b2`` with ``W2 (classes, hidden)`` stored as an initializer and transposed by a
    ``Transpose`` node before the ``MatMul``. Input ``(batch, features)``, output ``(batch,
    classes)``."""
    g = _Graph(rng)
    w1 = g.init("W1", g.he((hidden, features), features))
    b1 = g.init("b1", g.bias(hidden, features))
    xt = g.node("Transpose", ["input"], "t_in", perm=[1, 0])
    y = g.node("MatMul", [w1, xt], "layer1")
    y = g.node("Transpose", [y], "t_out", perm=[1, 0])
    y = g.relu(g.node("Add", [y, b1], "layer1"), "relu")
    w2 = g.init("W2", g.he((classes, hidden), hidden))
    b2 = g.init("b2", g.bias(classes, hidden))
    w2t = g.node("Transpose", [w2], "layer2", perm=[1, 0])
    y = g.node("MatMul", [y, w2t], "layer2")
    g.node("Add", [y, b2], "layer2")
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, features], [batch, classes], opset=opset, name="main_graph")


def pooling_cnn(rng, *, size=16, channels=8, classes=10, dynamic_batch=True, opset=17):
    """A CNN with every pooling form (opset 17), input ``(batch, 3, size, size)``, ``size`` a
    multiple of 4: Conv(3->c, 3x3, pad 1, no bias) BN Relu; AveragePool(3x3, stride 2, pads 1,
    ``count_include_pad=0``); Conv(c->c, 3x3, stride 2, ``auto_pad="SAME_UPPER"``: padding
    bottom/right only) Relu; MaxPool(3x3, stride 2, pads 1); AveragePool(2x2, stride 1, pads
    [0, 0, 1, 1], ``count_include_pad=1``); GlobalAveragePool; Flatten; Gemm(classes) -> output
    ``(batch, classes)``."""
    c = channels
    g = _Graph(rng)
    x = g.conv("input", "features.0", 3, c, 3, pad=1, bias=False)
    x = g.relu(g.bn(x, "features.1", c), "features/2")
    x = g.node("AveragePool", [x], "features/3", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=0)
    x = g.relu(g.conv(x, "features.4", c, c, 3, stride=2, auto_pad="SAME_UPPER"), "features/5")
    x = g.node("MaxPool", [x], "features/6", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1], ceil_mode=0)
    x = g.node("AveragePool", [x], "features/7", kernel_shape=[2, 2], strides=[1, 1],
               pads=[0, 0, 1, 1], count_include_pad=1)
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "", axis=1)
    g.gemm(x, "classifier", c, classes)
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, 3, size, size], [batch, classes], opset=opset, name="main_graph")


def depthwise_cnn(rng, *, size=12, channels=8, multiplier=1, classes=10, dynamic_batch=True,
                  opset=17):
    """A MobileNet-style CNN (opset 17), input ``(batch, 3, size, size)``: Conv(3->c, 3x3,
    pad 1) Relu; depthwise Conv(c -> c*multiplier, 3x3, stride 2, pad 1, ``group=c``, no bias)
    BN Relu; pointwise Conv(c*multiplier -> 2c, 1x1) Relu; GlobalAveragePool; Flatten;
    Gemm(classes) -> output ``(batch, classes)``."""
    c = channels
    m = c * multiplier
    g = _Graph(rng)
    x = g.relu(g.conv("input", "conv0", 3, c, 3, pad=1), "relu0")
    x = g.conv(x, "dw.0", c, m, 3, stride=2, pad=1, group=c, bias=False)
    x = g.relu(g.bn(x, "dw.1", m), "dw/2")
    x = g.relu(g.conv(x, "pw.0", m, 2 * c, 1), "pw/1")
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "", axis=1)
    g.gemm(x, "fc", 2 * c, classes)
    g.rename_last("output")
    batch = _batch(dynamic_batch)
    return g.model([batch, 3, size, size], [batch, classes], opset=opset, name="main_graph")


#: Every model builder by name, each callable as ``builder(rng)``.
BUILDERS = {
    "lenet5": lenet5,
    "lenet5_flatten": lambda rng: lenet5(rng, flatten="flatten"),
    "lenet5_static": lambda rng: lenet5(rng, dynamic_batch=False),
    "lenet5_view": lambda rng: lenet5(rng, flatten="view"),
    "small_resnet": small_resnet,
    "keras_mlp": keras_mlp,
    "keras_mlp_softmax": lambda rng, **kw: keras_mlp(rng, softmax=True, **kw),
    "bn1d_mlp": bn1d_mlp,
    "bn1d_mlp_matmul": lambda rng: bn1d_mlp(rng, variant="matmul"),
    "transposed_matmul": transposed_matmul,
    "pooling_cnn": pooling_cnn,
    "depthwise_cnn": depthwise_cnn,
}
