"""The UART and the UART bridge (the board top's core), in Amaranth's simulator: bytes through
the line both ways, framing errors, the whole macro driven over the serial line against the
golden model, and a receive FIFO overrun."""

import random

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Counter, MacroConfig
from pim_macro.hw.uart import UARTRx, UARTTx, frame_bits
from pim_macro.hw.uart_bridge import UARTBridge
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.tb.harness.programs import hand_program

from pim_macro.tb.harness.uart_sim import FRAME_BITS, receive_byte, run, send_bytes


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_tx_then_rx_loopback(divisor):
    """Random bytes through UARTTx; the bits are checked by a software receiver, then fed to
    UARTRx, which must give the same bytes back."""
    data = [random.Random(divisor).randrange(256) for _ in range(20)]
    tx = UARTTx(divisor)
    got = []

    async def feed(ctx):
        for byte in data:
            ctx.set(tx.i_stream.payload, byte)
            ctx.set(tx.i_stream.valid, 1)
            await ctx.tick().until(tx.i_stream.ready)
        ctx.set(tx.i_stream.valid, 0)

    async def listen(ctx):
        for _ in data:
            got.append(await receive_byte(ctx, tx.tx, divisor))

    run(tx, listen, background=[feed])
    assert got == data

    rx = UARTRx(divisor)
    received = []

    async def line(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(3)
        await send_bytes(ctx, rx.rx, data, divisor)

    async def take(ctx):
        ctx.set(rx.o_stream.ready, 1)
        while len(received) < len(data):
            _, _, valid, payload = await ctx.tick().sample(rx.o_stream.valid,
                                                           rx.o_stream.payload)
            if valid:
                received.append(payload)
        await ctx.tick().repeat(2 * divisor)      # let the line finish its last stop bit

    run(rx, take, background=[line])
    assert received == data


def test_framing_error_drops_the_byte():
    divisor = 6
    rx = UARTRx(divisor)
    received, errors = [], []

    async def line(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(3)
        await send_bytes(ctx, rx.rx, [0x5A, 0xA5, 0x3C], divisor, stops=[1, 0, 1])
        ctx.set(rx.rx, 1)

    async def take(ctx):
        ctx.set(rx.o_stream.ready, 1)
        for _ in range(3 * FRAME_BITS * divisor + 40):
            _, _, valid, payload, error = await ctx.tick().sample(
                rx.o_stream.valid, rx.o_stream.payload, rx.framing_error)
            if valid:
                received.append(payload)
            if error:
                errors.append(1)

    run(rx, take, background=[line])
    assert received == [0x5A, 0x3C], "the frame with a low stop bit should be dropped"
    assert errors == [1]


def play_over_uart(words, config, arch, divisor=4, depth=1024, limit=400_000):
    """Send ``words`` over the bridge's rx line while decoding its tx line, one cycle at a time;
    return ``(output words, flags seen)``. Fails if the answers do not come within ``limit``
    cycles."""
    dut = UARTBridge(config, arch=arch, divisor=divisor, rx_fifo_depth=depth)
    wanted = len(asm.words_to_bytes(GoldenMacro(config, arch=arch).run(words)))
    got = bytearray()
    flags = {"overrun": 0, "framing": 0}

    async def sender(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        await send_bytes(ctx, dut.rx, asm.words_to_bytes(words), divisor)
        ctx.set(dut.rx, 1)

    async def receiver(ctx):
        # A software UART: after a falling edge, sample mid-bit every `divisor` cycles.
        countdown, bits = None, []
        for _ in range(limit):
            _, _, tx, overrun, framing = await ctx.tick().sample(dut.tx, dut.overrun,
                                                                 dut.framing_error)
            flags["overrun"] |= overrun
            flags["framing"] |= framing
            if countdown is None:
                if not tx:
                    countdown, bits = divisor // 2, []
                continue
            countdown -= 1
            if countdown == 0:
                bits.append(tx)
                countdown = divisor
                if len(bits) == FRAME_BITS:
                    byte = sum(bit << i for i, bit in enumerate(bits[1:-1]))
                    assert bits == frame_bits(byte), "a well-formed 8N1 frame"
                    got.append(byte)
                    countdown = None
                    if len(got) == wanted:
                        return
        raise AssertionError(f"only {len(got)} of {wanted} bytes came back in {limit} cycles")

    run(dut, receiver, background=[sender])
    return asm.bytes_to_words(got), flags


@pytest.mark.parametrize("arch", ARCHES)
def test_bridge_runs_the_macro_over_the_line(arch):
    config = MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32,
                         bus_bits=16)
    words = hand_program(config) + asm.encode_status() + asm.encode_read_counters()
    out, flags = play_over_uart(words, config, arch)
    expected = GoldenMacro(config, arch=arch).run(words)
    # The counters (the last words) hold times the golden model does not know.
    assert out[:-len(Counter)] == expected[:-len(Counter)], \
        "every response should match the golden model"
    assert not flags["overrun"] and not flags["framing"]


def test_overrun_is_reported():
    """A WRITE_WEIGHTS that must wait for a long baseline MATVEC over the same rows (256 rows,
    8 bus beats each) stalls the command stream; the bytes that keep arriving overflow an
    8-byte FIFO."""
    config = MacroConfig(lanes=8, depth=256, bus_bits=8)
    rows = np.ones((256, 1, 8), dtype=np.int8)
    words = (asm.encode_write_weights(0, rows[:4], config) + asm.encode_matvec(0, 0, 256)
             + asm.encode_write_weights(0, rows[:16], config))
    divisor = 4
    dut = UARTBridge(config, arch="baseline", divisor=divisor, rx_fifo_depth=8)
    seen = {"overrun": 0}
    data = asm.words_to_bytes(words)

    async def sender(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        await send_bytes(ctx, dut.rx, data, divisor)

    async def watch(ctx):
        for _ in range(len(data) * FRAME_BITS * divisor + 200):
            _, _, overrun = await ctx.tick().sample(dut.overrun)
            seen["overrun"] |= overrun

    run(dut, watch, background=[sender])
    assert seen["overrun"], "a full receive FIFO should set overrun"


def test_bad_parameters():
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(2)
    with pytest.raises(ValueError, match="rx_fifo_depth"):
        UARTBridge(MacroConfig(), divisor=8, rx_fifo_depth=2)


# The bridge alone ("uart") on Icarus; the whole board top, which holds the same bridge, on
# both simulators. A Verilator build of the bridge alone cost the suite about 100 s of its 2
# cores and tested nothing the board top's does not.
@pytest.mark.parametrize("sim, top", [("icarus", "uart"), ("icarus", "board"),
                                      ("verilator", "board")])
@pytest.mark.parametrize("arch", ARCHES)
def test_bridge_rtl_over_the_serial_line(sim, arch, top):
    """The bridge's Verilog, and the whole board top's (I/O buffers, button reset, LEDs), on
    Icarus and Verilator, driven bit by bit on the rx pin by tb/harness/uart_player.py: the hand
    program and a seeded random one answer as the golden model."""
    from pim_macro.sw.runtime.rtl import Job, run_rtl
    from pim_macro.tb.harness.programs import compare, random_program
    config = MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32,
                         bus_bits=16)
    programs = [hand_program(config) + asm.encode_status(),
                random_program(config, 5, commands=12, init=False)]
    results = run_rtl([Job(words) for words in programs], config, sim=sim, arch=arch, top=top)
    for words, result in zip(programs, results):
        assert result.finished, "every command should answer over the line"
        compare(words, result.out, config, arch=arch, where=f"uart {sim} {arch}")
