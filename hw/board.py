"""Board tops: the macro behind a board's USB UART, for iCEBreaker (iCE40 UP5K) and ULX3S (ECP5).

A :class:`Board` names an amaranth-boards platform, the :class:`pim_macro.hw.fabric.Fabric` the
macro is mapped onto there, the timing target of its report and the macro configurations built for
it. :class:`BoardTop` is what runs on the board: a :class:`pim_macro.hw.uart_bridge.UARTBridge` on
the platform's UART at :data:`BAUD`, clocked by the board oscillator or by the FPGA's PLL
(:mod:`pim_macro.hw.pll`) at a frequency asked for, with the bridge's sticky ``overrun`` and
``framing_error`` flags on LEDs 0 and 1, a heartbeat on the last LED (boards with more than two),
and button 0 as the macro's reset.
"""

import math
from dataclasses import dataclass, field

from amaranth import *
from amaranth.build import ResourceError
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from .fabric import Fabric, ICE40_DUAL, ICE40_SPRAM, LOGIC_REQUANT
from .isa import ARCHES, MacroConfig
from .pll import PLLDomain, pll_for
from .uart import check_divisor
from .uart_bridge import RX_FIFO_BYTES, UARTBridge, check_bridge_args


__all__ = ["BAUD", "BAUD_TOLERANCE", "HEARTBEAT_HZ", "Board", "BOARDS", "BoardTop",
           "uart_divisor", "heartbeat_bits"]


#: Line rate of every board's UART (8N1). 115200 is what every USB UART and terminal offers;
#: a command stream's words then arrive every 347 us, so the macro always keeps up.
BAUD = 115_200

#: The largest relative error of the board's bit time against :data:`BAUD` that a board top
#: accepts. The receiver (:class:`pim_macro.hw.uart.UARTRx`) samples the stop bit 9.5 bit times
#: after the start edge it sees up to 3 clock cycles late (two synchronizer flip-flops and the
#: edge), so the two ends' bit times may differ by (0.5 - 3 / divisor) / 9.5, 4.9 % at a divisor
#: of 100 or more; half of that is left to the host's UART.
BAUD_TOLERANCE = 0.02

#: The heartbeat LED's blink rate, roughly (a power-of-two division of the clock).
HEARTBEAT_HZ = 1.5


def _check_baud(baud):
    if isinstance(baud, bool) or not isinstance(baud, (int, float)) \
            or not math.isfinite(baud) or baud <= 0:
        raise ValueError(f"baud must be a positive number, not {baud!r}")


def uart_divisor(clock_hz, baud=BAUD):
    """Clock cycles per UART bit at ``baud`` from a ``clock_hz`` clock: the nearest integer.
    Raises ``ValueError`` when it is below 4 (:func:`pim_macro.hw.uart.check_divisor`) or the
    bit time it gives is more than :data:`BAUD_TOLERANCE` off ``baud``, or ``baud`` is not a
    positive number."""
    _check_baud(baud)
    divisor = round(clock_hz / baud)
    if divisor < 4:
        raise ValueError(f"a {clock_hz / 1e6:g} MHz clock is too slow for {baud} baud "
                         f"(divisor {divisor}, at least 4 needed)")
    check_divisor(divisor)
    error = abs(clock_hz / divisor - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"{baud} baud from a {clock_hz / 1e6:g} MHz clock (divisor {divisor}) "
                         f"is {100 * error:.1f} % off, more than {100 * BAUD_TOLERANCE:g} %")
    return divisor


def heartbeat_bits(clock_hz):
    """Width of the heartbeat counter whose top bit blinks at about :data:`HEARTBEAT_HZ` from a
    ``clock_hz`` clock (within a factor of 1.42 either way): 23 bits at 12 MHz, 1.43 Hz."""
    return max(1, round(math.log2(clock_hz / HEARTBEAT_HZ)))


@dataclass(frozen=True)
class Board:
    """A board the macro is built for.

    ``configs`` maps a short name to a :class:`MacroConfig`; ``default`` is the one built
    unless another is asked for and ``small`` the one the test suite places and routes.
    ``target_mhz`` is the clock the first place-and-route is asked to meet (the report's Fmax
    says what it reached); the bitstream then runs from the FPGA's PLL at a clock chosen below
    that Fmax (:mod:`pim_macro.sw.fpga.synth`). ``fabrics`` maps a configuration name to the
    :class:`Fabric` it is built on when that is not the board's ``fabric`` (:meth:`fabric_of`),
    e.g. one whose weights are in SPRAM.
    """
    name: str
    title: str
    platform_module: str
    platform_class: str
    fabric: Fabric
    target_mhz: float
    configs: dict = field(default_factory=dict)
    default: str = ""
    small: str = ""
    constraints_suffix: str = ""
    notes: str = ""
    fabrics: dict = field(default_factory=dict)

    def fabric_of(self, config_name=None):
        """The :class:`Fabric` configuration ``config_name`` (default: :attr:`default`) is
        built on."""
        return self.fabrics.get(config_name or self.default, self.fabric)

    def platform(self, config_name=None):
        """A fresh platform instance that carries the fabric of configuration ``config_name``
        (``pim_fabric``; default: :attr:`default`'s)."""
        import importlib
        module = importlib.import_module(self.platform_module)
        base = getattr(module, self.platform_class)
        cls = type(f"PIM{base.__name__}", (base,), {"pim_fabric": self.fabric_of(config_name)})
        return cls()

    def config(self, name=None):
        name = name or self.default
        if name not in self.configs:
            raise ValueError(f"{self.name} has no configuration {name!r}; it has "
                             f"{', '.join(self.configs)}")
        return self.configs[name]


BOARDS = {
    "icebreaker": Board(
        name="icebreaker", title="iCEBreaker (iCE40 UP5K-SG48)",
        platform_module="amaranth_boards.icebreaker", platform_class="ICEBreakerPlatform",
        # 8 SB_MAC16: four carry eight lanes in dual 8x8 mode, four the requantizer's two 32x8
        # partial products (its 32x31 multiply in two passes, hw/fabric.py).
        fabric=ICE40_DUAL, target_mhz=60.0,
        configs={
            # Both architectures fit: 4 lanes (README, FPGA builds, for the cells each takes).
            "l4": MacroConfig(lanes=4, depth=512, act_depth=1024, bias_depth=64,
                              requantizers=1, bus_bits=16),
            # 8 lanes: at the edge of the 5280 logic cells (README, FPGA builds, for what
            # fits: the registered dispatch decision took some 200 cells back).
            "l8": MacroConfig(lanes=8, depth=256, act_depth=1024, bias_depth=64,
                              requantizers=1, bus_bits=32),
            # The weights in the four SB_SPRAM256KA (ICE40_SPRAM): two sub-arrays of 4 lanes,
            # 8 int8 weights (64 bits) a row, 16384 rows, 128 KB, where MLPerf Tiny's ResNet-8
            # (77 KB) stays resident (make spram). 4 lanes x R = 2 rather than 8 x 1: fewer
            # accumulators and output lanes. Single seed, logic cells of 5280: PIM 5001,
            # baseline 5264 with the one-cycle dispatch (8 lanes x 1: 5344 and 5603); 5525 and
            # 5788 with the dispatch decided a cycle ahead (0b37eb5): the area work must win
            # back 245 and 508.
            "spram": MacroConfig(lanes=4, rows_per_cycle=2, depth=16384, act_depth=1024,
                                 bias_depth=64, requantizers=1, bus_bits=32),
        },
        fabrics={"spram": ICE40_SPRAM},
        default="l4", small="l4", constraints_suffix="pcf",
        notes="clock: PLL from the 12 MHz oscillator; LEDs: red = rx overrun, green = framing error"),
    "ulx3s": Board(
        name="ulx3s", title="ULX3S (ECP5 LFE5U-25F-6BG381)",
        platform_module="amaranth_boards.ulx3s", platform_class="ULX3S_25F_Platform",
        # 28 MULT18X18D, one per lane; the requantizers' multiplies in logic.
        fabric=LOGIC_REQUANT, target_mhz=100.0,
        configs={
            "l28": MacroConfig(lanes=28, depth=512, act_depth=2048, bias_depth=256,
                               requantizers=2, bus_bits=32),
            # Small, for the test suite; 3 words per row, so a constant multiply that synthesis
            # would put on a DSP shows up in the DSP count.
            "l12": MacroConfig(lanes=12, depth=256, act_depth=1024, bias_depth=64,
                               requantizers=1, bus_bits=32),
        },
        default="l28", small="l12", constraints_suffix="lpf",
        notes="clock: PLL from the 25 MHz oscillator; LEDs: 0 = rx overrun, 1 = framing error, 7 = heartbeat"),
}


class BoardTop(Elaboratable):
    """The macro (``arch``, ``config``) behind the platform's UART 0 at ``baud``, with a
    receive FIFO of ``rx_fifo_bytes``.

    ``clock_mhz=None`` clocks everything from the platform's default clock (the board
    oscillator, or a simulation's clock); a frequency in MHz puts the FPGA's PLL between the
    oscillator and the design (:class:`pim_macro.hw.pll.PLLDomain`: the highest frequency the
    PLL reaches not above ``clock_mhz``, the domain held in reset until the PLL locks). The
    macro, the UART and the LEDs all run in that one domain. The UART divisor is the actual
    clock over ``baud``, rounded (:func:`uart_divisor`: ``ValueError`` at elaboration when the
    bit time would be more than :data:`BAUD_TOLERANCE` off, or the platform has no PLL).
    Nothing else on the board is used.
    """

    def __new__(cls, config: MacroConfig, *, arch="pim", baud=BAUD,
                rx_fifo_bytes=RX_FIFO_BYTES, clock_mhz=None):
        # Checked before the object exists, so a rejected top leaves no unused object behind.
        # The divisor needs the platform's clock: it is checked at elaboration.
        check_bridge_args(config, arch=arch, rx_fifo_depth=rx_fifo_bytes)
        _check_baud(baud)
        if clock_mhz is not None and (isinstance(clock_mhz, bool)
                                      or not isinstance(clock_mhz, (int, float))
                                      or not math.isfinite(clock_mhz) or not clock_mhz > 0):
            raise ValueError(f"clock_mhz must be a finite positive number of MHz or None, not "
                             f"{clock_mhz!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, config: MacroConfig, *, arch="pim", baud=BAUD,
                 rx_fifo_bytes=RX_FIFO_BYTES, clock_mhz=None):
        self.config, self.arch, self.baud = config, arch, baud
        self.rx_fifo_bytes, self.clock_mhz = rx_fifo_bytes, clock_mhz

    def pll_setting(self, platform):
        """The PLL setting (:func:`pim_macro.hw.pll.pll_for`) this top uses on ``platform``, or
        None (``clock_mhz=None``)."""
        return None if self.clock_mhz is None else pll_for(platform, self.clock_mhz)

    def clock_hz(self, platform):
        """The frequency the design runs at on ``platform``: the PLL's actual output, or the
        platform's default clock."""
        setting = self.pll_setting(platform)
        return platform.default_clk_frequency if setting is None else setting.f_out_mhz * 1e6

    def uart_divisor(self, platform):
        """Clock cycles per UART bit on ``platform`` (:func:`uart_divisor` of
        :meth:`clock_hz`)."""
        return uart_divisor(self.clock_hz(platform), self.baud)

    def elaborate(self, platform):
        # What can be refused is checked before anything is built (no unused object is left).
        setting = self.pll_setting(platform)
        clock_hz = self.clock_hz(platform)
        divisor = uart_divisor(clock_hz, self.baud)
        m = Module()
        bridge = UARTBridge(self.config, arch=self.arch, divisor=divisor,
                            rx_fifo_depth=self.rx_fifo_bytes)
        # Button 0 resets the macro and the UART (the host's way out of a half-sent program).
        # Two flip-flops bring the button into the clock domain.
        m.submodules.button = button = io.Buffer("i", platform.request("button", 0, dir="-"))
        pressed = Signal()
        m.submodules.button_sync = FFSynchronizer(button.i, pressed, reset_less=False)
        m.submodules.bridge = ResetInserter(pressed)(bridge)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx.i), tx.o.eq(bridge.tx)]

        leds = []
        for index in range(8):
            try:
                port = platform.request("led", index, dir="-")
            except ResourceError:   # the board has fewer LEDs
                break
            m.submodules[f"led{index}"] = led = io.Buffer("o", port)
            leds.append(led)
        flags = [bridge.overrun, bridge.framing_error]
        for led, flag in zip(leds, flags):
            m.d.comb += led.o.eq(flag)
        if len(leds) > len(flags):
            beat = Signal(heartbeat_bits(clock_hz))
            m.d.sync += beat.eq(beat + 1)
            m.d.comb += leds[-1].o.eq(beat[-1])
        if setting is not None:
            # The domain is this module's; the PLL drives its clock and reset. Added last, so
            # that the oscillator's pin is requested after the others, as the platform does
            # without a PLL (the pin files then read the same).
            m.domains.sync = ClockDomain()
            m.submodules.pll = PLLDomain(setting)
        return m
