"""cocotb server of a persistent RTL session: one simulator process, many requests.

Loaded inside the simulator by :class:`pim_macro.sw.runtime.rtl.RTLSession` on the
``pim_session`` top (:mod:`pim_macro.tb.harness.session_top`). It starts the clock (in the
simulator's own C code: no Python per cycle), resets the macro once, says ``ready`` and then
serves run messages (:mod:`pim_macro.tb.harness.session_link`) until told to stop or until the
host's end of the link closes. For each run it sets the wrapper's inputs, pulses ``start`` for
one cycle and sleeps until ``done`` rises: the wrapper plays the whole request by itself.
While the server waits for the next message the simulator does not advance, so the macro sees
no cycles between requests beyond the one ``start`` cycle.
"""

import os
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from pim_macro.tb.harness.player import TB
from pim_macro.tb.harness.session_link import (
    FD_ENV, RUN_INPUTS, RUN_OUTPUTS, LinkClosed, receive, send,
)


#: Reset cycles at the start of a session.
RESET_CYCLES = 2


@cocotb.test()
async def serve(dut):
    """Serve the host's run messages until it stops the session."""
    sock = socket.socket(fileno=int(os.environ[FD_ENV]))
    # The per-word player's period; its Python clock would cost a wakeup per edge.
    Clock(dut.clk, TB.PERIOD_NS, unit="ns", impl="gpi").start()
    dut.start.value = 0
    for name in RUN_INPUTS:
        getattr(dut, name).value = 0
    dut.rst.value = 1
    for _ in range(RESET_CYCLES):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    send(sock, {"op": "ready"})
    while True:
        try:
            message = receive(sock)
        except LinkClosed:
            return                      # the host went away: end the simulation
        if message.get("op") != "run":
            return
        for name in RUN_INPUTS:
            getattr(dut, name).value = int(message[name])
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.done)
        await ReadOnly()
        answer = {"op": "done"}
        answer.update({name: int(getattr(dut, name).value) for name in RUN_OUTPUTS})
        await FallingEdge(dut.clk)
        send(sock, answer)

