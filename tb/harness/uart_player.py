"""cocotb testbench that plays command streams into the UART bridge (or the whole board top)
over its serial line.

Loaded by :func:`pim_macro.sw.runtime.rtl.run_rtl` with ``top="uart"`` or ``top="board"``. For
each job, after a reset, the words are sent on ``rx`` as 8N1 frames
(:func:`pim_macro.hw.uart.frame_bits`, least significant byte first), ``divisor`` clock cycles per
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

from pim_macro.hw.isa import WORD_BYTES, MacroConfig
from pim_macro.hw.uart import frame_bits
from pim_macro.sw.runtime.asm import AnswerCounter, bytes_to_words, frame_program, words_to_bytes
from pim_macro.tb.harness.uart_sim import FRAME_BITS

PERIOD_NS = 10


async def send(dut, data, divisor):
    """Drive ``data`` (bytes) on ``rx``, one 8N1 frame per byte."""
    for byte in data:
        for bit in frame_bits(byte):
            dut.rx.value = bit
            await Timer(divisor * PERIOD_NS, "ns")


async def receive(dut, divisor, out, answers, expected):
    """Decode frames on ``tx`` into ``out`` (bytes), counting ``answers`` word by word, until
    ``expected`` responses are complete. Every bit is sampled in its middle, and the frame must
    be the 8N1 frame of the byte its data bits give (a whole start bit, a high stop bit)."""
    while answers.complete < expected:
        await FallingEdge(dut.tx)
        await Timer(divisor * PERIOD_NS // 2, "ns")          # the middle of the start bit
        bits = [int(dut.tx.value)]
        for _ in range(FRAME_BITS - 1):
            await Timer(divisor * PERIOD_NS, "ns")
            bits.append(int(dut.tx.value))
        byte = sum(bit << i for i, bit in enumerate(bits[1:-1]))
        assert bits == frame_bits(byte), f"not an 8N1 frame (a low start bit, a high stop " \
                                         f"bit): {bits}"
        out.append(byte)
        if len(out) % WORD_BYTES == 0:
            answers.add(*bytes_to_words(out[-WORD_BYTES:]))


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
        data = words_to_bytes(words)
        sender = cocotb.start_soon(send(dut, data, divisor))
        receiver = cocotb.start_soon(receive(dut, divisor, out, answers, expected))
        budget = job["max_cycles"] + FRAME_BITS * len(data) * divisor
        await First(receiver, Timer(budget * PERIOD_NS, "ns"))
        finished = answers.complete == expected and len(out) % WORD_BYTES == 0
        sender.cancel()
        receiver.cancel()
        results.append({"out": bytes_to_words(out), "finished": finished,
                        "cycles": round((get_sim_time("ns") - start) / PERIOD_NS)})
    with open(os.environ["PIM_RESULTS"], "w") as f:
        json.dump({"results": results}, f)
