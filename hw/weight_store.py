"""What a weight store is: the SRAM that holds the weights and delivers them, a row at a time, to
the MAC lanes. The two architectures differ only here (see :func:`weight_store_for`)."""

from typing import NamedTuple

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig


__all__ = ["row_layout", "StoreTiming", "WeightWriteSignature", "WeightStoreSignature",
           "weight_store_for"]


class StoreTiming(NamedTuple):
    """How fast a weight store delivers rows: a new request is accepted every ``interval``
    cycles at full speed, and its row lands ``latency`` cycles after it was accepted. Each store
    class gives its own with ``timing(config)``; the cycle and scale models read it there."""
    latency: int
    interval: int


def row_layout(config):
    """A weight row as the MAC lanes see it: ``[sub_array][lane]`` of int8."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), config.lanes), config.rows_per_cycle)


class WeightWriteSignature(wiring.Signature):
    """A weight write port, seen from the writer: in a cycle with ``en``, the store keeps the
    32-bit ``data`` as word ``word`` (of ``config.row_words``, in payload order) of row ``row``.
    """

    def __init__(self, config: MacroConfig):
        super().__init__({
            "en":   Out(1),
            "row":  Out(range(config.depth)),
            "word": Out(range(config.row_words)),
            "data": Out(32),
        })


class WeightStoreSignature(wiring.Signature):
    """The interface every weight store implements (seen from the store).

    Writes come through ``write`` (a :class:`WeightWriteSignature`), in one cycle.

    Reads: a request (``rd_en``, ``rd_row``, and an opaque ``rd_tag`` of ``tag_shape`` that
    comes back with the row) is accepted in a cycle with ``rd_ready`` high. Its row appears on
    ``rd_data`` with ``rd_valid`` and ``rd_tag_out`` exactly ``LATENCY`` cycles later; ``soon``
    and ``soon_tag`` announce it one cycle ahead (so the activation buffer, which has a one-cycle
    read, can be read in step). Rows come back in request order; ``idle`` is high when no
    request is in flight and none lands this cycle. ``row_read`` strobes once per accepted
    request, ``bus_beat`` once per word that crosses a bus between the SRAM and the lanes.
    """

    def __init__(self, config: MacroConfig, tag_shape):
        super().__init__({
            "write":      In(WeightWriteSignature(config)),
            "rd_en":      In(1),
            "rd_row":     In(range(config.depth)),
            "rd_tag":     In(tag_shape),
            "rd_ready":   Out(1),
            "soon":       Out(1),
            "soon_tag":   Out(tag_shape),
            "rd_valid":   Out(1),
            "rd_tag_out": Out(tag_shape),
            "rd_data":    Out(row_layout(config)),
            "idle":       Out(1),
            "row_read":   Out(1),
            "bus_beat":   Out(1),
        })


def weight_store_for(arch):
    """The weight store class of architecture ``arch`` (one of :data:`pim_macro.hw.isa.ARCHES`)."""
    from .weight_array import WeightArray
    from .bus_weight_store import BusWeightStore
    return {"pim": WeightArray, "baseline": BusWeightStore}[arch]
