"""Read an int8 TFLite model (``.tflite``) into the network representation (:class:`Graph`).

:func:`load_tflite` parses the flatbuffer with the ``tflite`` package (the schema's generated
reader; LiteRT is not needed at run time) and computes every op's parameters the way TFLite's
kernels do in ``Prepare`` (sources: ``tensorflow/lite/kernels/``):

* macro ops (:class:`FullyConnected`, :class:`Conv2D`, :class:`DepthwiseConv2D`): per output
  channel ``effective_scale = input_scale * filter_scale / output_scale`` in double
  (``kernel_util.cc`` ``PopulateConvolutionQuantizationParams``; measured the same for a
  per-tensor ``FULLY_CONNECTED``), then ``(M0, shift) =
  QuantizeMultiplier(effective_scale)`` (:func:`~pim_macro.sw.models.requant.quantize_multiplier`);
  the fused activation becomes ``[act_min, act_max]`` (``CalculateActivationRangeQuantized``:
  ``zero_point + round(f / scale)`` in float, clamped to int8); the rounding is LiteRT's for
  the op (:data:`~pim_macro.sw.compiler.graph.DOUBLE_ROUNDING`);
* host ops: :mod:`pim_macro.sw.compiler.host_ops`;
* the model's :data:`METADATA_NAME` metadata entry (JSON) becomes :attr:`Graph.metadata`.

Anything else raises :class:`UnsupportedModel` (a ``ValueError``) with a one-line message naming
the op and the option, before anything runs.
"""

import json
import struct
from pathlib import Path

import numpy as np
import tflite

from pim_macro.sw.compiler import host_ops
from pim_macro.sw.compiler.graph import (DOUBLE_ROUNDING, Conv2D, DepthwiseConv2D,
                                         FullyConnected, Graph, Tensor)
from pim_macro.sw.models.requant import quantize_multiplier


__all__ = ["UnsupportedModel", "load_tflite", "OPS", "FILE_IDENTIFIER", "METADATA_NAME"]


#: The file identifier of a TFLite flatbuffer, bytes 4..7 (``file_identifier`` of TFLite's
#: ``schema.fbs``).
FILE_IDENTIFIER = b"TFL3"

#: The name of the model's ``Metadata`` entry this project writes and reads: a JSON object, the
#: :attr:`Graph.metadata <pim_macro.sw.compiler.graph.Graph>` (``classes``, ``input_layout``).
METADATA_NAME = "pim_macro"


class UnsupportedModel(ValueError):
    """A model, op or option the importer does not handle (one line: what, and where)."""


_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_ACT_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items()
              if not k.startswith("_")}
_DTYPES = {tflite.TensorType.INT8: np.int8, tflite.TensorType.INT32: np.int32,
           tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT64: np.int64,
           tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT16: np.int16}


class _Raw:
    """One tensor as the flatbuffer has it."""

    def __init__(self, model, t):
        self.name = (t.Name() or b"").decode("utf-8", "replace")
        self.shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        self.type = t.Type()
        self.type_name = _TYPE_NAMES.get(self.type, str(self.type))
        q = t.Quantization()
        self.scales = q.ScaleAsNumpy().astype(np.float32) if q and q.ScaleLength() else None
        self.zero_points = (q.ZeroPointAsNumpy().astype(np.int64)
                            if q and q.ZeroPointLength() else None)
        self.qdim = q.QuantizedDimension() if q else 0
        self.data = None
        if t.Sparsity() is not None:
            raise UnsupportedModel(f"sparse tensor {self.name!r} is not supported")
        buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        if buf is not None and buf.DataLength():
            if self.type not in _DTYPES:
                raise UnsupportedModel(f"constant tensor {self.name!r} of type {self.type_name}"
                                       " is not supported")
            raw = buf.DataAsNumpy().tobytes()
            dtype = np.dtype(_DTYPES[self.type])
            if len(raw) != int(np.prod(self.shape)) * dtype.itemsize:
                raise UnsupportedModel(f"constant tensor {self.name!r} holds {len(raw)} bytes "
                                       f"for shape {self.shape} of {dtype.name}")
            self.data = np.frombuffer(raw, dtype=dtype).reshape(self.shape)
        elif buf is not None and buf.Offset() > 1:
            raise UnsupportedModel(f"tensor {self.name!r} is stored outside the flatbuffer "
                                   "(large-model format)")

    @property
    def scale(self):
        return None if self.scales is None else float(self.scales[0])

    @property
    def zero_point(self):
        return 0 if self.zero_points is None else int(self.zero_points[0])


class _Importer:
    def __init__(self, data, source):
        self.source = source
        if len(data) < 8 or bytes(data[4:8]) != FILE_IDENTIFIER:
            raise UnsupportedModel(f"{source} is not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            n = self.model.SubgraphsLength()
        except Exception as e:      # a truncated or corrupt flatbuffer
            raise UnsupportedModel(f"{source} is not a readable TFLite model ({e})") from None
        if n != 1:
            raise UnsupportedModel(f"a model of {n} subgraphs (control flow) is not supported")
        self.sg = self.model.Subgraphs(0)
        self.raw = [_Raw(self.model, self.sg.Tensors(i)) for i in range(self.sg.TensorsLength())]

    # --- checks --------------------------------------------------------------------------------

    def fail(self, where, what):
        raise UnsupportedModel(f"{where}: {what} is not supported")

    def int8_activation(self, where, i):
        """A variable int8 tensor with per-tensor quantization; returns it."""
        if i < 0:
            self.fail(where, "an absent input")
        t = self.raw[i]
        if t.type != tflite.TensorType.INT8:
            self.fail(where, f"tensor {t.name!r} of type {t.type_name} (only int8 runs between "
                             "QUANTIZE and DEQUANTIZE)")
        if t.scales is None or t.scales.size != 1 or not t.scales[0] > 0:
            self.fail(where, f"tensor {t.name!r} without one positive per-tensor scale")
        if not -128 <= t.zero_point <= 127:
            self.fail(where, f"tensor {t.name!r} with zero point {t.zero_point}")
        return t

    def nhwc(self, where, t):
        """A 4-D image tensor of batch 1 (the graph runs one sample at a time)."""
        if len(t.shape) != 4:
            self.fail(where, f"tensor {t.name!r} of shape {t.shape} (not NHWC)")
        if t.shape[0] != 1:
            self.fail(where, f"batch {t.shape[0]} inside the model (tensor {t.name!r})")
        return t

    def constant(self, where, i, what):
        t = self.raw[i]
        if t.data is None:
            self.fail(where, f"a {what} computed at run time")
        return t

    def activation_range(self, where, act, out):
        """``CalculateActivationRangeQuantized`` (``kernel_util.cc``)."""
        name = _ACT_NAMES.get(act, str(act))
        scale, zp = np.float32(out.scale), out.zero_point

        def quantize(f):
            v = float(np.float32(f) / scale)        # float division, as in the kernel
            return zp + int(np.sign(v) * np.floor(abs(v) + 0.5))      # TfLiteRound
        if name == "NONE":
            lo, hi = -128, 127
        elif name == "RELU":
            lo, hi = max(-128, quantize(0.0)), 127
        elif name == "RELU6":
            lo, hi = max(-128, quantize(0.0)), min(127, quantize(6.0))
        elif name == "RELU_N1_TO_1":
            lo, hi = max(-128, quantize(-1.0)), min(127, quantize(1.0))
        else:
            self.fail(where, f"fused activation {name}")
        return lo, hi

    def image_operands(self, where, op, cls):
        """``(options, x, out)`` of an image op: its options table (``cls``), and its int8 NHWC
        input and output."""
        opts = self.options(op, cls)
        if opts is None:
            self.fail(where, "an op without its options")
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        self.nhwc(where, x)
        self.nhwc(where, out)
        return opts, x, out

    def same_quantization(self, where, x, out):
        """Refuses an output quantized otherwise than its input (what TFLite requires of the
        ops that move values without rescaling them)."""
        if (x.scale, x.zero_point) != (out.scale, out.zero_point):
            self.fail(where, "an output quantized differently from its input")

    def options(self, op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        else:
            opts = None
        return opts

    # --- macro ops -----------------------------------------------------------------------------

    def weights(self, where, i, channels, qdim):
        """The filter tensor ``i``: constant int8, symmetric, per tensor or per channel along
        ``qdim``; returns ``(array, float32 scales (1 or channels,))``."""
        if i < 0:
            self.fail(where, "an absent filter")
        w = self.constant(where, i, "filter")
        if w.type != tflite.TensorType.INT8:
            self.fail(where, f"filter {w.name!r} of type {w.type_name}")
        if w.scales is None:
            self.fail(where, f"filter {w.name!r} without quantization")
        if w.zero_points is not None and np.any(w.zero_points != 0):
            self.fail(where, f"filter {w.name!r} with zero point "
                             f"{int(w.zero_points[w.zero_points != 0][0])} (weights must be "
                             "symmetric, zero point 0)")
        if w.scales.size not in (1, channels) or (w.scales.size > 1 and w.qdim != qdim):
            self.fail(where, f"filter {w.name!r} quantized along dimension {w.qdim} with "
                             f"{w.scales.size} scales")
        return w.data, w.scales

    def bias(self, where, op, channels):
        if op.InputsLength() < 3 or op.Inputs(2) < 0:
            return np.zeros(channels, dtype=np.int32)
        b = self.constant(where, op.Inputs(2), "bias")
        if b.type != tflite.TensorType.INT32:
            self.fail(where, f"bias {b.name!r} of type {b.type_name}")
        return b.data.reshape(channels).astype(np.int32)

    def requant(self, where, x, w_scales, out, channels):
        """Per-channel ``(multiplier, shift)`` int64 arrays. The float32 scales are widened to
        double before the product (measured for a per-tensor ``FULLY_CONNECTED`` too, where
        the float product of older ``GetQuantizedConvolutionMultipler`` differs: see
        tb/tests/test_tflite.py)."""
        scales = [float(x.scale) * float(s) / float(out.scale) for s in w_scales]
        try:
            pairs = [quantize_multiplier(s) for s in scales]
        except ValueError as e:
            self.fail(where, f"a requantization scale out of range ({e})")
        m = np.array([p[0] for p in pairs], dtype=np.int64)
        s = np.array([p[1] for p in pairs], dtype=np.int64)
        return np.broadcast_to(m, (channels,)).copy(), np.broadcast_to(s, (channels,)).copy()

    def fully_connected(self, where, op, index):
        opts = self.options(op, tflite.FullyConnectedOptions)
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        if opts is not None and opts.WeightsFormat() != 0:
            self.fail(where, "a shuffled weights format")
        w = self.raw[op.Inputs(1)] if op.Inputs(1) >= 0 else None
        if w is None or len(w.shape) != 2:
            self.fail(where, "a filter that is not 2-D")
        n, k = w.shape
        if min(n, k) < 1:
            self.fail(where, f"a filter of shape {w.shape}")
        weights, w_scales = self.weights(where, op.Inputs(1), n, 0)
        if int(np.prod(x.shape)) % k:
            self.fail(where, f"an input of {int(np.prod(x.shape))} values for depth {k}")
        if not out.shape or out.shape[-1] != n or int(np.prod(out.shape)) != \
                int(np.prod(x.shape)) // k * n:
            self.fail(where, f"output shape {out.shape} for input {x.shape} and filter "
                             f"{w.shape}")
        lo, hi = self.activation_range(where, opts.FusedActivationFunction() if opts else 0,
                                       out)
        m, s = self.requant(where, x, w_scales, out, n)
        return FullyConnected(
            input=op.Inputs(0), output=op.Outputs(0), weights=weights, bias=self.bias(where, op, n),
            multiplier=m, shift=s, input_zero_point=x.zero_point,
            output_zero_point=out.zero_point, act_min=lo, act_max=hi,
            double_rounding=DOUBLE_ROUNDING["FULLY_CONNECTED"], output_shape=out.shape)

    def conv(self, where, op, depthwise):
        opts, x, out = self.image_operands(where, op, tflite.DepthwiseConv2DOptions if depthwise
                                           else tflite.Conv2DOptions)
        if (opts.DilationHFactor(), opts.DilationWFactor()) != (1, 1):
            self.fail(where, f"dilation {opts.DilationHFactor()}x{opts.DilationWFactor()}")
        f = self.raw[op.Inputs(1)] if op.Inputs(1) >= 0 else None
        if f is None or len(f.shape) != 4:
            self.fail(where, "a filter that is not 4-D")
        _, h, w, c = x.shape
        if depthwise:
            _, kh, kw, n = f.shape
            if f.shape[0] != 1 or n % c:
                self.fail(where, f"filter shape {f.shape} for {c} input channels")
            mult = n // c
            if opts.DepthMultiplier() not in (0, mult):
                self.fail(where, f"depth_multiplier {opts.DepthMultiplier()} with {n} output "
                                 f"channels from {c}")
            filters, w_scales = self.weights(where, op.Inputs(1), n, 3)
        else:
            n, kh, kw, fc = f.shape
            if fc != c:
                self.fail(where, f"a grouped convolution ({fc} filter channels, {c} input)")
            filters, w_scales = self.weights(where, op.Inputs(1), n, 0)
        sh, sw = opts.StrideH(), opts.StrideW()
        if sh < 1 or sw < 1:
            self.fail(where, f"stride {sh}x{sw}")
        padding = self.padding(where, opts.Padding(), (h, w), (kh, kw), (sh, sw))
        lo, hi = self.activation_range(where, opts.FusedActivationFunction(), out)
        m, s = self.requant(where, x, w_scales, out, n)
        common = dict(input=op.Inputs(0), output=op.Outputs(0), bias=self.bias(where, op, n),
                      multiplier=m, shift=s, input_zero_point=x.zero_point,
                      output_zero_point=out.zero_point, act_min=lo, act_max=hi,
                      in_shape=(h, w, c), kernel=(kh, kw), stride=(sh, sw), padding=padding)
        if depthwise:
            result = DepthwiseConv2D(weights=DepthwiseConv2D.block_diagonal(filters, mult),
                                     depth_multiplier=mult,
                                     double_rounding=DOUBLE_ROUNDING["DEPTHWISE_CONV_2D"],
                                     **common)
        else:
            result = Conv2D(weights=filters.reshape(n, -1),
                            double_rounding=DOUBLE_ROUNDING["CONV_2D"], **common)
        if (1, *result.out_shape()) != out.shape:
            self.fail(where, f"output shape {out.shape} (expected {(1, *result.out_shape())})")
        return result

    def padding(self, where, padding, size, kernel, stride):
        """``(top, left, bottom, right)`` as TFLite's ``ComputePaddingHeightWidth`` (the odd
        row or column after)."""
        if padding == tflite.Padding.VALID:
            return (0, 0, 0, 0)
        if padding != tflite.Padding.SAME:
            self.fail(where, f"padding {padding}")
        pads = []
        for n, k, s in zip(size, kernel, stride):
            o = (n + s - 1) // s
            total = max((o - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return (top, left, bottom, right)

    # --- host ops ------------------------------------------------------------------------------

    def add(self, where, op, index):
        opts = self.options(op, tflite.AddOptions)
        a = self.int8_activation(where, op.Inputs(0))
        b = self.int8_activation(where, op.Inputs(1))
        out = self.int8_activation(where, op.Outputs(0))
        try:
            np.broadcast_shapes(a.shape, b.shape, out.shape)
        except ValueError:
            self.fail(where, f"shapes {a.shape} + {b.shape}")
        left_shift = 20
        twice_max = 2.0 * float(max(np.float32(a.scale), np.float32(b.scale)))
        reals = [float(a.scale) / twice_max, float(b.scale) / twice_max,
                 twice_max / float(np.float32((1 << left_shift) * np.float32(out.scale)))]
        pairs = [quantize_multiplier(r) for r in reals]
        lo, hi = self.activation_range(where, opts.FusedActivationFunction() if opts else 0,
                                       out)
        return host_ops.Add(
            inputs=(op.Inputs(0), op.Inputs(1)), output=op.Outputs(0), out_shape=out.shape,
            zero_points=(a.zero_point, b.zero_point),
            multipliers=(pairs[0][0], pairs[1][0]), shifts=(pairs[0][1], pairs[1][1]),
            output_multiplier=pairs[2][0], output_shift=pairs[2][1],
            output_zero_point=out.zero_point, act_min=lo, act_max=hi, left_shift=left_shift,
            double_rounding=DOUBLE_ROUNDING["ADD"])

    def pool(self, where, op, index):
        opts, x, out = self.image_operands(where, op, tflite.Pool2DOptions)
        self.same_quantization(where, x, out)
        fh, fw = opts.FilterHeight(), opts.FilterWidth()
        sh, sw = opts.StrideH(), opts.StrideW()
        if min(fh, fw, sh, sw) < 1:
            self.fail(where, f"filter {fh}x{fw} with stride {sh}x{sw}")
        top, left, _, _ = self.padding(where, opts.Padding(), x.shape[1:3], (fh, fw), (sh, sw))
        lo, hi = self.activation_range(where, opts.FusedActivationFunction(), out)
        cls = host_ops.AveragePool2D if self.name(op) == "AVERAGE_POOL_2D" else host_ops.MaxPool2D
        return cls(inputs=(op.Inputs(0),), output=op.Outputs(0), out_shape=out.shape,
                   filter=(fh, fw), stride=(sh, sw), padding=(top, left), act_min=lo,
                   act_max=hi)

    def reshape(self, where, op, index):
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        if op.InputsLength() > 1 and op.Inputs(1) >= 0:
            self.constant(where, op.Inputs(1), "shape")
        if np.prod(x.shape) != np.prod(out.shape):
            self.fail(where, f"reshaping {x.shape} to {out.shape}")
        return host_ops.Reshape(inputs=(op.Inputs(0),), output=op.Outputs(0),
                                out_shape=out.shape)

    def pad(self, where, op, index):
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        self.same_quantization(where, x, out)
        value = out.zero_point
        if op.InputsLength() > 2 and op.Inputs(2) >= 0:       # PADV2's constant value
            v = self.constant(where, op.Inputs(2), "pad value")
            if v.type != tflite.TensorType.INT8 or v.data.size != 1 or \
                    (v.scale, v.zero_point) != (x.scale, x.zero_point):
                self.fail(where, "a pad value that is not one int8 quantized as the input")
            value = int(v.data.reshape(-1)[0])
        p = self.constant(where, op.Inputs(1), "paddings").data
        p = np.asarray(p, dtype=np.int64).reshape(-1)
        if p.size != 2 * len(x.shape) or p.min() < 0:
            self.fail(where, f"paddings {p.tolist()} for a tensor of shape {x.shape}")
        paddings = tuple((int(a), int(b)) for a, b in p.reshape(-1, 2))
        if tuple(n + a + b for n, (a, b) in zip(x.shape, paddings)) != tuple(out.shape):
            self.fail(where, f"padding {x.shape} by {list(paddings)} to {out.shape}")
        return host_ops.Pad(inputs=(op.Inputs(0),), output=op.Outputs(0), out_shape=out.shape,
                            paddings=paddings, value=value)

    def relu(self, where, op, index):
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        # Rescaling RELUs round by a rule this importer has not measured against LiteRT.
        self.same_quantization(where, x, out)
        lo, _ = self.activation_range(where, tflite.ActivationFunctionType.RELU, out)
        return host_ops.Relu(inputs=(op.Inputs(0),), output=op.Outputs(0), out_shape=out.shape,
                             act_min=lo)

    def metadata(self):
        """The ``pim_macro`` Metadata entry (JSON, written by the graph quantizer): a dict,
        empty when the model has none."""
        for k in range(self.model.MetadataLength()):
            entry = self.model.Metadata(k)
            if entry.Name() != METADATA_NAME.encode():
                continue
            data = self.model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                value = json.loads(bytes(data).decode("utf-8"))
            except (TypeError, ValueError, AttributeError):
                value = None
            if not isinstance(value, dict):
                raise UnsupportedModel(f"{self.source}: its {METADATA_NAME!r} metadata is not "
                                       "a JSON object")
            return value
        return {}

    def softmax(self, where, op, index):
        opts = self.options(op, tflite.SoftmaxOptions)
        x = self.int8_activation(where, op.Inputs(0))
        out = self.int8_activation(where, op.Outputs(0))
        if out.zero_point != -128 or abs(out.scale - 1 / 256) > 0.001 / 256:
            self.fail(where, f"output quantization ({out.scale}, {out.zero_point}) other than "
                             "(1/256, -128)")
        double = DOUBLE_ROUNDING["SOFTMAX"]
        m, shift, diff_min = host_ops.softmax_parameters(
            np.float32(opts.Beta() if opts else 1.0), np.float32(x.scale), double)
        return host_ops.Softmax(inputs=(op.Inputs(0),), output=op.Outputs(0),
                                out_shape=out.shape, input_multiplier=m, input_left_shift=shift,
                                diff_min=diff_min, double_rounding=double)

    def quantize(self, where, op, index):
        x = self.raw[op.Inputs(0)]
        if x.type != tflite.TensorType.FLOAT32:
            self.fail(where, f"quantizing tensor {x.name!r} of type {x.type_name} (only float32 "
                             "to int8)")
        if op.Inputs(0) not in self.float_inputs:
            self.fail(where, "a float tensor in the middle of the model")
        out = self.int8_activation(where, op.Outputs(0))
        return host_ops.Quantize(inputs=(op.Inputs(0),), output=op.Outputs(0),
                                 out_shape=out.shape, scale=out.scale,
                                 zero_point=out.zero_point)

    def float_arithmetic(self, where, op, index):
        """``SUB`` / ``MUL`` in float32 on the model's float input, before its ``QUANTIZE``
        (a scaler's standardization): the first input the float input (or such an op's
        output), the second a float32 constant of one value or one per element of the last
        dimension, no fused activation."""
        x, c, out = self.raw[op.Inputs(0)], self.raw[op.Inputs(1)], self.raw[op.Outputs(0)]
        if x.type != tflite.TensorType.FLOAT32 or op.Inputs(0) not in self.float_inputs:
            self.fail(where, "arithmetic other than float32 on the model's float input "
                             "(int8 SUB and MUL)")
        self.constant(where, op.Inputs(1), "second operand")
        if c.type != tflite.TensorType.FLOAT32 or c.data.size not in (1, x.shape[-1]) or \
                out.type != tflite.TensorType.FLOAT32 or tuple(out.shape) != tuple(x.shape):
            self.fail(where, f"a second operand of shape {c.shape} for {x.shape}")
        opts = self.options(op, tflite.SubOptions if self.name(op) == "SUB"
                            else tflite.MulOptions)
        if opts is not None and opts.FusedActivationFunction() != 0:
            self.fail(where, "a fused activation on float arithmetic")
        self.float_inputs.add(op.Outputs(0))
        return host_ops.FloatArithmetic(inputs=(op.Inputs(0), op.Inputs(1)),
                                        output=op.Outputs(0), out_shape=out.shape,
                                        name=self.name(op))

    def dequantize(self, where, op, index):
        x = self.int8_activation(where, op.Inputs(0))
        out = self.raw[op.Outputs(0)]
        if out.type != tflite.TensorType.FLOAT32:
            self.fail(where, f"dequantizing to type {out.type_name}")
        if op.Outputs(0) not in self.graph_outputs:
            self.fail(where, "a float tensor in the middle of the model")
        return host_ops.Dequantize(inputs=(op.Inputs(0),), output=op.Outputs(0),
                                   out_shape=out.shape, scale=x.scale, zero_point=x.zero_point)

    # --- the graph -----------------------------------------------------------------------------

    def name(self, op):
        code = self.model.OperatorCodes(op.OpcodeIndex())
        value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if value == tflite.BuiltinOperator.CUSTOM:
            return "custom op " + (code.CustomCode() or b"?").decode("utf-8", "replace")
        return _OP_NAMES.get(value, f"operator code {value}")

    def graph(self):
        self.graph_inputs = [int(i) for i in self.sg.InputsAsNumpy()] if self.sg.InputsLength() \
            else []
        self.graph_outputs = [int(i) for i in self.sg.OutputsAsNumpy()] \
            if self.sg.OutputsLength() else []
        handlers = {"FULLY_CONNECTED": self.fully_connected,
                    "CONV_2D": lambda w, op, i: self.conv(w, op, False),
                    "DEPTHWISE_CONV_2D": lambda w, op, i: self.conv(w, op, True),
                    "ADD": self.add, "AVERAGE_POOL_2D": self.pool, "MAX_POOL_2D": self.pool,
                    "RESHAPE": self.reshape, "PAD": self.pad, "PADV2": self.pad, "RELU": self.relu,
                    "SOFTMAX": self.softmax,
                    "QUANTIZE": self.quantize, "DEQUANTIZE": self.dequantize,
                    "SUB": self.float_arithmetic, "MUL": self.float_arithmetic}
        # The float tensors QUANTIZE may read: the model's inputs, then float SUB/MUL outputs.
        self.float_inputs = set(self.graph_inputs)
        for i in self.graph_inputs:
            t = self.raw[i]
            # run_graph feeds one sample at a time: a batch of several would be cut wrongly.
            if not t.shape or t.shape[0] != 1:
                self.fail("model input", f"tensor {t.name!r} of shape {t.shape} (the batch "
                                         "dimension must be 1)")
            if t.type == tflite.TensorType.INT8:
                self.int8_activation("model input", i)
            elif t.type != tflite.TensorType.FLOAT32:
                self.fail("model input", f"tensor {t.name!r} of type {t.type_name}")
        ops = []
        known = set(self.graph_inputs) | {i for i, t in enumerate(self.raw)
                                          if t.data is not None}
        for index in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(index)
            name = self.name(op)
            where = f"op {index} ({name})"
            if name not in handlers:
                raise UnsupportedModel(f"{where} is not supported (the importer runs "
                                       f"{', '.join(sorted(handlers))})")
            if op.OutputsLength() != 1:
                self.fail(where, f"{op.OutputsLength()} outputs")
            for i in [*op.InputsAsNumpy(), *op.OutputsAsNumpy()]:
                if not -1 <= i < len(self.raw):
                    raise UnsupportedModel(f"{where}: tensor index {i} out of range (a corrupt "
                                           "model)")
            for i in [*op.InputsAsNumpy(), *op.OutputsAsNumpy()]:
                # An empty tensor would fail later, in a reshape that names no op.
                if i >= 0 and 0 in self.raw[i].shape:
                    self.fail(where, f"tensor {self.raw[i].name!r} of zero-size shape "
                                     f"{self.raw[i].shape}")
            result = handlers[name](where, op, index)
            missing = [i for i in result.inputs if i not in known]
            if missing:
                self.fail(where, f"input tensor {missing[0]} that no earlier op computes")
            known.add(result.output)
            ops.append(result)
        for i in self.graph_inputs:
            if 0 in self.raw[i].shape:
                self.fail("model input", f"tensor {self.raw[i].name!r} of zero-size shape "
                                         f"{self.raw[i].shape}")
        for i in self.graph_outputs:
            if i not in known:
                self.fail("model output", f"tensor {i} that no op computes")
            if self.raw[i].type not in (tflite.TensorType.INT8, tflite.TensorType.FLOAT32):
                self.fail("model output", f"tensor {self.raw[i].name!r} of type "
                                          f"{self.raw[i].type_name}")
        tensors = [Tensor(name=t.name, shape=t.shape, dtype=_DTYPES.get(t.type, np.int8),
                          scale=t.scale if t.scales is not None and t.scales.size == 1 else None,
                          zero_point=t.zero_point, data=t.data) for t in self.raw]
        return Graph(tensors=tensors, ops=ops, inputs=self.graph_inputs,
                     outputs=self.graph_outputs, source=self.source, metadata=self.metadata())


#: The ops :func:`load_tflite` reads, by where they run.
OPS = {"macro": ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"),
       "host": ("ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "PAD", "PADV2", "RELU",
                "SOFTMAX", "SUB", "MUL",
                "QUANTIZE", "DEQUANTIZE")}


def load_tflite(model):
    """The :class:`Graph` of an int8 TFLite model: ``model`` is a path (``str`` or
    ``pathlib.Path``) or the file's ``bytes``. Tensor indices are the model's own (so a graph
    tensor ``i`` is LiteRT's tensor ``i``). Raises :class:`UnsupportedModel` (one line naming the
    op and option) for what the importer does not handle, and ``OSError`` for a file it cannot
    read."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, source = bytes(model), "<bytes>"
    else:
        data, source = Path(model).read_bytes(), str(model)
    try:
        return _Importer(bytearray(data), source).graph()
    except UnsupportedModel:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, TypeError, ValueError, AttributeError,
            ZeroDivisionError, OverflowError) as e:
        # flatbuffers reads offsets without bounds checks: a truncated or corrupt file fails
        # in any of these ways, anywhere in the reading.
        raise UnsupportedModel(f"{source} is not a readable TFLite model "
                               f"({type(e).__name__}: {e})") from None
