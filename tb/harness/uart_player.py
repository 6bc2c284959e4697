"""cocotb testbench that plays command streams into the UART bridge (or the whole board top)
over its serial line.

Loaded by :func:`pim_macro.sw.runtime.rtl.run_rtl` with ``top="uart"``. For each job, after a reset, the words
are sent on ``rx`` as 8N1 frames (least significant byte first), ``divisor`` clock cycles per
bit, while the frames on ``tx`` are decoded; the job ends when every command framed in the
words has answered (status word plus its data words), or fails after ``max_cycles``. Both lines
are handled per bit with timers, not per cycle.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.simtime import get_sim_time

from pim_macro.hw.isa import MacroConfig
from pim_macro.sw.runtime.asm import AnswerCounter, frame_program

PERIOD_NS = 10


async def send(dut, data, divisor):
    for byte in data:
        for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            dut.rx.value = bit
            await Timer(divisor * PERIOD_NS, "ns")


async def receive(dut, divisor, out, answers, expected):
    """Decode frames on ``tx`` into ``out`` (bytes), counting ``answers`` word by word, until
    ``expected`` responses are complete."""
    while answers.complete < expected:
        await FallingEdge(dut.tx)
        await Timer(divisor * PERIOD_NS // 2, "ns")          # the middle of the start bit
        assert int(dut.tx.value) == 0, "a start bit should last a whole bit time"
        byte = 0
        for i in range(8):
            await Timer(divisor * PERIOD_NS, "ns")
            byte |= int(dut.tx.value) << i
        await Timer(divisor * PERIOD_NS, "ns")
        assert int(dut.tx.value) == 1, "the stop bit should be high"
        out.append(byte)
        if len(out) % 4 == 0:
            answers.add(int.from_bytes(out[-4:], "little"))


@cocotb.test()
async def play_uart_jobs(dut):
    """Play every job of the job file over the serial line and write the results file."""
    with open(os.environ["PIM_JOBS"]) as f:
        spec = json.load(f)
    config = MacroConfig(**spec["config"])
    divisor = spec["divisor"]
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    results = []
    for job in spec["jobs"]:
        dut.rx.value = 1
        if hasattr(dut, "button"):      # the board top: its reset button, released
            dut.button.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        words = job["words"]
        expected = len(frame_program(words, config))
        out = bytearray()
        answers = AnswerCounter()
        start = get_sim_time("ns")
        sender = cocotb.start_soon(send(dut, b"".join(w.to_bytes(4, "little") for w in words),
                                        divisor))
        receiver = cocotb.start_soon(receive(dut, divisor, out, answers, expected))
        budget = job["max_cycles"] + 10 * 4 * len(words) * divisor
        await First(receiver, Timer(budget * PERIOD_NS, "ns"))
        finished = answers.complete == expected and len(out) % 4 == 0
        sender.cancel()
        receiver.cancel()
        words_out = [int.from_bytes(out[i:i + 4], "little") for i in range(0, len(out) - 3, 4)]
        results.append({"out": words_out, "finished": finished,
                        "cycles": round((get_sim_time("ns") - start) / PERIOD_NS)})
    with open(os.environ["PIM_RESULTS"], "w") as f:
        json.dump({"results": results}, f)
