"""The PIM weight array: ``rows_per_cycle`` SRAM sub-arrays whose rows feed the MAC lanes
directly."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from .isa import MacroConfig
from .weight_store import StoreTiming, WeightStoreSignature


__all__ = ["WeightArray"]


class WeightArray(wiring.Component):
    """Weight SRAM of the PIM macro: R sub-arrays of ``depth`` rows x ``lanes`` int8 columns.

    Every column of every sub-array is wired to its own multiplier (in :class:`MacArray`), so one
    read delivers ``lanes x R`` weights: no bus sits between the SRAM and the MACs.

    Timing (see :func:`WeightStoreSignature`): ``rd_ready`` is always high, one row is read per
    cycle, and a row lands ``LATENCY`` = 1 cycle after its request (the SRAM's synchronous read).
    A write stores one 32-bit stream word into its column group in one cycle.
    """

    @staticmethod
    def timing(config):
        """One row per cycle; a row lands one cycle after its request (the SRAM's read)."""
        return StoreTiming(latency=1, interval=1)

    def __init__(self, config: MacroConfig, *, tag_shape=1):
        self._config = config
        self.LATENCY, self.INTERVAL = self.timing(config)
        super().__init__(WeightStoreSignature(config, tag_shape))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        groups = cfg.lanes // 4         # 32-bit words per sub-array row
        m.d.comb += [
            self.rd_ready.eq(1),
            self.row_read.eq(self.rd_en),
            self.soon.eq(self.rd_en),
            self.soon_tag.eq(self.rd_tag),
            self.idle.eq(~self.rd_valid),
        ]
        m.d.sync += [self.rd_valid.eq(self.rd_en), self.rd_tag_out.eq(self.rd_tag)]
        # Payload word w of a row goes to sub-array w // groups, column group w % groups.
        sub = Signal(range(cfg.rows_per_cycle))
        m.d.comb += sub.eq(sum(self.write.word >= groups * s for s in range(1, cfg.rows_per_cycle)))
        group = Signal(range(groups))
        m.d.comb += group.eq(self.write.word - sub * groups)
        for s in range(cfg.rows_per_cycle):
            mem = m.submodules[f"sub{s}"] = Memory(shape=unsigned(8 * cfg.lanes),
                                                   depth=cfg.depth, init=[])
            wr = mem.write_port(granularity=32)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.write.row),
                wr.data.eq(self.write.data.replicate(groups)),
                wr.en.eq(Mux(self.write.en & (sub == s), 1 << group, 0)),
                rd.addr.eq(self.rd_row),
                rd.en.eq(self.rd_en),
                self.rd_data[s].as_value().eq(rd.data),
            ]
        return m
