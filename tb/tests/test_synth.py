"""The FPGA flow (sw/fpga/synth.py, hw/board.py): the checked-in pin constraints are the platforms'
own, a small configuration of each board goes through Yosys, nextpnr and the packer (the full
report is `make synth`), the report, and the errors."""

import json
import subprocess
import sys

import pytest

from pim_macro.hw.board import BAUD, BOARDS, BoardTop
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


@pytest.mark.parametrize("board_name, arch", SUITE_BUILDS)
def test_small_configuration_builds(board_name, arch, tmp_path):
    """Place and route the board's small configuration with one seed: it fits, the lanes'
    multipliers land on DSPs as the board's fabric says (and nothing else does), and a
    bitstream comes out."""
    board = BOARDS[board_name]
    config = board.config(board.small)
    result = synth.build(board_name, arch, board.small, seeds=(1,), build_root=tmp_path)
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
    report = json.loads((bitstream.parent / "report-1.json").read_text())
    assert report["fmax"] and result.extra["best_seed"] == 1


def test_report_table_and_comparison():
    def fake(arch, fmax, lcs, beats):
        return synth.BuildResult(
            board="icebreaker", arch=arch, config_name="l4",
            config=BOARDS["icebreaker"].config("l4").as_dict(), target_mhz=60.0,
            fmax_mhz=fmax, resources={"LC": {"used": lcs, "available": 5280},
                                      "DSP": {"used": 6, "available": 8},
                                      "BRAM": {"used": 17, "available": 30},
                                      "SPRAM": {"used": 0, "available": 4}},
            bitstream="top.bin", seconds=1.0, macs_per_cycle=4, beats_per_row=beats)
    pim, base = fake("pim", [20.0, 22.0, 21.0], 4800, 1), fake("baseline", [25.0, 24.0, 26.0],
                                                              4600, 2)
    assert pim.fmax_min == 20.0 and pim.fmax_median == 21.0
    assert pim.gmacs == pytest.approx(4 * 21.0 / 1000)
    assert base.gmacs == pytest.approx(4 / 2 * 25.0 / 1000)
    md = synth.report_markdown([pim, base], [{"board": "ulx3s", "arch": "pim", "config": "l28",
                                              "error": "does not fit"}])
    assert "| pim | l4 | 4 x 1 | 1 | 1 | 20.0 / 21.0 | 0.08 | 4800/5280 (91 %)" in md
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
        assert round(platform.default_clk_frequency / BAUD) == divisor
        Fragment.get(BoardTop(board.config(board.small)), platform)   # elaborates


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
