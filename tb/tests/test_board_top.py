"""The board top (hw/board.py) itself, in Amaranth's simulator on a stand-in platform whose pins
are simulation ports: the macro answers over the UART pins as the golden model says, a lost byte
lights LED 0, and button 0 resets the macro, which then runs again. (The bridge inside is run
over its serial line on Icarus and Verilator in test_uart.py; the real platforms are elaborated
and built in test_synth.py.)"""

import numpy as np
import pytest
from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable, Fragment
from amaranth.lib import io
from amaranth.sim import Simulator

from pim_macro.hw.board import BAUD, BoardTop
from pim_macro.hw.isa import ARCHES, MacroConfig, Opcode
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.tb.harness.programs import hand_program
from pim_macro.tb.harness.uart_sim import receive_byte, send_bytes

DIVISOR = 4


class _Uart:
    def __init__(self):
        self.rx = io.SimulationPort("i", 1)
        self.tx = io.SimulationPort("o", 1)


class StandInPlatform:
    """What BoardTop asks of a platform: a clock rate and the uart, button and led pins."""
    default_clk_frequency = BAUD * DIVISOR

    def __init__(self, leds=2):
        self.uart, self.button = _Uart(), io.SimulationPort("i", 1)
        self.leds = [io.SimulationPort("o", 1) for _ in range(leds)]

    def request(self, name, number=0, *, dir):
        assert dir == "-", "the board top uses lib.io buffers"
        if name == "uart" and number == 0:
            return self.uart
        if name == "button" and number == 0:
            return self.button
        if name == "led" and number < len(self.leds):
            return self.leds[number]
        raise ResourceError(f"no {name} {number}")


def _wire(words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def _words(data):
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)]


def _simulate(top, platform, benches, background, cycles):
    sim = Simulator(_Elaborated(top, platform))
    sim.add_clock(1e-8)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run_until(1e-8 * cycles)


@pytest.mark.parametrize("arch", ARCHES)
def test_board_top_answers_over_its_pins(arch):
    config = MacroConfig(lanes=8, depth=32, act_depth=128, bias_depth=16, bus_bits=16)
    words = hand_program(config) + asm.encode_status()
    expected = GoldenMacro(config, arch=arch).run(words)
    platform = StandInPlatform(leds=3)
    got, leds = bytearray(), {}

    async def sender(ctx):
        ctx.set(platform.uart.rx.i, 1)
        await ctx.tick().repeat(5)
        await send_bytes(ctx, platform.uart.rx.i, _wire(words), DIVISOR)
        ctx.set(platform.uart.rx.i, 1)

    async def receiver(ctx):
        while len(got) < 4 * len(expected):
            got.append(await receive_byte(ctx, platform.uart.tx.o, DIVISOR))
        # The flags are sticky: off now means they never lit.
        leds.update(overrun=ctx.get(platform.leds[0].o), framing=ctx.get(platform.leds[1].o))

    _simulate(BoardTop(config, arch=arch), platform, [receiver], [sender],
              cycles=10 * DIVISOR * 4 * (len(words) + len(expected)) + 5000)
    assert _words(got) == expected, "the board top should answer as the golden model"
    assert leds == {"overrun": 0, "framing": 0}, "no overrun or framing error on a clean line"


def test_lost_byte_lights_led0_and_button_resets():
    """A baseline MATVEC over 256 rows (8 bus beats each) holds up the stream behind it; the
    bytes that keep coming overflow an 8-byte FIFO and LED 0 lights. Pressing button 0 resets
    the macro and the flag; a STATUS sent afterwards is answered normally."""
    config = MacroConfig(lanes=8, depth=256, bus_bits=8)
    rows = np.ones((256, 1, 8), dtype=np.int8)
    flood = (asm.encode_write_weights(0, rows[:4], config) + asm.encode_matvec(0, 0, 256)
             + asm.encode_write_weights(0, rows[:16], config))
    status = asm.encode_status()
    platform = StandInPlatform()
    seen, answer = {}, bytearray()

    async def bench(ctx):
        ctx.set(platform.uart.rx.i, 1)
        await ctx.tick().repeat(5)
        await send_bytes(ctx, platform.uart.rx.i, _wire(flood), DIVISOR)
        await ctx.tick().repeat(50)
        seen["led0 after flood"] = ctx.get(platform.leds[0].o)
        ctx.set(platform.button.i, 1)
        await ctx.tick().repeat(4)
        ctx.set(platform.button.i, 0)
        await ctx.tick().repeat(4)
        seen["led0 after reset"] = ctx.get(platform.leds[0].o)
        await send_bytes(ctx, platform.uart.rx.i, _wire(status), DIVISOR)

    async def listen(ctx):
        # Whatever the macro said before the reset is dropped once the button goes down.
        await ctx.posedge(platform.button.i)
        answer.clear()
        while True:
            answer.append(await receive_byte(ctx, platform.uart.tx.o, DIVISOR))

    _simulate(BoardTop(config, arch="baseline", rx_fifo_bytes=8), platform, [bench], [listen],
              cycles=len(flood) * 4 * 10 * DIVISOR + 3000)
    assert seen == {"led0 after flood": 1, "led0 after reset": 0}
    got = asm.parse_responses(_words(answer))
    assert len(got) == 1 and got[0].opcode == Opcode.STATUS.value and got[0].ok, \
        "after the reset the macro should answer a STATUS"
    assert asm.decode_status_words(got[0].data)["lanes"] == 8


class _Elaborated(Elaboratable):
    """Elaborates a board top for a stand-in platform (Amaranth's simulator passes none)."""
    def __init__(self, top, platform):
        self.top, self.platform = top, platform

    def elaborate(self, platform):
        return Fragment.get(self.top, self.platform)
