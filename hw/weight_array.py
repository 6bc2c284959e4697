"""The PIM weight array: ``rows_per_cycle`` SRAM sub-arrays whose rows feed the MAC lanes directly."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .isa import MacroConfig


__all__ = ["WeightArray"]


def row_layout(config):
    """A weight row as the MAC lanes see it: ``[sub_array][lane]`` of int8."""
    return data.ArrayLayout(data.ArrayLayout(signed(8), config.lanes), config.rows_per_cycle)


class WeightArray(wiring.Component):
    """Weight SRAM of the PIM macro: R sub-arrays of ``depth`` rows x ``lanes`` int8 columns.

    Every column of every sub-array is wired to its own multiplier (in :class:`MacArray`), so a
    read delivers ``lanes x R`` weights at once: no bus sits between the SRAM and the MACs.

    Timing: a read requested with ``rd_en`` while ``rd_ready`` is high returns its row on
    ``rd_data`` with ``rd_valid`` exactly :data:`LATENCY` cycles later. ``rd_ready`` is always high:
    the array accepts one row read per cycle. A write (``wr_en``) stores one 32-bit stream word
    into column group ``wr_word`` of sub-array ``wr_sub`` of row ``wr_row`` in one cycle.

    Members
    -------
    row_read : Out(1)
        Strobe for the ``ROW_READS`` counter: one per row read.
    """

    #: Cycles from a read request to its data.
    LATENCY = 1

    def __init__(self, config: MacroConfig):
        self._config = config
        super().__init__({
            "wr_en":    In(1),
            "wr_row":   In(range(config.depth)),
            "wr_sub":   In(range(config.rows_per_cycle)),
            "wr_word":  In(range(config.lanes // 4)),
            "wr_data":  In(32),
            "rd_en":    In(1),
            "rd_row":   In(range(config.depth)),
            "rd_ready": Out(1),
            "rd_valid": Out(1),
            "rd_data":  Out(row_layout(config)),
            "row_read": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.d.comb += [self.rd_ready.eq(1), self.row_read.eq(self.rd_en)]
        m.d.sync += self.rd_valid.eq(self.rd_en)
        for sub in range(cfg.rows_per_cycle):
            mem = m.submodules[f"sub{sub}"] = Memory(shape=unsigned(8 * cfg.lanes),
                                                     depth=cfg.depth, init=[])
            wr = mem.write_port(granularity=32)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.wr_row),
                wr.data.eq(self.wr_data.replicate(cfg.lanes // 4)),
                wr.en.eq(Mux(self.wr_en & (self.wr_sub == sub), 1 << self.wr_word, 0)),
                rd.addr.eq(self.rd_row),
                rd.en.eq(self.rd_en),
                self.rd_data[sub].as_value().eq(rd.data),
            ]
        return m
