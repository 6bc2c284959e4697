"""The energy in ``pim gemv --json`` and ``pim infer --json`` (issue 15), and ``--energy-table``.

Run in process (``cli.main``) on the golden model and the cycle model with small shapes: a few
seconds in all. Expected values are computed by hand from the tables' numbers, written here (not
read from the tables), and the counts of a tiny GEMV; the JSON's energy is also checked against
:func:`pim_macro.sw.models.energy.energy` of the JSON's own counters, and the whole run against
the set-up plus the inferences (linearity, a second path)."""

import json
import math

import numpy as np
import pytest

from pim_macro.hw.isa import MacroConfig
from pim_macro.sw import cli
from pim_macro.sw.models.energy import KINDS, TABLES, energy


def _run(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys, *args):
    code, out, err = _run(capsys, *args)
    assert code == 0 and err == "", f"{args}: exit {code}, stderr {err!r}"
    return json.loads(out)


@pytest.fixture
def gemv_files(tmp_path):
    """W (8, 4), x (4,), X (3, 4), int8."""
    rng = np.random.default_rng(15)
    paths = {}
    for name, shape in (("W", (8, 4)), ("x", (4,)), ("X", (3, 4))):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.integers(-128, 128, shape).astype(np.int8))
    return paths


# -- a tiny GEMV by hand ---------------------------------------------------------------------

#: The shipped tables' entries, copied from sw/models/energy_tables/*.toml by hand: pJ per int8
#: MAC, pJ per 64-bit access of an SRAM of 8 KB or less (the macro's 256-byte lane columns are
#: below the tables' smallest point, so they are charged that point), pJ per bit per mm of wire,
#: pJ per register bit (7 nm: no published figure; the table scales 45 nm's 1 pJ per 32 bits by a
#: 32-bit add's 0.1 -> 0.03 pJ), pJ per DRAM byte, um^2 per SRAM bit cell.
HAND_TABLES = {
    "45nm": dict(mac=0.3, sram64=10.0, wire=0.121, reg=1 / 32, dram=1300 / 8, cell=0.346),
    "7nm": dict(mac=0.1, sram64=7.5, wire=0.078, reg=1 / 32 * 0.03 / 0.1, dram=1300 / 8,
                cell=0.027),
}


def _hand_energy(arch, t):
    """pJ by kind of ``W (8, 4) @ x (4,)``, raw, one vector, the default macro (L = 8, R = 1,
    256 rows of 8 bytes, a 32-bit bus). The program (sw/compiler/gemv.py) is READ_COUNTERS
    CLEAR, WRITE_WEIGHTS of 4 rows, LOAD_ACT of 4 bytes, MATVEC of 4 rows, EMIT_RAW of 8 lanes,
    READ_COUNTERS. Counted by hand:

    * rows read (= MAC cycles): K = 4, one row per cycle: 4; MACs 4 x 8 lanes = 32.
    * weight words: 4 rows x 8 bytes / 4 = 8 (256 bits written, 32 bytes from DRAM).
    * words in: WRITE_WEIGHTS 1 + 1 + 8, LOAD_ACT 1 + 1 + 1, MATVEC 1 + 1, EMIT_RAW 1 + 1, the
      last READ_COUNTERS 1 (counted before its snapshot; the clearing one's is cleared): 18.
    * words out: the clearing READ_COUNTERS's status and 9 counters (sent after the clear),
      one status each for WRITE_WEIGHTS, LOAD_ACT, MATVEC, EMIT_RAW's status and 8 sums: 22.
    * baseline bus: 2 beats of 32 bits per 64-bit row, 4 rows: 256 bits.
    """
    side_mm = math.sqrt(256 * 8 * 8 * t["cell"]) / 1000      # the SRAM's bit cells, a square
    wire_bit = t["wire"] * side_mm
    sram_bit = t["sram64"] / 64
    stream_bits = (18 + 22) * 32
    bus_bits = 4 * 2 * 32 if arch == "baseline" else 0
    return {
        "mac": 32 * t["mac"],
        "sram_read": 4 * 64 * sram_bit,
        "sram_write": 8 * 32 * sram_bit,
        "bus": bus_bits * wire_bit,
        "stream": stream_bits * wire_bit,
        # accumulators 32 MACs x 32 bits, the baseline's row register, the stream words
        "register": (32 * 32 + bus_bits + stream_bits) * t["reg"],
        "dram": 32 * t["dram"],
    }


@pytest.mark.parametrize("table", ["45nm", "7nm"])
@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_gemv_energy_by_hand(capsys, gemv_files, arch, table):
    report = _json(capsys, "gemv", "--weights", gemv_files["W"], "--input", gemv_files["x"],
                   "--arch", arch, "--energy-table", table, "--json")
    counters = report["counters"]
    assert (counters["row_reads"], counters["mac_active"], counters["weight_words"],
            counters["beats_in"], counters["beats_out"], counters["bus_beats"]) == \
        (4, 4, 8, 18, 22, 8 if arch == "baseline" else 0), f"the hand counts: {counters}"
    e = report["energy"]
    hand = _hand_energy(arch, HAND_TABLES[table])
    assert e["table"] == table and set(e["pj"]) == set(KINDS)
    for kind in KINDS:
        assert e["pj"][kind] == pytest.approx(hand[kind], rel=1e-12), kind
    assert e["total_pj"] == pytest.approx(sum(hand.values()), rel=1e-12)
    assert e["bytes"] == {"array": 64.0, "bus": 32.0 if arch == "baseline" else 0.0,
                          "stream": 160.0, "offchip": 32.0}
    assert "energy_run" not in report, "one inference: the run is the inference"
    # 45 nm: DRAM is 5200 of the 5373 pJ (PIM): the weights' first load dominates a lone GEMV
    if table == "45nm" and arch == "pim":
        assert e["total_pj"] == pytest.approx(5373.2612, abs=1e-3)


def test_7nm_changes_the_mac_energy_by_the_tables_ratio(capsys, gemv_files):
    """Same counts, two tables: the MAC energy scales by 0.1 / 0.3 pJ (Jouppi et al. 2021 vs
    Horowitz 2014), DRAM (1.3 nJ per 64 bits in both) not at all."""
    reports = {t: _json(capsys, "gemv", "--weights", gemv_files["W"], "--input", gemv_files["X"],
                        "--sim", "model", "--energy-table", t, "--json") for t in ("45nm", "7nm")}
    old, new = reports["45nm"], reports["7nm"]
    assert old["counters"] == new["counters"]
    assert new["energy"]["pj"]["mac"] / old["energy"]["pj"]["mac"] == pytest.approx(0.1 / 0.3)
    assert new["energy"]["pj"]["dram"] == pytest.approx(old["energy"]["pj"]["dram"])
    assert new["energy"]["node"] == "7 nm" and old["energy"]["node"] == "45 nm, 0.9 V"


def test_a_table_file_of_the_users(capsys, gemv_files, tmp_path):
    """--energy-table PATH: a copy of the 45 nm table with the MAC at 0.6 pJ and DRAM at 100 pJ
    per byte doubles the MAC energy and prices the 32 weight bytes at 3200 pJ; the rest stays."""
    text = TABLES["45nm"].read_text()
    assert "\npj = 0.3\n" in text and "\npj_per_byte = 162.5\n" in text
    mine = tmp_path / "mine.toml"
    mine.write_text(text.replace("\npj = 0.3\n", "\npj = 0.6\n")
                    .replace("\npj_per_byte = 162.5\n", "\npj_per_byte = 100\n"))
    args = ("gemv", "--weights", gemv_files["W"], "--input", gemv_files["x"], "--json")
    base = _json(capsys, *args)["energy"]["pj"]
    custom = _json(capsys, *args, "--energy-table", mine)["energy"]["pj"]
    assert custom["mac"] == pytest.approx(2 * base["mac"]) == pytest.approx(19.2)
    assert custom["dram"] == pytest.approx(3200)
    for kind in ("sram_read", "sram_write", "bus", "stream", "register"):
        assert custom[kind] == pytest.approx(base[kind]), kind


# -- the JSON's energy is energy() of its own counters -----------------------------------------

def _check_consistent(report, inferences, counters=None):
    """``energy`` is the inferences' counters priced and divided over ``inferences``;
    ``energy_run`` (more than one inference, no set-up) the whole run's, ``inferences`` times
    the first (a second path)."""
    config = MacroConfig(**report["config"])
    arch = report["arch"]
    table = report["energy"]["table"]
    run = energy(counters or report["counters"], config, arch, table)
    assert report["energy"] == run.per(inferences).as_dict()
    assert report["energy"]["total_pj"] == pytest.approx(sum(report["energy"]["pj"].values()))
    assert report["energy"]["total_pj"] > 0
    if inferences > 1 and "energy_setup" not in report:
        assert report["energy_run"] == run.as_dict()
        assert report["energy_run"]["total_pj"] == \
            pytest.approx(inferences * report["energy"]["total_pj"])


@pytest.mark.parametrize("sim", ["golden", "model"])
@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_gemv_energy_is_that_of_its_counters(capsys, gemv_files, sim, arch):
    """Three vectors on a non-default macro (L = 4, R = 2, 64 rows, a 16-bit bus)."""
    report = _json(capsys, "gemv", "--weights", gemv_files["W"], "--input", gemv_files["X"],
                   "--sim", sim, "--arch", arch, "--lanes", 4, "--rows-per-cycle", 2,
                   "--depth", 64, "--bus-bits", 16, "--json")
    assert report["shape"]["batch"] == 3 and report["config"]["bus_bits"] == 16
    _check_consistent(report, 3)
    assert (report["energy"]["pj"]["bus"] > 0) == (arch == "baseline")
    # the weights (8 x 4 int8, in 2 tiles of 4 lanes, 2 rows of 8 bytes each) are written once
    assert report["energy_run"]["bytes"]["offchip"] == 2 * 2 * 8


@pytest.fixture
def network(tmp_path):
    """A two-layer dense network container (16 -> 12 -> 5) and 4 int8 samples."""
    from pim_macro.sw.compiler.network import Dense, Network, save_network
    rng = np.random.default_rng(7)
    net = Network((
        Dense(rng.integers(-128, 128, (12, 16), dtype=np.int8),
              rng.integers(-2000, 2000, 12, dtype=np.int32), 1 << 30, -7,
              output_zero_point=-128, act_min=-128),
        Dense(rng.integers(-128, 128, (5, 12), dtype=np.int8),
              rng.integers(-2000, 2000, 5, dtype=np.int32), 1 << 30, -7,
              input_zero_point=-128)))
    save_network(tmp_path / "net.npz", net)
    np.save(tmp_path / "samples.npy", rng.integers(-128, 128, (4, 16)).astype(np.int8))
    return tmp_path / "net.npz", tmp_path / "samples.npy"


@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_infer_energy_is_that_of_its_counters(capsys, network, arch):
    model, x = network
    args = ("infer", "--model", model, "--input", x, "--sim", "model", "--arch", arch, "--json")
    report = _json(capsys, *args)
    assert report["samples"] == 4
    _check_consistent(report, 4)
    assert report["energy_run"]["pj"]["dram"] > 0, "the weights are loaded in the run"
    # --preloaded: the counters start with the weights in the SRAM: no write, nothing off chip
    preloaded = _json(capsys, *args, "--preloaded")
    _check_consistent(preloaded, 4)
    assert preloaded["counters"]["weight_words"] == 0
    assert preloaded["energy"]["pj"]["dram"] == 0 and preloaded["energy"]["pj"]["sram_write"] == 0
    assert preloaded["energy"]["pj"]["mac"] == pytest.approx(report["energy"]["pj"]["mac"])


def _tflite_model(tmp_path):
    """A .tflite of a 3x3 conv (2 -> 4 channels, SAME, 6x6), a 2x2 max pool and a reshape (host
    ops), and a dense layer (36 -> 3); two int8 images."""
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


@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_infer_tflite_energy(capsys, tmp_path, arch):
    """A graph with host ops: the macro's part, per inference (the inferences' segments), the
    one-time set-up (the resident weights) apart, and the run = set-up + 2 inferences."""
    model, x = _tflite_model(tmp_path)
    args = ("infer", "--model", model, "--input", x, "--sim", "model", "--arch", arch)
    report = _json(capsys, *args, "--json")
    assert report["batch"] == 2 and report["weights_resident"]
    # the summed counters agree with the per-sample cycles the report already gave
    assert report["counters"]["cycles"] == sum(report["cycles"])
    assert report["setup_counters"]["cycles"] == report["setup_cycles"]
    _check_consistent(report, 2)
    config, table = MacroConfig(**report["config"]), report["energy"]["table"]
    setup = energy(report["setup_counters"], config, arch, table)
    assert report["energy_setup"] == setup.as_dict()
    assert report["energy_run"]["total_pj"] == \
        pytest.approx(setup.total_pj + 2 * report["energy"]["total_pj"])
    # resident weights: written once, in the set-up, as padded rows of L lanes (4 conv channels
    # and 3 dense outputs each fill a tile of 8 lanes): 54 rows x 8 bytes from DRAM
    assert report["weight_rows"] == 54
    assert report["energy_setup"]["bytes"]["offchip"] == 54 * 8
    assert report["energy"]["pj"]["dram"] == 0
    assert "2 host ops" in report["energy_note"]
    # the text form: one energy line with the energy per inference and the set-up's
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    line = next(s for s in out.splitlines() if s.startswith("energy: "))
    assert line.startswith(f"energy: {report['energy']['total_pj'] / 1000:.3g} nJ per inference (")
    assert f"set-up {setup.total_pj / 1000:.3g} nJ once" in line and "2 host ops" in line


# -- bad tables: one line, exit 2, before anything runs ---------------------------------------

def _bad_tables(tmp_path):
    text = TABLES["45nm"].read_text()
    cases = {
        "missing": (tmp_path / "nowhere.toml", "no such file"),
        "directory": (tmp_path, "is a directory"),
        "empty name": ("", "is empty"),
        "not TOML": ("x = [\n", "energy table"),
        "no section": (text.replace("[dram_read]", "[dram_reads]"),
                       r"missing section \[dram_read\]"),
        "no value": (text.replace("\npj = 0.3\n", "\nenergy = 0.3\n"), r"\[mac_int8\] has no pj"),
        "zero": (text.replace("\npj = 0.3\n", "\npj = 0\n"), "must be a positive number"),
        "negative": (text.replace("um2 = 0.346", "um2 = -0.346"), "must be a positive number"),
        "text value": (text.replace("pj_per_bit = 0.03125", "pj_per_bit = \"0.03\""),
                       "must be a positive number"),
        "uncited": (text.replace("source = \"Horowitz, ISSCC 2014, Fig. 1.1.9 (45 nm): DRAM",
                                 "notes = \""), "must cite its source"),
    }
    out = {}
    for name, (value, message) in cases.items():
        if isinstance(value, str) and "\n" in value:
            path = tmp_path / f"{name.replace(' ', '_')}.toml"
            path.write_text(value)
            value = path
        out[name] = (str(value), message)
    return out


@pytest.mark.parametrize("command", ["gemv", "infer npz", "infer tflite"])
def test_bad_energy_table(capsys, tmp_path, monkeypatch, gemv_files, network, command):
    import re
    from pim_macro.sw.compiler import graph_compiler

    def never(*args, **kwargs):
        raise AssertionError("the run started before the table was checked")
    monkeypatch.setattr(cli, "run_gemv", never)
    monkeypatch.setattr(cli, "run_network", never)
    monkeypatch.setattr(graph_compiler, "run_graph", never)
    if command == "gemv":
        args = ["gemv", "--weights", gemv_files["W"], "--input", gemv_files["x"]]
    elif command == "infer npz":
        args = ["infer", "--model", network[0], "--input", network[1]]
    else:
        args = ["infer", "--model", *_tflite_model(tmp_path)[:1], "--input", tmp_path / "img.npy"]
    for name, (table, message) in _bad_tables(tmp_path).items():
        code, out, err = _run(capsys, *args, "--json", "--energy-table", table)
        assert code == 2 and out == "", f"{name}: exit {code}, stdout {out!r}"
        assert err.count("\n") == 1 and err.startswith("pim: error: "), f"{name}: {err!r}"
        assert re.search(message, err), f"{name}: the error should say {message!r}: {err!r}"


@pytest.mark.parametrize("arch", ["pim", "baseline"])
def test_graph_result_counters_are_the_segments_sums(tmp_path, arch):
    """``GraphResult.counters`` (what the .tflite energy prices) against the per-op statistics
    and stream words run_graph already kept: MAC cycles, rows and bus beats summed over the
    ops; stream words by kind less what the counters cannot see of their own reads (each
    segment's clearing READ_COUNTERS header, counted before it clears, and its last
    READ_COUNTERS's answer, 1 status + 9 counters, sent after the snapshot)."""
    from pim_macro.sw.compiler.graph_compiler import run_graph
    from pim_macro.sw.compiler.tflite_import import load_tflite
    model, x = _tflite_model(tmp_path)
    result = run_graph(load_tflite(model), np.load(x), MacroConfig(), sim="model", arch=arch)
    macro = [s for s in result.ops if s.kind == "macro"]
    segments = len(macro) * result.batch
    for name in ("cycles", "mac_active", "row_reads", "bus_beats"):
        assert result.counters[name] == sum(getattr(s, name) for s in macro), name
    assert result.counters["beats_in"] == sum(result.words_in.values()) - segments
    assert result.counters["beats_out"] == sum(result.words_out.values()) - 10 * segments
    assert (result.counters["bus_beats"] > 0) == (arch == "baseline")
    assert result.counters["weight_words"] == 0 and \
        result.setup_counters["weight_words"] == result.weight_rows * 8 // 4
    assert result.setup_counters["beats_in"] == sum(result.setup_words_in.values()) - 1


@pytest.mark.parametrize("pj, text", [(0, "0 pJ"), (12.34, "12.3 pJ"), (999.4, "999 pJ"),
                                      (999.7, "1 nJ"), (14620, "14.6 nJ"), (4.4e7, "44 uJ"),
                                      (2.5e9, "2.5 mJ"), (2e12, "2 J")])
def test_text_form_units(pj, text):
    """The energy line's unit: three digits, never ``1e+03 pJ``."""
    assert cli._joules(pj) == text
