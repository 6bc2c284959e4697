"""The bias memory: int32 words, one written and ``reads`` consecutive ones read per cycle."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["BiasMemory", "BiasReadSignature", "BiasWriteSignature"]


class BiasReadSignature(wiring.Signature):
    """A read of ``reads`` consecutive int32 words, seen from the memory (like
    :class:`amaranth.lib.memory.ReadPort.Signature`): ``en`` with ``addr`` gives ``data[j] =
    word[addr + j]`` in the next cycle."""

    def __init__(self, depth, reads):
        super().__init__({
            "en":   In(1),
            "addr": In(range(depth)),
            "data": Out(data.ArrayLayout(signed(32), reads)),
        })


class BiasWriteSignature(wiring.Signature):
    """A write of one int32 word, seen from the memory: ``en`` stores ``data`` at ``addr`` in
    that cycle."""

    def __init__(self, depth):
        super().__init__({"en": In(1), "addr": In(range(depth)), "data": In(signed(32))})


class BiasMemory(wiring.Component):
    """``depth`` int32 words in ``reads`` banks (word ``a`` in bank ``a % reads``, row
    ``a // reads``), so that any ``reads`` consecutive words can be read in one cycle (``reads``
    is the output engine's lane group: one per requantizer).

    ``write`` (a :class:`BiasWriteSignature`) stores a word in one cycle; ``read`` (a
    :class:`BiasReadSignature`) gives ``reads`` consecutive words the next cycle (words past
    ``depth`` read as whatever their bank holds: callers use only the ones they asked for).
    """

    def __init__(self, depth, reads=4):
        self._depth = depth
        self._reads = reads
        super().__init__({
            "write": Out(BiasWriteSignature(depth)),
            "read":  Out(BiasReadSignature(depth, reads)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._reads
        bank_depth = -(-self._depth // n)
        rotate = Signal(range(n))
        m.d.sync += rotate.eq(Mux(self.read.en, self.read.addr % n, rotate))
        words = []
        for k in range(n):
            mem = m.submodules[f"bank{k}"] = Memory(shape=signed(32), depth=bank_depth, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            # The read of bank k serves the word addr + j with (addr + j) % n == k.
            offset = (k + n - self.read.addr % n) % n
            m.d.comb += [
                wr.addr.eq(self.write.addr // n), wr.data.eq(self.write.data),
                wr.en.eq(self.write.en & (self.write.addr % n == k)),
                rd.addr.eq((self.read.addr + offset) // n), rd.en.eq(self.read.en),
            ]
            words.append(rd.data)
        for j in range(n):
            with m.Switch(rotate):
                for r in range(n):
                    with m.Case(r):
                        m.d.comb += self.read.data[j].eq(words[(r + j) % n])
        return m
