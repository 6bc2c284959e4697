"""A stand-in for a board platform in simulation: the one object both the Verilog of the board
top (:func:`pim_macro.sw.runtime.rtl.verilog_for`, for Icarus and Verilator) and Amaranth's
simulator (tb/tests/test_board_top.py) elaborate :class:`pim_macro.hw.board.BoardTop` with.

It answers what ``BoardTop`` asks of a platform: a clock rate (``divisor`` clock cycles per UART
bit at :data:`pim_macro.hw.board.BAUD`), the pins ``uart`` 0 (``rx``, ``tx``), ``button`` 0 and
``leds`` LEDs, and the :class:`pim_macro.hw.fabric.Fabric` the macro is mapped onto
(``pim_fabric``, read by :func:`pim_macro.hw.fabric.fabric_for`).
"""

from types import SimpleNamespace

from amaranth.build import ResourceError
from amaranth.hdl import IOPort
from amaranth.lib import io

from pim_macro.hw.board import BAUD
from pim_macro.hw.fabric import PORTABLE


__all__ = ["SimPlatform", "PORT_KINDS"]


#: How the pins are made: ``"verilog"``, top-level ports of the converted design named ``rx``,
#: ``tx``, ``button``, ``led0``, ...; ``"amaranth"``, :class:`amaranth.lib.io.SimulationPort`
#: s that Amaranth-simulator testbenches drive and sample (``platform.uart.rx.i``, ...).
PORT_KINDS = ("verilog", "amaranth")


class SimPlatform:
    """What :class:`pim_macro.hw.board.BoardTop` needs of a platform, for simulation.

    ``divisor`` is the clock cycles per UART bit (the board top derives it back from
    ``default_clk_frequency``); ``ports`` is one of :data:`PORT_KINDS`; ``fabric`` a
    :class:`pim_macro.hw.fabric.Fabric`. The pins are made once, so testbenches reach them as
    ``uart.rx``, ``uart.tx``, ``button`` and ``leds[n]``. A request for anything else raises
    :class:`amaranth.build.ResourceError`, as a real platform does (the board top stops looking
    for LEDs there)."""

    def __init__(self, divisor, *, ports="amaranth", leds=2, fabric=PORTABLE):
        if ports not in PORT_KINDS:
            raise ValueError(f"ports must be one of {', '.join(PORT_KINDS)}, not {ports!r}")
        self.default_clk_frequency = BAUD * divisor
        self.pim_fabric = fabric

        def pin(direction, name):
            if ports == "verilog":
                return io.SingleEndedPort(IOPort(1, name=name))
            return io.SimulationPort(direction, 1, name=name)

        self.uart = SimpleNamespace(rx=pin("i", "rx"), tx=pin("o", "tx"))
        self.button = pin("i", "button")
        self.leds = [pin("o", f"led{number}") for number in range(leds)]

    def request(self, name, number=0, *, dir):
        assert dir == "-", "the board top uses lib.io buffers"
        if (name, number) == ("uart", 0):
            return self.uart
        if (name, number) == ("button", 0):
            return self.button
        if name == "led" and number < len(self.leds):
            return self.leds[number]
        raise ResourceError(f"no {name} {number} in simulation")
