"""The network representation: a graph of int8 ops with TFLite's quantization semantics.

A :class:`Graph` holds :class:`Tensor` s (the model's own shapes, batch first, NHWC for images)
and ops in execution order. There are two kinds of op:

* **Macro ops** (:class:`FullyConnected`, :class:`Conv2D`, :class:`DepthwiseConv2D`) run on the
  macro. Each is a GEMM: its int8 input is cut into ``P`` *patches* of ``K`` values
  (:meth:`MacroOp.patches`; convolution padding holds the input zero point, so a padded tap
  contributes nothing, as TFLite's reference kernels skip it) and multiplied by the int8 weight
  matrix ``(N, K)`` (:attr:`MacroOp.weights`, symmetric: zero point 0); the accumulator starts
  at :meth:`MacroOp.folded_bias` (``bias - input_zero_point * sum_k w``, which folds the input
  zero point in) and is requantized per output channel by
  :func:`pim_macro.sw.models.requant.requantize` (``multiplier``, ``shift``,
  ``output_zero_point``, ``[act_min, act_max]``). :meth:`MacroOp.run` is that computation in
  numpy: the bit-exact reference of what the macro produces.
* **Host ops** (:mod:`pim_macro.sw.compiler.host_ops`) run in numpy on the host with LiteRT's
  reference semantics.

Every op has ``name`` (the TFLite operator name), ``inputs`` (tensor indices of its inputs, in
order: the tensors it reads at run time, and a constant operand of a host op), ``output`` (one
tensor index) and ``run(*arrays)``: the output values of one sample (arrays in their tensor's
shape, batch 1; :meth:`Graph.run` puts the result in the output tensor's shape). Tensor indices
are the model's own (:func:`pim_macro.sw.compiler.tflite_import.load_tflite`).
"""

from dataclasses import dataclass, field

import numpy as np

from pim_macro.sw.models.requant import requantize, wrap32


__all__ = ["Tensor", "MacroOp", "FullyConnected", "Conv2D", "DepthwiseConv2D", "Graph",
           "DOUBLE_ROUNDING"]


#: Per op: does LiteRT's reference kernel (``BUILTIN_REF``, ai-edge-litert 2.3) round with
#: gemmlowp's double rounding (True) or a single rounding (False)? MEASURED, not read from the
#: sources (tb/tests/test_tflite.py tells the two apart on every op: models whose effective scale
#: is exactly 0.5 make every odd accumulator a tie, and random ones the double rounding's error):
#:
#: * ``CONV_2D`` (per-tensor and per-channel), ``DEPTHWISE_CONV_2D`` (both): double. Single
#:   rounding differs in 33 of 46,080 (conv) and 264 to 475 of 92,160 (depthwise) random outputs.
#: * ``FULLY_CONNECTED`` (both): single, with exact ties away from zero (the macro's single
#:   rounding): double rounding differs in about 60 of 28,800 random outputs; the half-up single
#:   rounding of ``TFLITE_SINGLE_ROUNDING`` differs on every negative tie (accumulator -25 at
#:   scale 0.5: LiteRT gives -13, half up -12).
#: * ``ADD`` (``MultiplyByQuantizedMultiplierSmallerThanOneExp``): double; single differs on 4 of
#:   the 65,536 input pairs for 2 of 30 random scale sets.
#: * ``SOFTMAX`` (``MultiplyByQuantizedMultiplierGreaterThanOne`` of the input differences):
#:   double, the build's default; no input found where the two give different outputs.
DOUBLE_ROUNDING = {
    "FULLY_CONNECTED": False,
    "CONV_2D": True,
    "DEPTHWISE_CONV_2D": True,
    "ADD": True,
    "SOFTMAX": True,
}


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor of the graph. ``shape``: the model's shape, batch first (1). ``dtype``: a numpy
    scalar type (``np.int8`` for activations, ``np.float32`` at float edges). ``scale`` and
    ``zero_point``: per-tensor quantization (``real = scale * (q - zero_point)``), ``None``/0
    for float tensors and per-channel weights. ``data``: a constant tensor's contents (in
    ``shape`` and ``dtype``), ``None`` for the tensors the graph computes."""
    name: str
    shape: tuple
    dtype: type = np.int8
    scale: float = None
    zero_point: int = 0
    data: np.ndarray = None


@dataclass(frozen=True, eq=False)
class MacroOp:
    """What the macro computes for one op (see the module docstring). Arrays: ``weights`` int8
    ``(N, K)``; ``bias`` int32 ``(N,)`` (the model's, zero point not folded); ``multiplier``
    int64 ``(N,)`` (Q31, ``0 .. 2**31 - 1``); ``shift`` int64 ``(N,)`` (``-32 .. 31``).
    Per-tensor quantization is the case where every channel holds the same pair.
    ``double_rounding`` picks the rounding of
    :func:`pim_macro.sw.models.requant.multiply_by_quantized_multiplier` (the one LiteRT's
    reference kernel of the op uses: :data:`DOUBLE_ROUNDING`)."""
    input: int
    output: int
    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    input_zero_point: int
    output_zero_point: int
    act_min: int = -128
    act_max: int = 127
    double_rounding: bool = False

    name = "MACRO"

    @property
    def inputs(self):
        return (self.input,)

    @property
    def channels(self):
        """N: output channels (lanes of work)."""
        return self.weights.shape[0]

    @property
    def depth(self):
        """K: values per patch."""
        return self.weights.shape[1]

    def positions(self):
        """P: patches per sample."""
        raise NotImplementedError

    def out_shape(self):
        """The output of one sample without the batch: ``(P, N)`` reshaped as the model has it."""
        raise NotImplementedError

    def patches(self, x):
        """int8 ``(P, K)``: the patches of one sample's input ``x`` (its tensor's shape)."""
        raise NotImplementedError

    def k_range(self, first, stop):
        """``(k0, k1)``: the contiguous columns of :attr:`weights` that output channels
        ``first .. stop - 1`` use (outside it their weights are zero); every column for a dense
        op."""
        return 0, self.depth

    @property
    def macs(self):
        """Multiply-accumulates per sample that the model asks for (not counting the zeros a
        mapping adds)."""
        return self.positions() * self.channels * self.depth

    def folded_bias(self):
        """int32 ``(N,)``: ``bias - input_zero_point * sum_k weights`` (wrapped to int32)."""
        sums = self.weights.astype(np.int64).sum(axis=1)
        return wrap32(self.bias.astype(np.int64) - self.input_zero_point * sums).astype(np.int32)

    def accumulate(self, x):
        """int32 ``(P, N)``: the accumulators (folded bias included) for one sample."""
        cols = self.patches(x).astype(np.int64)
        return wrap32(cols @ self.weights.astype(np.int64).T + self.folded_bias())

    def requantize(self, acc):
        """int8 ``(P, N)`` from int32 accumulators ``(P, N)``, per output channel."""
        return requantize(acc, self.multiplier, self.shift, self.output_zero_point,
                          self.act_min, self.act_max, double_rounding=self.double_rounding)

    def run(self, x):
        """The op's int8 output for one sample (the reference the macro must match)."""
        return self.requantize(self.accumulate(x)).reshape(self.out_shape())


@dataclass(frozen=True, eq=False)
class FullyConnected(MacroOp):
    """TFLite ``FULLY_CONNECTED``: ``weights`` is the model's ``(N, K)`` filter. The input of one
    sample is reshaped to ``(P, K)`` rows (TFLite flattens the leading dimensions), each a
    patch; the output is ``(P, N)`` shaped as ``out_shape``."""
    output_shape: tuple = None

    name = "FULLY_CONNECTED"

    def positions(self):
        return int(np.prod(self.output_shape[:-1]))

    def out_shape(self):
        return tuple(self.output_shape)

    def patches(self, x):
        return np.asarray(x, dtype=np.int8).reshape(-1, self.depth)


@dataclass(frozen=True, eq=False)
class Conv2D(MacroOp):
    """TFLite ``CONV_2D`` (NHWC, dilation 1). ``weights`` is the model's OHWI filter reshaped to
    ``(N, kh * kw * C)``: a patch is ``(dy, dx, c)`` ordered, channels fastest.
    ``in_shape``: ``(H, W, C)``; ``kernel``: ``(kh, kw)``; ``stride``: ``(sh, sw)``;
    ``padding``: ``(top, left, bottom, right)`` rows and columns of input zero point around the
    input (TFLite's ``SAME`` puts the odd one at the bottom and right)."""
    in_shape: tuple = None
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)

    name = "CONV_2D"

    def out_hw(self):
        (h, w, _), (kh, kw), (sh, sw) = self.in_shape, self.kernel, self.stride
        top, left, bottom, right = self.padding
        return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1

    def positions(self):
        ho, wo = self.out_hw()
        return ho * wo

    def out_shape(self):
        return (*self.out_hw(), self.channels)

    def padded(self, x):
        """One sample's ``(H, W, C)`` input with its padding filled with the input zero point."""
        top, left, bottom, right = self.padding
        x = np.asarray(x, dtype=np.int8).reshape(self.in_shape)
        return np.pad(x, ((top, bottom), (left, right), (0, 0)),
                      constant_values=self.input_zero_point)

    def windows(self, x):
        """int8 ``(Ho, Wo, kh, kw, C)``: every output position's input window."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        ho, wo = self.out_hw()
        padded = self.padded(x)
        out = np.empty((ho, wo, kh, kw, padded.shape[2]), dtype=np.int8)
        for dy in range(kh):
            for dx in range(kw):
                out[:, :, dy, dx] = padded[dy:dy + sh * ho:sh, dx:dx + sw * wo:sw]
        return out

    def patches(self, x):
        ho, wo = self.out_hw()
        return self.windows(x).reshape(ho * wo, -1)


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(Conv2D):
    """TFLite ``DEPTHWISE_CONV_2D`` (NHWC, dilation 1): output channel ``o`` filters input
    channel ``o // depth_multiplier``. Mapped as a block-diagonal GEMM: patches are ordered
    ``(c, dy, dx)`` (channel-major), and ``weights[o]`` is zero outside input channel
    ``o // m``'s ``kh * kw`` columns, so a tile of output channels uses one contiguous column
    range (:meth:`k_range`). The macro broadcasts one activation to every lane, so only the lanes
    of that activation's channel do useful work: utilization at most ``m / lanes``."""
    depth_multiplier: int = 1

    name = "DEPTHWISE_CONV_2D"

    def patches(self, x):
        ho, wo = self.out_hw()
        return self.windows(x).transpose(0, 1, 4, 2, 3).reshape(ho * wo, -1)

    def k_range(self, first, stop):
        taps = self.kernel[0] * self.kernel[1]
        m = self.depth_multiplier
        return (first // m) * taps, ((stop - 1) // m + 1) * taps

    @property
    def macs(self):
        return self.positions() * self.channels * self.kernel[0] * self.kernel[1]

    @staticmethod
    def block_diagonal(filters, depth_multiplier):
        """The ``(N, C * kh * kw)`` weight matrix from TFLite's ``(1, kh, kw, N)`` filter."""
        _, kh, kw, n = filters.shape
        c = n // depth_multiplier
        w = np.zeros((n, c, kh * kw), dtype=np.int8)
        for o in range(n):
            w[o, o // depth_multiplier] = filters[0, :, :, o].reshape(-1)
        return w.reshape(n, c * kh * kw)


@dataclass(frozen=True, eq=False)
class Graph:
    """``tensors`` (a list of :class:`Tensor`), ``ops`` in execution order, the graph's
    ``inputs`` and ``outputs`` (tensor indices), ``source`` (what it was read from, for
    messages) and ``metadata``: what the model says about itself beyond its ops, a dict with
    the optional keys ``"classes"`` (a list of the classifier's class labels, ints or strings,
    one per output logit; for a single logit, ``[negative class, positive class]``) and
    ``"input_layout"`` (``"NCHW"`` when the model was made from an ONNX model whose image input
    is channels-first, so its users' inputs are NCHW while the graph's tensor is NHWC;
    ``"output_layout"`` likewise for an image output)."""
    tensors: list
    ops: list
    inputs: list
    outputs: list
    source: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def macro_ops(self):
        return [op for op in self.ops if isinstance(op, MacroOp)]

    @property
    def weight_bytes(self):
        """Bytes of int8 weights the model holds (the macro ops' nonzero-structure aside)."""
        return sum(op.macs // op.positions() for op in self.macro_ops)

    @property
    def macs(self):
        return sum(op.macs for op in self.macro_ops)

    @property
    def host_ops(self):
        return [op for op in self.ops if not isinstance(op, MacroOp)]

    def run(self, inputs, *, keep=False):
        """Run one sample through every op in numpy (the reference). ``inputs``: one array per
        graph input, in its tensor's shape (batch 1) and dtype. Returns the outputs (a list, each
        in its tensor's shape and dtype), and with ``keep`` also a dict of every tensor computed
        ``{index: array}`` (the graph inputs included). Raises ``ValueError`` for a wrong number
        of inputs, an input of the wrong size, or values outside an integer input's dtype."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} input(s), not {len(inputs)}")
        values = {}
        for i, x in zip(self.inputs, inputs):
            t = self.tensors[i]
            x = np.asarray(x)
            if x.size != int(np.prod(t.shape)):
                raise ValueError(f"input {t.name!r} needs {int(np.prod(t.shape))} values "
                                 f"(shape {t.shape}), not {x.size}")
            if np.issubdtype(t.dtype, np.integer) and x.size and (
                    x.dtype.kind not in "iu" or x.min() < np.iinfo(t.dtype).min
                    or x.max() > np.iinfo(t.dtype).max):
                raise ValueError(f"input {t.name!r} takes {np.dtype(t.dtype).name} values")
            values[i] = x.astype(t.dtype).reshape(t.shape)
        for op in self.ops:
            args = (values[i] if i in values else self.tensors[i].data for i in op.inputs)
            t = self.tensors[op.output]
            values[op.output] = np.asarray(op.run(*args)).astype(t.dtype).reshape(t.shape)
        outs = [values[i] for i in self.outputs]
        return (outs, values) if keep else outs
