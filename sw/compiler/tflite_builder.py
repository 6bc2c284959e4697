"""Int8 ``.tflite`` models written from numpy arrays (no TensorFlow needed): the writer of
``pim quantize --out M.tflite`` (:mod:`pim_macro.sw.compiler.graph_quantizer`) and of the tests'
models.

:class:`ModelBuilder` writes the TFLite flatbuffer schema (``tensorflow/lite/schema/
schema.fbs``) with the builder functions of the ``tflite`` package: one subgraph, tensors with
their affine quantization (per tensor, or per channel with a ``quantized_dimension``), constant
buffers, and builtin operators with their options. The op helpers (:meth:`~ModelBuilder.conv2d`,
:meth:`~ModelBuilder.add`, ...) compute output shapes the way TFLite's ``Prepare`` does and give
each op's outputs their own quantization; everything else is what the caller passes, so a test
can build any legal (or deliberately unsupported) model. Randomness is the caller's (seeded
``numpy.random.Generator``).

Usage::

    b = ModelBuilder()
    x = b.input((1, 8, 8, 3), scale=0.02, zero_point=-128)
    y = b.conv2d(x, filters, bias, w_scale=scales, out_scale=0.05, out_zero_point=3)
    data = b.to_bytes(inputs=[x], outputs=[y])        # a .tflite file's bytes
"""

import flatbuffers
import numpy as np
import tflite

from pim_macro.sw.compiler.tflite_import import FILE_IDENTIFIER


__all__ = ["ModelBuilder", "ACTIVATIONS", "same_padding"]

#: TFLite's fused activation names (``ActivationFunctionType``).
ACTIVATIONS = {name: getattr(tflite.ActivationFunctionType, name)
               for name in ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")}

_TYPES = {np.dtype(np.float32): tflite.TensorType.FLOAT32,
          np.dtype(np.int32): tflite.TensorType.INT32,
          np.dtype(np.int8): tflite.TensorType.INT8,
          np.dtype(np.uint8): tflite.TensorType.UINT8,
          np.dtype(np.int16): tflite.TensorType.INT16,
          np.dtype(np.int64): tflite.TensorType.INT64}


def same_padding(size, kernel, stride):
    """``(out, before, after)`` of one spatial dimension under TFLite's ``SAME`` padding
    (``kernels/padding.h`` ComputePaddingHeightWidth: the odd pixel goes after)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _out_size(size, kernel, stride, padding):
    if padding == "SAME":
        return same_padding(size, kernel, stride)[0]
    return (size - kernel + stride) // stride


class ModelBuilder:
    """Collects tensors, buffers and operators; :meth:`to_bytes` writes the flatbuffer."""

    def __init__(self):
        self.tensors = []       # dicts: shape, dtype, scale, zero_point, qdim, buffer, name
        self._buffers = [b""]   # buffer 0: the empty buffer of every variable tensor
        self._codes = []        # builtin operator codes, in first-use order
        self._ops = []          # (code index, inputs, outputs, options name, fields)
        self.metadata = {}      # name -> bytes: the model's Metadata entries

    # --- tensors -------------------------------------------------------------------------------

    def tensor(self, shape, dtype=np.int8, *, scale=None, zero_point=0, data=None, name=None,
               quantized_dimension=0):
        """A new tensor; returns its index. ``scale``: a float, a sequence (per channel along
        ``quantized_dimension``), or None (no quantization); ``zero_point`` an int or sequence;
        ``data``: constant contents (cast to ``dtype``)."""
        buffer = 0
        if data is not None:
            array = np.ascontiguousarray(np.asarray(data).astype(dtype).reshape(shape))
            self._buffers.append(array.tobytes())
            buffer = len(self._buffers) - 1
        self.tensors.append(dict(shape=tuple(int(s) for s in shape), dtype=np.dtype(dtype),
                                 scale=scale, zero_point=zero_point, qdim=quantized_dimension,
                                 buffer=buffer, name=name or f"t{len(self.tensors)}"))
        return len(self.tensors) - 1

    def input(self, shape, dtype=np.int8, *, scale=None, zero_point=0):
        """A variable tensor (give it to :meth:`to_bytes` as an input)."""
        return self.tensor(shape, dtype, scale=scale, zero_point=zero_point)

    def shape(self, t):
        return self.tensors[t]["shape"]

    def quant(self, t):
        """``(scale, zero_point)`` of a per-tensor quantized tensor."""
        return float(self.tensors[t]["scale"]), int(self.tensors[t]["zero_point"])

    # --- operators -----------------------------------------------------------------------------

    def op(self, code, inputs, outputs, options=None, **fields):
        """A builtin operator: ``code`` a ``BuiltinOperator`` name (``"CONV_2D"``), ``inputs``
        and ``outputs`` tensor indices (-1: an absent optional input), ``options`` the options
        table's name (``"Conv2DOptions"``) with its ``fields`` (``Padding=1, StrideW=2``)."""
        code = getattr(tflite.BuiltinOperator, code)
        if code not in self._codes:
            self._codes.append(code)
        self._ops.append((self._codes.index(code), list(inputs), list(outputs), options,
                          fields))

    def _weights_scale(self, x, w_scale, n):
        in_scale = np.float32(self.quant(x)[0])
        w_scale = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
        bias_scale = (in_scale * w_scale).astype(np.float32)   # TFLite's converter's bias scale
        per_channel = w_scale.size > 1
        if per_channel and w_scale.size != n:
            raise ValueError("per-channel scales must be one per output channel")
        return w_scale, bias_scale, per_channel

    def _bias(self, bias, n, bias_scale):
        if bias is None:
            return -1
        return self.tensor((n,), np.int32, scale=list(map(float, bias_scale)),
                           zero_point=[0] * bias_scale.size, data=bias)

    def fully_connected(self, x, weights, bias=None, *, w_scale, out_scale, out_zero_point,
                        activation="NONE", keep_num_dims=False, w_zero_point=0,
                        out_shape=None):
        """``FULLY_CONNECTED``: ``weights`` int8 ``(N, K)``, ``bias`` int32 ``(N,)`` or None,
        ``w_scale`` a float or ``N`` floats (per channel). Output ``(rows, N)`` (or the input's
        leading dimensions with ``keep_num_dims``)."""
        n, k = np.shape(weights)
        w_scale, bias_scale, per_channel = self._weights_scale(x, w_scale, n)
        w = self.tensor((n, k), np.int8, scale=list(map(float, w_scale)),
                        zero_point=[w_zero_point] * w_scale.size, data=weights)
        b = self._bias(bias, n, bias_scale)
        in_shape = self.shape(x)
        if out_shape is None:
            out_shape = ((*in_shape[:-1], n) if keep_num_dims
                         else (int(np.prod(in_shape)) // k, n))
        y = self.tensor(out_shape, scale=out_scale, zero_point=out_zero_point)
        self.op("FULLY_CONNECTED", [x, w, b], [y], "FullyConnectedOptions",
                FusedActivationFunction=ACTIVATIONS[activation], KeepNumDims=keep_num_dims)
        return y

    def conv2d(self, x, filters, bias=None, *, w_scale, out_scale, out_zero_point,
               stride=(1, 1), padding="SAME", activation="NONE", dilation=(1, 1)):
        """``CONV_2D``: ``filters`` int8 OHWI ``(N, kh, kw, C)``, ``bias`` int32 ``(N,)``,
        ``w_scale`` a float or ``N`` floats; ``stride`` ``(sh, sw)``, ``padding`` ``"SAME"``
        or ``"VALID"``, ``dilation`` ``(dh, dw)``."""
        n, kh, kw, _ = np.shape(filters)
        w_scale, bias_scale, _ = self._weights_scale(x, w_scale, n)
        w = self.tensor(np.shape(filters), np.int8, scale=list(map(float, w_scale)),
                        zero_point=[0] * w_scale.size, data=filters, quantized_dimension=0)
        b = self._bias(bias, n, bias_scale)
        _, h, wd, _ = self.shape(x)
        ekh, ekw = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        y = self.tensor((1, _out_size(h, ekh, stride[0], padding),
                         _out_size(wd, ekw, stride[1], padding), n),
                        scale=out_scale, zero_point=out_zero_point)
        self.op("CONV_2D", [x, w, b], [y], "Conv2DOptions",
                Padding=getattr(tflite.Padding, padding), StrideH=stride[0], StrideW=stride[1],
                FusedActivationFunction=ACTIVATIONS[activation], DilationHFactor=dilation[0],
                DilationWFactor=dilation[1])
        return y

    def depthwise_conv2d(self, x, filters, bias=None, *, w_scale, out_scale, out_zero_point,
                         stride=(1, 1), padding="SAME", activation="NONE", dilation=(1, 1)):
        """``DEPTHWISE_CONV_2D``: ``filters`` int8 ``(1, kh, kw, N)`` with ``N = C * m`` (the
        depth multiplier ``m``), per-channel scales along dimension 3."""
        _, kh, kw, n = np.shape(filters)
        _, h, wd, c = self.shape(x)
        w_scale, bias_scale, _ = self._weights_scale(x, w_scale, n)
        w = self.tensor(np.shape(filters), np.int8, scale=list(map(float, w_scale)),
                        zero_point=[0] * w_scale.size, data=filters, quantized_dimension=3)
        b = self._bias(bias, n, bias_scale)
        ekh, ekw = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        y = self.tensor((1, _out_size(h, ekh, stride[0], padding),
                         _out_size(wd, ekw, stride[1], padding), n),
                        scale=out_scale, zero_point=out_zero_point)
        self.op("DEPTHWISE_CONV_2D", [x, w, b], [y], "DepthwiseConv2DOptions",
                Padding=getattr(tflite.Padding, padding), StrideH=stride[0], StrideW=stride[1],
                DepthMultiplier=n // c, FusedActivationFunction=ACTIVATIONS[activation],
                DilationHFactor=dilation[0], DilationWFactor=dilation[1])
        return y

    def add(self, a, b, *, out_scale, out_zero_point, activation="NONE"):
        """``ADD`` of two int8 tensors of one shape."""
        y = self.tensor(self.shape(a), scale=out_scale, zero_point=out_zero_point)
        self.op("ADD", [a, b], [y], "AddOptions",
                FusedActivationFunction=ACTIVATIONS[activation])
        return y

    def pool(self, kind, x, *, filter, stride, padding="VALID", activation="NONE"):
        """``AVERAGE_POOL_2D`` or ``MAX_POOL_2D`` (``kind``); the output keeps the input's
        quantization, as TFLite requires."""
        _, h, w, c = self.shape(x)
        scale, zero_point = self.quant(x)
        y = self.tensor((1, _out_size(h, filter[0], stride[0], padding),
                         _out_size(w, filter[1], stride[1], padding), c),
                        scale=scale, zero_point=zero_point)
        self.op(kind, [x], [y], "Pool2DOptions", Padding=getattr(tflite.Padding, padding),
                StrideH=stride[0], StrideW=stride[1], FilterHeight=filter[0],
                FilterWidth=filter[1], FusedActivationFunction=ACTIVATIONS[activation])
        return y

    def reshape(self, x, shape):
        """``RESHAPE`` to ``shape`` (given as a constant int32 shape tensor)."""
        s = self.tensor((len(shape),), np.int32, data=shape)
        scale, zero_point = self.quant(x)
        y = self.tensor(shape, scale=scale, zero_point=zero_point)
        self.op("RESHAPE", [x, s], [y])
        return y

    def pad(self, x, paddings, value=None):
        """``PAD`` of an int8 tensor: ``paddings`` ``((before, after),) * rank``; the padding
        holds the input's zero point (``pad.cc``: a quantized ``PAD`` pads with the zero
        point), or with the int8 ``value`` (``PADV2``, its constant quantized as the input).
        The output keeps the input's quantization."""
        paddings = np.asarray(paddings, dtype=np.int32).reshape(len(self.shape(x)), 2)
        p = self.tensor(paddings.shape, np.int32, data=paddings)
        scale, zero_point = self.quant(x)
        shape = tuple(int(n + a + b) for n, (a, b) in zip(self.shape(x), paddings))
        y = self.tensor(shape, scale=scale, zero_point=zero_point)
        if value is None:
            self.op("PAD", [x, p], [y])
        else:
            v = self.tensor((1,), np.int8, scale=scale, zero_point=zero_point, data=[value])
            self.op("PADV2", [x, p, v], [y])
        return y

    def sub(self, x, constant):
        """``SUB`` of a float32 constant (broadcast over the last dimension) from a float32
        tensor: ``x - constant``."""
        c = self.tensor(np.shape(constant), np.float32, data=constant)
        y = self.tensor(self.shape(x), np.float32)
        self.op("SUB", [x, c], [y], "SubOptions", FusedActivationFunction=ACTIVATIONS["NONE"])
        return y

    def mul(self, x, constant):
        """``MUL`` of a float32 tensor by a float32 constant (broadcast over the last
        dimension)."""
        c = self.tensor(np.shape(constant), np.float32, data=constant)
        y = self.tensor(self.shape(x), np.float32)
        self.op("MUL", [x, c], [y], "MulOptions", FusedActivationFunction=ACTIVATIONS["NONE"])
        return y

    def relu(self, x):
        """``RELU`` of an int8 tensor; the output keeps its quantization."""
        scale, zero_point = self.quant(x)
        y = self.tensor(self.shape(x), scale=scale, zero_point=zero_point)
        self.op("RELU", [x], [y])
        return y

    def softmax(self, x, *, beta=1.0, out_scale=1 / 256, out_zero_point=-128):
        """``SOFTMAX`` over the last dimension (TFLite wants scale 1/256, zero point -128)."""
        y = self.tensor(self.shape(x), scale=out_scale, zero_point=out_zero_point)
        self.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
        return y

    def quantize(self, x, *, scale, zero_point):
        """``QUANTIZE`` of a float32 tensor to int8."""
        y = self.tensor(self.shape(x), scale=scale, zero_point=zero_point)
        self.op("QUANTIZE", [x], [y])
        return y

    def dequantize(self, x):
        """``DEQUANTIZE`` of an int8 tensor to float32."""
        y = self.tensor(self.shape(x), np.float32)
        self.op("DEQUANTIZE", [x], [y])
        return y

    # --- serialization -------------------------------------------------------------------------

    def to_bytes(self, inputs, outputs):
        """The ``.tflite`` file's bytes: one subgraph with these graph inputs and outputs, and
        a ``Metadata`` entry (name, buffer) for every item of :attr:`metadata`."""
        b = flatbuffers.Builder(1024)
        all_buffers = list(self._buffers)
        metadata = []
        for key, data in self.metadata.items():
            all_buffers.append(bytes(data))
            metadata.append((key, len(all_buffers) - 1))

        def ints(values, start, kind="Int32"):
            start(b, len(values))
            for v in reversed(values):
                getattr(b, "Prepend" + kind)(int(v))
            return b.EndVector()

        buffers = []
        for data in all_buffers:
            offset = None
            if data:
                b.StartVector(1, len(data), 16)         # aligned: TFLite reads int32 in place
                b.head -= len(data)
                b.Bytes[b.head:b.head + len(data)] = data
                offset = b.EndVector()
            tflite.BufferStart(b)
            if offset is not None:
                tflite.BufferAddData(b, offset)
            buffers.append(tflite.BufferEnd(b))

        tensors = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = ints(t["shape"], tflite.TensorStartShapeVector)
            quant = None
            if t["scale"] is not None:
                scales = np.atleast_1d(np.asarray(t["scale"], dtype=np.float32))
                zps = np.atleast_1d(np.asarray(t["zero_point"], dtype=np.int64))
                sv = b.CreateNumpyVector(scales)
                zv = b.CreateNumpyVector(zps)
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, sv)
                tflite.QuantizationParametersAddZeroPoint(b, zv)
                tflite.QuantizationParametersAddQuantizedDimension(b, t["qdim"])
                quant = tflite.QuantizationParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddType(b, _TYPES[t["dtype"]])
            tflite.TensorAddBuffer(b, t["buffer"])
            tflite.TensorAddName(b, name)
            if quant is not None:
                tflite.TensorAddQuantization(b, quant)
            tensors.append(tflite.TensorEnd(b))

        ops = []
        for code, ins, outs, options, fields in self._ops:
            opts = None
            if options is not None:
                getattr(tflite, options + "Start")(b)
                for field, value in fields.items():
                    getattr(tflite, options + "Add" + field)(b, value)
                opts = getattr(tflite, options + "End")(b)
            iv = ints(ins, tflite.OperatorStartInputsVector)
            ov = ints(outs, tflite.OperatorStartOutputsVector)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, code)
            tflite.OperatorAddInputs(b, iv)
            tflite.OperatorAddOutputs(b, ov)
            if opts is not None:
                tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, options))
                tflite.OperatorAddBuiltinOptions(b, opts)
            ops.append(tflite.OperatorEnd(b))

        codes = []
        for code in self._codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))

        def offsets(items, start):
            start(b, len(items))
            for item in reversed(items):
                b.PrependUOffsetTRelative(item)
            return b.EndVector()

        tv = offsets(tensors, tflite.SubGraphStartTensorsVector)
        opv = offsets(ops, tflite.SubGraphStartOperatorsVector)
        iv = ints(inputs, tflite.SubGraphStartInputsVector)
        ov = ints(outputs, tflite.SubGraphStartOutputsVector)
        sg_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tv)
        tflite.SubGraphAddInputs(b, iv)
        tflite.SubGraphAddOutputs(b, ov)
        tflite.SubGraphAddOperators(b, opv)
        tflite.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraphEnd(b)

        sgv = offsets([subgraph], tflite.ModelStartSubgraphsVector)
        cv = offsets(codes, tflite.ModelStartOperatorCodesVector)
        bv = offsets(buffers, tflite.ModelStartBuffersVector)
        entries = []
        for key, buffer in metadata:
            name = b.CreateString(key)
            tflite.MetadataStart(b)
            tflite.MetadataAddName(b, name)
            tflite.MetadataAddBuffer(b, buffer)
            entries.append(tflite.MetadataEnd(b))
        mv = offsets(entries, tflite.ModelStartMetadataVector) if entries else None
        desc = b.CreateString("pim_macro.sw.compiler.tflite_builder")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, cv)
        tflite.ModelAddSubgraphs(b, sgv)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, bv)
        if mv is not None:
            tflite.ModelAddMetadata(b, mv)
        b.Finish(tflite.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())
