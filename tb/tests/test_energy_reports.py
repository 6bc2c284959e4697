"""Energy in the ``make sim`` and ``make tiny`` reports (pim_macro.tb.experiments.regression and
.tiny): energies hand-computed from the 45 nm table's numbers and canned counters, and a counter
that differs between the RTL and the cycle model failing the regression. Pure Python, no RTL:
about a second."""

import math

import numpy as np
import pytest

from pim_macro.hw.isa import Counter, MacroConfig
from pim_macro.sw.models.cycle_model import predict
from pim_macro.sw.models.energy import largest_kinds
from pim_macro.sw.runtime import asm
from pim_macro.tb.experiments import regression


# The 45 nm table's numbers (sw/models/energy_tables/45nm.toml), written out so that a change
# to the table or to the model's arithmetic shows here.
MAC_PJ = 0.3                    # int8 multiply 0.2 + 32-bit add 0.1
SRAM_8KB_PJ_PER_BIT = 10.0 / 64  # 64-bit access of an 8 KB SRAM; smaller arrays are clamped to it
WIRE_PJ_PER_BIT_MM = 0.121
REGISTER_PJ_PER_BIT = 1.0 / 32
DRAM_PJ_PER_BYTE = 1300 / 8
CELL_UM2 = 0.346

# The default macro: 8 lanes, R = 1, 256 rows of 8 bytes, a 32-bit bus. Each lane's column
# is 256 bytes (< 8 KB: the 8 KB figure); the weight SRAM is 256 x 8 x 8 = 16384 bit cells.
SIDE_MM = math.sqrt(16384 * CELL_UM2) / 1000
WIRE_PJ_PER_BIT = WIRE_PJ_PER_BIT_MM * SIDE_MM

# The counters of the "gemv 8x64 int8" workload (64 weight rows of 8 int8, streamed in as 128
# words, one vector): what the RTL reports for PIM and baseline.
PIM = {"cycles": 274, "mac_active": 64, "row_reads": 64, "beats_in": 182, "beats_out": 18,
       "stall_in": 0, "stall_out": 0, "bus_beats": 0, "weight_words": 128}
BASELINE = {**PIM, "cycles": 339, "bus_beats": 128}


def hand_pj(counters, baseline):
    """The breakdown by hand: 64 rows x 8 lanes MACs, 64 rows x 64 bits read, 128 words x 32
    bits written and fetched (512 bytes), 200 stream words x 32 bits, 64 x 8 accumulators x 32
    bits, and the baseline's 128 bus words x 32 bits (also written into its row register)."""
    bus_bits = counters["bus_beats"] * 32 if baseline else 0
    stream_bits = (counters["beats_in"] + counters["beats_out"]) * 32
    return {
        "mac": counters["mac_active"] * 8 * MAC_PJ,
        "sram_read": counters["row_reads"] * 64 * SRAM_8KB_PJ_PER_BIT,
        "sram_write": counters["weight_words"] * 32 * SRAM_8KB_PJ_PER_BIT,
        "bus": bus_bits * WIRE_PJ_PER_BIT,
        "stream": stream_bits * WIRE_PJ_PER_BIT,
        "register": (counters["mac_active"] * 8 * 32 + bus_bits + stream_bits)
        * REGISTER_PJ_PER_BIT,
        "dram": counters["weight_words"] * 4 * DRAM_PJ_PER_BYTE,
    }


def test_energy_columns_by_hand():
    pim, base = hand_pj(PIM, False), hand_pj(BASELINE, True)
    # The numbers themselves, once: 153.6 + 640 + 640 + 0 + 58.31 + 712 + 83200 pJ.
    assert sum(pim.values()) == pytest.approx(85403.9, abs=0.05)
    assert base["bus"] == pytest.approx(37.32, abs=0.01) and base["register"] == 840.0
    cols = regression.energy_columns(PIM, BASELINE, MacroConfig())
    assert cols["pim_pj"] == pytest.approx(sum(pim.values()), rel=1e-12)
    assert cols["baseline_pj"] == pytest.approx(sum(base.values()), rel=1e-12)
    assert cols["energy_ratio"] == pytest.approx(sum(base.values()) / sum(pim.values()))
    for arch, want in (("pim", pim), ("baseline", base)):
        got = cols["energy"][arch]
        assert got["pj"] == pytest.approx(want, rel=1e-12), arch
        assert got["bytes"] == {"array": (4096 + 4096) / 8, "bus": 512.0 if arch == "baseline"
                                else 0.0, "stream": 800.0, "offchip": 512}
        assert got["table"] == "45nm"


def test_energy_columns_per_vector():
    """A batch of 4 vectors divides every kind and level by 4 (the weights are written once for
    the four: each vector carries a quarter of their fetch)."""
    one = regression.energy_columns(PIM, BASELINE, MacroConfig())
    four = regression.energy_columns(PIM, BASELINE, MacroConfig(), batch=4)
    assert four["pim_pj"] == pytest.approx(one["pim_pj"] / 4)
    assert four["energy"]["baseline"]["bytes"]["offchip"] == 128
    assert four["energy"]["pim"]["pj"]["dram"] == pytest.approx(128 * DRAM_PJ_PER_BYTE)
    assert four["energy_ratio"] == pytest.approx(one["energy_ratio"])
    with pytest.raises(ValueError):
        regression.energy_columns(PIM, BASELINE, MacroConfig(), batch=0)


def test_energy_columns_other_table():
    """The 7 nm table (its int8 MAC: 0.07 pJ multiply + 0.03 pJ add) prices the same
    counters lower."""
    cols = regression.energy_columns(PIM, BASELINE, MacroConfig(), table="7nm")
    assert cols["energy"]["pim"]["pj"]["mac"] == pytest.approx(512 * 0.10)
    assert cols["pim_pj"] < sum(hand_pj(PIM, False).values())


def test_largest_kinds():
    assert largest_kinds({"mac": 1.0, "dram": 97.0, "sram_read": 2.0}) == \
        "dram 97%, sram_read 2%"
    assert largest_kinds({"mac": 0.0}) == "-"


def test_check_compares_every_counter_with_the_cycle_model():
    """``_check`` on an output stream (the cycle model's own, standing in for the RTL's): its
    counters pass; the same stream with the final WEIGHT_WORDS or BEATS_OUT (counters the
    energy prices, not the cycles) changed is caught, and fails the regression naming it."""
    workload = regression.workloads(quick=True)[1]          # gemv 8x64 int8
    out = predict(workload.words, workload.config, arch="pim").out
    row = regression._check(workload, "pim", True, out)
    assert row["model"] and row["counters"]["weight_words"] == 128
    assert asm.parse_responses(out)[-1].counters() == row["counters"]
    for counter in (Counter.WEIGHT_WORDS, Counter.BEATS_OUT):
        tampered = list(out)
        # The final READ_COUNTERS: its status word, then the counters in Counter order.
        tampered[len(out) - len(Counter) + counter.value] += 1
        bad = regression._check(workload, "pim", True, tampered)
        assert not bad["model"] and counter.name.lower() in bad["model_error"]
        row = {"workload": "w", "sim": "verilator", "golden_match": True,
               "outputs_identical": True, "model_match": bad["model"],
               "errors": [bad["model_error"]]}
        [problem] = regression.failures([row], [])
        assert "w on verilator" in problem and counter.name.lower() in problem


def test_bad_energy_table_is_one_line(tmp_path, capsys):
    """Checked before any simulator starts: exit 2 and one line naming the table."""
    missing = tmp_path / "none.toml"
    with pytest.raises(SystemExit) as exc:
        regression.main(["--energy-table", str(missing)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "none.toml" in err[-1] and "no such file" in err[-1]


# -- make tiny: per-inference counters and energy, the set-up apart ---------------------------

def fc_graph(seed=0):
    """One FULLY_CONNECTED layer, 40 inputs -> 8 outputs: one tile of the 8 lanes, 40 weight
    rows of 8 bytes (80 words)."""
    from pim_macro.sw.compiler.graph import FullyConnected, Graph, Tensor
    rng = np.random.default_rng(seed)
    tensors = [Tensor("x", (1, 40), np.int8, 0.1, 0), Tensor("y", (1, 8), np.int8, 0.1, 0)]
    op = FullyConnected(0, 1, rng.integers(-128, 128, (8, 40)).astype(np.int8),
                        output_shape=(8,), bias=np.zeros(8, np.int32),
                        multiplier=np.full(8, 1 << 30), shift=np.full(8, -8),
                        input_zero_point=0, output_zero_point=0, act_min=-128, act_max=127,
                        double_rounding=False)
    return Graph(tensors, [op], [0], [1], source="test")


def _runs(config, batch=2):
    from pim_macro.sw.compiler.graph_compiler import run_graph
    x = np.random.default_rng(1).integers(-128, 128, (batch, 40)).astype(np.int8)
    return {arch: run_graph(fc_graph(), x, config, sim="model", arch=arch)
            for arch in ("pim", "baseline")}


def test_run_graph_counts_the_inferences_and_the_setup_apart():
    """The default macro holds the 80 weight words: written once in the set-up, none per
    inference; a 16-row macro cannot: every inference writes all 80 again (its set-up loads
    the 8 channels only)."""
    fit = _runs(MacroConfig())
    for arch, r in fit.items():
        assert r.weights_resident
        assert r.setup_counters["weight_words"] == 80 and r.counters["weight_words"] == 0
        assert r.setup_counters["cycles"] == r.setup_cycles
        assert r.counters["cycles"] == sum(r.cycles)
        assert r.counters["mac_active"] == r.counters["row_reads"] == 2 * 40
        # The baseline moves each 64-bit row in two 32-bit beats.
        assert r.counters["bus_beats"] == (2 * 40 * 2 if arch == "baseline" else 0)
    spill = _runs(MacroConfig(depth=16))
    for r in spill.values():
        assert not r.weights_resident and r.channels_resident
        assert r.setup_counters["weight_words"] == 0
        assert r.counters["weight_words"] == 2 * 80
        assert r.counters["cycles"] == sum(r.cycles)


def test_tiny_energy_per_inference_by_hand():
    from pim_macro.tb.experiments import tiny
    runs = _runs(MacroConfig())
    fields = tiny.energy_fields(runs)
    for arch, r in runs.items():
        per = {k: v / 2 for k, v in r.counters.items()}
        assert fields["counters"][arch] == per
        want = hand_pj(per, arch == "baseline")
        assert fields["energy"][arch]["pj"] == pytest.approx(want, rel=1e-12)
        assert want["mac"] == pytest.approx(40 * 8 * MAC_PJ) and want["dram"] == 0
        assert fields["energy_pj"][arch] == pytest.approx(sum(want.values()))
        # The set-up: 80 words fetched once (not per inference), 80 x 32 bits written.
        setup = fields["setup_energy"][arch]
        assert setup["pj"]["dram"] == pytest.approx(80 * 4 * DRAM_PJ_PER_BYTE)
        assert setup["pj"]["sram_write"] == pytest.approx(80 * 32 * SRAM_8KB_PJ_PER_BIT)
        assert setup["bytes"]["offchip"] == 320
    assert fields["energy_ratio"] == pytest.approx(
        fields["energy_pj"]["baseline"] / fields["energy_pj"]["pim"])
    # Spilling: each inference fetches its 320 weight bytes again.
    spill = tiny.energy_fields(_runs(MacroConfig(depth=16)))
    assert spill["setup_energy"]["pim"]["bytes"]["offchip"] == 0      # channels only
    for arch in ("pim", "baseline"):
        assert spill["energy"][arch]["bytes"]["offchip"] == 320
        assert spill["energy"][arch]["pj"]["dram"] == pytest.approx(320 * DRAM_PJ_PER_BYTE)


def test_tiny_tables_show_the_energy():
    from pim_macro.tb.experiments import tiny
    fields = tiny.energy_fields(_runs(MacroConfig()))
    row = {"model": "m.tflite", "label": "fit", "config": "l8", "macs": 320,
           "weight_bytes": 320, "sram_bytes": 2048, "fits": True, "passes": 1,
           "cycles": {"pim": 83, "baseline": 124}, "speedup": 124 / 83,
           "utilization": {"FULLY_CONNECTED": 0.5}, "host_work": 0.0, "host_traffic": 0.0,
           **fields}
    pim, base = fields["energy_pj"]["pim"], fields["energy_pj"]["baseline"]
    assert (f"| 1.49x | {pim / 1e6:#.3g} | {base / 1e6:#.3g} | {base / pim:.2f}x | "
            in tiny.table([row]))
    lines = tiny.energy_table([row]).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| m.tflite | fit | pim | ")
    # Bytes per level: array (40 rows x 8 bytes read), bus (none for PIM), stream, off-chip 0;
    # the set-up's 320 weight bytes at 162.5 pJ each dominate its energy.
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells[5:7] == ["320", "0"] and cells[8] == "0"
    assert cells[9] == f"{fields['setup_energy']['pim']['total_pj'] / 1e6:#.3g}"
    assert [c.strip() for c in lines[3].split("|")[1:-1]][6] == "320"     # baseline bus


def test_tiny_bad_energy_table_is_one_line(tmp_path, capsys):
    from pim_macro.tb.experiments import tiny
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n")
    with pytest.raises(SystemExit) as exc:
        tiny.main(["--models", str(tmp_path), "--energy-table", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "bad.toml" in err[-1] and "missing section" in err[-1]


def test_tiny_rtl_check_compares_every_counter():
    """An RTL run agrees with the model's row only if its cycles and every counter (summed over
    its inferences) are the model's one inference as many times."""
    from types import SimpleNamespace
    from pim_macro.tb.experiments import tiny
    row = {"cycles": {"pim": 83}, "counters": {"pim": {"cycles": 83, "weight_words": 0,
                                                       "beats_in": 18}}}
    good = SimpleNamespace(batch=2, cycles=[83, 83],
                           counters={"cycles": 166, "weight_words": 0, "beats_in": 36})
    assert tiny.matches_model(good, row, "pim")
    more = SimpleNamespace(**{**vars(good), "counters": {**good.counters, "beats_in": 37}})
    assert not tiny.matches_model(more, row, "pim")
    slow = SimpleNamespace(**{**vars(good), "cycles": [83, 84]})
    assert not tiny.matches_model(slow, row, "pim")
