"""A synchronous FIFO kept in block RAM that behaves cycle for cycle like Amaranth's SyncFIFO."""

from amaranth import *
from amaranth.lib import wiring, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["BlockFIFO"]


class BlockFIFO(wiring.Component):
    """``depth`` entries of ``width`` bits; the same ports and timing as
    :class:`amaranth.lib.fifo.SyncFIFO` (``w_data/w_en/w_rdy``, ``r_data/r_en/r_rdy``,
    ``level``): ``r_rdy = level != 0``, ``w_rdy = level != depth``; a write in cycle ``t`` is
    readable in ``t + 1``; ``r_en`` without ``r_rdy`` and ``w_en`` without ``w_rdy`` do nothing.

    SyncFIFO reads its storage combinationally, which an iCE40 (no distributed RAM) can only
    build from flip-flops and multiplexers: about 1.4 logic cells per stored bit. Here the
    entries live in a block RAM whose synchronous read port is given, one cycle ahead, the
    address the head will have (``rp + r_en``); the port is transparent to the write port, so
    an entry written in the cycle it is looked up is seen. ``r_data`` is therefore the head in
    every cycle, as in SyncFIFO.

    ``w_stream`` and ``r_stream`` are the same ports as streams (as in
    :class:`amaranth.lib.fifo.SyncFIFO`): ``w_data``/``w_en``/``w_rdy`` as
    ``payload``/``valid``/``ready`` of the write side, ``r_data``/``r_rdy``/``r_en`` of the read
    side, for :func:`amaranth.lib.wiring.connect`.
    """

    def __new__(cls, *, width, depth):
        # Checked before the object exists, so a rejected FIFO leaves no unused object behind.
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, not {depth!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, width, depth):
        self.width, self.depth = width, depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    @property
    def w_stream(self):
        w_stream = stream.Signature(self.width).flip().create()
        w_stream.payload = self.w_data
        w_stream.valid = self.w_en
        w_stream.ready = self.w_rdy
        return w_stream

    @property
    def r_stream(self):
        r_stream = stream.Signature(self.width).create()
        r_stream.payload = self.r_data
        r_stream.valid = self.r_rdy
        r_stream.ready = self.r_en
        return r_stream

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = storage = Memory(shape=self.width, depth=self.depth, init=[])
        wr = storage.write_port()
        rd = storage.read_port(transparent_for=(wr,))
        wp = Signal(range(self.depth))
        rp = Signal(range(self.depth))
        do_write = self.w_en & self.w_rdy
        do_read = self.r_en & self.r_rdy
        m.d.comb += [
            self.w_rdy.eq(self.level != self.depth), self.r_rdy.eq(self.level != 0),
            wr.addr.eq(wp), wr.data.eq(self.w_data), wr.en.eq(do_write),
            rd.addr.eq(rp + do_read), rd.en.eq(1), self.r_data.eq(rd.data),
        ]
        m.d.sync += [wp.eq(wp + do_write), rp.eq(rp + do_read),
                     self.level.eq(self.level + do_write - do_read)]
        return m
