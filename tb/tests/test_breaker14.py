"""Faults found by probing what issue 14 added (PLL solvers, board top clocking, the synth CLI,
the SPRAM wrapper). Each test is one fault, minimal, and fails on the code it was written
against. None runs a tool or a simulator: pure Python, a second or two in all.
"""

import math

import pytest

from pim_macro.hw.board import BOARDS, BoardTop, uart_divisor
from pim_macro.hw.pll import ecp5_pll, ice40_pll
from pim_macro.hw.spram import SPRAM
from pim_macro.sw.fpga import synth


def _main(argv, capsys):
    """``synth.main(argv)`` -> (exit code, stderr lines); an exception other than SystemExit
    (a traceback for the user) fails the test."""
    try:
        rc = synth.main(argv)
    except SystemExit as exc:
        rc = exc.code
    except Exception as exc:        # noqa: BLE001 - the point of the test
        pytest.fail(f"synth {' '.join(argv)} ended in a traceback: {type(exc).__name__}: {exc}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    """The synth module with no tool run: every build step that would start Yosys, nextpnr or
    a packer records its call and fails instead. Returns the list of recorded calls."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(getattr(args[0], "name", args[0]) if args else kwargs)
        raise RuntimeError("probe: no build is run here")
    monkeypatch.setattr(synth, "_tool", lambda name: name)
    monkeypatch.setattr(synth, "_run", refuse)
    monkeypatch.setattr(synth, "_clocked", refuse)
    monkeypatch.setattr(synth, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(synth, "write_report", lambda results, failures, report_dir=None: "")
    return calls


@pytest.mark.parametrize("solver,f_in", [(ice40_pll, 12.0), (ecp5_pll, 25.0)])
def test_pll_infinite_output_raises_valueerror(solver, f_in):
    """``ice40_pll(12, inf)`` / ``ecp5_pll(25, inf)`` raise ``OverflowError`` ("cannot convert
    Infinity to integer ratio", from ``Fraction``). The docstrings promise ``ValueError`` for
    an unreachable output, and the CLI only catches ``ValueError`` (see the next test).
    Expected: a ``ValueError`` naming the frequency (or, if infinity means "as fast as it
    goes", the fastest setting)."""
    try:
        solver(f_in, math.inf)
    except ValueError:
        pass
    except Exception as exc:        # noqa: BLE001
        pytest.fail(f"{solver.__name__}({f_in}, inf) raised {type(exc).__name__}: {exc}")


def test_cli_clock_inf_is_a_one_line_error(no_tools, capsys):
    """``python -m pim_macro.sw.fpga.synth --clock inf`` (or ``--clock 1e400``) ends in an
    ``OverflowError`` traceback: argparse's ``float`` accepts "inf", ``build`` calls
    ``pll_for`` and ``main`` catches only ``ToolMissing`` and ``ValueError``. Expected: one
    ``error:`` line and a non-zero exit, like ``--clock -5``."""
    rc, err = _main(["--board", "icebreaker", "--clock", "inf"], capsys)
    if not no_tools:        # refused before any build (rather than "as fast as the PLL goes")
        assert rc not in (0, None)
        assert len(err) == 1 and err[0].startswith("error"), err


def test_cli_clock_nan_error_names_the_clock(no_tools, capsys):
    """``--clock nan`` exits 2 with "error: cannot convert NaN to integer ratio": one line, but
    it names neither the option nor a frequency (the internal ``Fraction`` conversion leaks).
    Expected: a message that says the clock (MHz) is not a valid frequency."""
    rc, err = _main(["--board", "icebreaker", "--clock", "nan"], capsys)
    assert rc not in (0, None) and len(err) == 1, err
    assert "clock" in err[0].lower() or "mhz" in err[0].lower(), err


def test_cli_unreachable_clock_is_refused_before_any_build(no_tools, capsys):
    """``--board ulx3s --board icebreaker --clock 12``: 12 MHz is reachable on the ECP5 (its
    PLL goes down to 10 MHz) but not on the iCE40 (16 MHz at least). ``main`` builds both ULX3S
    architectures first (an ECP5 l28 place-and-route is 10+ minutes each), then meets the iCE40
    ``ValueError`` and returns 2 without writing the report: the builds are thrown away.
    Expected: the clock is checked for every chosen board before any build starts (or the
    finished builds are reported)."""
    rc, err = _main(["--board", "ulx3s", "--board", "icebreaker", "--clock", "12"], capsys)
    assert rc not in (0, None), "12 MHz is out of the iCE40 PLL's reach: an error is right"
    assert not no_tools, (f"{len(no_tools)} build(s) were started before the error "
                          f"{err!r} made main give up without a report")


def test_cli_config_missing_on_a_board_is_refused_before_any_build(monkeypatch, capsys):
    """``--config spram`` (no ``--board``): the iCEBreaker has ``spram``, the ULX3S does not.
    ``main`` builds icebreaker pim and baseline ``spram`` first, then finds the ULX3S lacks it,
    prints the error and returns 2, discarding what it built (no report is written).
    Expected: every (board, config) pair is validated before the first build, or boards
    without the configuration are skipped and the builds reported."""
    calls = []

    def fake_build(board, arch, config_name, **kwargs):
        calls.append((board, arch, config_name))
        raise RuntimeError("probe: no build is run here")
    monkeypatch.setattr(synth, "build", fake_build)
    monkeypatch.setattr(synth, "write_report", lambda results, failures, report_dir=None: "")
    rc, err = _main(["--config", "spram"], capsys)
    assert not (calls and rc not in (0, None)), (
        f"builds {calls} ran, then main failed with {err!r} and no report")


@pytest.mark.parametrize("solver,f_in,asked", [(ecp5_pll, 25.0, 99.99999999),
                                               (ice40_pll, 25.0, 99.99999999)])
def test_pll_never_returns_more_than_asked(solver, f_in, asked):
    """Asked for 99.99999999 MHz, both solvers return a 100.0 MHz setting: ``_ceiling`` lets
    the output exceed the asked one by 1e-9 relative, a million times more than a float's
    rounding (which the tolerance is there for). The module's contract is "the highest
    frequency NOT above the one asked" (a clock chosen below Fmax must not come out above it).
    Expected: ``f_out_mhz <= asked`` (a tolerance of a few ulps keeps the round trip)."""
    setting = solver(f_in, asked)
    assert setting.f_out_mhz <= asked, f"{setting} gives {setting.f_out_mhz!r} > {asked!r}"


def test_pll_string_frequency_error_message():
    """``ice40_pll(12, "5")`` raises ``ValueError: Unknown format code 'g' for object of type
    'str'`` (the error message's own formatting fails), while ``ice40_pll(12, "50")`` quietly
    returns a 49.5 MHz setting and ``ice40_pll("12", 50)`` is a ``TypeError``. Expected: a
    frequency that is not a number is refused the same way on both arguments, and an
    unreachable one gets the solver's own message."""
    with pytest.raises((TypeError, ValueError)) as info:
        ice40_pll(12.0, "5")
    assert "format code" not in str(info.value), str(info.value)
    with pytest.raises((TypeError, ValueError)):
        ice40_pll(12.0, "50")


def test_boardtop_refuses_infinite_clock_at_construction():
    """``BoardTop(config, clock_mhz=float("inf"))`` is accepted (``inf > 0``; NaN, 0 and
    negatives are refused), and elaboration then dies of an ``OverflowError`` in the PLL
    solver. Expected: ``ValueError`` at construction, as for the other bad clocks."""
    config = BOARDS["icebreaker"].config("l4")
    with pytest.raises(ValueError, match="clock_mhz"):
        BoardTop(config, clock_mhz=math.inf)


def test_uart_divisor_zero_baud_is_a_valueerror():
    """``uart_divisor(12e6, 0)`` raises ``ZeroDivisionError``, and ``BoardTop(config, baud=0)``
    is accepted at construction, failing with that ``ZeroDivisionError`` at elaboration.
    Expected: ``ValueError`` (a baud rate must be positive), at ``BoardTop`` construction as
    for ``clock_mhz``."""
    with pytest.raises(ValueError):
        uart_divisor(12e6, 0)
    with pytest.raises(ValueError):
        BoardTop(BOARDS["icebreaker"].config("l4"), baud=0)


@pytest.mark.parametrize("depth", [0, -1])
def test_spram_refuses_empty_depth(depth):
    """``SPRAM(32, 0)`` (or a negative depth) is accepted at construction (0 blocks fit) and its
    elaboration fails with ``IndexError: list index out of range`` (no bank). Expected:
    ``ValueError`` at construction, like the other limits the docstring lists."""
    with pytest.raises(ValueError):
        SPRAM(32, depth)


def test_make_spram_needs_only_the_resnet(tmp_path):
    """``make spram`` (``tb/experiments/spram.py``) uses only MLPerf Tiny's ResNet-8, but finds
    it through ``tiny.find_models``, which demands the anomaly-detection model too: with only
    ``pretrainedResnet_quant.tflite`` in the folder it exits with "tiny: error:
    ad01_int8.tflite ... not found ... run `make tiny`" (the wrong model, the wrong command).
    Expected: the ResNet alone is enough (here a stand-in file: any later failure must be about
    it, not about the missing ad01 model)."""
    from pim_macro.tb.experiments import spram
    (tmp_path / spram.MODEL).write_bytes(b"not a real model")
    with pytest.raises(BaseException) as info:      # SystemExit today; a parse error once fixed
        spram.main(["--models", str(tmp_path), "--report-dir", str(tmp_path / "report")])
    assert "ad01_int8" not in str(info.value), str(info.value)
