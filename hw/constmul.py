"""Multiplication by a constant as shifted adds."""


__all__ = ["times_const"]


def times_const(value, k):
    """``value * k`` for a constant ``k >= 1``, as a sum of shifted copies of ``value``.

    Synthesis would spend a DSP block on a ``*`` by a constant that is not a power of two
    (7 words per row of 28 lanes, say); on an FPGA every DSP belongs to the MAC lanes."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    terms = [value << i for i in range(k.bit_length()) if k >> i & 1]
    return sum(terms[1:], terms[0])
