"""`make waves`: every simulator writes an FST and a GTKWave save file naming real signals."""

import shutil
import subprocess

import pytest

from pim_macro.sw.paths import BUILD_ROOT
from pim_macro.sw.runtime.rtl import SIMULATORS
from pim_macro.tb.experiments import waves


def fst_signals(fst):
    """Full names (with bit ranges) of the signals in ``fst``, read through fst2vcd."""
    vcd = subprocess.run(["fst2vcd", str(fst)], capture_output=True, text=True,
                         check=True).stdout
    scopes, found = [], set()
    for line in vcd.splitlines():
        if line.startswith("$scope"):
            scopes.append(line.split()[2])
        elif line.startswith("$upscope"):
            scopes.pop()
        elif line.startswith("$var"):
            parts = line.split()
            found.add(".".join(scopes + [parts[4]]) + (parts[5] if parts[5] != "$end" else ""))
        elif line.startswith("$enddefinitions"):
            break
    return found


# Each simulator once with PIM, and the baseline on Icarus: a second traced Verilator build
# cost the suite about 3 minutes of its 2 cores for the same save-file code.
@pytest.mark.parametrize("sim,arch", [(sim, "pim") for sim in SIMULATORS]
                         + [("icarus", "baseline")])
def test_waves_hand(sim, arch):
    assert waves.main(["hand", "--sim", sim, "--arch", arch]) == 0, \
        "the hand scenario should run and match"
    out = BUILD_ROOT / "waves" / (f"hand-{sim}" if arch == "pim" else f"hand-{arch}-{sim}")
    fst, save = out / "hand.fst", out / "hand.gtkw"
    assert fst.stat().st_size > 1000, "the FST should hold the whole run"
    text = save.read_text()
    for group, *_ in waves.GROUPS:
        assert f"-{group}" in text, f"the save file should have a '{group}' group"
    listed = [line for line in text.splitlines() if line and line[0] not in "@-["]
    assert any(name.startswith("pim_macro.ctrl_state[") for name in listed), \
        "the controller state should be shown"
    assert any(name.startswith("pim_macro.mac_engine.weight_store.rd_row[") for name in listed), \
        "the weight store's read port should be shown"
    assert "pim_macro.mac_engine.macs.acc_l7[31:0]" in listed, \
        "every lane's accumulator should be shown"
    if shutil.which("fst2vcd"):      # from Debian's gtkwave; the names are checked when present
        missing = [name for name in listed if name not in fst_signals(fst)]
        assert not missing, f"the save file names signals the FST lacks: {missing}"


def test_waves_rejects_unknown_scenario(capsys):
    assert waves.main(["nonsense"]) == 2
    assert "unknown scenario 'nonsense'" in capsys.readouterr().err


def test_every_group_pattern_names_a_signal():
    """Each name pattern of the save file's groups matches a signal of the macro's Verilog on at
    least one architecture, so a renamed port or register cannot drop out of the waveforms
    silently (the save file skips patterns that match nothing)."""
    import re
    from pim_macro.sw.runtime.rtl import verilog_for
    verilog = {arch: verilog_for(waves.CONFIG, arch, "macro", "portable")
               for arch in ("pim", "baseline")}
    unmatched = []
    for title, module, patterns, _ in waves.GROUPS:
        declared = set()
        for text in verilog.values():
            declared |= set(waves._declarations(text, module))
        unmatched += [f"{title}: {p}" for p in patterns
                      if not any(re.fullmatch(p, name) for name in declared)]
    assert not unmatched, f"these wave group patterns match no signal: {unmatched}"
