"""Faults found by probing what issue 15 added (the energy model, its tables, the CLI's energy,
the README's energy figures). Each test is one fault, minimal, and fails on the code it was
written against (main at 4960e11, the experiments' and reload-share tests at 3062dd1;
the README gemv example test passes since 92c5287 and now guards it). Pure Python on the
golden and cycle models: no RTL, no build; about 2 s in all once the faults are fixed (about
5 s while load_table still blocks on a FIFO: a 3 s timeout).
"""

import json
import math
import re

import numpy as np
import pytest

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.sw import cli
from pim_macro.sw.models import energy as em
from pim_macro.sw.paths import REPO_ROOT


#: The small session configuration the suite builds anyway.
CONFIG = MacroConfig(lanes=8, depth=128, act_depth=256, bias_depth=16, bus_bits=16)
#: Counts of a small run (any run's would do).
COUNTS = {"mac_active": 3, "row_reads": 3, "beats_in": 16, "beats_out": 22, "bus_beats": 12,
          "weight_words": 6}


def _main(capsys, *args):
    """``cli.main(args)`` -> (exit code, stdout, stderr); a traceback fails the test."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:        # noqa: BLE001 - the point of the tests
        pytest.fail(f"pim {' '.join(map(str, args))} ended in a traceback: "
                    f"{type(exc).__name__}: {exc}")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _table(tmp_path, old, new, name="mine.toml"):
    """The shipped 45 nm table with the line ``old`` replaced by ``new``, as a file."""
    text = em.TABLES["45nm"].read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.fixture
def gemv_files(tmp_path):
    rng = np.random.default_rng(15)
    np.save(tmp_path / "W.npy", rng.integers(-128, 128, (8, 4)).astype(np.int8))
    np.save(tmp_path / "x.npy", rng.integers(-128, 128, (4,)).astype(np.int8))
    return tmp_path / "W.npy", tmp_path / "x.npy"


def _tflite_model(tmp_path):
    """A conv (2 -> 4 channels, 6x6), a max pool and a reshape (host ops), a dense 36 -> 3;
    two int8 images (test_cli_energy.py's model)."""
    from pim_macro.sw.compiler.tflite_builder import ModelBuilder
    rng = np.random.default_rng(3)
    b = ModelBuilder()
    t = image = b.input((1, 6, 6, 2), scale=0.02, zero_point=-128)
    t = b.conv2d(t, rng.integers(-127, 128, (4, 3, 3, 2)), rng.integers(-500, 500, 4),
                 w_scale=0.01, out_scale=0.05, out_zero_point=-128, activation="RELU")
    t = b.pool("MAX_POOL_2D", t, filter=(2, 2), stride=(2, 2))
    t = b.reshape(t, (1, 36))
    t = b.fully_connected(t, rng.integers(-127, 128, (3, 36)), rng.integers(-500, 500, 3),
                          w_scale=0.01, out_scale=0.05, out_zero_point=0)
    (tmp_path / "m.tflite").write_bytes(b.to_bytes([image], [t]))
    np.save(tmp_path / "img.npy", rng.integers(-128, 128, (2, 6, 6, 2)).astype(np.int8))
    return tmp_path / "m.tflite", tmp_path / "img.npy"


# -- counts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [np.int64, np.uint32, np.int32])
def test_numpy_integer_counts_are_priced(kind):
    """A count of a numpy integer type (what np.sum or an array of counter words gives) should
    be priced like the same Python int; it is refused as 'must be a non-negative integer, not
    np.int64(3)', a message that contradicts itself."""
    want = em.energy(COUNTS, CONFIG, "baseline")
    got = em.energy({k: kind(v) for k, v in COUNTS.items()}, CONFIG, "baseline")
    assert got.pj == pytest.approx(want.pj, rel=1e-12)


def test_per_accepts_a_numpy_integer_batch():
    """Energy.per(n) with n = np.int64(4) (a batch size read off an array's shape arithmetic)
    should divide by 4; it raises 'n must be a positive integer, not np.int64(4)'."""
    e = em.energy(COUNTS, CONFIG, "pim")
    assert e.per(np.int64(4)).total_pj == pytest.approx(e.total_pj / 4, rel=1e-12)


def test_a_list_of_counter_words_is_refused_not_priced_zero():
    """The 9 data words of a READ_COUNTERS answer, passed as a list (not a mapping), should be
    refused; `key in list` looks for values, finds no counter, and the run is priced 0 pJ."""
    words = [0] * len(Counter)
    for name, value in COUNTS.items():
        words[Counter[name.upper()].value] = value
    with pytest.raises((TypeError, ValueError)):
        em.energy(words, CONFIG, "pim")


def test_a_mapping_naming_no_counter_is_refused_not_priced_zero():
    """Counters under keys that name no counter (a typo, a wrong case: 'row_read', 'Mac_Active')
    should be refused; every unknown key is ignored and the run silently costs 0 pJ."""
    with pytest.raises(ValueError):
        em.energy({"row_read": 3, "Mac_Active": 3, "weight_word": 6}, CONFIG, "pim")


def test_energy_of_events_still_checks_the_arch():
    """energy(Events, config, 'gpu') should raise the ValueError that energy(mapping, config,
    'gpu') raises; with Events the arch is never looked at and a 'gpu' run is priced."""
    with pytest.raises(ValueError, match="arch"):
        em.energy(em.Events(macs=1), CONFIG, "gpu")


def test_per_inference_energy_shares_nothing_with_the_run():
    """Energy is frozen, yet e.per(n).unit_pj is the same dict object as e.unit_pj: changing
    the per-inference report's unit prices (a caller rounding them for a table) should leave
    the run's alone."""
    run = em.energy(COUNTS, CONFIG, "pim")
    mac = run.unit_pj["mac"]
    run.per(2).unit_pj["mac"] = 99.0
    assert run.unit_pj["mac"] == mac


# -- tables -----------------------------------------------------------------------------------

def test_an_overflowing_table_is_refused_before_the_run(capsys, tmp_path, monkeypatch,
                                                        gemv_files):
    """`--energy-table` with `pj = 1e308` (finite, positive: accepted) should be a one-line
    error, exit 2, before anything runs; the simulation runs (on the RTL too), and only then
    the JSON fails: 'the report holds a non-finite number (nested)', exit 1."""
    path = _table(tmp_path, "\npj = 0.3\n", "\npj = 1e308\n")
    calls = []
    real = cli.run_gemv

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(cli, "run_gemv", spy)
    code, out, err = _main(capsys, "gemv", "--weights", gemv_files[0], "--input", gemv_files[1],
                           "--json", "--energy-table", path)
    assert code == 2 and out == "" and err.count("\n") == 1, (code, err)
    assert not calls, "the run started before the table was refused"


def test_an_overflowing_table_gives_no_inf_or_nan_in_the_text_form(capsys, tmp_path):
    """`pim infer M.tflite` (text form) with `pj = 1e308` should be refused; it exits 0 and
    prints 'energy: inf J per inference (mac nan%, ...)'."""
    model, images = _tflite_model(tmp_path)
    path = _table(tmp_path, "\npj = 0.3\n", "\npj = 1e308\n")
    code, out, err = _main(capsys, "infer", "--model", model, "--input", images, "--sim",
                           "model", "--energy-table", path)
    assert not re.search(r"\binf\b|\bnan\b", out), out
    assert code != 0 and err.count("\n") == 1, (code, err)


def test_a_table_name_is_one_line_of_text(capsys, tmp_path):
    """A table whose `name` holds a newline ("evil\\nsecond line") should be refused (or shown
    escaped); the text form's energy line is split in two ('..., evil' / 'second line table;
    set-up ...')."""
    model, images = _tflite_model(tmp_path)
    path = _table(tmp_path, 'name = "45nm"', 'name = "evil\\nsecond line"')
    code, out, err = _main(capsys, "infer", "--model", model, "--input", images, "--sim",
                           "model", "--energy-table", path)
    if code == 0:
        energy_lines = [s for s in out.splitlines() if s.startswith("energy: ")]
        assert len(energy_lines) == 1 and "set-up" in energy_lines[0], out
    else:
        assert err.count("\n") == 1, err


@pytest.mark.parametrize("line", ['name = 5', 'name = {a = 1}', 'name = [1, 2]'])
def test_a_table_name_that_is_not_text_is_refused(tmp_path, line):
    """`name` (shown in every report as the table used) should be a string; an integer, an inline
    table or a list is turned into its repr ('{'a': 1}') and used as the name."""
    path = _table(tmp_path, 'name = "45nm"', line)
    with pytest.raises(em.EnergyTableError, match="name"):
        em.load_table(path)


# -- per inference ----------------------------------------------------------------------------

# -- the README's figures ---------------------------------------------------------------------

def test_readme_dram_to_resident_mac_ratio_matches_its_table():
    """'162.5 pJ per byte, A to B times what a resident weight costs per MAC in the rows above'
    should span the per-MAC cells of the table above it; it says 28 to 64, the PIM column alone
    gives 162.5 / 5.83 = 28 to 162.5 / 1.52 = 107 (and 162.5 / 2.32 = 70 at 45 nm)."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("| macro | node | SRAM per bit |")
    rows = []
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    pim = [float(r[4]) for r in rows]
    claim = re.search(r"(\d+) to (\d+) times what a resident weight costs per MAC", readme)
    assert claim, "the README no longer states the ratio"
    low, high = int(claim.group(1)), int(claim.group(2))
    dram = 162.5
    assert (low, high) == (round(dram / max(pim)), round(dram / min(pim))), \
        (low, high, [round(dram / p, 1) for p in pim])


def test_energy_is_finite_or_refused(tmp_path):
    """energy() priced with a table whose entries are finite but huge (`pj = 1e308`) returns
    total_pj = inf (and nan shares downstream). The experiments (make sim, make tiny, make spill)
    read tables with load_table alone: a table that overflows should raise ValueError (at load
    or when priced), never give inf."""
    path = _table(tmp_path, "\npj = 0.3\n", "\npj = 1e308\n")
    try:
        got = em.energy(COUNTS, CONFIG, "pim", table=path)
    except ValueError:
        return
    assert math.isfinite(got.total_pj), got.pj


@pytest.mark.parametrize("make", ["device", "fifo"])
def test_load_table_refuses_what_is_not_a_regular_file(tmp_path, make):
    """load_table('/dev/zero') reads until memory runs out (MemoryError under a memory limit;
    without one it eats the machine's), load_table(a FIFO) blocks forever. The CLI stats the
    path first; make sim / tiny / spill --energy-table call load_table directly. It should
    refuse both in one line (EnergyTableError). Run in a child with a memory limit and a 3 s
    timeout."""
    import os
    import resource
    import subprocess
    import sys
    if make == "device":
        path = "/dev/zero"
    else:
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    code = ("from pim_macro.sw.models.energy import load_table, EnergyTableError\n"
            f"try:\n    load_table({path!r})\nexcept EnergyTableError as e:\n"
            "    print('refused:', e)\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (800 << 20, 800 << 20))
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=3, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load_table({path!r}) did not return within 3 s")
    assert done.stdout.startswith("refused:") and done.stdout.count("\n") == 1, \
        (done.stdout, done.stderr[-300:])


def test_readme_gemv_json_example_is_what_the_tool_prints(capsys, tmp_path, monkeypatch):
    """The README's `pim gemv ... --json` example (section `pim gemv`) should show what the
    command prints. At 4960e11 its counters said beats_out 41, the tool (ISA 5: READ_COUNTERS
    answers 9 words) printed 42, and it had no `energy`; fixed on main at 92c5287: this keeps
    the example's counters and energy equal to the tool's."""
    import shlex
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```sh\n\.venv/bin/python -c \"(.*?)\"\n\.venv/bin/pim (gemv .*?)\n```\n"
                      r"```json\n(\{.*?)\n```", readme, re.S)
    assert block, "the README's pim gemv --json example"
    make, command, shown = block.groups()
    monkeypatch.chdir(tmp_path)
    exec(make, {})                  # the README's own lines make W.npy, X.npy, B.npy
    code, out, err = _main(capsys, *shlex.split(command.replace("\\\n", " ")))
    assert code == 0, err
    printed = json.loads(out)
    counters = json.loads(re.search(r'"counters": (\{[^}]*\})', shown).group(1))
    assert counters == printed["counters"]
    assert '"energy"' in shown
    energy = printed["energy"]
    assert float(re.search(r'"total_pj": ([0-9.]+)', shown).group(1)) == \
        pytest.approx(energy["total_pj"], abs=0.1)
    for key in ("pj", "bytes"):
        cells = json.loads(re.search(rf'"{key}": (\{{[^}}]*\}})', shown).group(1))
        assert cells == pytest.approx(energy[key], abs=0.1), key


def test_a_copied_table_is_not_reported_as_the_shipped_one(tmp_path):
    """45nm.toml says 'Copy this file and change the numbers'. A copy with the MAC at 0.6 pJ
    keeps `name = "45nm"`, and every report (the JSON's `table`, the energy line's '45nm
    table', make spill's columns) then names the shipped 45 nm table for numbers that are not
    its own. A table read from a path should not pass for a shipped one of other numbers."""
    path = _table(tmp_path, "\npj = 0.3\n", "\npj = 0.6\n")
    mine = em.energy(COUNTS, CONFIG, "pim", table=path)
    shipped = em.energy(COUNTS, CONFIG, "pim", table="45nm")
    assert mine.pj["mac"] == pytest.approx(2 * shipped.pj["mac"])
    assert mine.table != shipped.table, "two different tables reported under one name"


def test_reload_share_counts_what_its_definition_says():
    """make spill's reload share is defined as what reloading 'the weights that do not fit'
    adds (spill.RELOAD_SHARE, the report's sentence, the issue's question). VGG-16 at 40 MiB
    reloads all 138.8 MB of its stored weights every inference (the compiler rewrites every
    pass), not the 96.8 MB beyond the 41.9 MB SRAM: the share should count what it says, or
    say that every weight is reloaded."""
    from pim_macro.sw.models.scale_model import estimate
    from pim_macro.sw.models.zoo import NETWORKS
    from pim_macro.tb.experiments import spill
    config = spill.scale_config(40)
    est = estimate(NETWORKS["vgg16"], config, "pim")
    reloaded = est.reload_counters["WEIGHT_WORDS"] * 4
    beyond = est.stored_bytes - est.capacity_bytes
    assert not est.fits and reloaded > beyond
    if "weights that do not fit" in spill.RELOAD_SHARE:
        assert reloaded <= beyond, (
            f"the share is defined on the weights that do not fit ({beyond / 1e6:.1f} MB) but "
            f"prices {reloaded / 1e6:.1f} MB reloaded per inference")


@pytest.mark.parametrize("experiment", ["regression", "tiny", "spill"])
def test_experiments_refuse_a_bad_table_in_one_line(capsys, experiment):
    """`make sim|tiny|spill` with `--energy-table nope` should be one line on stderr, as `pim`
    is ('Bad input gets one clear line'); argparse's parser.error prints the whole usage (4 to 6
    lines) above the message (seen on branches y15 and x15; regression and tiny gain the option
    when x15 merges)."""
    import importlib
    module = importlib.import_module(f"pim_macro.tb.experiments.{experiment}")
    with pytest.raises(SystemExit) as info:
        module.main(["--energy-table", "nope"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code != 0
    assert len(err) == 1 and "nope" in err[0], err
