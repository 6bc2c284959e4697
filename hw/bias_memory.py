"""The bias memory: int32 words, one written and ``reads`` consecutive ones read per cycle."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["BiasMemory"]


class BiasMemory(wiring.Component):
    """``depth`` int32 words in ``reads`` banks (word ``a`` in bank ``a % reads``, row
    ``a // reads``), so that any ``reads`` consecutive words can be read in one cycle (``reads``
    is the output engine's lane group: one per requantizer).

    Write: ``wr_en`` stores ``wr_data`` at ``wr_addr`` in that cycle. Read: ``rd_en`` with
    ``rd_addr`` gives ``rd_data[j] = word[rd_addr + j]`` in the next cycle (words past ``depth``
    read as whatever their bank holds: callers use only the ones they asked for).
    """

    def __init__(self, depth, reads=4):
        self._depth = depth
        self._reads = reads
        super().__init__({
            "wr_en":   In(1),
            "wr_addr": In(range(depth)),
            "wr_data": In(signed(32)),
            "rd_en":   In(1),
            "rd_addr": In(range(depth)),
            "rd_data": Out(data.ArrayLayout(signed(32), reads)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._reads
        bank_depth = -(-self._depth // n)
        rotate = Signal(range(n))
        m.d.sync += rotate.eq(Mux(self.rd_en, self.rd_addr % n, rotate))
        words = []
        for k in range(n):
            mem = m.submodules[f"bank{k}"] = Memory(shape=signed(32), depth=bank_depth, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            # The read of bank k serves the word rd_addr + j with (rd_addr + j) % n == k.
            offset = (k + n - self.rd_addr % n) % n
            m.d.comb += [
                wr.addr.eq(self.wr_addr // n), wr.data.eq(self.wr_data),
                wr.en.eq(self.wr_en & (self.wr_addr % n == k)),
                rd.addr.eq((self.rd_addr + offset) // n), rd.en.eq(self.rd_en),
            ]
            words.append(rd.data)
        for j in range(n):
            with m.Switch(rotate):
                for r in range(n):
                    with m.Case(r):
                        m.d.comb += self.rd_data[j].eq(words[(r + j) % n])
        return m
