"""The PIM weight array: ``rows_per_cycle`` SRAM sub-arrays whose rows feed the MAC lanes
directly."""

from amaranth import *
from amaranth.lib import wiring

from .fabric import fabric_for
from .isa import MacroConfig
from .spram import SPRAM_BLOCKS, spram_blocks, weight_sram
from .weight_store import StoreTiming, WeightStoreSignature


__all__ = ["WeightArray"]


class WeightArray(wiring.Component):
    """Weight SRAM of the PIM macro: R sub-arrays of ``depth`` rows x ``lanes`` int8 columns.

    Every column of every sub-array is wired to its own multiplier (in :class:`MacArray`), so one
    read delivers ``lanes x R`` weights: no bus sits between the SRAM and the MACs.

    Timing (see :func:`WeightStoreSignature`): ``rd_ready`` is always high, one row is read per
    cycle, and a row lands ``LATENCY`` = 1 cycle after its request (the SRAM's synchronous read).
    A write stores one 32-bit stream word into its column group in one cycle.

    On a fabric whose ``weight_memory`` is ``"spram"`` each sub-array is an
    :class:`pim_macro.hw.spram.SPRAM` (``lanes / 2`` SB_SPRAM256KA side by side: 8 lanes x R = 1
    or 4 lanes x R = 2 take the UP5K's four, 64 bits per cycle); the timing is the same, and a
    write never meets a read (the MAC engine's single-port rule). Rows are undefined until
    written (no zeros at power-up, see :class:`pim_macro.hw.spram.SPRAM`). Elaboration raises
    ``ValueError`` when the sub-arrays need more blocks than the UP5K has.
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
        cfg = self._config
        if fabric_for(platform).weight_memory == "spram":
            # Checked before anything is made, so that nothing is left unused.
            blocks = cfg.rows_per_cycle * spram_blocks(8 * cfg.lanes, cfg.depth)
            if blocks > SPRAM_BLOCKS:
                raise ValueError(f"{cfg.rows_per_cycle} sub-arrays of {cfg.lanes} lanes x "
                                 f"{cfg.depth} rows need {blocks} SB_SPRAM256KA blocks; the "
                                 f"iCE40 UP5K has {SPRAM_BLOCKS}")
        m = Module()
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
            wr, rd = weight_sram(m, f"sub{s}", platform, width=8 * cfg.lanes, depth=cfg.depth)
            m.d.comb += [
                wr.addr.eq(self.write.row),
                wr.data.eq(self.write.data.replicate(groups)),
                wr.en.eq(Mux(self.write.en & (sub == s), 1 << group, 0)),
                rd.addr.eq(self.rd_row),
                rd.en.eq(self.rd_en),
                self.rd_data[s].as_value().eq(rd.data),
            ]
        return m
