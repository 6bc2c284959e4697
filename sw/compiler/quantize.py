"""Post-training quantization of float models into :mod:`pim_macro.sw.compiler.network` int8
networks.

Inputs
======

* :func:`quantize_mlp`: a fitted scikit-learn ``MLPClassifier`` / ``MLPRegressor`` whose hidden
  activation is ``relu`` (or ``identity``), or a ``Pipeline`` of an optional ``StandardScaler``
  and such an MLP: made a canonical float ONNX model by
  :func:`pim_macro.sw.compiler.sklearn_import.from_sklearn` (the scaler folded into the first
  layer), then quantized by :func:`quantize_onnx` (one path). Every layer becomes a
  :class:`~pim_macro.sw.compiler.network.Dense`; the hidden layers get a fused ReLU, the last
  layer none: its int8 outputs are the logits (pre-softmax / pre-logistic), whose argmax is the
  prediction (for a binary classifier, with a single logit, its sign:
  :func:`pim_macro.sw.compiler.classes.predict`). A classifier's ``classes_`` become the
  network's ``classes``.
* :func:`quantize_onnx`: a float ONNX model, first brought to the canonical form by
  :func:`pim_macro.sw.compiler.onnx_import.normalize` (so real exports work: the dynamic-batch
  flatten, BatchNorm, Identity, Dropout, transposed MatMuls), that is then a single chain,
  walked from its single graph input in topological order, of

  - ``Gemm`` (``transA=0``; ``alpha``/``beta``/``transB`` folded in), ``MatMul`` with a
    constant right-hand side, optionally followed by ``Add`` of a constant bias;
  - ``Conv`` (2-D, ``group=1``, dilation 1, symmetric ``pads``, ``strides``), with its bias or a
    following ``Add`` of a per-channel constant;
  - ``Relu`` directly after one of those linear layers (fused into its clamp);
  - ``Flatten`` (``axis=1``) and ``Reshape`` to ``(batch, -1)`` (flattening only);
  - ``Constant`` nodes (as a source of constants only).

  The convolution input geometry comes from the graph input's shape ``(N, C, H, W)`` and is
  propagated layer by layer; a flatten before a dense layer is in (C, H, W) order, exactly the
  order :mod:`pim_macro.sw.compiler.network` uses. Anything else (another op, a grouped or dilated
  convolution, several inputs or outputs, a branch, a non-flattening ``Reshape``, a ``Relu`` not
  directly after a linear layer) raises ``ValueError`` naming the node and its op; pooling,
  residual adds, depthwise convolutions and softmax take the graph quantizer
  (:mod:`pim_macro.sw.compiler.graph_quantizer`, ``pim quantize --out M.tflite``).
  The ``metadata_props`` entry ``pim_macro.classes`` (a JSON list) becomes the network's
  ``classes``.

The scheme
==========

TFLite's post-training int8 quantization (what its converter makes, and LiteRT's reference
kernels run), so that the networks made here have the arithmetic of an imported ``.tflite``:

* Activations: asymmetric int8 per tensor. The float model is run layer by layer in numpy on
  the calibration inputs; a tensor's range ``[min(0, lo), max(0, hi)]`` (its calibration
  minimum and maximum, widened to include 0, after the ReLU if the layer has one) gives its
  scale and zero point by TFLite's ``ChooseQuantizationParams``
  (``tensorflow/lite/kernels/internal/quantization_util.h``; :func:`activation_params`). A
  tensor that is 0 on every calibration sample gets the range ``[0, 1]``.
* Weights: symmetric int8 (zero point 0) per output channel: ``s_w[c] = max|w[c]| / 127``,
  ``w_int8 = round(w / s_w[c])`` in ``-127 .. 127`` (a zero channel gets ``s_w = 1``).
* Bias: int32 ``round(b[c] / (s_in * s_w[c]))`` (``ValueError`` if it does not fit in int32),
  the input zero point not folded in (the compiler folds it).
* Requantization: per output channel the ``(multiplier, shift)`` of the real scale ``s_in *
  s_w[c] / s_out`` in double precision, by TFLite's ``QuantizeMultiplier``
  (:func:`pim_macro.sw.models.requant.quantize_multiplier`); the layer's output zero point, and a
  fused ReLU as ``act_min = output zero point`` (TFLite's ``CalculateActivationRangeQuantized``).
  Scales are float32 first, as a ``.tflite`` stores them. ``FULLY_CONNECTED`` layers (dense)
  use single rounding and ``CONV_2D`` layers double rounding, what LiteRT's reference kernels do
  (measured, see :mod:`pim_macro.sw.models.requant`).
* Rounding of reals to integers is half away from zero (TFLite's ``TfLiteRound``).
* The network's ``input_scale`` and first layer's ``input_zero_point`` quantize its inputs
  (:func:`quantize_input`: ``clip(round(x / scale) + zero_point, -128, 127)``, TFLite's
  ``QUANTIZE``); its ``output_scale`` and the last layer's ``output_zero_point`` dequantize the
  outputs (``y_float ~= output_scale * (y_int8 - output_zero_point)``).

:func:`report` measures the int8-versus-float error of a quantized network (and
:func:`quantization_warnings` says when it is large and why);
:func:`float_forward` gives the float reference of a source model (the logits, in numpy).

Loading files
=============

:func:`load_float_model` reads ``.onnx`` files with :mod:`onnx`, and ``.pkl`` / ``.joblib``
files (a pickled scikit-learn estimator) with :mod:`joblib`. **Unpickling executes code stored in
the file: only load pickles you trust.** :func:`quantize_file` loads and quantizes in one go.

All errors are ``ValueError`` with a one-line message.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pim_macro.sw.compiler.network import Conv, Dense, Network, forward
from pim_macro.sw.compiler.onnx_import import node_attributes as _attrs
from pim_macro.sw.compiler.onnx_import import node_label as _node_label
from pim_macro.sw.models.requant import INT32_MAX, INT32_MIN, quantize_multiplier


__all__ = ["activation_params", "quantize_mlp", "quantize_onnx", "quantize_input", "report",
           "quantization_warnings", "feature_ranges", "RELATIVE_ERROR_WARN",
           "float_forward", "load_float_model", "quantize_file", "quantize_model", "FloatLayer"]

QMIN, QMAX = -128, 127
#: Symmetric weights use -127 .. 127 (TFLite's int8 filters).
WMAX = 127


# -- TFLite's quantization parameters ----------------------------------------------------------

def _round(x):
    """Half away from zero, as TFLite's ``TfLiteRound`` (``std::round``); arrays or scalars."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_params(lo, hi):
    """``(scale, zero_point)`` of an int8 tensor whose real values span ``lo .. hi``: TFLite's
    ``ChooseQuantizationParams`` (``quantization_util.h``) on the range widened to include 0;
    the scale is float32, as a ``.tflite`` stores it. A range of only 0 is taken as ``[0, 1]``.
    Raises ``ValueError`` for a non-finite bound."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"the calibration range {lo} .. {hi} is not finite")
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if lo == hi:
        hi = 1.0
    scale = (hi - lo) / (QMAX - QMIN)
    from_min, from_max = QMIN - lo / scale, QMAX - hi / scale
    # the zero point whose end of the range is represented with the smaller error
    error_min, error_max = abs(QMIN) + abs(lo / scale), abs(QMAX) + abs(hi / scale)
    zero_point = from_min if error_min < error_max else from_max
    zero_point = int(min(max(_round(zero_point), QMIN), QMAX))
    return float(np.float32(scale)), zero_point


# -- float layers -------------------------------------------------------------------------------

@dataclass
class FloatLayer:
    """One float layer of a source model: dense ``w`` (out, in) or convolution ``w`` (out_ch,
    in_ch, kh, kw) with bias ``b``; ``in_shape`` (C, H, W), ``stride``, ``pad`` for
    convolutions."""
    w: np.ndarray
    b: np.ndarray
    relu: bool = False
    in_shape: tuple = None
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    name: str = field(default="")

    @property
    def is_conv(self):
        return self.w.ndim == 4

    @property
    def out_shape(self):
        if not self.is_conv:
            return (self.w.shape[0],)
        c, h, w = self.in_shape
        kh, kw = self.w.shape[2:]
        (sh, sw), (ph, pw) = self.stride, self.pad
        return (self.w.shape[0], (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def __call__(self, x):
        """Float output (B, *out_shape) of input ``x`` (B, ...)."""
        x = np.asarray(x, dtype=np.float64)
        if self.is_conv:
            x = x.reshape(x.shape[0], *self.in_shape)
            kh, kw = self.w.shape[2:]
            (sh, sw), (ph, pw) = self.stride, self.pad
            _, ho, wo = self.out_shape
            padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
            cols = np.empty((x.shape[0], ho, wo, x.shape[1], kh, kw))
            for dy in range(kh):
                for dx in range(kw):
                    window = padded[:, :, dy:dy + sh * ho:sh, dx:dx + sw * wo:sw]
                    cols[:, :, :, :, dy, dx] = window.transpose(0, 2, 3, 1)
            y = cols.reshape(x.shape[0], ho * wo, -1) @ self.w.reshape(self.w.shape[0], -1).T
            y = (y + self.b).transpose(0, 2, 1).reshape(x.shape[0], *self.out_shape)
        else:
            y = x.reshape(x.shape[0], -1) @ self.w.T + self.b
        return np.maximum(y, 0.0) if self.relu else y


def _run_float(layers, x):
    """Float outputs of every layer on ``x``."""
    outs = []
    for layer in layers:
        x = layer(x)
        outs.append(x)
    return outs


def _quantize_layers(layers, calib, classes=None):
    """The :class:`Network` of float ``layers`` calibrated on float inputs ``calib``, with the
    classifier's ``classes`` (or ``None``). ``ValueError`` for non-finite weights, biases or
    calibration data."""
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim < 2 or calib.shape[0] == 0:
        raise ValueError(f"the calibration data must be a non-empty batch (N, ...), not of "
                         f"shape {calib.shape}")
    if not np.all(np.isfinite(calib)):
        raise ValueError("the calibration data holds non-finite values")
    first = layers[0]
    need = int(np.prod(first.in_shape)) if first.is_conv else first.w.shape[1]
    if calib[0].size != need:
        raise ValueError(f"the calibration samples have {calib[0].size} values, but the model "
                         f"takes {need}")
    s_in, zp_in = activation_params(calib.min(), calib.max())
    input_scale = s_in
    quantized = []
    for i, (layer, out) in enumerate(zip(layers, _run_float(layers, calib))):
        where = f"layer {i}" + (f" ({layer.name})" if layer.name else "")
        for what, value in (("weights", layer.w), ("bias", layer.b)):
            # A NaN weight would make the weight scale NaN and every int8 weight -1/0/1.
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: the {what} {'hold' if what == 'weights' else 'holds'}"
                                 f" a non-finite value "
                                 f"({np.asarray(value).ravel()[~np.isfinite(value).ravel()][0]})")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{where}: the float outputs on the calibration data are not finite")
        s_out, zp_out = activation_params(out.min(), out.max())
        n = layer.w.shape[0]
        w = np.asarray(layer.w, np.float64)
        w_max = np.abs(w.reshape(n, -1)).max(axis=1)
        s_w = np.where(w_max > 0, w_max / WMAX, 1.0).astype(np.float32).astype(np.float64)
        per_channel = s_w.reshape((n,) + (1,) * (w.ndim - 1))
        w_q = np.clip(_round(w / per_channel), -WMAX, WMAX).astype(np.int8)
        bias_scale = (np.float32(s_in) * s_w.astype(np.float32)).astype(np.float64)
        b_q = _round(np.asarray(layer.b, np.float64) / bias_scale)
        if b_q.size and (b_q.min() < INT32_MIN or b_q.max() > INT32_MAX):
            raise ValueError(f"{where}: the bias does not fit in int32 at scale "
                             f"{bias_scale.min():.3g}")
        try:
            pairs = [quantize_multiplier(s_in * float(s) / s_out) for s in s_w]
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        q = dict(w=w_q, b=b_q.astype(np.int32), multiplier=[m for m, _ in pairs],
                 shift=[sh for _, sh in pairs], input_zero_point=zp_in,
                 output_zero_point=zp_out, act_min=zp_out if layer.relu else QMIN,
                 act_max=QMAX, double_rounding=layer.is_conv)
        if layer.is_conv:
            quantized.append(Conv(**q, in_shape=tuple(int(v) for v in layer.in_shape),
                                  stride=tuple(int(v) for v in layer.stride),
                                  pad=tuple(int(v) for v in layer.pad)))
        else:
            quantized.append(Dense(**q))
        s_in, zp_in = s_out, zp_out
    return Network(tuple(quantized), input_scale=input_scale, output_scale=s_in,
                   classes=classes)


# -- scikit-learn -------------------------------------------------------------------------------

def quantize_mlp(clf, calib):
    """The int8 :class:`Network` of a fitted ``MLPClassifier`` / ``MLPRegressor`` or a
    ``Pipeline(StandardScaler, MLP)`` (Dense layers, ReLU on the hidden ones, logits out; the
    classifier's ``classes_`` as the network's ``classes``), calibrated on float inputs
    ``calib`` (N, features): :func:`~pim_macro.sw.compiler.sklearn_import.from_sklearn`, then
    :func:`quantize_onnx`. Raises ``ValueError`` (``UnsupportedModel`` for an estimator
    from_sklearn does not take)."""
    from pim_macro.sw.compiler.sklearn_import import from_sklearn
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim > 2:
        calib = calib.reshape(calib.shape[0], -1)
    return quantize_onnx(from_sklearn(clf), calib)


# -- ONNX ---------------------------------------------------------------------------------------

_ONNX_OPS = {"Gemm", "MatMul", "Add", "Conv", "Relu", "Flatten", "Reshape", "Constant"}


def _as_model(path_or_model):
    import onnx
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (str, Path)):
        return _load_onnx(path_or_model)
    raise ValueError(f"expected an ONNX model or a path, not {type(path_or_model).__name__}")


def _chain_model(path_or_model):
    """The canonical form (:func:`pim_macro.sw.compiler.onnx_import.normalize`: the batch fixed
    to 1, BatchNorm folded, Identity and Dropout gone, flattens made one Reshape) of an ONNX
    model or path."""
    from pim_macro.sw.compiler.onnx_import import normalize
    return normalize(_as_model(path_or_model))


def _load_onnx(path):
    from pim_macro.sw.compiler.onnx_import import load_onnx
    path = Path(path)
    _check_model_file(path)
    return load_onnx(path)


def _topological(nodes, available):
    """``nodes`` in a topological order (Kahn's algorithm from the ``available`` tensors)."""
    ready = set(available)
    pending = list(nodes)
    order = []
    while pending:
        progress = False
        for node in list(pending):
            if all(not name or name in ready for name in node.input):
                order.append(node)
                ready.update(node.output)
                pending.remove(node)
                progress = True
        if not progress:
            node = pending[0]
            missing = [n for n in node.input if n and n not in ready]
            raise ValueError(f"{_node_label(node)}: input {missing[0]!r} is never produced "
                             f"(the graph is cyclic or incomplete)")
    return order


def _onnx_classes(model):
    """The classes in ``model.metadata_props`` (``pim_macro.classes``), or ``None``."""
    from pim_macro.sw.compiler.classes import METADATA_KEY, classes_from_json
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return classes_from_json(prop.value, f"the model's {METADATA_KEY}")
    return None


def _onnx_layers(model):
    """The float layers of an ONNX model and its input shape (without the batch dimension)."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {}
    for init in graph.initializer:
        consts[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type not in _ONNX_OPS:
            raise ValueError(f"{_node_label(node)}: op {node.op_type} does not run in an .npz "
                             f"chain of Gemm, Conv and Relu layers (write --out M.tflite: the "
                             f"graph quantizer takes pooling, residual adds, depthwise "
                             f"convolutions and softmax)")
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"{_node_label(node)}: unsupported op domain {node.domain!r}")
        if node.op_type == "Constant":
            value = _attrs(node).get("value")
            if value is None:
                raise ValueError(f"{_node_label(node)}: only tensor constants ('value') are "
                                 f"supported")
            consts[node.output[0]] = numpy_helper.to_array(value)
    inputs = [v for v in graph.input if v.name not in consts]
    if len(inputs) != 1:
        raise ValueError(f"the graph must have exactly one input, not {len(inputs)} "
                         f"({', '.join(v.name for v in inputs)})")
    if len(graph.output) != 1:
        raise ValueError(f"the graph must have exactly one output, not {len(graph.output)}")
    graph_in = inputs[0]
    dims = []
    for d in graph_in.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else None)
    if len(dims) not in (2, 4):
        raise ValueError(f"the graph input {graph_in.name!r} must be (N, features) or "
                         f"(N, C, H, W), not of rank {len(dims)}")
    if any(d is None or d < 1 for d in dims[1:]):
        raise ValueError(f"the graph input {graph_in.name!r} needs fixed non-batch dimensions, "
                         f"not {dims}")
    batch = dims[0]
    shape = tuple(dims[1:])
    in_shape = shape

    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    current = graph_in.name
    layers = []
    last_op = None           # the op that produced ``current``: "linear", "add", "relu", ...
    for node in _topological(graph.node, [graph_in.name, *consts]):
        if node.op_type == "Constant":
            continue
        label = _node_label(node)
        data = [n for n in node.input if n and n not in consts]
        if data != [current]:
            raise ValueError(f"{label}: it must take the previous layer's output {current!r} as "
                             f"its only non-constant input (an .npz holds only a chain of layers; "
                             f"write --out M.tflite for branches)")
        if len(consumers.get(current, [])) != 1:
            raise ValueError(f"{label}: tensor {current!r} feeds several nodes (an .npz holds "
                             f"only a chain of layers; write --out M.tflite for branches)")
        if len(node.output) != 1:
            raise ValueError(f"{label}: must have a single output")
        if node.input[0] != current and node.op_type not in ("Add",):
            raise ValueError(f"{label}: the data must be its first input")
        attrs = _attrs(node)
        op = node.op_type
        params = [consts.get(n) if n else None for n in node.input[1:]]

        if op in ("Gemm", "MatMul"):
            if len(shape) != 1:
                raise ValueError(f"{label}: its input has shape {shape}; flatten it first")
            if op == "Gemm":
                if attrs.get("transA", 0):
                    raise ValueError(f"{label}: transA=1 is not supported")
                w = np.asarray(params[0], np.float64) * float(attrs.get("alpha", 1.0))
                if w.ndim != 2:
                    raise ValueError(f"{label}: the weight must be 2-D, not {w.shape}")
                w = w if attrs.get("transB", 0) else w.T
                b = np.zeros(w.shape[0])
                if len(params) > 1 and params[1] is not None:
                    b = _bias(label, np.asarray(params[1], np.float64)
                              * float(attrs.get("beta", 1.0)), w.shape[0])
            else:
                w = np.asarray(params[0], np.float64)
                if w.ndim != 2:
                    raise ValueError(f"{label}: the weight must be a 2-D constant, not {w.shape}")
                w = w.T
                b = np.zeros(w.shape[0])
            if w.shape[1] != shape[0]:
                raise ValueError(f"{label}: the weight takes {w.shape[1]} inputs, but its "
                                 f"input has {shape[0]}")
            layers.append(FloatLayer(w, b, name=node.name))
            shape = (w.shape[0],)
            last_op = "linear"
        elif op == "Conv":
            if len(shape) != 3:
                raise ValueError(f"{label}: its input must be (C, H, W) images, not {shape}")
            w = np.asarray(params[0], np.float64)
            if w.ndim != 4:
                raise ValueError(f"{label}: only 2-D convolutions are supported (weight shape "
                                 f"{w.shape})")
            if attrs.get("group", 1) != 1:
                raise ValueError(f"{label}: grouped convolution (group={attrs['group']}) is not "
                                 f"supported")
            if any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise ValueError(f"{label}: dilation {list(attrs['dilations'])} is not "
                                 f"supported")
            auto_pad = attrs.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
            if auto_pad not in ("NOTSET", "VALID"):
                raise ValueError(f"{label}: auto_pad={auto_pad} is not supported; give pads")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4 or pads[:2] != pads[2:]:
                raise ValueError(f"{label}: only symmetric 2-D pads are supported, not {pads}")
            strides = list(attrs.get("strides", [1, 1]))
            if len(strides) != 2:
                raise ValueError(f"{label}: strides must be two integers, not {strides}")
            kernel = list(attrs.get("kernel_shape", w.shape[2:]))
            if kernel != list(w.shape[2:]):
                raise ValueError(f"{label}: kernel_shape {kernel} does not match the weight "
                                 f"{w.shape}")
            if w.shape[1] != shape[0]:
                raise ValueError(f"{label}: the weight takes {w.shape[1]} channels, but its "
                                 f"input has {shape[0]}")
            b = np.zeros(w.shape[0])
            if len(params) > 1 and params[1] is not None:
                b = _bias(label, np.asarray(params[1], np.float64), w.shape[0])
            layer = FloatLayer(w, b, in_shape=shape, stride=tuple(strides), pad=tuple(pads[:2]),
                               name=node.name)
            if min(layer.out_shape[1:]) < 1:
                raise ValueError(f"{label}: the kernel does not fit the padded input {shape}")
            layers.append(layer)
            shape = layer.out_shape
            last_op = "linear"
        elif op == "Add":
            if last_op != "linear":
                raise ValueError(f"{label}: an Add is only supported as the bias directly after "
                                 f"Gemm, MatMul or Conv")
            other = [n for n in node.input if n != current]
            if len(other) != 1:
                raise ValueError(f"{label}: must add one constant bias")
            layer = layers[-1]
            layer.b = layer.b + _bias(label, consts[other[0]], layer.w.shape[0], layer.is_conv)
            last_op = "add"
        elif op == "Relu":
            if last_op not in ("linear", "add"):
                raise ValueError(f"{label}: a Relu must directly follow Gemm, MatMul or Conv "
                                 f"(optionally with its bias Add)")
            layers[-1].relu = True
            last_op = "relu"
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise ValueError(f"{label}: only axis=1 (flatten all but the batch) is "
                                 f"supported, not axis={attrs['axis']}")
            shape = (int(np.prod(shape)),)
            last_op = "flatten"
        elif op == "Reshape":
            target = params[0] if params else None
            if target is None:
                raise ValueError(f"{label}: the target shape must be a constant")
            target = [int(v) for v in np.asarray(target).reshape(-1)]
            size = int(np.prod(shape))
            ok_batch = (0, -1) + ((batch,) if batch else ())
            flattening = len(target) == 2 and target[0] in ok_batch and (
                target[1] == size or (target[1] == -1 and target[0] != -1))
            if not flattening:
                raise ValueError(f"{label}: only a flattening Reshape to (batch, {size}) is "
                                 f"supported, not {target}")
            shape = (size,)
            last_op = "flatten"
        current = node.output[0]
    if current != graph.output[0].name:
        raise ValueError(f"the chain ends at {current!r}, not at the graph output "
                         f"{graph.output[0].name!r}")
    if not layers:
        raise ValueError("the model has no Gemm, MatMul or Conv layer")
    return layers, in_shape


def _bias(label, value, out, conv=False):
    """A constant that broadcasts to one bias per output (per channel for a convolution)."""
    value = np.asarray(value, np.float64)
    if value.size == 1 and value.ndim <= (4 if conv else 2):
        return np.full(out, float(value.reshape(-1)[0]))
    shapes = ((out, 1, 1), (1, out, 1, 1)) if conv else ((out,), (1, out))
    if value.shape not in shapes:
        raise ValueError(f"{label}: the bias must have shape {' or '.join(map(str, shapes))}, "
                         f"not {value.shape}")
    return value.reshape(out)


def quantize_onnx(path_or_model, calib):
    """The int8 :class:`Network` of a float ONNX model (a path or a ``ModelProto``; see the
    module docstring for the supported graphs), calibrated on float inputs ``calib``: a batch of
    the graph input's shape (N, ...) or any (N, ...) with the same number of values per
    sample."""
    model = _chain_model(path_or_model)
    layers, in_shape = _onnx_layers(model)
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim >= 1 and calib.shape[0] and calib[0].size == int(np.prod(in_shape)):
        calib = calib.reshape(calib.shape[0], *in_shape)
    return _quantize_layers(layers, calib, _onnx_classes(model))


# -- files ----------------------------------------------------------------------------------------

def _check_model_file(path):
    """A ``ValueError`` unless ``path`` is a file (saying what it is otherwise)."""
    if path.is_dir():
        raise ValueError(f"cannot read model {path}: it is a directory")
    if not path.is_file():
        raise ValueError(f"cannot read model {path}: "
                         f"{'not a regular file' if path.exists() else 'no such file'}")


def load_float_model(path):
    """A float model from a file: ``.onnx`` -> ``onnx.ModelProto``; ``.pkl`` / ``.joblib`` -> a
    pickled scikit-learn estimator, loaded with joblib. **Unpickling runs code from the file:
    only load files you trust.** Other suffixes raise ``ValueError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path)
    if suffix in (".pkl", ".joblib"):
        import joblib
        _check_model_file(path)
        try:
            return joblib.load(path)
        except Exception as exc:    # unpickling can fail in many ways
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"cannot read pickled model {path}: {message}") from None
    raise ValueError(f"unknown float model type {path.name!r}: expected .onnx, .pkl or .joblib")


def _is_onnx(model):
    try:
        import onnx
    except ImportError:         # pragma: no cover
        return False
    return isinstance(model, onnx.ModelProto)


def quantize_model(model, calib):
    """Quantize a float model as :func:`load_float_model` returns it: an ``onnx.ModelProto``
    with :func:`quantize_onnx`, anything else (a scikit-learn estimator) with
    :func:`quantize_mlp`."""
    if _is_onnx(model):
        return quantize_onnx(model, calib)
    return quantize_mlp(model, calib)


def quantize_file(path, calib):
    """Load a float model with :func:`load_float_model` and quantize it
    (:func:`quantize_model`)."""
    return quantize_model(load_float_model(path), calib)


# -- using a quantized network --------------------------------------------------------------------

def quantize_input(network, x_float):
    """Float inputs -> int8 with ``network.input_scale`` and the first layer's input zero point
    ``zp``: ``clip(round(x / scale) + zp, -128, 127)`` (TFLite's ``QUANTIZE``, rounding half away
    from zero). Image inputs for a dense first layer are flattened to (B, features)."""
    if network.input_scale is None:
        raise ValueError("the network has no input_scale")
    x = np.asarray(x_float, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("the input holds non-finite values")
    zp = network.layers[0].input_zero_point
    q = np.clip(_round(x / network.input_scale) + zp, QMIN, QMAX).astype(np.int8)
    if isinstance(network.layers[0], Dense) and q.ndim > 2:
        q = q.reshape(q.shape[0], -1)
    return q


def float_forward(model):
    """A function ``x -> float outputs (B, out)`` evaluating a source model in numpy (float64):
    a fitted scikit-learn MLP or Pipeline (the pre-activation logits of its output layer, through
    :func:`~pim_macro.sw.compiler.sklearn_import.from_sklearn`: its float32 weights) or an ONNX
    model (a path or a ``ModelProto`` of the supported kind)."""
    if not (_is_onnx(model) or isinstance(model, (str, Path))):
        from pim_macro.sw.compiler.sklearn_import import from_sklearn
        model = from_sklearn(model)
    layers, in_shape = _onnx_layers(_chain_model(model))

    def run(x):
        x = np.asarray(x, dtype=np.float64)
        if in_shape is not None and x[0].size == int(np.prod(in_shape)):
            x = x.reshape(x.shape[0], *in_shape)
        y = _run_float(layers, x)[-1]
        return y.reshape(y.shape[0], -1)
    return run


def report(network, float_fn, x, labels=None, classes=None):
    """The int8-versus-float error of ``network`` on float inputs ``x``, as a dict:

    ``max_abs_error`` / ``mean_abs_error`` of the dequantized int8 outputs (``output_scale *
    (forward(...) - output_zero_point)``) against ``float_fn(x)``; ``output_range`` (max |float
    output|) and ``relative_error`` (max_abs_error / output_range); ``agreement`` (fraction of
    samples where both predictions agree); ``samples``. With ``labels`` (checked by
    :func:`pim_macro.sw.compiler.classes.check_labels`): ``float_accuracy`` and
    ``int8_accuracy``, the predictions of :func:`pim_macro.sw.compiler.classes.predict` (argmax,
    or the sign of a single logit) mapped through ``classes`` (default: the network's own, e.g.
    an sklearn classifier's ``classes_``) and compared with the labels. Every value is finite.
    Raises ``ValueError``.
    """
    if network.output_scale is None:
        raise ValueError("the network has no output_scale")
    if classes is None:
        classes = network.classes
    x = np.asarray(x, dtype=np.float64)
    y_int8, _ = forward(network, quantize_input(network, x))
    zero_point = network.layers[-1].output_zero_point
    deq = (y_int8.astype(np.float64) - zero_point) * network.output_scale
    ref = np.asarray(float_fn(x), dtype=np.float64).reshape(x.shape[0], -1)
    return compare_outputs(deq, ref, y_int8, zero_point, labels, classes)


def compare_outputs(deq, ref, y_int8, zero_point, labels=None, classes=None):
    """:func:`report`'s dict from the dequantized int8 outputs ``deq`` (B, n), the float
    outputs ``ref`` (B, n), the int8 outputs ``y_int8`` and their zero point (the predictions
    are decoded from them, as ``pim infer`` decodes), the labels and the classes. Raises
    ``ValueError`` for shapes that differ, float outputs that are not finite, and labels that
    do not fit the classes."""
    from pim_macro.sw.compiler.classes import accuracy, check_labels, predict
    deq, ref = np.asarray(deq, np.float64), np.asarray(ref, np.float64)
    if ref.shape != deq.shape:
        raise ValueError(f"the float outputs have shape {ref.shape}, the int8 outputs "
                         f"{deq.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("the float model's outputs on the test data are not finite")
    err = np.abs(deq - ref)
    out_range = float(np.max(np.abs(ref)))
    result = {
        "samples": int(deq.shape[0]),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "output_range": out_range,
        "relative_error": float(err.max() / out_range) if out_range > 0 else float(err.max()),
        "agreement": float(np.mean(predict(deq) == predict(ref))),
    }
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (deq.shape[0],):
            raise ValueError(f"expected {deq.shape[0]} labels, not shape {labels.shape}")
        check_labels(labels, classes, deq.shape[1])
        result["float_accuracy"] = accuracy(predict(ref, classes), labels)
        result["int8_accuracy"] = accuracy(predict(y_int8, classes, zero_point=zero_point),
                                           labels)
    return result


#: :func:`quantization_warnings` warns when the int8 outputs are off by more than this share
#: of the float outputs' range (``report``'s ``relative_error``). The committed digits models
#: are at 0.022 (MLP) and 0.009 (CNN) on scikit-learn's digits (calibrated on the first 1437
#: images, tested on the other 360); at 0.1 a tenth of the logit range is noise, enough to
#: flip close predictions.
RELATIVE_ERROR_WARN = 0.1
#: A feature whose calibration range is this many times smaller than the widest one is left
#: with fewer than 255 / 100, about 2, of the single int8 input scale's steps.
FEATURE_RANGE_RATIO_WARN = 100.0


def feature_ranges(calib):
    """Per input feature of float calibration data ``calib`` (N, features), (any (N, ...) is
    flattened per sample): ``(span (features,), ratio, widest, narrowest)``: ``span[j] =
    max(0, max x_j) - min(0, min x_j)`` (the range the int8 input scale must cover for it,
    widened to 0 as :func:`activation_params` widens it), ``ratio`` the widest span over the
    narrowest nonzero one (1.0 when fewer than two features vary), and the indices of both."""
    x = np.asarray(calib, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    span = np.maximum(x.max(axis=0), 0.0) - np.minimum(x.min(axis=0), 0.0)
    nonzero = np.flatnonzero(span > 0)
    if nonzero.size < 2:
        return span, 1.0, 0, 0
    widest = int(nonzero[np.argmax(span[nonzero])])
    narrowest = int(nonzero[np.argmin(span[nonzero])])
    return span, float(span[widest] / span[narrowest]), widest, narrowest


def quantization_warnings(summary, calib):
    """One-line warnings (a list of str, empty when all is well) about a :func:`report`
    ``summary`` of a network calibrated on ``calib``: when ``relative_error`` exceeds
    :data:`RELATIVE_ERROR_WARN`, saying why when it can tell: for feature vectors (N, features),
    calibration ranges that differ by more than :data:`FEATURE_RANGE_RATIO_WARN` times lose the
    small features to the single int8 input scale (TFLite's scheme: one scale and zero point per
    activation tensor)."""
    rel = summary.get("relative_error", 0.0)
    if not rel > RELATIVE_ERROR_WARN:
        return []
    text = (f"the int8 outputs are off by {rel:.2f} of the float outputs' range (more than "
            f"{RELATIVE_ERROR_WARN})")
    calib = np.asarray(calib, dtype=np.float64)
    if calib.ndim == 2:
        span, ratio, wide, narrow = feature_ranges(calib)
        if ratio > FEATURE_RANGE_RATIO_WARN:
            steps = 255.0 * span[narrow] / span[wide]
            text += (f": the input features' calibration ranges differ by {ratio:.0f}x "
                     f"(feature {wide} spans {span[wide]:.3g}, feature {narrow} "
                     f"{span[narrow]:.3g}), and one int8 scale for all of them leaves feature "
                     f"{narrow} {steps:.1f} steps; standardize the features before the model "
                     f"(a Pipeline's StandardScaler stays float in --out M.tflite; folded into "
                     f"an .npz's first layer it still leaves the raw inputs one scale)")
            return [text]
    return [text + ": check that the calibration data covers the test data, and that the "
                   "model's activations have no outliers"]
