"""The ops that run on the host, in numpy, bit for bit as LiteRT's reference kernels do them.

Every class is a graph op (see :mod:`pim_macro.sw.compiler.graph`): ``name`` (the TFLite
operator), ``inputs`` (tensor indices), ``output`` (a tensor index), ``run(*arrays)`` (one
sample; arrays in their tensor's shape, batch 1) and ``work()`` (the elements the op reads and
writes per sample: the host's share of the traffic). The parameters are computed once, at import
(:mod:`pim_macro.sw.compiler.tflite_import`), as the kernel's ``Prepare`` does; ``run`` is the
kernel's ``Eval``. Sources (TensorFlow Lite, ``tensorflow/lite/kernels/``):

* :class:`Add`: ``add.cc`` (Prepare: ``left_shift = 20``, per-input multipliers
  ``scale_i / (2 * max scale)``, output multiplier ``2 * max scale / (2**20 * output scale)``)
  and ``internal/reference/integer_ops/add.h`` (``AddFunc``), with
  ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` in the rounding LiteRT's build uses.
* :class:`AveragePool2D`, :class:`MaxPool2D`: ``internal/reference/integer_ops/pooling.h``
  (the window is cut at the border and the average divides by the taps inside it, rounded half
  away from zero: ``(sum +- count / 2) / count`` in C's truncating division).
* :class:`Reshape`: the data unchanged.
* :class:`FloatArithmetic`: ``sub.cc``, ``mul.cc`` in float32 (one IEEE single
  operation per element, so numpy's float32 gives LiteRT's values), on the float input of the
  model before its ``QUANTIZE`` (a scaler's ``(x - mean) * (1 / scale)``).
* :class:`Relu`: ``activations.cc`` (``ReluPrepare``, ``QuantizedReluX``) with the output
  quantized as the input: ``max(x, zero_point)`` (the rescaling multiplier is then exactly 1).
* :class:`Pad`: ``pad.cc`` (``PAD`` of a quantized tensor pads with the output's zero point,
  which is the input's; ``PADV2`` with its constant value).
* :class:`Softmax`: ``activations.cc`` (``SoftmaxPrepare`` of the reference kernel:
  ``PreprocessSoftmaxScaling`` with 5 integer bits) and ``internal/reference/softmax.h``
  (gemmlowp fixed point: ``exp_on_negative_values``, ``GetReciprocal``), whose gemmlowp
  functions (``fixedpoint.h``) are written out below.
* :class:`Quantize`, :class:`Dequantize`: ``internal/reference/quantize.h``
  (``AffineQuantize``: ``round(x / scale) + zero_point``, half away from zero, in float) and
  ``dequantize.h`` (``scale * (q - zero_point)`` in double, stored as float).
"""

from dataclasses import dataclass

import numpy as np

from pim_macro.sw.models.requant import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                                         quantize_multiplier, rounding_divide_by_pot,
                                         saturating_rounding_doubling_high_mul, wrap32)


__all__ = ["HostOp", "Add", "AveragePool2D", "MaxPool2D", "Reshape", "Relu", "Pad", "Softmax",
           "Quantize", "Dequantize", "FloatArithmetic", "softmax_parameters"]


@dataclass(frozen=True, eq=False)
class HostOp:
    """An op run on the host. ``inputs``: tensor indices; ``output``: a tensor index;
    ``out_shape``: the output tensor's shape (batch 1)."""
    inputs: tuple
    output: int
    out_shape: tuple

    name = "HOST"

    def run(self, *arrays):
        raise NotImplementedError

    def work(self):
        """Elements read plus elements written per sample (the op's host traffic)."""
        return 2 * int(np.prod(self.out_shape))


def _round_half_away(v):
    """``std::round`` on float64 values (exact: ``|v| < 2**52``)."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


@dataclass(frozen=True, eq=False)
class Add(HostOp):
    """``ADD`` of two int8 tensors (numpy broadcasting is TFLite's ``BroadcastAdd4DSlow``).
    ``zero_points``/``multipliers``/``shifts``: the two inputs' zero points and Q31
    multipliers with their (non-positive) shifts; ``output_multiplier``/``output_shift``;
    ``output_zero_point``, ``act_min``/``act_max``; ``left_shift`` (20 for int8);
    ``double_rounding``: the rounding of ``MultiplyByQuantizedMultiplierSmallerThanOneExp``."""
    zero_points: tuple = (0, 0)
    multipliers: tuple = (0, 0)
    shifts: tuple = (0, 0)
    output_multiplier: int = 0
    output_shift: int = 0
    output_zero_point: int = 0
    act_min: int = -128
    act_max: int = 127
    left_shift: int = 20
    double_rounding: bool = True

    name = "ADD"

    def work(self):
        return 3 * int(np.prod(self.out_shape))

    def _scale(self, x, multiplier, shift):
        return multiply_by_quantized_multiplier(x, multiplier, shift,
                                                double_rounding=self.double_rounding)

    def run(self, a, b):
        scaled = [self._scale((np.asarray(v, dtype=np.int64) - zp) << self.left_shift, m, s)
                  for v, zp, m, s in zip((a, b), self.zero_points, self.multipliers,
                                         self.shifts)]
        raw = self._scale(wrap32(scaled[0] + scaled[1]), self.output_multiplier,
                          self.output_shift) + self.output_zero_point
        out = np.clip(raw, self.act_min, self.act_max).astype(np.int8)
        return np.broadcast_to(out, self.out_shape).copy()


@dataclass(frozen=True, eq=False)
class _Pool(HostOp):
    """A 2-D pooling window over NHWC: ``filter`` ``(fh, fw)``, ``stride`` ``(sh, sw)``,
    ``padding`` ``(top, left)`` (TFLite's: the window is cut at the border, never padded),
    ``act_min``/``act_max`` the fused activation's clamp."""
    filter: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    act_min: int = -128
    act_max: int = 127

    def windows(self, x):
        """``(Ho, Wo, fh * fw, C)`` int64 values and a matching mask of the taps inside."""
        x = np.asarray(x, dtype=np.int64)[0]
        h, w, c = x.shape
        _, ho, wo, _ = self.out_shape
        (fh, fw), (sh, sw), (top, left) = self.filter, self.stride, self.padding
        vals = np.zeros((ho, wo, fh * fw, c), dtype=np.int64)
        mask = np.zeros((ho, wo, fh * fw, 1), dtype=bool)
        ys = np.arange(ho) * sh - top
        xs = np.arange(wo) * sw - left
        for dy in range(fh):
            for dx in range(fw):
                iy, ix = ys + dy, xs + dx
                ok = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < w))[None, :]
                tap = dy * fw + dx
                vals[:, :, tap] = x[np.clip(iy, 0, h - 1)][:, np.clip(ix, 0, w - 1)]
                mask[:, :, tap, 0] = ok
        return vals, mask

    def work(self):
        return int(np.prod(self.out_shape)) * (self.filter[0] * self.filter[1] + 1)


@dataclass(frozen=True, eq=False)
class AveragePool2D(_Pool):
    """``AVERAGE_POOL_2D`` (int8 reference): the mean of the window's taps inside the input,
    rounded half away from zero, clamped."""
    name = "AVERAGE_POOL_2D"

    def run(self, x):
        vals, mask = self.windows(x)
        total = np.where(mask, vals, 0).sum(axis=2)
        count = mask.sum(axis=2)
        # C's truncating division of (sum + count/2) or (sum - count/2) by count.
        num = np.where(total > 0, total + count // 2, total - count // 2)
        avg = np.sign(num) * (np.abs(num) // count)
        return np.clip(avg, self.act_min, self.act_max).astype(np.int8)[None]


@dataclass(frozen=True, eq=False)
class MaxPool2D(_Pool):
    """``MAX_POOL_2D`` (int8 reference): the largest tap inside the input, clamped."""
    name = "MAX_POOL_2D"

    def run(self, x):
        vals, mask = self.windows(x)
        best = np.where(mask, vals, -(1 << 40)).max(axis=2)
        return np.clip(best, self.act_min, self.act_max).astype(np.int8)[None]


@dataclass(frozen=True, eq=False)
class Reshape(HostOp):
    """``RESHAPE``: the same values in the output tensor's shape (no host work: a view)."""
    name = "RESHAPE"

    def run(self, x):
        return np.asarray(x).reshape(self.out_shape)

    def work(self):
        return 0


@dataclass(frozen=True, eq=False)
class FloatArithmetic(HostOp):
    """``SUB`` or ``MUL`` (``name``) of float32 tensors: ``x - constant`` or ``x * constant``
    (its second input, a graph constant)."""
    name: str = "SUB"

    def run(self, x, constant):
        ufunc = {"SUB": np.subtract, "MUL": np.multiply}[self.name]
        return ufunc(np.asarray(x, np.float32), np.asarray(constant, np.float32),
                     dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Relu(HostOp):
    """``RELU`` of an int8 tensor whose output has the input's quantization: ``max(x,
    act_min)``, ``act_min`` the zero point (the quantized real 0)."""
    act_min: int = -128
    name = "RELU"

    def run(self, x):
        return np.maximum(np.asarray(x), self.act_min)


@dataclass(frozen=True, eq=False)
class Pad(HostOp):
    """``PAD`` / ``PADV2``: ``paddings`` ``((before, after), ...)`` per dimension, filled with
    the int8 ``value``."""
    paddings: tuple = ()
    value: int = 0
    name = "PAD"

    def run(self, x):
        return np.pad(np.asarray(x), self.paddings, constant_values=self.value)


# --- gemmlowp fixed point (fixedpoint.h), int32 raw values held in int64 arrays ---------------

def _sat_pot(x, exponent):
    """``SaturatingRoundingMultiplyByPOT<exponent>``."""
    if exponent > 0:
        threshold = (1 << (31 - exponent)) - 1
        return np.where(x > threshold, INT32_MAX,
                        np.where(x < -threshold, INT32_MIN, x << exponent))
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    return x


def _rescale(x, src_bits, dst_bits):
    """``Rescale<dst>`` of a ``FixedPoint<int32, src>`` raw value."""
    return _sat_pot(x, src_bits - dst_bits)


_mul = saturating_rounding_doubling_high_mul     # FixedPoint * FixedPoint (raw)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """gemmlowp: ``exp(a)`` for ``a`` in ``[-1/4, 0)``, ``FixedPoint<int32, 0>`` raw values."""
    constant_term = 1895147668                   # exp(-1/8)
    constant_1_over_3 = 715827883
    x = a + (1 << 28)                            # a + 1/8
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = _sat_pot(x4, -2)
    poly = _sat_pot(_mul(x4_over_4 + x3, constant_1_over_3) + x2, -1)
    return constant_term + _mul(constant_term, x + poly)


def _exp_on_negative_values(a, integer_bits=5):
    """gemmlowp ``exp_on_negative_values``: ``FixedPoint<int32, integer_bits>`` raw ``a <= 0``
    to ``FixedPoint<int32, 0>`` raw."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                                 (1, 290630308), (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = (remainder & (1 << (fractional_bits + exponent))) != 0
            result = np.where(bit, _mul(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: ``1 / (1 + a)`` for ``a`` in ``[0, 1)`` (``FixedPoint<int32, 0>`` raw),
    Newton-Raphson in ``FixedPoint<int32, 2>``."""
    s = a + INT32_MAX                            # RoundingHalfSum(a, One): C's division
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))
    x = 1515870810 + _mul(half_denominator, -1010580540)     # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus = (1 << 29) - _mul(half_denominator, x)
        x = x + _rescale(_mul(x, one_minus), 4, 2)
    return _rescale(x >> 1, 2, 0)


def _reciprocal(x, integer_digits):
    """TFLite's ``GetReciprocal`` (``internal/common.h``): ``(raw of 1 / x scaled,
    num_bits_over_unit)`` for positive int32 raw ``x`` with ``integer_digits`` integer bits."""
    x = np.asarray(x, dtype=np.int64)
    _, bit_length = np.frexp(x.astype(np.float64))      # exact: x < 2**31
    headroom_plus_one = 32 - bit_length.astype(np.int64)    # CountLeadingZeros(uint32 x)
    bits_over_unit = integer_digits - headroom_plus_one
    shifted_minus_one = wrap32(((x << headroom_plus_one) & 0xFFFF_FFFF) - (1 << 31))
    return _one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), bits_over_unit


def softmax_parameters(beta, input_scale, double_rounding=True):
    """``(input_multiplier, input_left_shift, diff_min)`` of int8 ``SOFTMAX`` (TFLite's
    ``PreprocessSoftmaxScaling`` and ``CalculateInputRadius`` with 5 integer bits,
    ``quantization_util.cc``); ``beta`` and ``input_scale`` are the model's float32 values."""
    integer_bits = 5
    max_real = float((1 << 31) - 1) if double_rounding else float((1 << 30) - 1)
    real = min(float(beta) * float(input_scale) * (1 << (31 - integer_bits)), max_real)
    multiplier, shift = quantize_multiplier(real)
    radius = ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << shift)
    return multiplier, shift, -int(np.floor(radius))


@dataclass(frozen=True, eq=False)
class Softmax(HostOp):
    """``SOFTMAX`` int8 to int8 over the last dimension, gemmlowp fixed point (TFLite's
    reference kernel: ``internal/reference/softmax.h``). ``input_multiplier``,
    ``input_left_shift``, ``diff_min``: from :func:`softmax_parameters`; ``double_rounding``:
    ``MultiplyByQuantizedMultiplierGreaterThanOne``'s rounding. The output's quantization is
    TFLite's fixed one (scale 1/256, zero point -128)."""
    input_multiplier: int = 0
    input_left_shift: int = 0
    diff_min: int = 0
    double_rounding: bool = True

    name = "SOFTMAX"

    def work(self):
        return 3 * int(np.prod(self.out_shape))

    def run(self, x):
        x = np.asarray(x, dtype=np.int64)
        diff = x - x.max(axis=-1, keepdims=True)
        valid = diff >= self.diff_min
        if self.double_rounding:
            rescaled = _mul(diff << self.input_left_shift, self.input_multiplier)
        else:
            rescaled = multiply_by_quantized_multiplier(diff, self.input_multiplier,
                                                        self.input_left_shift)
        exp = _exp_on_negative_values(rescaled, 5)          # FixedPoint<int32, 0>
        accumulation_bits = 12
        sum_of_exps = np.where(valid, _rescale(exp, 0, accumulation_bits), 0).sum(
            axis=-1, keepdims=True)
        scale, bits_over_unit = _reciprocal(sum_of_exps, accumulation_bits)
        out = rounding_divide_by_pot(_mul(scale, exp), bits_over_unit + 31 - 8) - 128
        out = np.where(valid, np.clip(out, -128, 127), -128)
        return out.astype(np.int8)


@dataclass(frozen=True, eq=False)
class Quantize(HostOp):
    """``QUANTIZE`` float32 to int8: ``clamp(round(x / scale) + zero_point)``, the division in
    float32 and the rounding half away from zero (``reference_ops::AffineQuantize``)."""
    scale: float = 1.0
    zero_point: int = 0

    name = "QUANTIZE"

    def run(self, x):
        q = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
        q = _round_half_away(q.astype(np.float64)) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)


@dataclass(frozen=True, eq=False)
class Dequantize(HostOp):
    """``DEQUANTIZE`` int8 to float32: ``float(scale * (q - zero_point))`` with the float32
    scale widened to double (``reference_ops::Dequantize``)."""
    scale: float = 1.0
    zero_point: int = 0

    name = "DEQUANTIZE"

    def run(self, x):
        q = np.asarray(x, dtype=np.int64) - self.zero_point
        return (np.float64(np.float32(self.scale)) * q).astype(np.float32)
