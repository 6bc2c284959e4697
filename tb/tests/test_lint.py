"""Verilator lint (``--lint-only -Wall``) of the generated Verilog against the waiver file
``tb/harness/lint_waivers.vlt``: every top (macro, UART bridge, board), both architectures,
every fabric, R = 1, 2, 4, lanes 4, 8, 12, 1, 2 and 4 requantizers, must be clean once the
Amaranth idioms are waived; and the waivers must be honest: scoped to generated files (a
hand-written file keeps every warning), narrow (a kind or pattern outside the list fails), each
with its reason, none stale. About 13 s of CPU the first time (generating eight tops, ~1 s each),
6 s once build/lint holds them (sixteen Verilator runs of ~0.3 s)."""

import functools
import inspect
from pathlib import Path

import pytest

from pim_macro.sw.runtime.rtl import TOPS, _set_yosys
from pim_macro.tb.harness.lint import (DESIGNS, GENERATED_SUFFIX, WAIVERS, dropped_carries, lint,
                                       lint_design, waivers)


@functools.lru_cache(maxsize=None)
def _lint(design, use_waivers):
    return tuple(lint_design(*design, use_waivers=use_waivers))


def _report(warnings):
    """What a failing test says: one line per warning with its kind, file:line, the Python line
    it came from and the message, then what to do."""
    return ("\n".join(f"  {w}" for w in warnings)
            + "\nFix the gateware line named in 'from', or, if this is how Amaranth writes "
              "Verilog, add a waiver with its reason to tb/harness/lint_waivers.vlt.")


@pytest.mark.parametrize("design", DESIGNS, ids=["-".join(d) for d in DESIGNS])
def test_generated_verilog_is_clean(design):
    """No warning survives the waivers; without them Verilator does see the Amaranth idioms,
    and the Python reading of the waiver file agrees with Verilator's on every one."""
    remaining = _lint(design, True)
    assert not remaining, f"{len(remaining)} unwaived warnings:\n" + _report(remaining)
    before = _lint(design, False)
    assert len(before) > 500, f"only {len(before)} warnings without the waivers: is lint running?"
    kinds = {w.kind for w in before}
    assert {"UNUSEDSIGNAL", "WIDTHEXPAND", "PROCASSINIT", "CASEINCOMPLETE"} <= kinds, kinds
    rules = waivers()
    uncovered = [w for w in before if not any(r.covers(w) for r in rules)]
    assert not uncovered, ("Verilator waived these, but the waiver file as read by "
                           "pim_macro.tb.harness.lint does not cover them:\n" + _report(uncovered))
    assert any(w.src and w.src.startswith("hw/") for w in before), \
        "no warning maps back to a gateware line: are the src attributes missing?"


def test_every_waiver_is_used_and_explained():
    """Each lint_off line waives something in at least one linted design (no stale waiver
    hides a future warning), and each is preceded by a comment giving the reason."""
    rules = waivers()
    assert len(rules) >= 8, rules
    before = [w for design in DESIGNS for w in _lint(design, False)]
    stale = [r for r in rules if not any(r.covers(w) for w in before)]
    assert not stale, f"waivers that waive nothing in {len(DESIGNS)} designs: {stale}"
    lines = WAIVERS.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line.startswith("lint_off"):
            continue
        above = number - 1          # over the continuation lines and sibling waivers
        while lines[above].startswith(("lint_off", "    -")):
            above -= 1
        assert lines[above].startswith("//"), \
            f"{WAIVERS.name}:{number + 1}: a waiver without a reason comment above it"


# The idioms the waivers cover in generated files, written by hand: an unused wire, an
# initialised reg driven from an always block, a case with no default, a narrow operand
# widened by an operator, `!` on a vector. Module name = file name, so DECLFILENAME is quiet.
_IDIOMS = """
module {name}(input wire clk, input wire [1:0] sel, input wire [7:0] a, input wire [3:0] b,
              output reg [7:0] q, output reg [7:0] y, output wire z);
  wire [7:0] spare;
  assign spare = a;
  reg [7:0] count = 8'h00;
  always @(posedge clk) count <= count + 8'h01;
  always @(posedge clk) q <= count + b;
  always @* begin
    y = 8'h00;
    case (sel)
      2'h0: y = a;
      2'h1: y = ~a;
    endcase
  end
  assign z = !a;
endmodule
"""
_IDIOM_KINDS = {"UNUSEDSIGNAL", "PROCASSINIT", "WIDTHEXPAND", "CASEINCOMPLETE", "WIDTHTRUNC"}


def test_hand_written_verilog_is_not_waived(tmp_path):
    """The same idioms keep their warnings in a hand-written file (any name but the generated
    suffix), and lose them only when the file is named as Amaranth's output."""
    hand = tmp_path / "hand.v"
    hand.write_text(_IDIOMS.format(name="hand"))
    found = lint([hand], "hand")
    kinds = {w.kind for w in found}
    assert _IDIOM_KINDS <= kinds, f"hand-written code was waived; warnings left: {found}"
    assert all(Path(w.path).name == "hand.v" for w in found), found
    assert any(w.kind == "UNUSEDSIGNAL" and "'spare'" in w.message for w in found), found
    generated = tmp_path / f"gen{GENERATED_SUFFIX}"
    generated.write_text(_IDIOMS.format(name="gen"))
    assert lint([generated], "gen") == [], "the waivers do not cover their own idioms"
    assert _IDIOM_KINDS <= {w.kind for w in lint([generated], "gen", use_waivers=False)}


def test_unwaived_kind_or_pattern_fails(tmp_path):
    """In a file named as generated: a kind the waiver file does not list (BLKSEQ, LATCH), a
    truncation of a sum (WIDTHTRUNC, but not one of Yosys' two waived patterns), and a
    narrow signal on an instance's pin (WIDTHEXPAND, but not a constant zero) are reported,
    with the src attribute's Python line, in the report the suite fails with."""
    name = "odd"
    verilog = tmp_path / f"{name}{GENERATED_SUFFIX}"
    verilog.write_text(f"""
module sub(input wire [15:0] wide, output wire [15:0] out);
  assign out = wide;
endmodule
module {name}(input wire clk, input wire en, input wire [7:0] a, input wire [7:0] b,
              output reg [7:0] r, output reg [7:0] l, output wire [7:0] s,
              output wire [15:0] o);
  always @(posedge clk) r = a;
  always @* if (en) l = a;
  (* src = "hw/made_up.py:12" *)
  assign s = {{1'b0, a}} + {{1'b0, b}};
  sub u(.wide(a), .out(o));
endmodule
""")
    found = lint([verilog], name)
    by_kind = {w.kind: w for w in found}
    assert {"BLKSEQ", "LATCH", "WIDTHTRUNC", "WIDTHEXPAND"} <= set(by_kind), found
    assert "ADD" in by_kind["WIDTHTRUNC"].message and \
        by_kind["WIDTHTRUNC"].src == "hw/made_up.py:12", by_kind["WIDTHTRUNC"]
    assert "port connection" in by_kind["WIDTHEXPAND"].message, by_kind["WIDTHEXPAND"]
    report = _report(found)
    line = next(n for n, text in enumerate(verilog.read_text().splitlines(), 1)
                if text.startswith("  assign s ="))
    assert f"WIDTHTRUNC at {verilog.name}:{line} (from hw/made_up.py:12)" in report, report
    assert "BLKSEQ at" in report and "LATCH at" in report, report


def test_lint_reports_verilator_errors(tmp_path):
    """A file Verilator cannot read is an error, not a clean lint."""
    broken = tmp_path / f"broken{GENERATED_SUFFIX}"
    broken.write_text("module broken(input wire a);\n  assign = a;\nendmodule\n")
    with pytest.raises(RuntimeError, match="verilator failed"):
        lint([broken], "broken")


def test_designs_cover_every_top_and_fabric():
    """The lint list names every top and fabric, and both architectures."""
    from pim_macro.hw.fabric import FABRICS
    from pim_macro.hw.isa import ARCHES
    assert {d[0] for d in DESIGNS} == set(TOPS)
    assert {d[3] for d in DESIGNS} == set(FABRICS)
    assert {d[1] for d in DESIGNS} == set(ARCHES)


def test_dropped_carries_finds_a_truncating_eq(tmp_path):
    """The audit `make lint` prints: an 8-bit sum kept in 8 bits is listed with its Python line
    and source text; the same sum kept in 9 bits is not."""
    from amaranth import Module, Signal
    from amaranth.back import verilog
    m = Module()
    a, b, wide, narrow = Signal(8), Signal(8), Signal(9), Signal(8)
    m.d.sync += wide.eq(a + b)
    m.d.sync += narrow.eq(a + b)                    # the carry is lost
    lost = inspect.currentframe().f_lineno - 1
    path = tmp_path / f"top{GENERATED_SUFFIX}"
    _set_yosys()
    path.write_text(verilog.convert(m, ports=[a, b, wide, narrow], name="top"))
    found = dropped_carries(lint([path], "top", use_waivers=False), under="tb/tests/")
    assert list(found) == [f"tb/tests/test_lint.py:{lost}"], found
    assert found[f"tb/tests/test_lint.py:{lost}"][0].startswith("m.d.sync += narrow.eq(a + b)")



def test_no_hand_written_verilog_escapes_the_lint():
    """The project has no hand-written Verilog today: the first file added (a wrapper, a
    testbench) fails here until the lint covers it (it would never be waived)."""
    from pim_macro.sw.paths import REPO_ROOT
    found = [path.relative_to(REPO_ROOT) for folder in ("hw", "sw", "tb", "constraints")
             for pattern in ("*.v", "*.sv", "*.vh", "*.svh")
             for path in (REPO_ROOT / folder).rglob(pattern)]
    assert not found, (f"hand-written Verilog {found} is not linted: give "
                       "pim_macro.tb.harness.lint a list of such files and lint them")
