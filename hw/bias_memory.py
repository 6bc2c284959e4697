"""The channel memory: per output channel an int32 bias, a Q31 multiplier and a shift; one field
written and ``reads`` consecutive channels read per cycle."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .isa import ChannelMultiplier, ChannelShift, REQUANT_MULT_BITS, REQUANT_SHIFT_BITS


__all__ = ["Channel", "ChannelMemory", "ChannelReadSignature", "ChannelWriteSignature"]


#: One channel as read: its bias (``LOAD_BIAS``), its multiplier ``M0`` and its shift
#: (``LOAD_QUANT``; :data:`pim_macro.hw.isa.ChannelMultiplier`, ``ChannelShift``).
Channel = data.StructLayout({"bias": signed(32), "multiplier": REQUANT_MULT_BITS,
                             "shift": signed(REQUANT_SHIFT_BITS)})


class ChannelReadSignature(wiring.Signature):
    """A read of ``reads`` consecutive channels, seen from the memory (like
    :class:`amaranth.lib.memory.ReadPort.Signature`): ``en`` with ``addr`` gives ``data[j] =
    channel[addr + j]`` (a :data:`Channel`) in the next cycle."""

    def __init__(self, depth, reads):
        super().__init__({
            "en":   In(1),
            "addr": In(range(depth)),
            "data": Out(data.ArrayLayout(Channel, reads)),
        })


class ChannelWriteSignature(wiring.Signature):
    """A write of one field of one channel, seen from the memory: in the cycle ``bias`` is set,
    ``data`` (a ``LOAD_BIAS`` payload word) is stored as the bias of channel ``addr``; with
    ``multiplier``, ``data`` is a ``LOAD_QUANT`` :data:`~pim_macro.hw.isa.ChannelMultiplier`
    word; with ``shift`` a :data:`~pim_macro.hw.isa.ChannelShift` word (its reserved bits
    ignored). One at a time."""

    def __init__(self, depth):
        super().__init__({"addr": In(range(depth)), "data": In(32), "bias": In(1),
                          "multiplier": In(1), "shift": In(1)})


class ChannelMemory(wiring.Component):
    """``depth`` channels in ``reads`` banks (channel ``a`` in bank ``a % reads``, row ``a //
    reads``), so that any ``reads`` consecutive channels can be read in one cycle (``reads`` is
    the output engine's lane group: one per requantizer). Each bank is three memories, one per
    field, so that a load writes one field without touching the others.

    ``write`` (a :class:`ChannelWriteSignature`) stores a field in one cycle; ``read`` (a
    :class:`ChannelReadSignature`) gives ``reads`` consecutive channels the next cycle
    (channels past ``depth`` read as whatever their bank holds: callers use only the ones they
    asked for).
    """

    def __init__(self, depth, reads=4):
        self._depth = depth
        self._reads = reads
        super().__init__({
            "write": Out(ChannelWriteSignature(depth)),
            "read":  Out(ChannelReadSignature(depth, reads)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._reads
        bank_depth = -(-self._depth // n)
        rotate = Signal(range(n))
        m.d.sync += rotate.eq(Mux(self.read.en, self.read.addr % n, rotate))
        fields = {
            "bias": self.write.data.as_signed(),
            "multiplier": ChannelMultiplier(self.write.data).multiplier,
            "shift": ChannelShift(self.write.data).shift,
        }
        banks = []
        for k in range(n):
            bank = Signal(Channel, name=f"bank{k}_data")
            # The read of bank k serves the channel addr + j with (addr + j) % n == k.
            offset = (k + n - self.read.addr % n) % n
            for name, value in fields.items():
                mem = m.submodules[f"{name}{k}"] = Memory(shape=Channel[name].shape,
                                                          depth=bank_depth, init=[])
                wr, rd = mem.write_port(), mem.read_port()
                m.d.comb += [
                    wr.addr.eq(self.write.addr // n), wr.data.eq(value),
                    wr.en.eq(getattr(self.write, name) & (self.write.addr % n == k)),
                    rd.addr.eq((self.read.addr + offset) // n), rd.en.eq(self.read.en),
                    bank[name].eq(rd.data),
                ]
            banks.append(bank)
        for j in range(n):
            with m.Switch(rotate):
                for r in range(n):
                    with m.Case(r):
                        m.d.comb += self.read.data[j].eq(banks[(r + j) % n])
        return m
