"""Amaranth-simulator helpers for serial lines: drive 8N1 frames into a receiver, decode them
from a transmitter, and run testbenches on a design."""

from amaranth.sim import Simulator

from pim_macro.hw.uart import frame_bits


__all__ = ["FRAME_BITS", "send_bytes", "receive_byte", "run"]


#: Bit times of one frame on the line.
FRAME_BITS = len(frame_bits(0))


async def send_bytes(ctx, line, data, divisor, stops=None):
    """Drive ``data`` (bytes) on ``line``, one 8N1 frame per byte; ``stops`` gives each frame's
    stop bit (0: a framing error)."""
    for n, byte in enumerate(data):
        for bit in frame_bits(byte, 1 if stops is None else stops[n]):
            ctx.set(line, bit)
            await ctx.tick().repeat(divisor)


async def receive_byte(ctx, line, divisor):
    """Wait for a start bit on ``line`` and return the byte. Every bit is sampled in its middle,
    and the frame must be the 8N1 frame of the byte its data bits give (a whole start bit, a
    high stop bit)."""
    if ctx.get(line):
        await ctx.negedge(line)     # an edge wait, not a Python step per idle cycle
    await ctx.tick().repeat(divisor // 2)
    bits = [ctx.get(line)]
    for _ in range(FRAME_BITS - 1):
        await ctx.tick().repeat(divisor)
        bits.append(ctx.get(line))
    byte = sum(bit << i for i, bit in enumerate(bits[1:-1]))
    assert bits == frame_bits(byte), f"not an 8N1 frame (a low start bit, a high stop bit): {bits}"
    return byte


def run(dut, *benches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()
