"""cocotb testbench that plays command streams into the macro and records what comes out.

It is loaded inside the simulator by :func:`pim_macro.sw.runtime.rtl.run_rtl`, which passes a job
file (JSON) in ``PIM_JOBS`` and expects results in ``PIM_RESULTS``. Each job is played after a
reset:

* ``prefix`` words are offered first and the macro is reset after ``reset_after`` of them have
  been taken or after ``reset_cycles`` cycles (when set), whichever comes first: a reset in the
  middle of a command. With ``prefix_blocked`` the sink holds ``ready`` low throughout, so the
  output backs up and the input stalls once the queues are full (the cycle limit is what reaches
  such a point); otherwise the sink takes everything. Nothing emitted before the reset counts.
  What the streams were doing at the reset is reported (``reset``: words taken, cycles, whether
  ``o_stream`` offered a word the sink refused, whether the source offered a word the macro
  refused);
* ``words`` are then offered, with the source idling on a cycle with probability ``idle`` and the
  sink refusing a cycle with probability ``backpressure`` (seeded by ``seed``);
* the job's answers are complete when every command framed in ``words`` has answered (status
  plus data words), or ``answers`` responses when given (a stream cut inside a command: the
  complete commands, plus the cut one if its status was due, see
  :func:`pim_macro.tb.harness.fuzz.expected_answers`); the job fails after ``max_cycles`` cycles
  without them: the hardware must never hang;
* the sink then keeps ``ready`` high for ``drain_cycles`` more cycles with the source idle, and
  every word the macro still offers is appended to ``out`` (and counted in ``extra``): a macro
  that answers more than it should fails the comparison with the golden model.

Signals are driven just after the falling edge and handshakes are sampled in the read-only phase
before the rising edge, which behaves identically on Icarus and Verilator.

Without stalls (``idle`` and ``backpressure`` 0) the player works per transaction rather than per
cycle: while the macro neither takes the offered word nor offers one, the player does not wake
up every cycle but waits for ``i_stream__ready`` or ``o_stream__valid`` to rise. The macro sees
exactly the same inputs (``valid`` and ``ready`` held high), so results and counters are the
same; long runs are several times faster. A prefix played with the sink blocked does the same,
waiting for ``i_stream__ready`` alone (or the cycle limit), and the drain wakes only when a word
is offered, so neither costs per-cycle Python.
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
                   stop_after_taken=None, stop_after_cycles=None, sink_blocked=False,
                   max_cycles=1_000_000):
        """Offer ``words``; collect output until ``expect_status`` responses are complete.

        With ``stop_after_taken`` / ``stop_after_cycles`` the play stops (without waiting for
        output) once that many words have been taken or that many cycles have passed, whichever
        first. ``sink_blocked`` holds ``o_stream.ready`` low throughout (nothing is collected).
        Returns ``(output words, cycles, finished, state)``, ``state`` what the streams were
        doing in the last cycle (see :meth:`_state`). Entered and left just after a falling
        edge."""
        dut = self.dut
        rng = random.Random(seed)
        taken, out = 0, []
        answers = AnswerCounter()
        cycles = 0
        stopping = stop_after_taken is not None or stop_after_cycles is not None
        limit = max_cycles if stop_after_cycles is None else min(max_cycles, stop_after_cycles)
        # Without random stalls the player wakes per transaction (see the module docstring); a
        # blocked sink is no random stall: it never takes anything.
        smooth = not idle and (sink_blocked or not backpressure)
        while True:
            if stop_after_taken is not None and taken >= stop_after_taken:
                break
            if (not stopping and taken == len(words)
                    and answers.complete == expect_status):
                break
            if cycles >= limit:
                if stopping:
                    break
                return out, cycles, False, None
            offer = taken < len(words) and not (idle and rng.random() < idle)
            dut.i_stream__valid.value = int(offer)
            if offer:
                dut.i_stream__payload.value = words[taken]
            accept = not sink_blocked and not (backpressure and rng.random() < backpressure)
            dut.o_stream__ready.value = int(accept)
            await ReadOnly()
            if (smooth and offer and not dut.i_stream__ready.value
                    and (sink_blocked or not dut.o_stream__valid.value)):
                # Nothing moves until the macro wants a word or has one: sleep until then.
                start = get_sim_time("ns")
                wake = [RisingEdge(dut.i_stream__ready),
                        Timer((limit - cycles) * self.PERIOD_NS, "ns")]
                if not sink_blocked:
                    wake.append(RisingEdge(dut.o_stream__valid))
                await First(*wake)
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
        if not stopping:
            dut.i_stream__valid.value = 0
            dut.o_stream__ready.value = 0
            return out, cycles, True, None
        # Stopped on the cycle limit: the word due is still offered, to see whether the macro
        # refuses it (on the taken limit, nothing more is offered).
        offer = taken < len(words) and (stop_after_taken is None or taken < stop_after_taken)
        state = await self._state(taken, cycles, words if offer else [])
        return out, cycles, True, state

    async def _state(self, taken, cycles, words):
        """What the streams do in one more cycle, the sink refusing and the source offering
        ``words[taken]`` (if any): ``{"taken", "cycles", "out_blocked", "in_stalled"}``;
        ``out_blocked``: ``o_stream`` offers a word the sink does not take; ``in_stalled``: the
        macro does not take the word offered (if it does, it counts in ``taken``). Left just
        after the falling edge that ends that cycle, with nothing offered."""
        dut = self.dut
        offer = taken < len(words)
        dut.i_stream__valid.value = int(offer)
        if offer:
            dut.i_stream__payload.value = words[taken]
        dut.o_stream__ready.value = 0
        await ReadOnly()
        out_blocked = bool(dut.o_stream__valid.value)
        in_stalled = offer and not dut.i_stream__ready.value
        await FallingEdge(self.dut.clk)
        dut.i_stream__valid.value = 0
        return {"taken": taken + (offer and not in_stalled), "cycles": cycles + 1,
                "out_blocked": out_blocked, "in_stalled": in_stalled}

    async def drain(self, cycles):
        """Keep ``o_stream.ready`` high for ``cycles`` cycles with no input offered; return the
        words the macro offered meanwhile (none, for a macro that answered exactly what it
        should). Wakes only when a word is offered."""
        dut = self.dut
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 1
        extra, left = [], cycles
        while left > 0:
            await ReadOnly()
            if dut.o_stream__valid.value:
                extra.append(int(dut.o_stream__payload.value))
                await FallingEdge(dut.clk)
                left -= 1
                continue
            start = get_sim_time("ns")
            await First(RisingEdge(dut.o_stream__valid), Timer(left * self.PERIOD_NS, "ns"))
            await FallingEdge(dut.clk)
            left -= max(1, round((get_sim_time("ns") - start) / self.PERIOD_NS))
        dut.o_stream__ready.value = 0
        return extra


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
        reset = None
        if job.get("prefix"):
            _, _, _, reset = await tb.play(
                job["prefix"], expect_status=0, stop_after_taken=job["reset_after"],
                stop_after_cycles=job.get("reset_cycles"),
                sink_blocked=job.get("prefix_blocked", False), seed=job["seed"] + 1,
                max_cycles=job["max_cycles"])
            await tb.reset()
        expect = job.get("answers")
        if expect is None:
            expect = len(frame_program(job["words"], config))
        out, cycles, finished, _ = await tb.play(
            job["words"], expect_status=expect, idle=job["idle"],
            backpressure=job["backpressure"], seed=job["seed"], max_cycles=job["max_cycles"])
        extra = await tb.drain(job.get("drain_cycles", 0)) if finished else []
        results.append({"out": out + extra, "cycles": cycles, "finished": finished,
                        "extra": len(extra), "reset": reset})
    with open(os.environ["PIM_RESULTS"], "w") as f:
        json.dump({"results": results}, f)
