"""Amaranth-simulator helpers for serial lines: drive 8N1 frames into a receiver, decode them
from a transmitter, and run testbenches on a design."""

from amaranth.sim import Simulator

from pim_macro.hw.uart import frame_bits


__all__ = ["send_bytes", "receive_byte", "run"]


async def send_bytes(ctx, line, data, divisor, stops=None):
    for n, byte in enumerate(data):
        for bit in frame_bits(byte, 1 if stops is None else stops[n]):
            ctx.set(line, bit)
            await ctx.tick().repeat(divisor)


async def receive_byte(ctx, line, divisor):
    """Wait for a start bit on ``line`` and return the byte (checks the stop bit)."""
    if ctx.get(line):
        await ctx.negedge(line)     # an edge wait, not a Python step per idle cycle
    await ctx.tick().repeat(divisor // 2)
    byte = 0
    for i in range(8):
        await ctx.tick().repeat(divisor)
        byte |= ctx.get(line) << i
    await ctx.tick().repeat(divisor)
    assert ctx.get(line) == 1, "the stop bit should be high"
    return byte


def run(dut, *benches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()
