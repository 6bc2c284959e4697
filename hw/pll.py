"""PLL clocking of the board tops: parameter solvers and the primitives that make a clock domain.

:func:`ice40_pll` and :func:`ecp5_pll` choose a PLL's dividers for an oscillator and an asked
output frequency; :class:`PLLDomain` is the Elaboratable that puts the PLL primitive on the
platform (iCE40 ``SB_PLL40_PAD``, ECP5 ``EHXPLLL``) and makes a clock domain of its output, held
in reset until the PLL reports lock.

Both solvers search the same settings as the open tools whose output people check their
bitstreams against, and apply the same limits; they differ from those tools in one rule: they
return the highest frequency that is NOT above the one asked (the tools return the closest,
which may be faster: a clock chosen below a timing report's Fmax must not come out above it).
When the asked frequency is reachable exactly, the result is the tool's own.

* iCE40 (``icepll`` of Project IceStorm, ``icepll/icepll.cc``, which follows Lattice's iCE40
  sysCLOCK PLL Design and Usage Guide, TN1251): SIMPLE feedback,
  ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, DIVR 0..15, DIVF 0..127, DIVQ 1..6,
  input 10..133 MHz, phase detector ``f_in / (DIVR + 1)`` 10..133 MHz, VCO
  ``f_pfd * (DIVF + 1)`` 533..1066 MHz, output 16..275 MHz; FILTER_RANGE from the phase detector
  frequency (1 below 17 MHz, 2 below 26, 3 below 44, 4 below 66, 5 below 101, else 6). Ties
  (equal frequencies) go to the first setting in icepll's loop order (DIVR, DIVF, DIVQ rising).
* ECP5 (``ecppll`` of Project Trellis, ``libtrellis/tools/ecppll.cpp``, primary output CLKOP fed
  back): ``f_pfd = f_in / CLKI_DIV``, ``f_out = f_pfd * CLKFB_DIV``,
  ``f_vco = f_out * CLKOP_DIV``; CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128, input
  8..400 MHz, phase detector 3.125..400 MHz, VCO 400..800 MHz, output 10..400 MHz. Among
  settings of equal frequency the VCO closest to 600 MHz wins (the first in ecppll's loop order
  on a tie), and ``CLKOP_CPHASE`` is ecppll's half-period shift, computed in the same single-
  and double-precision steps so that it matches ecppll digit for digit. (The search itself is
  exact here; ecppll compares single-precision errors, so for an output that is not a round
  number it may keep another CLKOP_DIV of the same output, i.e. another valid VCO.)
"""

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer


__all__ = ["ICE40PLL", "ECP5PLL", "ice40_pll", "ecp5_pll", "pll_for", "PLLDomain",
           "ICE40_LIMITS", "ECP5_LIMITS", "POR_SECONDS"]


#: iCE40 PLL limits in MHz (icepll.cc): input, phase detector, VCO, output.
ICE40_LIMITS = {"in": (10.0, 133.0), "pfd": (10.0, 133.0), "vco": (533.0, 1066.0),
                "out": (16.0, 275.0)}
#: ECP5 PLL limits in MHz (ecppll.cpp): input, phase detector, VCO, output.
ECP5_LIMITS = {"in": (8.0, 400.0), "pfd": (3.125, 400.0), "vco": (400.0, 800.0),
               "out": (10.0, 400.0)}
#: After lock, an iCE40 domain stays in reset this long more: its block RAMs read as zeroes for
#: about 3 us after configuration (Amaranth's iCE40 platform waits 15 us for the same reason, in
#: ``create_missing_domain``; icestorm issue 76).
POR_SECONDS = 15e-6


def _frequency(what, value):
    """``value`` as a frequency in MHz: a finite, positive real number (not a string or a
    bool), else ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the {what} frequency must be a finite positive number of MHz, "
                         f"not {value!r}")
    return value


def _mhz(value):
    """An exact rational of a frequency in MHz (a float such as 12.0 or 25e6 / 1e6)."""
    return Fraction(value).limit_denominator(10**9)


def _ceiling(value):
    """The asked output as the solvers' upper bound: a PLL's own output given back as a float
    (``f_out_mhz``) must reach that same output, so a few ulps of float rounding are allowed
    above the float asked (``Fraction(value)`` is that float exactly), and no more."""
    return Fraction(math.nextafter(math.nextafter(float(value), math.inf), math.inf))


def _check_range(what, value, limits, family):
    low, high = limits
    if not low <= value <= high:
        raise ValueError(f"{family} PLL {what} frequency {float(value):g} MHz is outside "
                         f"{low:g}..{high:g} MHz")


@dataclass(frozen=True)
class ICE40PLL:
    """An iCE40 ``SB_PLL40_*`` setting in SIMPLE feedback (see the module text)."""
    f_in_mhz: float
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd_mhz(self):
        return self.f_in_mhz / (self.divr + 1)

    @property
    def f_vco_mhz(self):
        return self.f_pfd_mhz * (self.divf + 1)

    @property
    def f_out_mhz(self):
        """``f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``."""
        return float(_mhz(self.f_in_mhz) * (self.divf + 1) / ((self.divr + 1) * 2**self.divq))

    @property
    def filter_range(self):
        pfd = self.f_pfd_mhz
        return next(code for code, below in ((1, 17), (2, 26), (3, 44), (4, 66), (5, 101),
                                             (6, math.inf)) if pfd < below)


@dataclass(frozen=True)
class ECP5PLL:
    """An ECP5 ``EHXPLLL`` setting, CLKOP fed back (see the module text)."""
    f_in_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd_mhz(self):
        return self.f_in_mhz / self.clki_div

    @property
    def f_out_mhz(self):
        """``f_in * CLKFB_DIV / CLKI_DIV``."""
        return float(_mhz(self.f_in_mhz) * self.clkfb_div / self.clki_div)

    @property
    def f_vco_mhz(self):
        return self.f_out_mhz * self.clkop_div

    @property
    def clkop_cphase(self):
        """ecppll's CLKOP_CPHASE: half an output period in VCO cycles, truncated, computed in
        ecppll's own mix of ``float`` and ``double`` (so 100 MHz from 25 gives 2, not 3)."""
        f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
        pfd = f32(f32(self.f_in_mhz) / self.clki_div)
        vco = f32(f32(pfd * self.clkfb_div) * self.clkop_div)
        out = f32(vco / self.clkop_div)
        ns_phase = f32(1 / (out * 1e6) * 0.5)
        return int(ns_phase * (vco * 1e6))


def _inputs(f_in_mhz, f_out_mhz, limits, family):
    """Both solvers' checks of their arguments: ``(f_in, asked)``, the reference as an exact
    rational and the highest output allowed, or ``ValueError``."""
    _frequency("input", f_in_mhz), _frequency("output", f_out_mhz)
    _check_range("input", f_in_mhz, limits["in"], family)
    return _mhz(f_in_mhz), _ceiling(f_out_mhz)


def ice40_pll(f_in_mhz, f_out_mhz):
    """The iCE40 PLL setting whose output is the highest not above ``f_out_mhz`` MHz, from an
    ``f_in_mhz`` MHz reference: an :class:`ICE40PLL`. Raises ``ValueError`` when the input is
    outside the PLL's range or no setting reaches an output between 16 MHz and ``f_out_mhz``."""
    lim = ICE40_LIMITS
    f_in, asked = _inputs(f_in_mhz, f_out_mhz, lim, "iCE40")
    best, best_out = None, None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not lim["pfd"][0] <= pfd <= lim["pfd"][1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not lim["vco"][0] <= vco <= lim["vco"][1]:
                continue
            for divq in range(1, 7):
                out = vco / 2**divq
                if lim["out"][0] <= out <= min(asked, lim["out"][1]) and (
                        best is None or out > best_out):
                    best, best_out = (divr, divf, divq), out
    if best is None:
        raise ValueError(f"no iCE40 PLL setting gives {lim['out'][0]:g} to {f_out_mhz:g} MHz "
                         f"from {float(f_in):g} MHz")
    return ICE40PLL(float(f_in), *best)


def ecp5_pll(f_in_mhz, f_out_mhz):
    """The ECP5 PLL setting whose output is the highest not above ``f_out_mhz`` MHz, from an
    ``f_in_mhz`` MHz reference: an :class:`ECP5PLL`. Raises ``ValueError`` when the input is
    outside the PLL's range or no setting reaches an output between 10 MHz and ``f_out_mhz``."""
    lim = ECP5_LIMITS
    f_in, asked = _inputs(f_in_mhz, f_out_mhz, lim, "ECP5")
    best, best_key = None, None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not lim["pfd"][0] <= pfd <= lim["pfd"][1]:
            continue
        # From the highest feedback divider whose output is not above the one asked down: the
        # first with a VCO in range is this CLKI_DIV's best (a lower output never wins).
        for clkfb_div in range(min(80, math.floor(min(asked, lim["out"][1]) / pfd)), 0, -1):
            out = pfd * clkfb_div
            if out < lim["out"][0]:
                break
            # Every CLKOP_DIV gives this output; ecppll keeps the first whose VCO is closest
            # to 600 MHz.
            low = max(1, math.ceil(lim["vco"][0] / out))
            high = min(128, math.floor(lim["vco"][1] / out))
            if low > high:
                continue
            near = math.floor(600 / out)
            divs = [d for d in (near, near + 1) if low <= d <= high] or [low, high]
            clkop_div = min(divs, key=lambda d: abs(out * d - 600))   # the smaller on a tie
            key = (out, -abs(out * clkop_div - 600))
            if best is None or key > best_key:     # strictly better, as ecppll's comparison
                best, best_key = (clki_div, clkfb_div, clkop_div), key
            break
    if best is None:
        raise ValueError(f"no ECP5 PLL setting gives {lim['out'][0]:g} to {f_out_mhz:g} MHz "
                         f"from {float(f_in):g} MHz")
    return ECP5PLL(float(f_in), *best)


def _family(platform):
    """``"ice40"``, ``"ecp5"`` or None (a platform with no PLL this module drives)."""
    family = str(getattr(platform, "family", "")).lower()
    return family if family in ("ice40", "ecp5") else None


def pll_for(platform, f_out_mhz):
    """The PLL setting of ``platform``'s family (iCE40 or ECP5) for its default clock and an
    asked ``f_out_mhz``: an :class:`ICE40PLL` or :class:`ECP5PLL`. Raises ``ValueError`` for a
    platform of another family (a simulation stand-in has no PLL) or an unreachable output."""
    family = _family(platform)
    if family is None:
        raise ValueError(f"no PLL for platform {type(platform).__name__}: only iCE40 and ECP5 "
                         f"platforms have one here")
    f_in = platform.default_clk_frequency / 1e6
    return ice40_pll(f_in, f_out_mhz) if family == "ice40" else ecp5_pll(f_in, f_out_mhz)


class PLLDomain(Elaboratable):
    """Drives the clock and reset of the domain ``domain`` at ``setting.f_out_mhz``, from the
    platform's default clock through the platform's PLL (``setting``: an :class:`ICE40PLL` or
    :class:`ECP5PLL`, e.g. from :func:`pll_for`). The domain itself is defined by a parent
    (``m.domains.sync = ClockDomain()``: Amaranth 0.6 wants domains defined where they are used).

    The domain is in reset until the PLL reports lock: ``locked`` is brought into the domain by
    two flip-flops, and on the iCE40 the reset lasts :data:`POR_SECONDS` more (its block RAMs'
    start-up): the domain's first active edge is ``por_cycles + 4`` cycles after ``locked``
    rises. A loss of lock resets the domain again three cycles later.

    With ``platform=None`` (Amaranth's simulator) there is no primitive: the domain's clock is
    the simulator's (``sim.add_clock(..., domain=domain)``) and ``locked`` is an input the
    testbench drives, so the reset sequencing itself can be simulated.

    The iCE40 PLL is ``SB_PLL40_PAD``: the iCEBreaker's 12 MHz oscillator is on pin 35, the
    UP5K's PLL pad (IOT_46b_G0); its output drives a global network (``PLLOUTGLOBAL``).
    The ECP5 ``EHXPLLL`` takes the oscillator through an input buffer; its parameters and
    attributes are those ``ecppll`` writes.
    """

    def __new__(cls, setting, **kwargs):
        # Checked before the object exists, so a rejected one leaves no unused object behind.
        if not isinstance(setting, (ICE40PLL, ECP5PLL)):
            raise TypeError(f"setting must be an ICE40PLL or ECP5PLL, not {setting!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, setting, *, domain="sync", por_seconds=None):
        self.setting, self.domain = setting, domain
        if por_seconds is None:
            por_seconds = POR_SECONDS if isinstance(setting, ICE40PLL) else 0
        #: Cycles of the output clock the domain stays in reset after lock is seen.
        self.por_cycles = math.ceil(por_seconds * setting.f_out_mhz * 1e6)
        self.locked = Signal()

    @property
    def f_out_hz(self):
        return self.setting.f_out_mhz * 1e6

    def elaborate(self, platform):
        if platform is not None:
            family = _family(platform)
            expected = "ice40" if isinstance(self.setting, ICE40PLL) else "ecp5"
            if family != expected:
                raise ValueError(f"an {expected} PLL setting on platform "
                                 f"{type(platform).__name__}")
            f_in = platform.default_clk_frequency / 1e6
            if abs(f_in - self.setting.f_in_mhz) > 1e-9 * f_in:
                raise ValueError(f"the PLL setting is for {self.setting.f_in_mhz:g} MHz, the "
                                 f"platform's clock is {f_in:g} MHz")
        m = Module()
        clk = Signal()
        if platform is not None:
            clk_port = platform.request(platform.default_clk, dir="-")
            s = self.setting
            if family == "ice40":
                m.submodules.pll = Instance(
                    "SB_PLL40_PAD",
                    p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
                    p_DIVR=s.divr, p_DIVF=s.divf, p_DIVQ=s.divq, p_FILTER_RANGE=s.filter_range,
                    i_PACKAGEPIN=clk_port.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                    o_PLLOUTGLOBAL=clk, o_LOCK=self.locked)
            else:
                m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
                m.submodules.pll = Instance(
                    "EHXPLLL",
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    a_FREQUENCY_PIN_CLKI=f"{s.f_in_mhz:g}",
                    a_FREQUENCY_PIN_CLKOP=f"{s.f_out_mhz:g}",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                    p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                    p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                    p_CLKI_DIV=s.clki_div, p_CLKFB_DIV=s.clkfb_div, p_CLKOP_DIV=s.clkop_div,
                    p_CLKOP_CPHASE=s.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                    i_CLKI=clk_buf.i, i_CLKFB=clk, o_CLKOP=clk, o_LOCK=self.locked,
                    i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0),
                    i_PHASESEL1=Const(0), i_PHASEDIR=Const(0), i_PHASESTEP=Const(0),
                    i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))
            m.d.comb += ClockSignal(self.domain).eq(clk)
        # The reset logic runs in a reset-less domain on the same clock: it is what makes the
        # reset, so it cannot be reset by it.
        por = f"{self.domain}_por"
        m.domains += ClockDomain(por, reset_less=True, local=True)
        m.d.comb += ClockSignal(por).eq(ClockSignal(self.domain))
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.locked, locked, o_domain=por)
        timer = Signal(range(self.por_cycles + 1))
        ready = Signal()
        with m.If(~locked):
            m.d[por] += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == self.por_cycles):
            m.d[por] += ready.eq(1)
        with m.Else():
            m.d[por] += timer.eq(timer + 1)
        m.d.comb += ResetSignal(self.domain).eq(~ready)
        return m
