"""Quantized networks: the ``.npz`` container, its validation, and the numpy reference.

The container
=============

An ``.npz`` file with, for layers ``i = 0, 1, ...`` (consecutive, from 0):

======================== ======================== ===============================================
key                      dtype, shape             meaning
======================== ======================== ===============================================
``w{i}``                 int8 (out, in)           dense weights (symmetric: zero point 0), or
                         int8 (out_ch, in_ch,     convolution weights
                         kh, kw)
``b{i}``                 int32 (out,)/(out_ch,)   bias at scale ``input_scale * weight_scale``
                                                  (TFLite's; the input zero point not folded in)
``multiplier{i}``        integer (out,) or scalar Q31 requantization multiplier ``M0`` per
                                                  output channel, 0 .. 2**31 - 1
``shift{i}``             integer (out,) or scalar its shift, -32 .. 31 (positive: left)
``input_zero_point{i}``  integer scalar           zero point of the layer's int8 input
                                                  (-128 .. 127; default 0)
``output_zero_point{i}`` integer scalar           zero point of its int8 output (default 0)
``act_min{i}``           integer scalar           clamp of the output (defaults -128 and 127;
``act_max{i}``           integer scalar           a fused ReLU is ``act_min =
                                                  output_zero_point``)
``double_rounding{i}``   integer scalar, 0 or 1   gemmlowp's double rounding (1) or TFLite's
                                                  single rounding (0, the default)
``stride{i}``            integer scalar or (2,)   convolutions only: stride (default 1)
``pad{i}``               integer scalar or (2,)   convolutions only: padding (default 0), which
                                                  holds the input zero point
``in_shape{i}``          integer (3,): C, H, W    convolutions only: the input geometry
``classes``              int64 or unicode (out,), optional: a classifier's class labels, one
                         (2,) for one output      per output (see below)
======================== ======================== ===============================================

A layer's ``input_zero_point`` must be the previous layer's ``output_zero_point`` (the same
tensor). A scalar multiplier or shift is per tensor (every channel the same); they are saved as
(out,) arrays. Optional, for float users: ``input_scale`` (float scalar: ``x_float ~=
input_scale * (x_int8 - input_zero_point0)``) and ``output_scale`` (the same for the last
layer's outputs with its ``output_zero_point``), and ``classes`` (int64 or unicode strings,
(out,), or (2,) for a single output: a classifier's class labels, ``classes[i]`` the label of
output ``i``, of a single logit ``[negative, positive]``; scikit-learn's ``classes_``; decoded
by :func:`pim_macro.sw.compiler.classes.predict`; an object array is refused: the container is
read without pickle). A container of ISA version 3 (keys ``m{i}``,
``s{i}``, ``relu{i}``: one 16-bit multiplier per layer) is refused with a line saying so.

Semantics: TFLite's int8 ``FULLY_CONNECTED`` / ``CONV_2D`` (reference kernels
``reference_integer_ops::FullyConnected``, ``ConvPerChannel``), exactly the macro's arithmetic
(:mod:`pim_macro.hw.isa`). Every layer computes, per output channel ``c``, ``acc = wrap32(sum(w
* (x - input_zero_point)) + b)`` over its int8 inputs ``x`` -- on the macro: ``sum(w * x)`` plus
the *folded bias* ``b - input_zero_point * sum(w)`` (:meth:`Dense.folded_bias`) -- then ``y =
requantize(acc, multiplier[c], shift[c], output_zero_point, act_min, act_max,
double_rounding)`` (:func:`pim_macro.sw.models.requant.requantize`, int8). A convolution does so
at every output position of its padded input (padding filled with the input zero point, so a
padded tap contributes nothing, as in TFLite; ``Ho = (H + 2*pad_h - kh) // stride_h + 1``,
likewise ``Wo``); its output is the (out_ch, Ho, Wo) tensor, flattened in that (C, H, W) order
when a dense layer follows. A layer's input size must equal the previous layer's output size (for
a convolution, ``C * H * W``). The network's input is int8 ``(B, in)`` (or ``(B, C, H, W)``
images for a convolution first layer); its output is the last layer's int8 ``(B, out)``.
"""

import re
from dataclasses import dataclass

import numpy as np

from pim_macro.hw.isa import REQUANT_MULT_BITS, REQUANT_SHIFT_MAX, REQUANT_SHIFT_MIN
from pim_macro.sw.compiler.graph import MacroOp
from pim_macro.sw.files import listed, read_archive
from pim_macro.sw.models.requant import wrap32


__all__ = ["Dense", "Conv", "Network", "load_network", "save_network", "forward"]


@dataclass(frozen=True, eq=False)
class _Layer:
    """What every layer holds: int8 weights ``w``, the int32 bias ``b`` (out,), the per-channel
    Q31 ``multiplier`` and ``shift`` (int64 (out,); an integer is broadcast), the zero points of
    its input and output, the clamp ``[act_min, act_max]`` and the rounding (see the module)."""
    w: np.ndarray
    b: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    input_zero_point: int = 0
    output_zero_point: int = 0
    act_min: int = -128
    act_max: int = 127
    double_rounding: bool = False

    def __post_init__(self):
        n = self.w.shape[0]
        for name in ("multiplier", "shift"):
            value = np.asarray(getattr(self, name), dtype=np.int64)
            object.__setattr__(self, name, np.broadcast_to(value, (n,)).copy())

    @property
    def relu(self):
        """Whether the clamp cuts at the output zero point (a fused ReLU)."""
        return self.act_min >= self.output_zero_point

    @property
    def weights(self):
        """The (out, K) matrix the macro multiplies (:meth:`matrix`), as graph ops name it."""
        return self.matrix()

    @property
    def bias(self):
        return self.b

    #: int32 (out,): ``b - input_zero_point * sum(w)`` per output, what the macro's channel
    #: memory holds as bias so that ``sum(w * x)`` plus it is ``sum(w * (x - zp)) + b``. The one
    #: definition, :meth:`pim_macro.sw.compiler.graph.MacroOp.folded_bias`.
    folded_bias = MacroOp.folded_bias
    #: int8 outputs of int32 accumulators ``(..., out)``, per output channel:
    #: :meth:`pim_macro.sw.compiler.graph.MacroOp.requantize` (the one rule of
    #: :func:`pim_macro.sw.models.requant.requantize`).
    requantize = MacroOp.requantize

    def quant(self):
        """The arguments of a requantizing command (:func:`pim_macro.sw.runtime.asm.
        encode_emit_int8`) but its channel."""
        return dict(zero_point=self.output_zero_point, act_min=self.act_min,
                    act_max=self.act_max, double_rounding=self.double_rounding)


@dataclass(frozen=True, eq=False)
class Dense(_Layer):
    """``y = requantize(w @ (x - input_zero_point) + b)``; ``w`` int8 (out, in)."""

    @property
    def inputs(self):
        return self.w.shape[1]

    @property
    def outputs(self):
        return self.w.shape[0]

    @property
    def macs(self):
        return self.w.size

    def matrix(self):
        """The weights as the (out, K) matrix the macro multiplies."""
        return self.w


@dataclass(frozen=True, eq=False)
class Conv(_Layer):
    """A 2-D convolution, lowered by im2col; ``w`` int8 (out_ch, in_ch, kh, kw); ``in_shape``
    (C, H, W) is required."""
    in_shape: tuple = None   # (C, H, W)
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)

    def __post_init__(self):
        super().__post_init__()
        if self.in_shape is None:
            raise ValueError("a convolution needs its in_shape (C, H, W)")

    @property
    def kernel(self):
        return self.w.shape[2:]

    @property
    def out_shape(self):
        c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        return (self.w.shape[0], (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    @property
    def inputs(self):
        return int(np.prod(self.in_shape))

    @property
    def outputs(self):
        return int(np.prod(self.out_shape))

    @property
    def macs(self):
        _, ho, wo = self.out_shape
        return self.w.size * ho * wo

    def matrix(self):
        """The weights as the (out_ch, kh * kw * in_ch) matrix the macro multiplies: a patch is
        laid out position-major, channels fastest (``(dy, dx, c)``), so that one output pixel's
        channels, written back contiguously, form one slice of the next patch."""
        return self.w.transpose(0, 2, 3, 1).reshape(self.w.shape[0], -1)

    def patches(self, x):
        """im2col of int8 images ``x`` (B, C, H, W): (B, Ho * Wo, kh * kw * C), in
        :meth:`matrix` order; the padding holds the input zero point."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        _, ho, wo = self.out_shape
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                        constant_values=self.input_zero_point)
        cols = np.empty((x.shape[0], ho, wo, kh, kw, x.shape[1]), dtype=x.dtype)
        for dy in range(kh):
            for dx in range(kw):
                window = padded[:, :, dy:dy + sh * ho:sh, dx:dx + sw * wo:sw]
                cols[:, :, :, dy, dx, :] = window.transpose(0, 2, 3, 1)
        return cols.reshape(x.shape[0], ho * wo, kh * kw * x.shape[1])


@dataclass(frozen=True, eq=False)
class Network:
    """``layers`` (a tuple of :class:`Dense` / :class:`Conv`), the float ``input_scale`` and
    ``output_scale`` (optional), and ``classes``: ``None`` or a classifier's class labels, one
    per output (two for a single output), int64 or unicode (see the module; checked on
    construction by :func:`pim_macro.sw.compiler.classes.as_classes`, ``ValueError``)."""
    layers: tuple
    input_scale: float = None
    output_scale: float = None
    classes: np.ndarray = None

    def __post_init__(self):
        if self.classes is not None:
            from pim_macro.sw.compiler.classes import as_classes
            classes = as_classes(self.classes)
            outputs = self.layers[-1].outputs
            want = 2 if outputs == 1 else outputs
            if classes.size != want:
                raise ValueError(f"{classes.size} classes for {outputs} output"
                                 f"{'s' if outputs > 1 else ''}: expected {want}")
            object.__setattr__(self, "classes", classes)

    @property
    def weight_bytes(self):
        return sum(layer.w.size for layer in self.layers)

    @property
    def macs(self):
        return sum(layer.macs for layer in self.layers)

    def input_array(self, x):
        """Check and shape an int8 input batch: (B, in), or (B, C, H, W) images (also given as
        (B, C*H*W) or, for one channel, (B, H, W)) for a convolution first layer."""
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise ValueError(f"the input must be int8, not {x.dtype}")
        first = self.layers[0]
        if isinstance(first, Conv):
            c, h, w = first.in_shape
            if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
                x = x[:, None]
            elif x.ndim == 2 and x.shape[1] == c * h * w:
                x = x.reshape(-1, c, h, w)
            if x.ndim != 4 or x.shape[1:] != (c, h, w):
                raise ValueError(f"the input must be images of shape (B, {c}, {h}, {w}), not "
                                 f"{x.shape}")
        else:
            if x.ndim == 1:
                x = x[None]
            if x.ndim != 2 or x.shape[1] != first.inputs:
                raise ValueError(f"the input must have shape (B, {first.inputs}), not "
                                 f"{x.shape}")
        if x.shape[0] == 0:
            raise ValueError("the input holds no samples")
        return x


def _scalar(data, key, lo, hi, name, default=None):
    if default is not None and key not in data:
        return default
    value = np.asarray(data[key])
    if value.ndim != 0 or value.dtype.kind not in "iub":
        raise ValueError(f"{key} ({name}) must be an integer scalar, not {value.dtype} of shape "
                         f"{value.shape}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{key} ({name}) must be {lo}..{hi}, not {value}")
    return value


def _channels(data, key, n, lo, hi):
    """An integer scalar or (n,) array of ``lo .. hi`` (one per output channel) as int64 (n,)."""
    value = np.asarray(data[key])
    if value.dtype.kind not in "iu" or value.shape not in ((), (n,)):
        raise ValueError(f"{key} must be an integer or {n} integers (one per output channel), "
                         f"not {value.dtype} of shape {value.shape}")
    out = np.ravel((value < lo) | (value > hi))
    if out.any():
        raise ValueError(f"{key} must be {lo}..{hi}, not {np.ravel(value)[out][0]}")
    return np.broadcast_to(value.astype(np.int64), (n,)).copy()


def _pair(data, key, default, lo):
    if key not in data:
        return (default, default)
    value = np.asarray(data[key])
    if value.dtype.kind not in "iu" or value.shape not in ((), (2,)):
        raise ValueError(f"{key} must be an integer or two integers, not {value.dtype} of shape "
                         f"{value.shape}")
    pair = tuple(int(v) for v in np.broadcast_to(value, (2,)))
    if min(pair) < lo:
        raise ValueError(f"{key} must be at least {lo}, not {pair}")
    return pair


def network_from_arrays(data):
    """Validate a container's arrays (a mapping of key -> array) and build the
    :class:`Network`; raises ``ValueError`` naming the first problem."""
    keys = set(data)
    count = 0
    while f"w{count}" in keys:
        count += 1
    if count == 0:
        raise ValueError("the model has no layers: key w0 is missing")
    old = sorted(k for k in keys if re.fullmatch(r"(m|s|relu)[0-9]+", k))
    if old:
        raise ValueError(f"keys {listed(old)} are the container of ISA version 3 (one 16-bit "
                         f"multiplier per layer); quantize the model again (`pim quantize`) for "
                         f"TFLite's per-channel multiplier{{i}}, shift{{i}} and zero points")
    layers = []
    for i in range(count):
        for part in ("b", "multiplier", "shift"):
            if f"{part}{i}" not in keys:
                raise ValueError(f"layer {i}: key {part}{i} is missing")
        w = np.asarray(data[f"w{i}"])
        b = np.asarray(data[f"b{i}"])
        if w.dtype != np.int8:
            raise ValueError(f"w{i} must be int8, not {w.dtype}")
        if b.dtype != np.int32:
            raise ValueError(f"b{i} must be int32, not {b.dtype}")
        if w.ndim not in (2, 4) or 0 in w.shape:
            raise ValueError(f"w{i} must be (out, in) or (out_ch, in_ch, kh, kw), not {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"b{i} must have shape ({w.shape[0]},), not {b.shape}")
        q = dict(multiplier=_channels(data, f"multiplier{i}", w.shape[0], 0,
                                      (1 << REQUANT_MULT_BITS) - 1),
                 shift=_channels(data, f"shift{i}", w.shape[0], REQUANT_SHIFT_MIN,
                                 REQUANT_SHIFT_MAX))
        for key, lo, hi, default in (("input_zero_point", -128, 127, 0),
                                     ("output_zero_point", -128, 127, 0),
                                     ("act_min", -128, 127, -128), ("act_max", -128, 127, 127),
                                     ("double_rounding", 0, 1, 0)):
            q[key] = _scalar(data, f"{key}{i}", lo, hi, key.replace("_", " "), default)
        q["double_rounding"] = bool(q["double_rounding"])
        if layers and q["input_zero_point"] != layers[-1].output_zero_point:
            raise ValueError(f"input_zero_point{i} is {q['input_zero_point']} but "
                             f"output_zero_point{i - 1} is {layers[-1].output_zero_point}: "
                             f"layer {i}'s input is layer {i - 1}'s output")
        if w.ndim == 2:
            for extra in ("stride", "pad", "in_shape"):
                if f"{extra}{i}" in keys:
                    raise ValueError(f"{extra}{i} is only for convolutions, but w{i} is dense")
            layer = Dense(w, b, **q)
        else:
            if f"in_shape{i}" not in keys:
                raise ValueError(f"layer {i} is a convolution: key in_shape{i} is missing")
            shape = np.asarray(data[f"in_shape{i}"])
            if shape.dtype.kind not in "iu" or shape.shape != (3,) or shape.min() < 1:
                raise ValueError(f"in_shape{i} must be three positive integers (C, H, W), not "
                                 f"{shape}")
            in_shape = tuple(int(v) for v in shape)
            if in_shape[0] != w.shape[1]:
                raise ValueError(f"w{i} takes {w.shape[1]} input channels but in_shape{i} has "
                                 f"{in_shape[0]}")
            layer = Conv(w, b, **q, in_shape=in_shape, stride=_pair(data, f"stride{i}", 1, 1),
                         pad=_pair(data, f"pad{i}", 0, 0))
            if min(layer.out_shape[1:]) < 1:
                raise ValueError(f"layer {i}: a {w.shape[2]}x{w.shape[3]} kernel does not fit "
                                 f"the padded {in_shape[1]}x{in_shape[2]} input")
        if layers and layer.inputs != layers[-1].outputs:
            raise ValueError(f"layer {i} takes {layer.inputs} inputs but layer {i - 1} gives "
                             f"{layers[-1].outputs}: the shapes do not chain")
        layers.append(layer)
    extra = sorted(k for k in keys if not _known(k, count))
    if extra:
        raise ValueError(f"unknown keys in the model: {listed(extra)}")
    scales = {}
    for key in ("input_scale", "output_scale"):
        if key in keys:
            value = np.asarray(data[key])
            if (value.ndim != 0 or value.dtype.kind != "f" or not np.isfinite(value)
                    or not value > 0):
                raise ValueError(f"{key} must be a positive, finite float scalar")
            scales[key] = float(value)
    if "classes" in keys:
        value = np.asarray(data["classes"])
        if value.dtype.kind not in "iuU":
            raise ValueError(f"classes must be an int64 or unicode string array, not "
                             f"{value.dtype}")
        scales["classes"] = value
    return Network(tuple(layers), **scales)


_LAYER_KEY = re.compile(r"(w|b|multiplier|shift|input_zero_point|output_zero_point|act_min|"
                        r"act_max|double_rounding|stride|pad|in_shape)(0|[1-9][0-9]*)")


def _known(key, count):
    if key in ("input_scale", "output_scale", "classes"):
        return True
    match = _LAYER_KEY.fullmatch(key)
    return bool(match) and int(match.group(2)) < count


def load_network(path):
    """Load and validate a container; raises ``ValueError`` with a one-line message naming the
    file (:class:`pim_macro.sw.files.FileError` when the file is no ``.npz`` archive: missing,
    damaged, pickled, a single array)."""
    arrays = read_archive(path, "model",
                          expected="a model (the .npz container of sw/compiler/network.py)")
    try:
        return network_from_arrays(arrays)
    except ValueError as exc:
        raise ValueError(f"bad model {path}: {exc}") from None


def save_network(path, network):
    """Write ``network`` as a container (the inverse of :func:`load_network`)."""
    arrays = {}
    for i, layer in enumerate(network.layers):
        arrays.update({f"w{i}": layer.w, f"b{i}": layer.b,
                       f"multiplier{i}": np.asarray(layer.multiplier, np.int64),
                       f"shift{i}": np.asarray(layer.shift, np.int64),
                       f"input_zero_point{i}": np.int64(layer.input_zero_point),
                       f"output_zero_point{i}": np.int64(layer.output_zero_point),
                       f"act_min{i}": np.int64(layer.act_min),
                       f"act_max{i}": np.int64(layer.act_max),
                       f"double_rounding{i}": np.int64(layer.double_rounding)})
        if isinstance(layer, Conv):
            arrays.update({f"in_shape{i}": np.array(layer.in_shape, np.int64),
                           f"stride{i}": np.array(layer.stride, np.int64),
                           f"pad{i}": np.array(layer.pad, np.int64)})
    for key in ("input_scale", "output_scale"):
        if getattr(network, key) is not None:
            arrays[key] = np.float64(getattr(network, key))
    if network.classes is not None:
        arrays["classes"] = network.classes
    np.savez(path, **arrays)


def forward(network, x):
    """The reference: int8 outputs (B, out) of the last layer, computed layer by layer in numpy
    with the container's rules. Returns ``(y, activations)``, the latter the int8 output of
    every layer, flattened (B, outputs)."""
    x = network.input_array(x)
    acts = []
    for layer in network.layers:
        # TFLite's form, sum(w * (x - zp)) + b: the compiler's folded bias is checked against it
        zp = layer.input_zero_point
        if isinstance(layer, Conv):
            images = x.reshape(-1, *layer.in_shape)
            cols = layer.patches(images).astype(np.int64) - zp          # (B, P, K)
            acc = cols @ layer.matrix().astype(np.int64).T + layer.b     # (B, P, out_ch)
            y = layer.requantize(wrap32(acc))
            x = y.transpose(0, 2, 1).reshape(y.shape[0], -1)            # (C, H, W) order
        else:
            flat = x.reshape(x.shape[0], -1).astype(np.int64) - zp
            acc = flat @ layer.w.astype(np.int64).T + layer.b
            x = layer.requantize(wrap32(acc))
        acts.append(x)
    return x, acts
