"""The block-RAM FIFO (:class:`pim_macro.hw.fifo.BlockFIFO`) as the macro builds it twice: the
output FIFO (``OUT_FIFO_DEPTH`` words of 32 bits, whose read side *is* the macro's ``o_stream``)
and the response queue (``RESPONSE_SLOTS`` :data:`Response` entries).

Both sides are free: the writer may strobe ``w_en`` in any cycle, the reader ``r_en``.

``fifo-*-stream`` (``prove``): in every cycle ``level <= depth``, ``level`` equals the write
pointer minus the read pointer (modulo ``depth``; the pointers are the FIFO's private ``wp`` and
``rp``, found in its elaborated module), ``level`` counts the writes taken (``w_en & w_rdy``)
minus the reads taken (``r_en & r_rdy``), ``r_rdy == (level != 0)``, ``w_rdy == (level !=
depth)``; and the read side keeps the stream rule: a word offered and not taken
(``r_rdy & ~r_en``) is offered again, unchanged, in the next cycle.

``fifo-*-order`` (``bmc``): words leave in the order written, checked on one word followed
through the FIFO (the ``tag``-th written, any ``tag``: the FIFO does not look at its data, so
one word stands for all). Bounded: the block RAM's contents are not signals Amaranth 0.5 lets a
harness name, so no invariant ties them to the followed word for an induction.
"""

from amaranth import *
from amaranth.hdl import Assert

from pim_macro.hw.fifo import BlockFIFO
from pim_macro.hw.macro import RESPONSE_SLOTS
from pim_macro.hw.output_engine import OUT_FIFO_DEPTH, Response

from .engine import Proof, find_signal


__all__ = ["FIFOHarness", "PROOFS"]


class FIFOHarness(Elaboratable):
    """A :class:`BlockFIFO` of ``width`` x ``depth`` with free ports; ``order`` adds the model."""

    def __init__(self, *, width, depth, order=False):
        self.width, self.depth, self.order = width, depth, order
        self.dut = BlockFIFO(width=width, depth=depth)
        self.dut._MustUse__silence = True   # elaborated by hand below, to reach its pointers
        self.w_en, self.w_data, self.r_en = Signal(), Signal(width), Signal()
        self.tag = Signal(8)
        self.ports = [self.w_en, self.w_data, self.r_en, self.tag]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        dut, depth = self.dut, self.depth
        fifo = dut.elaborate(platform)
        m.submodules.fifo = fifo
        wp, rp = find_signal(fifo, "wp"), find_signal(fifo, "rp")
        m.d.comb += [dut.w_en.eq(self.w_en), dut.w_data.eq(self.w_data), dut.r_en.eq(self.r_en)]
        wrote, read = dut.w_en & dut.w_rdy, dut.r_en & dut.r_rdy

        model_level = Signal(range(depth + 2))
        m.d.sync += model_level.eq(model_level + wrote - read)
        bits = (depth - 1).bit_length()
        m.d.comb += [
            Assert(dut.level <= depth, "level never past depth"),
            Assert(dut.level == model_level, "level counts writes minus reads taken"),
            Assert((wp - rp)[:bits] == dut.level[:bits], "level == wp - rp (mod depth)"),
            Assert(dut.r_rdy == (dut.level != 0), "r_rdy is level != 0"),
            Assert(dut.w_rdy == (dut.level != depth), "w_rdy is level != depth"),
        ]
        # The stream rule on the read side, with the past kept in registers (no Past in 0.5).
        stalled, offered = Signal(), Signal(self.width)
        m.d.sync += [stalled.eq(dut.r_rdy & ~dut.r_en), offered.eq(dut.r_data)]
        with m.If(stalled):
            m.d.comb += [Assert(dut.r_rdy, "valid held while not ready"),
                         Assert(dut.r_data == offered, "payload held while not ready")]

        if self.order:
            # Data independence: follow one word, the `tag`-th written (any tag, chosen freely
            # in the first cycle and kept), and check that the `tag`-th word read is it.
            first, tag_reg = Signal(init=1), Signal(8)
            tag = Mux(first, self.tag, tag_reg)
            m.d.sync += [first.eq(0), tag_reg.eq(tag)]
            writes, reads = Signal(8), Signal(8)
            kept, seen = Signal(self.width), Signal()
            m.d.sync += [writes.eq(writes + wrote), reads.eq(reads + read)]
            with m.If(wrote & (writes == tag)):
                m.d.sync += [kept.eq(self.w_data), seen.eq(1)]
            with m.If(dut.r_rdy & (reads == tag)):
                m.d.comb += [Assert(seen, "a word offered was written"),
                             Assert(dut.r_data == kept, "the tag-th word read is the tag-th "
                                                        "written")]
        return m


def _proofs(label, width, depth):
    config = f"{width} bits x {depth}"
    return [
        Proof(f"fifo-{label}-stream", config, f"{label} FIFO: level vs pointers, ready bits, "
              "read side holds valid and payload", lambda: FIFOHarness(width=width, depth=depth),
              "prove", 3),
        Proof(f"fifo-{label}-order", config, f"{label} FIFO: words leave in the order written",
              lambda: FIFOHarness(width=width, depth=depth, order=True), "bmc", 3 * depth,
              # The block RAM as registers and multiplexers: plain bit-vectors, no SMT arrays.
              ("memory_map",)),
    ]


PROOFS = [*_proofs("out", 32, OUT_FIFO_DEPTH), *_proofs("resp", Response.size, RESPONSE_SLOTS)]
