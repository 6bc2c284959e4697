"""The board top's core: the macro's command and result streams carried over a UART."""

from amaranth import *
from amaranth.lib import wiring, stream
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .isa import STREAM_BITS, MacroConfig
from .macro import check_macro_args, make_macro
from .uart import UARTRx, UARTTx, check_divisor


__all__ = ["UARTBridge", "WordAssembler", "WordSplitter", "RX_FIFO_BYTES", "check_bridge_args"]

#: Bytes the bridge's receive FIFO holds: the host's credit window
#: (``pim_macro.sw.runtime.board_link``).
RX_FIFO_BYTES = 512

_BYTES = STREAM_BITS // 8


def check_bridge_args(config, *, arch, rx_fifo_depth):
    """Raise ``TypeError``/``ValueError`` for arguments a :class:`UARTBridge` rejects (all but
    the divisor, which :func:`pim_macro.hw.uart.check_divisor` checks)."""
    check_macro_args(config, arch)
    if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 4:
        raise ValueError(f"rx_fifo_depth must be an integer >= 4, not {rx_fifo_depth!r}")


class WordAssembler(wiring.Component):
    """Bytes in, little-endian 32-bit words out (the first byte is bits [7:0])."""

    def __init__(self):
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(STREAM_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        have = Signal(range(_BYTES + 1))
        word = Signal(STREAM_BITS)
        m.d.comb += [self.o_stream.payload.eq(word), self.o_stream.valid.eq(have == _BYTES),
                     self.i_stream.ready.eq(have != _BYTES)]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += have.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [word.eq(Cat(word[8:], self.i_stream.payload)), have.eq(have + 1)]
        return m


class WordSplitter(wiring.Component):
    """32-bit words in, their bytes out, least significant first."""

    def __init__(self):
        super().__init__({
            "i_stream": In(stream.Signature(STREAM_BITS)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        left = Signal(range(_BYTES + 1))
        word = Signal(STREAM_BITS)
        m.d.comb += [self.o_stream.payload.eq(word[:8]), self.o_stream.valid.eq(left != 0),
                     self.i_stream.ready.eq(left == 0)]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [word.eq(self.i_stream.payload), left.eq(_BYTES)]
        return m


class UARTBridge(wiring.Component):
    """The macro behind a UART: what a board exposes to its host.

    Bytes received on ``rx`` (8N1, ``divisor`` clock cycles per bit) go through a
    ``rx_fifo_depth``-byte FIFO, are assembled into little-endian 32-bit words and fed to the
    macro as its command stream; the macro's result words leave on ``tx``, least significant
    byte first. The UART cannot be paused, so the FIFO absorbs the bytes that arrive while the
    macro is busy; a host must not send more than ``rx_fifo_depth`` bytes beyond what the macro
    has taken (each command's status word tells it that the command was taken). A byte lost to a
    full FIFO sets the sticky ``overrun`` output; a bad stop bit sets ``framing_error``; only a
    reset clears them.
    """

    def __new__(cls, config: MacroConfig, *, arch="pim", divisor, rx_fifo_depth=RX_FIFO_BYTES):
        # Every argument is checked before the bridge (or any of its parts) exists, so a
        # rejected bridge leaves no unused object behind.
        check_bridge_args(config, arch=arch, rx_fifo_depth=rx_fifo_depth)
        check_divisor(divisor)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, config: MacroConfig, *, arch="pim", divisor, rx_fifo_depth=RX_FIFO_BYTES):
        self._macro = make_macro(config, arch=arch)
        self._divisor = divisor
        self._depth = rx_fifo_depth
        self._uart_rx = UARTRx(divisor)
        self._uart_tx = UARTTx(divisor)
        super().__init__({
            "rx":            In(1, init=1),
            "tx":            Out(1, init=1),
            "overrun":       Out(1),
            "framing_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = self._uart_rx
        m.submodules.uart_tx = uart_tx = self._uart_tx
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._depth)
        m.submodules.assembler = assembler = WordAssembler()
        m.submodules.macro = macro = self._macro
        m.submodules.splitter = splitter = WordSplitter()

        m.d.comb += [
            uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
            fifo.w_data.eq(uart_rx.o_stream.payload), fifo.w_en.eq(uart_rx.o_stream.valid),
            uart_rx.o_stream.ready.eq(1),           # never back-pressure the line
            assembler.i_stream.payload.eq(fifo.r_data), assembler.i_stream.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(assembler.i_stream.ready),
        ]
        wiring.connect(m, assembler.o_stream, macro.i_stream)
        wiring.connect(m, macro.o_stream, splitter.i_stream)
        wiring.connect(m, splitter.o_stream, uart_tx.i_stream)
        with m.If(uart_rx.o_stream.valid & ~fifo.w_rdy):
            m.d.sync += self.overrun.eq(1)
        with m.If(uart_rx.framing_error):
            m.d.sync += self.framing_error.eq(1)
        return m
