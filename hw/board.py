"""Board tops: the macro behind a board's USB UART, for iCEBreaker (iCE40 UP5K) and ULX3S (ECP5).

A :class:`Board` names an amaranth-boards platform, the :class:`pim_macro.hw.fabric.Fabric` the
macro is mapped onto there, the timing target of its report and the macro configurations built for
it. :class:`BoardTop` is what runs on the board: a :class:`pim_macro.hw.uart_bridge.UARTBridge` on
the platform's UART at :data:`BAUD`, in the board oscillator's clock domain, with the bridge's
sticky ``overrun`` and ``framing_error`` flags on LEDs 0 and 1, a heartbeat on the last LED
(boards with more than two), and button 0 as the macro's reset.
"""

from dataclasses import dataclass, field

from amaranth import *
from amaranth.build import ResourceError
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from .fabric import Fabric, ICE40_DUAL, ICE40_SPRAM, LOGIC_REQUANT
from .isa import ARCHES, MacroConfig
from .uart_bridge import RX_FIFO_BYTES, UARTBridge, check_bridge_args


__all__ = ["BAUD", "Board", "BOARDS", "BoardTop"]


#: Line rate of every board's UART (8N1). 115200 is what every USB UART and terminal offers;
#: a command stream's words then arrive every 347 us, so the macro always keeps up.
BAUD = 115_200


@dataclass(frozen=True)
class Board:
    """A board the macro is built for.

    ``configs`` maps a short name to a :class:`MacroConfig`; ``default`` is the one built
    unless another is asked for and ``small`` the one the test suite places and routes.
    ``target_mhz`` is the clock the place-and-route is asked to meet (the report's Fmax
    says what it reached); the bitstream itself runs from the board oscillator. ``fabrics``
    maps a configuration name to the :class:`Fabric` it is built on when that is not the
    board's ``fabric`` (:meth:`fabric_of`), e.g. one whose weights are in SPRAM.
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
            # Both architectures fit: 4 lanes (95 and 99 % of the logic cells with ISA v4's
            # requantizer; 90 and 95 % before).
            "l4": MacroConfig(lanes=4, depth=512, act_depth=1024, bias_depth=64,
                              requantizers=1, bus_bits=16),
            # The target, 8 lanes: the PIM macro took all but one of the 5280 logic cells with
            # ISA v3's 32x16 requantizer; with v4's TFLite requantizer it needs 5535 and does not
            # fit, nor does the baseline (README, FPGA builds).
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
        notes="clock 12 MHz oscillator; LEDs: red = rx overrun, green = framing error"),
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
        notes="clock 25 MHz oscillator; LEDs: 0 = rx overrun, 1 = framing error, 7 = heartbeat"),
}


class BoardTop(Elaboratable):
    """The macro (``arch``, ``config``) behind the platform's UART 0 at ``baud``, with a
    receive FIFO of ``rx_fifo_bytes``.

    The UART divisor is the platform's default clock over ``baud``, rounded; it must be at
    least 4 (:class:`pim_macro.hw.uart.UARTRx`). Nothing else on the board is used.
    """

    def __new__(cls, config: MacroConfig, *, arch="pim", baud=BAUD,
                rx_fifo_bytes=RX_FIFO_BYTES):
        # Checked before the object exists, so a rejected top leaves no unused object behind.
        # The divisor needs the platform's clock: it is checked at elaboration.
        check_bridge_args(config, arch=arch, rx_fifo_depth=rx_fifo_bytes)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, config: MacroConfig, *, arch="pim", baud=BAUD,
                 rx_fifo_bytes=RX_FIFO_BYTES):
        self.config, self.arch, self.baud = config, arch, baud
        self.rx_fifo_bytes = rx_fifo_bytes

    def elaborate(self, platform):
        m = Module()
        divisor = round(platform.default_clk_frequency / self.baud)
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
            # Heartbeat: about 1.5 Hz from any oscillator between 12 and 100 MHz.
            beat = Signal(max(1, int(platform.default_clk_frequency).bit_length() - 2))
            m.d.sync += beat.eq(beat + 1)
            m.d.comb += leds[-1].o.eq(beat[-1])
        return m
