"""A UART (8 data bits, no parity, 1 stop bit) with byte streams on the fabric side."""

from amaranth import *
from amaranth.lib import wiring, stream
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["UARTRx", "UARTTx", "frame_bits", "check_divisor"]


def frame_bits(byte, stop=1):
    """The line levels of one 8N1 frame of ``byte``, one per bit time: a low start bit, the eight
    data bits least significant first, and the stop bit (``stop=0`` makes a framing error)."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def check_divisor(divisor):
    """Raise ``ValueError`` unless ``divisor`` (clock cycles per bit) can time a UART."""
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor (clock cycles per bit) must be an integer >= 4, not "
                         f"{divisor!r}")


class _Checked:
    """Checks the divisor in ``__new__``: a rejected UART is never created, so Amaranth has
    no unused object to warn about."""

    def __new__(cls, divisor, *args, **kwargs):
        check_divisor(divisor)
        return super().__new__(cls, src_loc_at=1)


class UARTRx(_Checked, wiring.Component):
    """Receives 8N1 frames on ``rx`` (idle high), ``divisor`` clock cycles per bit.

    The line is synchronised by two flip-flops (an :class:`FFSynchronizer`, reset with the
    domain like the rest of the receiver, to idle high); a start bit is confirmed at its middle,
    each data bit (least significant first) and the stop bit are sampled at theirs. A received byte
    is offered on ``o_stream`` until taken; a frame whose stop bit is low is dropped and strobes
    ``framing_error``; a byte that arrives while the previous one is still not taken is dropped
    and strobes ``overrun`` (the receiver never stalls: the line does not wait).
    """

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__({
            "rx":            In(1, init=1),
            "o_stream":      Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        bit = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, bit, init=1, reset_less=False)
        timer = Signal(range(div))
        count = Signal(range(9))
        shift = Signal(8)
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~bit):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(bit):
                        m.next = "IDLE"                 # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), count.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], bit)), count.eq(count + 1),
                                 timer.eq(div - 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(~bit):
                        m.d.comb += self.framing_error.eq(1)
                    with m.Elif(self.o_stream.valid & ~self.o_stream.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o_stream.payload.eq(shift),
                                     self.o_stream.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UARTTx(_Checked, wiring.Component):
    """Sends each byte taken from ``i_stream`` as an 8N1 frame on ``tx``, ``divisor`` clock
    cycles per bit; takes the next byte once the stop bit has been sent."""

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "tx":       Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        frame = Signal(10)                 # start bit, 8 data bits, stop bit: sent LSB first
        left = Signal(range(11))
        with m.If(left == 0):
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(self.i_stream.valid):
                m.d.sync += [frame.eq(Cat(C(0, 1), self.i_stream.payload, C(1, 1))),
                             left.eq(10), timer.eq(div - 1), self.tx.eq(0)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [frame.eq(frame >> 1), left.eq(left - 1), timer.eq(div - 1)]
                with m.If(left == 1):
                    m.d.sync += self.tx.eq(1)
                with m.Else():
                    m.d.sync += self.tx.eq(frame[1])
        return m
