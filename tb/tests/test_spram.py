"""The iCE40 UP5K's SPRAM as the weight store (:mod:`pim_macro.hw.spram`, fabric ``ice40_spram``)
and its single-port rule: ``WRITE_WEIGHTS`` waits until no ``MATVEC`` is queued or running.

The RTL test builds the iCEBreaker's SPRAM configuration itself (``spram``: 16384 rows of two
sub-arrays of 4 lanes, the four SB_SPRAM256KA simulated with Yosys' model) for both architectures
on both simulators, and plays one short program in which weight writes follow MATVECs on other
rows (the wait the rule adds): results equal to the golden model, cycles equal to the cycle
model's; and, for PIM on Icarus, a configuration whose rows take two banks of blocks. Cost
(otherwise idle machine): a Verilator build of about 15 s (20 s of CPU) per architecture cold
(cached after), each run a second or two; about 5 s per Icarus case (three); the other tests a
few seconds together.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from pim_macro.hw.board import BOARDS
from pim_macro.hw.fabric import FABRICS, Fabric
from pim_macro.hw.isa import ARCHES, MacroConfig, Opcode
from pim_macro.hw.spram import SPRAM, spram_blocks
from pim_macro.hw.weight_store import weight_store_for
from pim_macro.sw.models.cycle_model import CycleModel, predict
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl, vendor_models
from pim_macro.tb.harness.programs import compare, compare_timing, random_channels, random_quant


BOARD = BOARDS["icebreaker"]
NAME = "spram"
CONFIG = BOARD.config(NAME)
#: 32-bit rows, 32768 of them: two banks of two blocks, one above the other, in either
#: architecture (the bank multiplexer the board's configuration does not need).
BANKED = MacroConfig(lanes=4, depth=32768, act_depth=1024, bias_depth=64, requantizers=1,
                     bus_bits=32)


class _FabricOnly:
    """A stand-in platform that only names a fabric (read by ``fabric_for``)."""

    def __init__(self, fabric):
        self.pim_fabric = fabric


def spram_program(config, rng):
    """Weights written at rows 0.., around the middle (where a second SPRAM bank starts when
    the rows take two banks) and at the top; MATVECs over them, each
    of the two later writes dispatched right behind a MATVEC on other rows; raw, int8 and
    write-back results. Every row read is written first (an SPRAM powers up undefined)."""
    lanes, r, depth = config.lanes, config.rows_per_cycle, config.depth
    a, c, b = (0, 12), (depth // 2 - 4, 8), (depth - 10, 10)

    def weights(span):
        return asm.encode_write_weights(span[0], rng.integers(-128, 128, (span[1], r, lanes)),
                                        config)
    words = asm.encode_load_act(0, rng.integers(-128, 128, config.act_depth))
    words += asm.encode_load_bias(0, rng.integers(-2**20, 2**20, lanes))
    words += asm.encode_load_quant(0, *random_channels(rng, lanes))
    words += asm.encode_read_counters(clear=True)
    words += weights(a) + weights(b)
    words += asm.encode_matvec(a[0], 0, a[1])
    words += weights(c)                                   # waits for the MATVEC of a
    words += asm.encode_matvec(c[0], 64 * r, c[1], accumulate=True)
    words += asm.encode_emit_raw(lanes, bias=0)
    words += asm.encode_matvec(b[0], 128 * r, b[1])
    words += weights(a)                                   # waits for the MATVEC of b
    words += asm.encode_matvec(a[0], 200 * r, a[1], accumulate=True)
    words += asm.encode_emit_int8(lanes, channel=0, **random_quant(rng))
    words += asm.encode_writeback(lanes, 4 * r, channel=0, **random_quant(rng))
    words += asm.encode_matvec(c[0], 0, c[1])
    words += asm.encode_emit_raw(lanes)
    return words + asm.encode_status() + asm.encode_read_counters()


def test_board_config_fills_the_spram():
    """The iCEBreaker's SPRAM configuration is built on the SPRAM fabric and takes the four
    blocks whole (128 KB) in both architectures; the other configurations keep block RAM."""
    assert BOARD.fabric_of(NAME) is FABRICS["ice40_spram"]
    assert BOARD.fabric_of("l4") is BOARD.fabric and BOARD.fabric.weight_memory == "bram"
    assert CONFIG.weight_bytes == 128 * 1024
    assert CONFIG.rows_per_cycle * spram_blocks(8 * CONFIG.lanes, CONFIG.depth) == 4


def test_spram_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="multiple of 32"):
        SPRAM(48, 256)
    with pytest.raises(ValueError, match="needs 8 SB_SPRAM256KA"):
        SPRAM(64, 32768)
    with pytest.raises(ValueError, match="weight_memory"):
        Fabric(weight_memory="dram")
    # Two sub-arrays of 8 lanes: 8 blocks.
    store = weight_store_for("pim")(MacroConfig(lanes=8, rows_per_cycle=2, depth=64))
    with pytest.raises(ValueError, match="need 8 SB_SPRAM256KA"):
        Fragment.get(store, _FabricOnly(FABRICS["ice40_spram"]))


@pytest.mark.parametrize("arch", ARCHES)
def test_spram_is_instantiated_with_its_model(arch):
    """The SPRAM fabric's Verilog instantiates the four blocks for ``spram`` (and for a banked
    configuration) in either architecture; the simulators get Yosys' models of both
    primitives."""
    from pim_macro.sw.runtime.rtl import verilog_for
    for config in (CONFIG, BANKED):
        assert verilog_for(config, arch, "macro", "ice40_spram").count("SB_SPRAM256KA ") == 4
    models = vendor_models("ice40_spram")
    assert "module SB_SPRAM256KA (" in models and "module SB_MAC16 (" in models
    assert "SB_SPRAM256KA" not in vendor_models("ice40_dual")


@pytest.mark.parametrize("arch", ARCHES)
def test_write_waits_for_every_matvec(arch):
    """The rule in the cycle model: on the SPRAM a ``WRITE_WEIGHTS`` right behind a MATVEC of
    ``n`` other rows is dispatched after the MATVEC's last row, so each more row (a row every
    store interval) delays it by an interval; on block RAM it does not wait at all. The results
    are the same."""
    config = CONFIG
    interval = weight_store_for(arch).timing(config)[1]
    rng = np.random.default_rng(3)

    def gap(n, fabric):
        r = config.rows_per_cycle
        words = asm.encode_write_weights(0, np.ones((n, r, config.lanes)), config)
        words += asm.encode_load_act(0, np.ones(n * r))
        words += asm.encode_matvec(0, 0, n)
        words += asm.encode_write_weights(100, rng.integers(-128, 128, (2, r, config.lanes)),
                                          config)
        model = CycleModel(config, arch=arch, fabric=fabric)
        out = model.run(words)
        (_, mv), (_, wr) = [t for t in model.trace if t[0] in (Opcode.MATVEC,
                                                                 Opcode.WRITE_WEIGHTS)][-2:]
        return wr - mv, out
    (short, out_s), (long, out_l) = gap(8, "ice40_spram"), gap(40, "ice40_spram")
    assert long - short == 32 * interval, "the write should wait for each row of the MATVEC"
    assert short >= 8 * interval, "the write should go after the MATVEC's rows"
    (short_b, out_b), (long_b, _) = gap(8, "ice40_dual"), gap(40, "ice40_dual")
    assert long_b == short_b < 8, "on block RAM a write to other rows should not wait"
    assert [w for w in out_s] == [w for w in out_b], "the fabric must not change results"


# The board's configuration in both architectures on both simulators; the banked one (the bank
# multiplexer is the SPRAM component's, the same in both architectures) for PIM on Icarus only
# (a build there takes a second, on Verilator a quarter of a minute).
RTL_CASES = ([(arch, NAME, sim) for arch in ARCHES for sim in SIMULATORS]
             + [("pim", "banked", "icarus")])


@pytest.mark.parametrize("arch,name,sim", RTL_CASES)
def test_spram_rtl(arch, name, sim):
    """The SPRAM build plays :func:`spram_program` bit-exact with the golden model, every
    counter as the cycle model predicts for the SPRAM fabric, which is slower than block RAM on
    this program: the single-port wait happened."""
    config = CONFIG if name == NAME else BANKED
    words = spram_program(config, np.random.default_rng(14))
    spram, bram = (predict(words, config, arch=arch, fabric=f).cycles
                   for f in ("ice40_spram", "ice40_dual"))
    assert spram > bram, "the program should make a write wait for a MATVEC"
    [result] = run_rtl([Job(words)], config, sim=sim, arch=arch, fabric="ice40_spram")
    assert result.finished, "the SPRAM macro should finish the program"
    compare(words, result.out, config, arch=arch, where=f"{name} {arch}")
    assert compare_timing(words, result.out, config, arch=arch, fabric="ice40_spram",
                          where=f"{name} {arch}") == 1


def _two_layer_tflite():
    """An int8 .tflite of two FULLY_CONNECTED layers, 64 -> 16 -> 8 (1152 weights)."""
    from pim_macro.sw.compiler.tflite_builder import ModelBuilder
    rng = np.random.default_rng(8)
    b = ModelBuilder()
    x = b.input((1, 64), np.int8, scale=0.05, zero_point=-3)
    h = b.fully_connected(x, rng.integers(-127, 128, (16, 64)), rng.integers(-900, 900, 16),
                          w_scale=0.01, out_scale=0.08, out_zero_point=4)
    y = b.fully_connected(h, rng.integers(-127, 128, (8, 16)), rng.integers(-900, 900, 8),
                          w_scale=0.02, out_scale=0.1, out_zero_point=-1)
    return b.to_bytes([x], [y])


@pytest.mark.parametrize("arch", ARCHES)
def test_run_graph_times_the_fabric(arch):
    """``run_graph(..., fabric=)`` reaches the cycle model (what ``make spram`` relies on):
    with the weights resident (written once, at set-up) the single port costs nothing; where
    every inference writes them again it costs cycles; the outputs never change."""
    from dataclasses import replace
    from pim_macro.sw.compiler.graph_compiler import run_graph
    from pim_macro.sw.compiler.tflite_import import load_tflite
    graph = load_tflite(_two_layer_tflite())
    x = np.random.default_rng(2).integers(-128, 128, (2, 64)).astype(np.int8)
    spram = FABRICS["ice40_spram"]
    bram = replace(spram, weight_memory="bram")
    cycles = {}
    for depth in (256, 16):
        config = MacroConfig(lanes=8, depth=depth, act_depth=256, bias_depth=32, bus_bits=16)
        runs = {f.weight_memory: run_graph(graph, x, config, sim="model", arch=arch, fabric=f)
                for f in (spram, bram)}
        assert np.array_equal(runs["spram"].outputs[0], runs["bram"].outputs[0])
        cycles[depth] = {k: r.cycles for k, r in runs.items()}
        resident = runs["spram"].weights_resident
        assert resident == (depth == 256)
        assert (runs["spram"].setup_words_in.get("weights", 0) > 0) == resident
        assert (runs["spram"].words_in.get("weights", 0) > 0) != resident
    assert cycles[256]["spram"] == cycles[256]["bram"], "resident: the rule should cost nothing"
    assert all(s > b for s, b in zip(cycles[16]["spram"], cycles[16]["bram"])), \
        "reloading: a write should wait for the MATVECs before it"


def test_make_spram_refuses_bad_arguments(tmp_path, capsys):
    """A clock that gives no rate is refused before anything runs; a folder without the model
    says where to get it."""
    from pim_macro.tb.experiments import spram
    for mhz in ("0", "-5", "nan", "inf"):
        with pytest.raises(SystemExit) as e:
            spram.main(["--models", str(tmp_path), "--mhz", mhz])
        assert e.value.code == 2
        assert "--mhz must be" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not found in .*github.com/mlcommons/tiny"):
        spram.main(["--models", str(tmp_path)])
