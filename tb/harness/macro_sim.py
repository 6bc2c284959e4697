"""Play a command stream through the whole macro in Amaranth's own simulator.

No Verilog and no build, so it suits quick tests of the controller and debugging; the cocotb
benches (:mod:`pim_macro.tb.harness.player`) remain the reference on Icarus and Verilator.
``python -m pim_macro.tb.harness.macro_sim [pim|baseline]`` runs the hand-written program and prints
the responses.
"""

import random

from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from pim_macro.hw import make_macro
from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.runtime.asm import AnswerCounter, frame_program


__all__ = ["play"]


class _FabricOnly:
    """A stand-in platform that only names a :class:`pim_macro.hw.fabric.Fabric`."""

    def __init__(self, fabric):
        self.pim_fabric = fabric


def play(words, config: MacroConfig, *, arch="pim", idle=0.0, backpressure=0.0, seed=0,
         max_cycles=500_000, vcd=None, fabric=None):
    """Feed ``words`` (the source idles with probability ``idle``, the sink refuses with
    probability ``backpressure``); return ``(out_words, finished)``. ``finished`` is false when
    the macro has not answered every command (one status word each, plus the data words the
    status announces) within ``max_cycles``: a hang. ``fabric`` (a
    :class:`pim_macro.hw.fabric.Fabric` without vendor primitives, e.g. multi-pass
    requantizers) elaborates the macro for it instead of the portable form."""
    dut = make_macro(config, arch=arch)
    rng = random.Random(seed)
    out = []
    state = {"finished": False}
    commands = len(frame_program(words, config))

    async def source(ctx):
        for word in words:
            while idle and rng.random() < idle:
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(dut.i_stream.payload, word)
            ctx.set(dut.i_stream.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                if ready:
                    break
        ctx.set(dut.i_stream.valid, 0)

    async def sink(ctx):
        answers = AnswerCounter()
        for _ in range(max_cycles):
            if answers.complete == commands:
                state["finished"] = True
                return
            ctx.set(dut.o_stream.ready, not (backpressure and rng.random() < backpressure))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload)
            if valid and ready:
                out.append(payload)
                answers.add(payload)

    sim = Simulator(dut if fabric is None else Fragment.get(dut, _FabricOnly(fabric)))
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return out, state["finished"]


if __name__ == "__main__":
    import sys
    from pim_macro.sw.runtime import asm
    from pim_macro.tb.harness.programs import hand_program, CONFIGS
    arch = sys.argv[1] if len(sys.argv) > 1 else "pim"
    config = CONFIGS["l8r1"]
    out, finished = play(hand_program(config), config, arch=arch)
    for response in asm.parse_responses(out):
        print(response)
    print("finished" if finished else "HUNG")
