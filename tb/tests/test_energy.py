"""The energy model (:mod:`pim_macro.sw.models.energy`): its arithmetic worked by hand on a small
program, its tables' checks, and the same energy from the RTL's counters and the cycle model's.

Cost: well under a second for the model tests; the RTL agreement test runs four short session
runs per simulator and architecture on the session builds ``test_session.py`` makes anyway
(about 5 s once built).
"""

import math

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Counter, MacroConfig
from pim_macro.sw.models import energy as em
from pim_macro.sw.models.cycle_model import predict
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.driver import Session
from pim_macro.sw.runtime.rtl import SIMULATORS


#: test_session.py's configuration, so that the RTL test reuses its session builds.
CONFIG = MacroConfig(lanes=8, depth=128, act_depth=256, bias_depth=16, bus_bits=16)


def _program():
    """Clear the counters; write 3 weight rows; load 3 activations; MATVEC them; emit the 8
    lanes raw; read the counters."""
    w = np.arange(24, dtype=np.int8).reshape(8, 3)
    return (asm.encode_read_counters(clear=True)
            + asm.encode_write_weights(0, asm.weight_rows(w, CONFIG), CONFIG)
            + asm.encode_load_act(0, [1, -2, 3]) + asm.encode_matvec(0, 0, 3)
            + asm.encode_emit_raw(CONFIG.lanes) + asm.encode_read_counters())


def test_counts_by_hand():
    """The counters of the program, from the README's command table: WRITE_WEIGHTS of 3 rows is
    a header, an argument and 3 x 8 lanes / 4 = 6 payload words; LOAD_ACT of 3 bytes 3 words;
    MATVEC 2; EMIT_RAW 2; the final READ_COUNTERS' header 1 (counted before its snapshot): 16
    words in. Out, since the clear: the clearing answer's status and 9 counters (10), a status
    each for WRITE_WEIGHTS, LOAD_ACT and MATVEC (3), and EMIT_RAW's status and 8 lanes (9): 22.
    """
    for arch in ARCHES:
        counters = predict(_program(), CONFIG, arch=arch).counters
        assert counters["mac_active"] == 3 and counters["row_reads"] == 3
        assert counters["weight_words"] == 6
        assert counters["beats_in"] == 16 and counters["beats_out"] == 10 + 3 + 9
        # a 64-bit row over a 16-bit bus: 4 beats per row
        assert counters["bus_beats"] == (12 if arch == "baseline" else 0)


def test_energy_by_hand():
    """The 45 nm table's numbers (energy_tables/45nm.toml), applied by hand to the counts above
    (8 lanes, R = 1, 128 rows of 8 bytes, a 16-bit bus)."""
    side_mm = math.sqrt(128 * 8 * 8 * 0.346) / 1000     # 8192 bit cells of 0.346 um^2, square
    wire = 0.121 * side_mm                                # pJ per bit across it
    sram = 10.0 / 64                                      # 128 B per lane < 8 KB: the 8 KB point
    want = {
        "pim": {"mac": 3 * 8 * 0.3, "sram_read": 3 * 64 * sram, "sram_write": 6 * 32 * sram,
                "bus": 0.0, "stream": (16 + 22) * 32 * wire,
                "register": (3 * 8 * 32 + (16 + 22) * 32) * 0.03125, "dram": 6 * 4 * 162.5},
    }
    want["baseline"] = dict(want["pim"], bus=12 * 16 * wire,
                            register=want["pim"]["register"] + 12 * 16 * 0.03125)
    for arch in ARCHES:
        got = em.energy(predict(_program(), CONFIG, arch=arch).counters, CONFIG, arch)
        assert got.side_mm == pytest.approx(side_mm, rel=1e-12)
        assert got.pj == pytest.approx(want[arch], rel=1e-12), arch
        assert got.total_pj == pytest.approx(sum(want[arch].values()), rel=1e-12)
        assert got.bytes == {"array": (192 + 192) / 8, "stream": 38 * 4, "offchip": 24,
                             "bus": 24.0 if arch == "baseline" else 0.0}
        assert got.per(2).total_pj == pytest.approx(got.total_pj / 2, rel=1e-12)
    # 7 nm: an int8 MAC is 0.07 + 0.03 pJ (Jouppi et al. 2021, Table 2)
    got = em.energy(predict(_program(), CONFIG).counters, CONFIG, "pim", table="7nm")
    assert got.pj["mac"] == pytest.approx(24 * 0.10, rel=1e-12)
    assert got.pj["dram"] == pytest.approx(24 * 1300 / 8, rel=1e-12)


def test_sram_energy_follows_the_array_size():
    """Log-log interpolation between Horowitz's points, clamped at both ends."""
    table = em.load_table("45nm")
    assert table.sram_pj_per_bit(1024) == 10 / 64
    assert table.sram_pj_per_bit(32768) == pytest.approx(20 / 64)
    assert table.sram_pj_per_bit(16384) == pytest.approx(math.sqrt(10 * 20) / 64)
    assert table.sram_pj_per_bit(1 << 30) == 100 / 64
    # a larger macro reads its rows at a higher per-bit energy, and moves them further
    small = em.energy({"row_reads": 1}, MacroConfig(depth=256), "pim")
    large = em.energy({"row_reads": 1}, MacroConfig(depth=65536, rows_per_cycle=4), "pim")
    assert large.unit_pj["sram_bit"] > small.unit_pj["sram_bit"]
    assert large.side_mm > small.side_mm


def test_every_shipped_table_cites_every_entry():
    assert set(em.TABLES) >= {"45nm", "7nm"}
    for name in em.TABLES:
        table = em.load_table(name)
        assert set(table.sources) == {"mac_int8", "sram_access", "wire", "register_write",
                                      "dram_read", "sram_cell"}
        assert all(len(s) > 20 for s in table.sources.values()), name


@pytest.mark.parametrize("text, message", [
    ("not = [toml", "energy table"),
    ("name = 'x'\n", r"missing section \[mac_int8\]"),
    ("[mac_int8]\npj = 0.3\n", r"\[mac_int8\] must cite its source"),
    ("[mac_int8]\npj = -1\nsource = 'a paper, table 1'\n[sram_access]\ncapacity_bytes = [1]\n"
     "pj_per_64_bits = [1]\nsource = 'a paper, table 1'\n[wire]\npj_per_bit_mm = 1\nsource = "
     "'a paper, table 1'\n[register_write]\npj_per_bit = 1\nsource = 'a paper, table 1'\n"
     "[dram_read]\npj_per_byte = 1\nsource = 'a paper, table 1'\n[sram_cell]\num2 = 1\n"
     "source = 'a paper, table 1'\n", r"\[mac_int8\] pj must be a positive number"),
])
def test_a_bad_table_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(em.EnergyTableError, match=message) as info:
        em.load_table(path)
    assert "\n" not in str(info.value)
    with pytest.raises(em.EnergyTableError, match="no such file"):
        em.load_table(tmp_path / "missing.toml")


def test_a_user_table_in_the_same_format_is_used(tmp_path):
    """Copy the 45 nm table, double the MAC energy: only the MAC term doubles."""
    text = em.TABLES["45nm"].read_text().replace("pj = 0.3\n", "pj = 0.6\n")
    (tmp_path / "mine.toml").write_text(text)
    counters = predict(_program(), CONFIG).counters
    base = em.energy(counters, CONFIG, "pim")
    mine = em.energy(counters, CONFIG, "pim", table=tmp_path / "mine.toml")
    assert mine.pj["mac"] == pytest.approx(2 * base.pj["mac"])
    assert {k: v for k, v in mine.pj.items() if k != "mac"} == \
        {k: v for k, v in base.pj.items() if k != "mac"}


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="ROW_READS must be a non-negative integer"):
        em.energy({"row_reads": -1}, CONFIG, "pim")
    with pytest.raises(ValueError, match="arch must be"):
        em.energy({}, CONFIG, "gpu")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        em.energy({}, CONFIG, "pim").per(0)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_rtl_counters_and_cycle_model_give_the_same_energy(sim, arch):
    """The same program on the RTL (smooth, then with random stalls on both sides) and on the
    cycle model: the counters energy uses agree word for word, so the energies are equal, and
    stalls change no energy (the model prices events, not time)."""
    want = predict(_program(), CONFIG, arch=arch).counters
    expected = em.energy(want, CONFIG, arch)
    assert expected.total_pj > 0 and expected.events.dram_bytes == 24
    for stall in ({}, {"idle": 0.3, "backpressure": 0.4}):
        with Session(CONFIG, sim=sim, arch=arch, seed=5, **stall) as session:
            got = asm.parse_responses(session.run(_program()))[-1].counters()
        used = {c.name.lower() for c in Counter} - {"cycles", "stall_in", "stall_out"}
        assert {k: got[k] for k in used} == {k: want[k] for k in used}, (sim, stall)
        assert em.energy(got, CONFIG, arch) == expected
