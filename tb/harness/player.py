"""cocotb testbench that plays command streams into the macro and records what comes out.

It is loaded inside the simulator by :func:`pim_macro.sw.runtime.rtl.run_rtl`, which passes a job
file (JSON) in ``PIM_JOBS`` and expects results in ``PIM_RESULTS``. Each job is played after a
reset:

* ``prefix`` words are offered first and the macro is reset after ``reset_after`` of them have
  been taken (a reset in the middle of a command); nothing it emitted before counts;
* ``words`` are then offered, with the source idling on a cycle with probability ``idle`` and the
  sink refusing a cycle with probability ``backpressure`` (seeded by ``seed``);
* the job ends when every command framed in ``words`` has answered (status plus data words), or
  fails after ``max_cycles`` cycles without finishing: the hardware must never hang.

Signals are driven just after the falling edge and handshakes are sampled in the read-only phase
before the rising edge, which behaves identically on Icarus and Verilator.

Without stalls (``idle`` and ``backpressure`` 0) the player works per transaction rather than per
cycle: while the macro neither takes the offered word nor offers one, the player does not wake
up every cycle but waits for ``i_stream__ready`` or ``o_stream__valid`` to rise. The macro sees
exactly the same inputs (``valid`` and ``ready`` held high), so results and counters are the
same; long runs are several times faster.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer
from cocotb.simtime import get_sim_time

from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.runtime.asm import AnswerCounter, frame_program


class TB:
    """Owns the clock, reset, the stream source and sink, and their stall generators."""

    PERIOD_NS = 10

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        cocotb.start_soon(Clock(dut.clk, self.PERIOD_NS, unit="ns").start())
        dut.i_stream__valid.value = 0
        dut.i_stream__payload.value = 0
        dut.o_stream__ready.value = 0
        dut.rst.value = 1

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        self.dut.i_stream__valid.value = 0
        self.dut.o_stream__ready.value = 0
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def play(self, words, *, expect_status, idle=0.0, backpressure=0.0, seed=0,
                   stop_after_taken=None, max_cycles=1_000_000):
        """Offer ``words``; collect output until ``expect_status`` responses are complete.

        With ``stop_after_taken`` the play stops (without waiting for output) once that many
        words have been taken. Returns ``(output words, cycles, finished)``. Entered and left
        just after a falling edge."""
        dut = self.dut
        rng = random.Random(seed)
        taken, out = 0, []
        answers = AnswerCounter()
        cycles = 0
        while True:
            if stop_after_taken is not None and taken >= stop_after_taken:
                break
            if (stop_after_taken is None and taken == len(words)
                    and answers.complete == expect_status):
                break
            if cycles >= max_cycles:
                return out, cycles, False
            offer = taken < len(words) and not (idle and rng.random() < idle)
            dut.i_stream__valid.value = int(offer)
            if offer:
                dut.i_stream__payload.value = words[taken]
            accept = not (backpressure and rng.random() < backpressure)
            dut.o_stream__ready.value = int(accept)
            await ReadOnly()
            smooth = not idle and not backpressure
            if (smooth and offer and not dut.i_stream__ready.value
                    and not dut.o_stream__valid.value):
                # Nothing moves until the macro wants a word or has one: sleep until then.
                start = get_sim_time("ns")
                await First(RisingEdge(dut.i_stream__ready), RisingEdge(dut.o_stream__valid),
                            Timer((max_cycles - cycles) * self.PERIOD_NS, "ns"))
                await FallingEdge(dut.clk)
                cycles += round((get_sim_time("ns") - start) / self.PERIOD_NS)
                continue
            if offer and dut.i_stream__ready.value:
                taken += 1
            if accept and dut.o_stream__valid.value:
                word = int(dut.o_stream__payload.value)
                out.append(word)
                answers.add(word)
            await FallingEdge(dut.clk)
            cycles += 1
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 0
        return out, cycles, True


@cocotb.test()
async def play_jobs(dut):
    """Play every job of the job file and write the results file."""
    with open(os.environ["PIM_JOBS"]) as f:
        spec = json.load(f)
    config = MacroConfig(**spec["config"])
    tb = TB(dut)
    results = []
    for job in spec["jobs"]:
        await tb.reset()
        if job.get("prefix"):
            await tb.play(job["prefix"], expect_status=0, stop_after_taken=job["reset_after"],
                          seed=job["seed"] + 1)
            await tb.reset()
        expect = len(frame_program(job["words"], config))
        out, cycles, finished = await tb.play(
            job["words"], expect_status=expect, idle=job["idle"],
            backpressure=job["backpressure"], seed=job["seed"], max_cycles=job["max_cycles"])
        results.append({"out": out, "cycles": cycles, "finished": finished})
    with open(os.environ["PIM_RESULTS"], "w") as f:
        json.dump({"results": results}, f)
