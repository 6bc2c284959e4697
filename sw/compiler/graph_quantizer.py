"""Post-training int8 quantization of a float ONNX model into an int8 ``.tflite`` model.

:func:`quantize_graph` takes a model in the *canonical form* of
:mod:`pim_macro.sw.compiler.onnx_import` (``normalize`` makes it from a real export;
:mod:`pim_macro.sw.compiler.sklearn_import` from a scikit-learn MLP) and calibration inputs, and
returns the bytes of the ``.tflite`` model TFLite's own converter would make of it: float32 in,
``QUANTIZE``, int8 ops, ``DEQUANTIZE``, float32 out. :func:`~pim_macro.sw.compiler.tflite_import.
load_tflite` reads it back into the :class:`~pim_macro.sw.compiler.graph.Graph` that
:func:`~pim_macro.sw.compiler.graph_compiler.run_graph` runs on the macro, and LiteRT runs the same
file: the int8 model has one definition, the file.

The scheme (TFLite's post-training integer quantization)
=======================================================

* **Calibration.** onnxruntime runs the float model on every calibration sample with every
  intermediate tensor made an output; a tensor's range is its minimum and maximum over them.
* **Activations:** asymmetric int8 per tensor, ``(scale, zero_point)`` of the range widened to
  include 0 (:func:`pim_macro.sw.compiler.quantize.activation_params`, TFLite's
  ``ChooseQuantizationParams``). A ``Relu`` whose input is used by nothing else is fused into the
  ``Gemm``/``Conv``/``Add`` before it (TFLite's fused ``RELU``: ``act_min = zero_point``), and the
  fused op's range is the ``Relu``'s output's; any other ``Relu`` is TFLite's ``RELU`` with its
  input's parameters (``max(x, zero_point)``). Pools and reshapes keep their input's parameters,
  as TFLite requires of ``MAX_POOL_2D``, ``AVERAGE_POOL_2D``, ``RESHAPE`` and ``PAD``; a
  ``Softmax`` is ``SOFTMAX`` with TFLite's fixed output scale 1/256 and zero point -128.
* **Weights:** symmetric int8 per output channel, ``scale[c] = max|w[c]| / 127`` (a channel of
  zeros gets scale 1), ``round(w / scale[c])`` half away from zero (TFLite's ``TfLiteRound``).
* **Bias:** int32 ``round(b / (input_scale * scale[c]))`` with that product in float32 (the
  converter's bias scale); a channel whose bias would not fit gets a wider weight scale, as
  TFLite's ``AdjustWeightsForBiasScale`` does (a pruned channel: weights near 0, an ordinary
  bias).
* **Layout.** ONNX images are NCHW, TFLite's NHWC: filters are transposed (``CONV_2D`` OHWI,
  ``DEPTHWISE_CONV_2D`` 1HWO), and a ``Gemm`` after a flatten of an image takes its weight columns
  in the flattened NHWC order (so no transpose runs at inference). The model's input is NHWC:
  its :attr:`Graph.metadata` says ``"input_layout": "NCHW"`` and :func:`to_model_layout`
  transposes an ONNX user's batch; an image output is NHWC, ``"output_layout": "NCHW"``, and
  :func:`to_user_layout` transposes it back.
* **A scaler** (scikit-learn's ``StandardScaler`` before the MLP, which
  :func:`canonical_model` leaves unfolded) stays in float: ``SUB`` of the means and ``MUL`` by
  the inverse scales before ``QUANTIZE``, so each feature is standardized before the one int8
  input scale is applied (folded into the first layer, features of ranges 1000x apart lose the
  small ones). Calibration runs on the standardized data.
* **Padding.** ONNX pads are explicit, TFLite's are ``SAME``/``VALID``. Pads that give the
  ``SAME`` (or ``VALID``) windows are written as such; others become a ``PAD`` (with the zero
  point: a real 0) before a ``VALID`` convolution. An ``AveragePool`` with
  ``count_include_pad=1`` becomes ``PAD`` + ``VALID`` (the padding counts as zeros), one with
  ``count_include_pad=0`` must be ``SAME``/``VALID`` (TFLite has no average that skips other
  pads); a ``MaxPool``'s are ``SAME`` (whose windows skip the border taps, as ONNX's ``-inf``
  padding does) or a ``PADV2`` of -128 before a ``VALID`` pool.

Errors: :class:`~pim_macro.sw.compiler.tflite_import.UnsupportedModel` (one line naming the node)
for what TFLite's int8 ops cannot express; ``ValueError`` for bad calibration data (empty,
non-finite, the wrong size) or a float model that overflows on it.
"""

import json
import math

import numpy as np

from pim_macro.sw.compiler.onnx_import import node_attributes as _attrs
from pim_macro.sw.compiler.onnx_import import node_label as _label
from pim_macro.sw.compiler.onnx_import import static_shape
from pim_macro.sw.compiler.quantize import QMAX, QMIN, WMAX, _round, activation_params
from pim_macro.sw.compiler.tflite_builder import ModelBuilder, same_padding
from pim_macro.sw.compiler.tflite_import import METADATA_NAME, UnsupportedModel
from pim_macro.sw.models.requant import INT32_MAX, INT32_MIN


__all__ = ["quantize_graph", "calibrate", "float_tensors", "to_model_layout", "to_user_layout",
           "canonical_model", "float_outputs", "report_graph", "standardization", "standardize"]


def _shapes(model):
    """``{tensor name: static shape}`` of every tensor with one (inputs, value_info, outputs)."""
    shapes = {}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shape = static_shape(v)
        if shape is not None:
            shapes[v.name] = shape
    return shapes


def float_tensors(model, x):
    """Every tensor of the canonical float ``model`` on each sample of the float batch ``x``
    (N, *input shape without the batch), by onnxruntime: a list (one per sample) of ``{tensor
    name: float32 array}`` (the input included; batch dimension 1)."""
    import onnx
    import onnxruntime as ort

    graph_in = model.graph.input[0]
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    known = {v.name: v for v in model.graph.value_info}
    present = {v.name for v in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in present:
                augmented.graph.output.append(known[name])
                present.add(name)
    session = ort.InferenceSession(augmented.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shape = _shapes(model)[graph_in.name]
    samples = []
    for sample in np.asarray(x, dtype=np.float32).reshape(len(x), *shape[1:]):
        values = dict(zip(names, session.run(None, {graph_in.name: sample[None]})))
        values[graph_in.name] = sample[None]
        samples.append(values)
    return samples


def _batch(model, x, what):
    """The float batch ``x`` for the canonical ``model``'s input, as float64 ``(N, *shape)``:
    an image model of several channels takes exactly ``(N, C, H, W)`` (an NHWC or flattened
    batch has the same size and another meaning, so it is refused); a one-channel image model
    or a vector model any ``(N, ...)`` of as many values per sample (one order only: MNIST's
    ``(N, 28, 28)`` for ``(N, 1, 28, 28)``). ``ValueError`` (naming ``what``) for an empty,
    misshapen or non-finite batch. :func:`to_model_layout` takes the same shapes."""
    shape = _shapes(model)[model.graph.input[0].name][1:]
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"the {what} must be a non-empty batch (N, ...), not of shape "
                         f"{x.shape}")
    if len(shape) == 3 and shape[0] > 1 and x.shape[1:] != tuple(shape):
        raise ValueError(f"the {what} must be images of shape (N, {', '.join(map(str, shape))}) "
                         f"(NCHW, as the ONNX model takes them), not {x.shape}")
    if x[0].size != math.prod(shape):
        raise ValueError(f"the {what} samples have {x[0].size} values, but the model takes "
                         f"{math.prod(shape)} (shape {shape})")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"the {what} holds non-finite values")
    return x.reshape(len(x), *shape)


def calibrate(model, calib):
    """``{tensor name: (min, max)}`` over the calibration batch ``calib`` (N, *input shape
    without the batch, float) of every tensor the canonical float ``model`` computes, its input
    included (:func:`float_tensors`). Raises ``ValueError`` for an empty or non-finite batch,
    samples of the wrong size, and tensors that are not finite on it."""
    calib = _batch(model, calib, "calibration data")
    ranges = {}
    for values in float_tensors(model, calib):
        for name, value in values.items():
            lo, hi = float(np.min(value)), float(np.max(value))
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
    # The input's range is the data's, before the float32 cast onnxruntime needs.
    ranges[model.graph.input[0].name] = (float(calib.min()), float(calib.max()))
    for name, (lo, hi) in ranges.items():
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"tensor {name!r} of the float model is not finite on the "
                             f"calibration data")
    return ranges


def _weights(w):
    """Symmetric per-output-channel int8 of float weights ``w`` (channels first): ``(int8
    array, float32 scales (channels,))``."""
    n = w.shape[0]
    w = np.asarray(w, dtype=np.float64)
    w_max = np.abs(w.reshape(n, -1)).max(axis=1) if w.size else np.zeros(n)
    scales = np.where(w_max > 0, w_max / WMAX, 1.0).astype(np.float32)
    q = _round(w / scales.astype(np.float64).reshape((n,) + (1,) * (w.ndim - 1)))
    return np.clip(q, -WMAX, WMAX).astype(np.int8), scales


def _widen_for_bias(w, scales, b, in_scale):
    """TFLite's ``AdjustWeightsForBiasScale`` (``tensorflow/lite/tools/optimize/
    quantization_utils.cc``): a channel whose bias would not fit int32 at the scale
    ``in_scale * scale[c]`` (weights pruned to nearly 0 beside an ordinary bias) gets the
    weight scale that fits it, and its weights are quantized again at that scale. Returns
    ``(int8 weights, float32 scales)``."""
    limit = np.abs(np.asarray(b, np.float64)) / (float(np.float32(in_scale)) * (INT32_MAX - 1))
    widen = scales.astype(np.float64) < limit
    if not widen.any():
        return None
    scales = np.where(widen, limit * (1 + 1e-6), scales).astype(np.float32)
    n = w.shape[0]
    q = _round(np.asarray(w, np.float64)
               / scales.astype(np.float64).reshape((n,) + (1,) * (w.ndim - 1)))
    return np.clip(q, -WMAX, WMAX).astype(np.int8), scales


def _quantized_layer(label, w, b, in_scale):
    """``(int8 weights, float32 scales, int32 bias)`` of a layer's float weights and bias."""
    q, scales = _weights(w)
    widened = _widen_for_bias(w, scales, b, in_scale)
    if widened is not None:
        q, scales = widened
    return q, scales, _bias(label, b, in_scale, scales)


def _bias(label, b, in_scale, w_scales):
    """Int32 bias at the converter's scale ``float32(in_scale * w_scale[c])``."""
    bias_scale = (np.float32(in_scale) * w_scales.astype(np.float32)).astype(np.float64)
    q = _round(np.asarray(b, dtype=np.float64) / bias_scale)
    if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):
        raise ValueError(f"{label}: the bias does not fit in int32 at scale "
                         f"{bias_scale.min():.3g}")
    return q.astype(np.int32)


def _padding(label, size, kernel, stride, pads):
    """How TFLite writes a window of ``kernel`` over ``size`` (one or two dimensions) with the
    ONNX ``pads`` ``(begin..., end...)``: ``"VALID"``, ``"SAME"`` (the same windows) or
    ``None`` (neither: explicit padding needed)."""
    begin, end = pads[:len(size)], pads[len(size):]
    outs = [(n + b + e - k) // s + 1 for n, k, s, b, e in zip(size, kernel, stride, begin, end)]
    if any(o < 1 for o in outs):
        raise UnsupportedModel(f"{label}: the window does not fit the padded input {size}")
    if all(b == 0 and o == (n - k) // s + 1
           for n, k, s, b, o in zip(size, kernel, stride, begin, outs)):
        return "VALID"
    if all((o, b) == same_padding(n, k, s)[:2]
           for n, k, s, b, o in zip(size, kernel, stride, begin, outs)):
        return "SAME"
    return None


class _Quantizer:
    def __init__(self, model, ranges):
        from onnx import numpy_helper
        self.model = model
        self.ranges = ranges
        self.shapes = _shapes(model)
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.consumers = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.b = ModelBuilder()
        self.tensor = {}        # ONNX tensor name -> TFLite tensor index
        self.perm = {}          # ONNX name of a flat tensor -> TFLite order (ONNX indices)
        self.alias = {}         # a fused Relu's output -> its input (the same tensor)

    def params(self, name):
        return activation_params(*self.ranges[name])

    def fused_relu(self, node):
        """The ``Relu`` fused into ``node`` (its output's only consumer), or None."""
        out = node.output[0]
        users = self.consumers.get(out, [])
        if out not in self.outputs and len(users) == 1 and users[0].op_type == "Relu":
            return users[0]
        return None

    def output_of(self, node):
        """``(ONNX name whose range and consumers the op's output takes, activation)``."""
        relu = self.fused_relu(node)
        if relu is None:
            return node.output[0], "NONE"
        self.alias[relu.output[0]] = node.output[0]
        return relu.output[0], "RELU"

    def nhwc(self, name):
        n, c, h, w = self.shapes[name]
        return (n, h, w, c)

    def pad(self, x, top, left, bottom, right, value=None):
        return self.b.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), value)

    def conv(self, node, label):
        a = _attrs(node)
        x_name = node.input[0]
        w, bias = self.consts[node.input[1]], self.consts[node.input[2]]
        _, c, h, wd = self.shapes[x_name]
        depthwise = a.get("group", 1) != 1
        if depthwise and (a["group"] != c or w.shape[1] != 1):
            raise UnsupportedModel(f"{label}: a grouped convolution (group {a['group']} of "
                                   f"{c} channels) is not supported")
        kernel, stride = tuple(w.shape[2:]), tuple(a.get("strides", (1, 1)))
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        x = self.tensor[x_name]
        padding = _padding(label, (h, wd), kernel, stride, pads)
        if padding is None:
            x, padding = self.pad(x, *pads), "VALID"
        out_name, activation = self.output_of(node)
        out_scale, out_zp = self.params(out_name)
        q, scales, b = _quantized_layer(label, w, bias, self.b.quant(x)[0])
        if depthwise:
            y = self.b.depthwise_conv2d(x, q.transpose(1, 2, 3, 0), b, w_scale=scales,
                                        out_scale=out_scale, out_zero_point=out_zp,
                                        stride=stride, padding=padding, activation=activation)
        else:
            y = self.b.conv2d(x, q.transpose(0, 2, 3, 1), b, w_scale=scales,
                              out_scale=out_scale, out_zero_point=out_zp, stride=stride,
                              padding=padding, activation=activation)
        if self.b.shape(y) != self.nhwc(node.output[0]):     # the ONNX shapes are the truth
            raise UnsupportedModel(f"{label}: output {self.b.shape(y)} (NHWC) differs from "
                                   f"ONNX's {self.shapes[node.output[0]]} (NCHW)")
        self.tensor[out_name] = y

    def gemm(self, node, label):
        x_name = node.input[0]
        w, bias = self.consts[node.input[1]], self.consts[node.input[2]]
        perm = self.perm.get(x_name)
        if perm is not None:
            w = w[:, perm]          # the columns in the order the flattened NHWC input has
        out_name, activation = self.output_of(node)
        out_scale, out_zp = self.params(out_name)
        x = self.tensor[x_name]
        q, scales, b = _quantized_layer(label, w, bias, self.b.quant(x)[0])
        self.tensor[out_name] = self.b.fully_connected(
            x, q, b, w_scale=scales, out_scale=out_scale, out_zero_point=out_zp,
            activation=activation)

    def pool(self, node, label):
        a = _attrs(node)
        x_name = node.input[0]
        _, _, h, wd = self.shapes[x_name]
        x = self.tensor[x_name]
        if node.op_type == "GlobalAveragePool":
            kind, kernel, stride, padding = "AVERAGE_POOL_2D", (h, wd), (1, 1), "VALID"
        else:
            kind = "MAX_POOL_2D" if node.op_type == "MaxPool" else "AVERAGE_POOL_2D"
            kernel = tuple(a["kernel_shape"])
            stride = tuple(a.get("strides", (1, 1)))
            pads = tuple(a.get("pads", (0, 0, 0, 0)))
            padding = _padding(label, (h, wd), kernel, stride, pads)
            if kind == "AVERAGE_POOL_2D" and a.get("count_include_pad", 0) and any(pads):
                # The padding counts: zeros (the zero point) in a VALID window.
                x, padding = self.pad(x, *pads), "VALID"
            elif kind == "MAX_POOL_2D" and padding is None:
                # ONNX pads a max pool with -inf: -128 never wins over a tap inside.
                x, padding = self.pad(x, *pads, value=QMIN), "VALID"
            elif padding is None:
                raise UnsupportedModel(
                    f"{label}: pads {list(pads)} are neither TFLite's SAME nor VALID for a "
                    f"{kernel[0]}x{kernel[1]} window of stride {stride[0]}x{stride[1]} over "
                    f"{h}x{wd}" + ("" if kind == "MAX_POOL_2D" else
                                   " (with count_include_pad=0)"))
        y = self.b.pool(kind, x, filter=kernel, stride=stride, padding=padding)
        if self.b.shape(y) != self.nhwc(node.output[0]):
            raise UnsupportedModel(f"{label}: output {self.b.shape(y)} (NHWC) differs from "
                                   f"ONNX's {self.shapes[node.output[0]]} (NCHW)")
        self.tensor[node.output[0]] = y

    def reshape(self, node, label):
        x_name = node.input[0]
        shape = self.shapes[x_name]
        n = math.prod(shape)
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            # TFLite flattens (1, H, W, C): position (h, w, c) holds ONNX's (c, h, w).
            _, c, h, w = shape
            perm = np.arange(n).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        else:
            perm = self.perm.get(x_name)
        self.tensor[node.output[0]] = self.b.reshape(self.tensor[x_name], (1, n))
        if perm is not None:
            self.perm[node.output[0]] = perm

    def add(self, node, label):
        a, b = node.input
        if self.perm.get(a) is not None or self.perm.get(b) is not None:
            pa, pb = self.perm.get(a), self.perm.get(b)
            if pa is None or pb is None or not np.array_equal(pa, pb):
                raise UnsupportedModel(f"{label}: adds a flattened image to a tensor of "
                                       f"another element order")
        out_name, activation = self.output_of(node)
        out_scale, out_zp = self.params(out_name)
        self.tensor[out_name] = self.b.add(self.tensor[a], self.tensor[b], out_scale=out_scale,
                                           out_zero_point=out_zp, activation=activation)
        if self.perm.get(a) is not None:
            self.perm[out_name] = self.perm[a]

    def softmax(self, node, label):
        # TFLite's int8 SOFTMAX: output scale 1/256, zero point -128 (its kernel requires them).
        x_name = node.input[0]
        if self.perm.get(x_name) is not None:
            raise UnsupportedModel(f"{label}: a softmax over a flattened image")
        self.tensor[node.output[0]] = self.b.softmax(self.tensor[x_name], beta=1.0)

    def relu(self, node, label):
        if node.output[0] in self.alias:
            return                                  # fused into the op before it
        # TFLite's RELU with its input's quantization: max(x, zero_point), exactly.
        x_name = node.input[0]
        self.tensor[node.output[0]] = self.b.relu(self.tensor[x_name])
        if self.perm.get(x_name) is not None:
            self.perm[node.output[0]] = self.perm[x_name]

    def build(self, classes=None, affine=None):
        graph = self.model.graph
        graph_in = graph.input[0]
        in_shape = self.shapes[graph_in.name]
        image = len(in_shape) == 4
        x = self.b.input(self.nhwc(graph_in.name) if image else in_shape, np.float32)
        scale, zp = self.params(graph_in.name)
        standardized = x
        if affine is not None:          # a scaler kept in float: (x - mean) * (1 / scale)
            standardized = self.b.mul(self.b.sub(x, affine[0]), affine[1])
        self.tensor[graph_in.name] = self.b.quantize(standardized, scale=scale, zero_point=zp)
        handlers = {"Conv": self.conv, "Gemm": self.gemm, "MaxPool": self.pool,
                    "AveragePool": self.pool, "GlobalAveragePool": self.pool,
                    "Reshape": self.reshape, "Add": self.add, "Relu": self.relu,
                    "Softmax": self.softmax}
        for node in graph.node:
            label = _label(node)
            if node.op_type not in handlers:
                raise UnsupportedModel(f"{label}: not in the canonical form (normalize the "
                                       f"model first)")
            handlers[node.op_type](node, label)
        out_name = graph.output[0].name      # a fused Relu's output names the fused op's
        if self.perm.get(out_name) is not None:
            raise UnsupportedModel(f"the model's output {graph.output[0].name!r} is a "
                                   f"flattened image, whose order TFLite's NHWC would change")
        y = self.b.dequantize(self.tensor[out_name])
        # Tensors keep their ONNX names (those of flattened images in NHWC order excepted), so
        # that each int8 tensor can be compared with its float original, layer by layer.
        io = {graph_in.name, graph.output[0].name}
        for name, index in self.tensor.items():
            if name not in self.perm:
                self.b.tensors[index]["name"] = name + "_int8" if name in io else name
        self.b.tensors[x]["name"], self.b.tensors[y]["name"] = graph_in.name, graph.output[0].name
        metadata = {"source": "onnx"}
        if image:
            metadata["input_layout"] = "NCHW"
        if len(self.shapes[graph.output[0].name]) == 4:
            metadata["output_layout"] = "NCHW"
        if classes is not None:
            metadata["classes"] = list(classes)
        self.b.metadata[METADATA_NAME] = json.dumps(metadata).encode()
        return self.b.to_bytes([x], [y])


def quantize_graph(model, calib, *, classes=None):
    """The bytes of the int8 ``.tflite`` model of the canonical float ONNX ``model``
    (``onnx.ModelProto``, see :mod:`pim_macro.sw.compiler.onnx_import`) calibrated on the float
    batch ``calib`` (N, ...; N >= 1 samples of the model input's size, in ONNX's layout).
    ``classes``: the classifier's class labels (a list of ints or strings, JSON-serializable),
    kept in the model's metadata; by default the model's ``pim_macro.classes`` metadata property
    if it has one. Raises ``UnsupportedModel`` and ``ValueError`` (see the module docstring)."""
    from pim_macro.sw.compiler.classes import (METADATA_KEY, check_count, as_classes,
                                               classes_from_json)
    from pim_macro.sw.compiler.onnx_import import check_canonical
    check_canonical(model)
    if classes is None:
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in props:
            classes = classes_from_json(props[METADATA_KEY], f"the model's {METADATA_KEY}")
    if classes is not None:
        classes = as_classes(classes)
        check_count(classes, math.prod(_shapes(model)[model.graph.output[0].name][1:]))
        classes = classes.tolist()
    affine = standardization(model)
    if affine is not None:
        calib = standardize(model, _batch(model, calib, "calibration data"))
    ranges = calibrate(model, calib)
    return _Quantizer(model, ranges).build(classes, affine)


def to_model_layout(graph, x):
    """A user's batch ``x`` in the layout of ``graph``'s input, for a model made by
    :func:`quantize_graph` (its metadata says ``"source": "onnx"``): ONNX's NCHW images ``(B,
    C, H, W)`` become NHWC ``(B, H, W, C)``; a batch of as many values per sample in one order
    only (a vector model's, a one-channel image model's: ``(B, 28, 28)``) takes the input's
    shape, as :func:`quantize_graph`'s calibration data does. Anything else (and any other
    model's input) is returned unchanged, for ``run_graph`` to check."""
    x = np.asarray(x)
    if graph.metadata.get("source") != "onnx" or x.ndim < 1:
        return x
    shape = graph.tensors[graph.inputs[0]].shape
    if graph.metadata.get("input_layout") == "NCHW" and x.ndim == 4 and \
            x.shape[1:] == (shape[3], shape[1], shape[2]):
        return x.transpose(0, 2, 3, 1)
    one_order = len(shape) == 2 or (len(shape) == 4 and shape[3] == 1)
    if one_order and x.ndim >= 2 and x[0].size == math.prod(shape[1:]):
        return x.reshape(len(x), *shape[1:])
    return x


def to_user_layout(graph, y):
    """The batch of outputs ``y`` ``(B, *output shape without batch)`` in the layout of the ONNX
    model the graph was made from: NHWC images ``(B, H, W, C)`` become NCHW when the graph's
    metadata says ``"output_layout": "NCHW"``; anything else is returned unchanged."""
    y = np.asarray(y)
    if graph.metadata.get("output_layout") == "NCHW" and y.ndim == 4:
        return y.transpose(0, 3, 1, 2)
    return y


def canonical_model(model):
    """The canonical float ONNX model of a float model as
    :func:`pim_macro.sw.compiler.quantize.load_float_model` returns it: an ``onnx.ModelProto``
    through :func:`~pim_macro.sw.compiler.onnx_import.normalize`, a scikit-learn estimator
    through :func:`~pim_macro.sw.compiler.sklearn_import.from_sklearn`. Raises what they
    raise."""
    import onnx
    if isinstance(model, onnx.ModelProto):
        from pim_macro.sw.compiler.onnx_import import normalize
        return normalize(model)
    from pim_macro.sw.compiler.sklearn_import import from_sklearn
    return from_sklearn(model, fold_scaler=False)     # the scaler stays float: see standardize


def standardization(model):
    """``(mean, 1 / scale)`` (float32 ``(K,)`` each) of the scaler a canonical model keeps
    unfolded (``metadata_props`` :data:`~pim_macro.sw.compiler.sklearn_import.STANDARDIZE_KEY`),
    or ``None``."""
    from pim_macro.sw.compiler.sklearn_import import STANDARDIZE_KEY
    props = {p.key: p.value for p in model.metadata_props}
    if STANDARDIZE_KEY not in props:
        return None
    try:
        value = json.loads(props[STANDARDIZE_KEY])
        mean = np.asarray(value["mean"], dtype=np.float32)
        inverse = (np.float32(1) / np.asarray(value["scale"], dtype=np.float32))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the model's {STANDARDIZE_KEY} is not a scaler ({exc})") from None
    k = _shapes(model)[model.graph.input[0].name][-1]
    if mean.shape != (k,) or inverse.shape != (k,) or not (
            np.all(np.isfinite(mean)) and np.all(np.isfinite(inverse))):
        raise ValueError(f"the model's {STANDARDIZE_KEY} does not hold {k} finite means and "
                         f"scales")
    return mean, inverse


def standardize(model, x):
    """The float batch ``x`` as the model's input sees it: through its unfolded scaler (in
    float32, as the ``.tflite``'s ``SUB`` and ``MUL`` compute it), or unchanged."""
    affine = standardization(model)
    if affine is None:
        return x
    mean, inverse = affine
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return np.multiply(np.subtract(x, mean, dtype=np.float32), inverse, dtype=np.float32)


def float_outputs(model, x):
    """onnxruntime's float outputs ``(B, ...)`` of the canonical float ``model`` on the float
    batch ``x`` (ONNX layout; flattened samples are reshaped), one sample at a time."""
    return np.concatenate([values[model.graph.output[0].name]
                           for values in float_tensors(model, x)])


def report_graph(graph, model, x, labels=None):
    """:func:`pim_macro.sw.compiler.quantize.report` for an int8 ``graph`` quantized from the
    canonical float ``model``: its dequantized outputs (``Graph.run``) against the float ones
    (:func:`float_outputs`) on the float batch ``x`` (ONNX layout), with accuracies in the
    graph's classes when ``labels`` are given. Raises ``ValueError``."""
    from pim_macro.sw.compiler.quantize import compare_outputs
    x = _batch(model, x, "test data")
    out = graph.tensors[graph.ops[-1].inputs[0]]        # the int8 tensor DEQUANTIZE reads
    y_int8, deq = [], []
    for sample in to_model_layout(graph, x.astype(np.float32)):
        _, values = graph.run([sample[None]], keep=True)
        y_int8.append(values[graph.ops[-1].inputs[0]])
        deq.append(values[graph.outputs[0]])
    y_int8 = np.concatenate(y_int8).reshape(len(x), -1)
    deq = to_user_layout(graph, np.concatenate(deq)).reshape(len(x), -1)
    ref = float_outputs(model, standardize(model, x)).reshape(len(x), -1)
    return compare_outputs(deq, ref, y_int8, out.zero_point, labels,
                           graph.metadata.get("classes"))
