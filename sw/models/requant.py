"""The macro's one requantization rule: TFLite's, bit for bit, in its two roundings.

Every int8 result the macro, its models and the host produce goes through :func:`requantize`,
TFLite's reference rule for int8 kernels (``reference_integer_ops::FullyConnected``,
``ConvPerChannel``, ``DepthwiseConvPerChannel``; ``tensorflow/lite/kernels/internal/common.h``)::

    y = MultiplyByQuantizedMultiplier(acc, M0, shift) + output_zero_point
    y = min(max(y, act_min), act_max)

``M0`` is the Q31 multiplier (``[2**30, 2**31)``, or 0) and ``shift`` the power of two (positive:
left), so ``M0 * 2**(shift - 31)`` is the real scale. LiteRT 2.3's reference kernels
(``BUILTIN_REF``) round in two ways, and the macro has both (measured op by op:
:data:`pim_macro.sw.compiler.graph.DOUBLE_ROUNDING` gives which op uses which, with the evidence):

* **single rounding**: the exact product rounded once, to nearest, ties away from zero::

      total = 31 - shift
      (x * M0 + 2**(total - 1) - (x < 0)) >> total      # exact, arithmetic; total = 0: x * M0

  (``sign(p) * ((|p| + 2**(total - 1)) >> total)`` for ``p = x * M0``.) ``FULLY_CONNECTED``
  rounds so: MLPerf Tiny ``ad01_int8.tflite``, 30 random inputs, all ten layers, 0 of 50,160
  outputs differ (double rounding differs in 24 of 12,800 over two inputs), and an accumulator
  of -25 at a scale of exactly 0.5 gives -13 (tb/tests/test_tflite.py). TFLite's
  ``TFLITE_SINGLE_ROUNDING`` build rounds ties up instead (-12 there); LiteRT's reference kernels
  do not use it, so the macro does not have it.
* **double rounding** (gemmlowp's ``fixedpoint.h``)::

      left = max(shift, 0); right = max(-shift, 0)
      RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(wrap32(x << left), M0), right)

  ``SaturatingRoundingDoublingHighMul(a, b)`` is ``(a*b + nudge) / 2**31`` with C's truncating
  division, ``nudge = 2**30`` when ``a*b >= 0`` and ``1 - 2**30`` otherwise (``INT32_MIN *
  INT32_MIN`` saturates to ``INT32_MAX``); ``RoundingDivideByPOT(x, e)`` rounds ``x / 2**e`` to
  nearest, ties away from zero. Measured: per-channel ``CONV_2D`` (MLPerf Tiny ResNet-8, every
  conv layer, one random input: 0 differ; single rounding differs in 2 to 20 per layer).

:func:`quantize_multiplier` is TFLite's ``QuantizeMultiplier`` (``quantization_util.cc``): the
``(M0, shift)`` of a real scale.
"""

import math

import numpy as np


__all__ = ["INT32_MIN", "INT32_MAX", "SHIFT_MIN", "SHIFT_MAX", "wrap32",
           "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
           "multiply_by_quantized_multiplier", "requantize", "quantize_multiplier"]


INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
#: The shifts a channel can hold (a signed 6-bit field in the macro's channel memory). TFLite's
#: own lie in -31 .. 30.
SHIFT_MIN = -32
SHIFT_MAX = 31


def wrap32(values):
    """Integers (scalar or array, exact) wrapped to int32 two's complement, as int64."""
    v = np.asarray(values, dtype=np.int64)
    return ((v + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values (int64 arrays)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    ab = a * b                                              # |ab| <= 2**62: exact
    total = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))    # C truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded to nearest, ties away
    from zero, for int32 ``x`` and ``exponent`` 0 .. 32 (int64 arrays)."""
    x, e = np.asarray(x, dtype=np.int64), np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0))


def multiply_by_quantized_multiplier(x, multiplier, shift, *, double_rounding=False):
    """TFLite's ``MultiplyByQuantizedMultiplier(x, M0, shift)`` on int32 ``x``, a Q31
    ``multiplier`` (0 .. 2**31 - 1) and ``shift`` in :data:`SHIFT_MIN` .. :data:`SHIFT_MAX`, in
    single rounding or, with ``double_rounding``, gemmlowp's double rounding (see the module).
    Arrays broadcast; returns exact int64 values (beyond int32 only for shifts TFLite never
    makes).

    Single rounding in int64 is exact: ``|x * M0| < 2**62`` and the rounding term is at most
    ``2**62`` (``total = 31 - shift`` is 0 .. 63), so the sum stays below ``2**63``."""
    x = np.asarray(x, dtype=np.int64)
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if double_rounding:
        left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
        return rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(wrap32(x << left), multiplier), right)
    total = 31 - shift
    rounding = np.where(total > 0, np.int64(1) << np.maximum(total - 1, 0), 0)
    rounding = rounding - ((x < 0) & (total > 0))      # ties away from zero
    return (x * multiplier + rounding) >> total


def requantize(acc, multiplier, shift, zero_point=0, act_min=-128, act_max=127, *,
               double_rounding=False):
    """The int8 results of int32 accumulators ``acc`` (already holding the bias; wrap it first):
    ``min(max(MultiplyByQuantizedMultiplier(acc, multiplier, shift) + zero_point, act_min),
    act_max)``. ``multiplier``/``shift`` broadcast against ``acc`` (per channel: the last axis);
    ``zero_point``, ``act_min``, ``act_max`` are ints in -128 .. 127; ``double_rounding``
    picks the rounding (see :func:`multiply_by_quantized_multiplier`).
    Returns ``np.int8``.

    Raises ``ValueError`` for values outside those ranges."""
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise ValueError(f"requantize takes integer accumulators, not {acc.dtype}")
    acc = acc.astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("requantize takes int32 accumulators (wrap acc + bias first)")
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if multiplier.size and (multiplier.min() < INT32_MIN or multiplier.max() > INT32_MAX):
        raise ValueError("the multiplier must be int32")
    if shift.size and (shift.min() < SHIFT_MIN or shift.max() > SHIFT_MAX):
        raise ValueError(f"the shift must be {SHIFT_MIN} .. {SHIFT_MAX}")
    for name, value in (("zero_point", zero_point), ("act_min", act_min), ("act_max", act_max)):
        if not -128 <= int(value) <= 127:
            raise ValueError(f"{name} must be -128 .. 127, not {int(value)}")
    if multiplier.size and multiplier.min() < 0:
        raise ValueError("the multiplier must be 0 .. 2**31 - 1 (TFLite's are never negative)")
    y = multiply_by_quantized_multiplier(acc, multiplier, shift,
                                         double_rounding=double_rounding) + int(zero_point)
    return np.minimum(np.maximum(y, int(act_min)), int(act_max)).astype(np.int8)


def quantize_multiplier(scale):
    """TFLite's ``QuantizeMultiplier``: the ``(M0, shift)`` with ``scale ~= M0 * 2**(shift - 31)``,
    ``M0`` in ``[2**30, 2**31)`` (0 for a zero scale), for a finite, non-negative real ``scale``.
    Like TFLite, a scale whose shift would fall below -31 gives ``(0, 0)``. Raises ``ValueError``
    for a negative, infinite or NaN scale, or one too large for :data:`SHIFT_MAX`."""
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"a requantization scale must be finite and non-negative, not {scale}")
    if scale == 0.0:
        return 0, 0
    q, shift = math.frexp(scale)                # scale = q * 2**shift, q in [0.5, 1)
    q_fixed = math.floor(q * (1 << 31) + 0.5)   # std::round, half away from zero (q > 0; exact)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > SHIFT_MAX:
        raise ValueError(f"a requantization scale of {scale} needs a shift above {SHIFT_MAX}")
    return int(q_fixed), int(shift)
