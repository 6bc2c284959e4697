"""MAC lanes: one multiplier per SRAM column and sub-array, an adder tree per lane, accumulators."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig, ACC_BITS
from .weight_array import row_layout


__all__ = ["MacArray"]


class MacArray(wiring.Component):
    """``lanes`` accumulators fed by ``lanes x rows_per_cycle`` int8 multipliers.

    Each cycle with ``valid`` high, lane ``l`` adds ``sum_r weights[r][l] * acts[r]`` to its
    accumulator; with ``first`` also high the accumulator is replaced instead (clear-then-add,
    so a fresh sum costs no extra cycle). Accumulators wrap modulo ``2 ** 32``.

    Timing: fully pipelined, one row per cycle, no backpressure. The row presented in cycle ``t``
    is visible on ``acc`` from cycle ``t + LATENCY``; ``busy`` is high while any row is in flight.
    The stages are: registered products (the multipliers' output register on FPGAs), registered
    adder tree over the R sub-arrays, accumulate.
    """

    #: Cycles from a row on the inputs to its contribution on ``acc``.
    LATENCY = 3

    def __init__(self, config: MacroConfig):
        self._config = config
        super().__init__({
            "valid":   In(1),
            "first":   In(1),
            "weights": In(row_layout(config)),
            "acts":    In(data.ArrayLayout(signed(8), config.rows_per_cycle)),
            "acc":     Out(data.ArrayLayout(signed(ACC_BITS), config.lanes)),
            "busy":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self._config.lanes, self._config.rows_per_cycle

        # Stage 1: products. Stage 2: per-lane sum over the sub-arrays. Stage 3: accumulate.
        valid = Signal(self.LATENCY - 1)
        first = Signal(self.LATENCY - 1)
        m.d.sync += [valid.eq(Cat(self.valid, valid[:-1])), first.eq(Cat(self.first, first[:-1]))]
        m.d.comb += self.busy.eq(valid.any())

        for lane in range(lanes):
            products = [Signal(signed(16), name=f"prod_l{lane}_r{r}") for r in range(rows)]
            for r, product in enumerate(products):
                m.d.sync += product.eq(self.weights[r][lane] * self.acts[r])
            lane_sum = Signal(signed(16 + (rows - 1).bit_length()), name=f"sum_l{lane}")
            m.d.sync += lane_sum.eq(sum(products))
            acc = Signal(signed(ACC_BITS), name=f"acc_l{lane}")   # one name per lane, for waves
            m.d.comb += self.acc[lane].eq(acc)
            with m.If(valid[-1]):
                m.d.sync += acc.eq(Mux(first[-1], 0, acc) + lane_sum)
        return m
