"""The PLL clocking of the board tops (hw/pll.py): the solvers against the datasheet formulas,
against outputs of icepll and ecppll published with designs, and against the tools themselves
(yowasp-icepll and yowasp-ecppll, installed with the nextpnr wheels); the reset held until lock,
in Amaranth's simulator. (The board tops with a PLL are elaborated for the real platforms in
test_synth.py.)"""

import bisect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import ClockDomain, Module, Signal
from amaranth.sim import Simulator

from pim_macro.hw.pll import (ECP5_LIMITS, ICE40_LIMITS, ECP5PLL, ICE40PLL, PLLDomain,
                              ecp5_pll, ice40_pll, pll_for)


def _tool(name):
    return str(Path(sys.executable).parent / name)


def _ice40_outputs(f_in):
    """Every output the iCE40 PLL reaches from ``f_in`` MHz in SIMPLE feedback, straight from
    TN1251's formula and limits: sorted (f_out, divr, divf, divq)."""
    lim, found = ICE40_LIMITS, []
    for divr in range(16):
        for divf in range(128):
            for divq in range(1, 7):
                pfd, vco = f_in / (divr + 1), f_in / (divr + 1) * (divf + 1)
                out = f_in * (divf + 1) / ((divr + 1) * 2**divq)
                if (lim["pfd"][0] <= pfd <= lim["pfd"][1] and lim["vco"][0] <= vco <= lim["vco"][1]
                        and lim["out"][0] <= out <= lim["out"][1]):
                    found.append((out, divr, divf, divq))
    return sorted(found)


def _ecp5_outputs(f_in):
    """Every output the ECP5 PLL reaches from ``f_in`` MHz (CLKOP fed back), from ecppll's
    derivation: f_out = f_in / CLKI_DIV * CLKFB_DIV, VCO = f_out * CLKOP_DIV."""
    lim, found = ECP5_LIMITS, set()
    for clki in range(1, 129):
        for fb in range(1, 81):
            out = f_in / clki * fb
            if (lim["pfd"][0] <= f_in / clki <= lim["pfd"][1]
                    and lim["out"][0] <= out <= lim["out"][1]
                    and any(lim["vco"][0] <= out * d <= lim["vco"][1] for d in range(1, 129))):
                found.add(out)
    return sorted(found)


def test_ice40_known_icepll_outputs():
    # `icepll -i 12 -o 48`: DIVR 0, DIVF 63, DIVQ 4, FILTER_RANGE 1 (icepll.cc's analyze(); the
    # iCEBreaker examples' 48 MHz); `icepll -i 12 -o 96`: DIVF 63, DIVQ 3 (apio's rgb_pll notes).
    for f_out, divf, divq in ((48, 63, 4), (96, 63, 3)):
        s = ice40_pll(12, f_out)
        assert (s.divr, s.divf, s.divq, s.filter_range, s.f_out_mhz) == (0, divf, divq, 1, f_out)
        assert s.f_pfd_mhz == 12 and s.f_vco_mhz == 768


def test_ice40_is_the_highest_not_above():
    """Over 16..275 MHz, the setting is the datasheet formula's, within every limit, not above
    the frequency asked, and no setting reaches anything between it and the frequency asked."""
    for f_in in (12, 25):
        outputs = _ice40_outputs(f_in)
        values = [o[0] for o in outputs]
        with pytest.raises(ValueError, match="no iCE40 PLL setting"):
            ice40_pll(f_in, values[0] - 0.01)
        for asked in [values[0] + 2.73 * i for i in range(95)]:
            s = ice40_pll(f_in, asked)
            assert s.f_out_mhz == pytest.approx(f_in * (s.divf + 1) / ((s.divr + 1) * 2**s.divq))
            assert s.f_out_mhz <= asked
            best = values[bisect.bisect_right(values, asked + 1e-9) - 1]
            assert s.f_out_mhz == pytest.approx(best), asked
            assert ICE40_LIMITS["pfd"][0] <= s.f_pfd_mhz <= ICE40_LIMITS["pfd"][1]
            assert ICE40_LIMITS["vco"][0] <= s.f_vco_mhz <= ICE40_LIMITS["vco"][1]
            assert s.filter_range == (1 if s.f_pfd_mhz < 17 else 2 if s.f_pfd_mhz < 26 else 3)


def test_ecp5_known_ecppll_outputs():
    # `ecppll -i 25 -o F` as published for the ULX3S (BrunoLevy/learn-fpga,
    # FemtoRV/RTL/PLL/pll_ulx3s.v): F: (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CLKOP_CPHASE); and
    # `ecppll -i 12 -o 16` (olofk/serv, servant/ecp5_evn_pll.v): 3, 4, 37, 18.
    table = {120: (5, 24, 5, 2), 110: (5, 22, 5, 2), 100: (1, 4, 6, 2), 95: (5, 19, 6, 3),
             90: (5, 18, 7, 3), 85: (5, 17, 7, 3), 80: (5, 16, 7, 3), 75: (1, 3, 8, 4),
             70: (5, 14, 9, 4), 65: (5, 13, 9, 4), 60: (5, 12, 10, 4), 50: (1, 2, 12, 5),
             40: (5, 8, 15, 7)}
    for f_out, expected in table.items():
        s = ecp5_pll(25, f_out)
        assert (s.clki_div, s.clkfb_div, s.clkop_div, s.clkop_cphase) == expected, f_out
        assert s.f_out_mhz == f_out
    s = ecp5_pll(12, 16)
    assert (s.clki_div, s.clkfb_div, s.clkop_div, s.clkop_cphase) == (3, 4, 37, 18)


def test_ecp5_is_the_highest_not_above():
    outputs = _ecp5_outputs(25)
    for asked in [10 + 3.97 * i for i in range(98)]:
        s = ecp5_pll(25, asked)
        assert s.f_out_mhz == pytest.approx(25 * s.clkfb_div / s.clki_div) and s.f_out_mhz <= asked
        assert s.f_out_mhz == pytest.approx(outputs[bisect.bisect_right(outputs, asked + 1e-9) - 1])
        assert ECP5_LIMITS["pfd"][0] <= s.f_pfd_mhz and 400 <= s.f_vco_mhz <= 800


@pytest.mark.parametrize("asked", [19.3, 33.0, 52.7, 61.1, 87.9, 140.0])
def test_ice40_equals_icepll(asked, tmp_path):
    """Asked for the frequency our solver reached, icepll itself gives the same setting."""
    s = ice40_pll(12, asked)
    out = subprocess.run([_tool("yowasp-icepll"), "-i", "12", "-o", f"{s.f_out_mhz:.6f}"],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    got = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out,
                                            flags=re.M)}
    assert got == {"DIVR": s.divr, "DIVF": s.divf, "DIVQ": s.divq,
                   "FILTER_RANGE": s.filter_range}


@pytest.mark.parametrize("asked", [36.6, 72.9, 98.0, 104.1])
def test_ecp5_equals_ecppll(asked, tmp_path):
    """Asked for the frequency our solver reached, ecppll gives the same dividers of the
    input and feedback; its CLKOP_DIV may differ where its single-precision errors tell the
    output dividers apart (104.1 MHz: 5 where 6 puts the VCO nearer 600 MHz), and then our VCO
    is the nearer one."""
    s = ecp5_pll(25, asked)
    subprocess.run([_tool("yowasp-ecppll"), "-i", "25", "-o", f"{s.f_out_mhz:.6f}", "-f", "p.v"],
                   capture_output=True, cwd=tmp_path, check=True)
    text = (tmp_path / "p.v").read_text()
    names = r"CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE"
    got = {k: int(v) for k, v in re.findall(rf"\.({names})\((\d+)\)", text)}
    assert (got["CLKI_DIV"], got["CLKFB_DIV"]) == (s.clki_div, s.clkfb_div)
    theirs = ECP5PLL(25.0, got["CLKI_DIV"], got["CLKFB_DIV"], got["CLKOP_DIV"])
    assert theirs.clkop_cphase == got["CLKOP_CPHASE"]
    assert abs(s.f_vco_mhz - 600) <= abs(theirs.f_vco_mhz - 600)
    if asked != 104.1:
        assert (got["CLKOP_DIV"], got["CLKOP_CPHASE"]) == (s.clkop_div, s.clkop_cphase)


def test_errors():
    with pytest.raises(ValueError, match=r"^no iCE40 PLL setting gives 16 to 15 MHz from 12 MHz$"):
        ice40_pll(12, 15)
    with pytest.raises(ValueError, match=r"^iCE40 PLL input frequency 5 MHz is outside 10..133"):
        ice40_pll(5, 48)
    with pytest.raises(ValueError, match=r"^no ECP5 PLL setting gives 10 to 9.5 MHz from 25 MHz$"):
        ecp5_pll(25, 9.5)
    # Above the output range, the highest output is the answer (the PLL cannot go faster).
    assert ice40_pll(12, 1000).f_out_mhz <= 275 and ecp5_pll(25, 1000).f_out_mhz == 400
    with pytest.raises(ValueError, match=r"^no PLL for platform object"):
        pll_for(object(), 50)
    with pytest.raises(TypeError, match="setting must be"):
        PLLDomain(48)


@pytest.mark.parametrize("setting, por", [(ice40_pll(12, 48), 720), (ecp5_pll(25, 100), 0)])
def test_domain_held_in_reset_until_lock(setting, por):
    """In simulation (no primitive) the domain leaves reset exactly 3 cycles (two synchronizer
    flip-flops and the registered verdict) plus the iCE40's start-up wait (15 us: 720 cycles at
    48 MHz) after ``locked`` rises, and goes back to reset when lock is lost."""
    pll = PLLDomain(setting)
    assert pll.por_cycles == por
    m = Module()
    m.domains.sync = ClockDomain()
    m.submodules.pll = pll
    count = Signal(16)
    m.d.sync += count.eq(count + 1)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    seen = {}

    async def bench(ctx):
        # Delays, not ticks: a testbench's tick of a domain in reset raises DomainReset. The
        # clock's rising edges are at 5, 15, 25 ns ..., so whole 10 ns steps fall between them.
        cycles = lambda n: ctx.delay(1e-8 * n)
        await cycles(50)
        seen["unlocked"] = ctx.get(count)
        ctx.set(pll.locked, 1)
        await cycles(por + 3)
        seen["at release"] = ctx.get(count)
        await cycles(10)
        seen["after"] = ctx.get(count)
        ctx.set(pll.locked, 0)
        await cycles(4)
        seen["lost"] = ctx.get(count)

    sim.add_testbench(bench)
    sim.run()
    assert seen["unlocked"] == 0 and seen["lost"] == 0
    assert seen["at release"] == 0 and seen["after"] == 10


def test_settings_carry_their_formula():
    s = ICE40PLL(12.0, 0, 63, 4)
    assert (s.f_out_mhz, s.f_vco_mhz, s.filter_range) == (48.0, 768.0, 1)
    e = ECP5PLL(25.0, 5, 19, 6)
    assert (e.f_out_mhz, e.f_vco_mhz, e.clkop_cphase) == (95.0, 570.0, 3)


def test_setting_must_match_the_platform():
    from amaranth.hdl import Fragment
    from pim_macro.hw.board import BOARDS
    icebreaker, ulx3s = BOARDS["icebreaker"].platform(), BOARDS["ulx3s"].platform()
    with pytest.raises(ValueError, match="^an ice40 PLL setting on platform PIMULX3S_25F"):
        Fragment.get(PLLDomain(ice40_pll(12, 48)), ulx3s)
    with pytest.raises(ValueError, match="^the PLL setting is for 25 MHz, the platform's clock "
                                         "is 12 MHz$"):
        Fragment.get(PLLDomain(ice40_pll(25, 48)), icebreaker)
    assert pll_for(icebreaker, 48) == ice40_pll(12, 48)
    assert pll_for(ulx3s, 100) == ecp5_pll(25, 100)
