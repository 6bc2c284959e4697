"""The baseline's weight store: the same SRAM capacity, but rows reach the ALU over a narrow bus."""

from amaranth import *
from amaranth.lib import wiring

from .constmul import times_const
from .isa import MacroConfig
from .fabric import fabric_for
from .spram import BLOCK_BITS, SPRAM_BLOCKS, weight_sram
from .weight_store import StoreTiming, WeightStoreSignature


__all__ = ["BusWeightStore"]


class BusWeightStore(wiring.Component):
    """A Von Neumann weight memory: an SRAM, a ``bus_bits`` bus, and a row register at the ALU.

    The SRAM holds exactly what the PIM array holds, in words of ``max(32, bus_bits)`` bits (a
    32-bit stream word is written in one cycle, as in the PIM macro, so loading costs the same).
    A row read moves the row across the bus one ``bus_bits`` beat per cycle into the ALU's row
    register; only when the whole row has arrived can the MAC lanes use it. The MAC lanes, the
    accumulators and everything else are the PIM macro's own: only data movement differs.

    Timing (see :func:`WeightStoreSignature`): a row takes ``B = 8 * lanes * R / bus_bits``
    beats, so one request is accepted every ``INTERVAL = B`` cycles (``rd_ready`` drops while a
    row is crossing the bus), and a row lands ``LATENCY = B + 1`` cycles after its request: ``B``
    beats, the last one's SRAM read, and the row register.

    On a fabric whose ``weight_memory`` is ``"spram"`` the SRAM is an
    :class:`pim_macro.hw.spram.SPRAM` (the same blocks as the PIM macro's, so the comparison
    stays fair), its words as wide as the row up to the four blocks' 64 bits (a bus beat is a
    slice of the word read); the timing is the same, and rows are undefined until written.
    Elaboration raises ``ValueError`` when it needs more blocks than the UP5K has.
    """

    @staticmethod
    def timing(config):
        """A request every ``B`` cycles; a row lands ``B + 1`` cycles after its request."""
        return StoreTiming(latency=config.beats_per_row + 1, interval=config.beats_per_row)

    def __init__(self, config: MacroConfig, *, tag_shape=1):
        self._config = config
        self.beats = config.beats_per_row
        self.LATENCY, self.INTERVAL = self.timing(config)
        super().__init__(WeightStoreSignature(config, tag_shape))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        bus, beats = cfg.bus_bits, self.beats
        row_bits = 8 * cfg.row_bytes
        word_bits = max(32, bus)
        if fabric_for(platform).weight_memory == "spram":
            # SPRAM blocks side by side up to the whole row (at most the four's 64 bits) rather
            # than one above the other: no bank multiplexer and no beat adder on the address.
            word_bits = max(word_bits, min(row_bits, SPRAM_BLOCKS * BLOCK_BITS))
        words_per_row = row_bits // word_bits
        wr, rd = weight_sram(m, "sram", platform, width=word_bits,
                             depth=cfg.depth * words_per_row)

        # Writes: stream word w of a row lands in SRAM word w * 32 // word_bits of that row.
        per_word = word_bits // 32
        m.d.comb += [
            wr.addr.eq(times_const(self.write.row, words_per_row) + self.write.word // per_word),
            wr.data.eq(self.write.data.replicate(per_word)),
            wr.en.eq(Mux(self.write.en, 1 << (self.write.word % per_word), 0)),
        ]

        # Reads: beat b of a row is bits [b * bus, (b + 1) * bus) of the row.
        busy = Signal()                       # beats 1 .. B-1 of the current row still to read
        beat = Signal(range(max(beats, 2)))   # the beat read in this cycle while busy
        base = Signal(range(cfg.depth * words_per_row))
        fetch_tag = Signal.like(self.rd_tag)
        last_read = Signal()                  # the row's last beat was read in the previous cycle
        accept = self.rd_en & self.rd_ready
        beats_per_word = word_bits // bus
        read_beat = Signal(range(max(beats, 2)))
        read_base = Signal.like(base)
        m.d.comb += [
            self.rd_ready.eq(~busy),
            self.row_read.eq(accept),
            self.bus_beat.eq(accept | busy),
            read_beat.eq(Mux(busy, beat, 0)),
            read_base.eq(Mux(busy, base, times_const(self.rd_row, words_per_row))),
            rd.addr.eq(read_base + read_beat // beats_per_word),
            rd.en.eq(accept | busy),
        ]
        with m.If(accept):
            m.d.sync += [base.eq(times_const(self.rd_row, words_per_row)),
                         fetch_tag.eq(self.rd_tag), beat.eq(1), busy.eq(beats > 1)]
        with m.Elif(busy):
            m.d.sync += beat.eq(beat + 1)
            with m.If(beat == beats - 1):
                m.d.sync += busy.eq(0)
        is_last = Mux(busy, beat == beats - 1, beats == 1)
        m.d.sync += last_read.eq((accept | busy) & is_last)

        # The bus: the SRAM word read last cycle, narrowed to this beat's slice.
        slice_of = Signal(range(max(beats_per_word, 2)))
        m.d.sync += slice_of.eq(read_beat % beats_per_word)
        on_bus = Signal(bus)
        m.d.comb += on_bus.eq(rd.data.word_select(slice_of, bus) if beats_per_word > 1
                              else rd.data)
        data_pending = Signal()               # a beat's data is on the bus in this cycle
        m.d.sync += data_pending.eq(accept | busy)
        assembling = Signal(row_bits)
        with m.If(data_pending):
            m.d.sync += assembling.eq(Cat(assembling[bus:], on_bus))

        # The row register at the ALU: loaded with the last beat.
        m.d.comb += [self.soon.eq(last_read), self.soon_tag.eq(fetch_tag)]
        m.d.sync += self.rd_valid.eq(last_read)
        with m.If(last_read):
            m.d.sync += [self.rd_data.as_value().eq(Cat(assembling[bus:], on_bus)),
                         self.rd_tag_out.eq(fetch_tag)]
        m.d.comb += self.idle.eq(~busy & ~data_pending & ~self.rd_valid)
        return m
