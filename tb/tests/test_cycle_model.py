"""The cycle model (pim_macro.sw.models.cycle_model) against hand-worked timings and against the
gateware itself, run without stalls in Amaranth's simulator (the cocotb tests in test_rtl.py check
it on Icarus and Verilator as well)."""

import random

import numpy as np
import pytest

from pim_macro.hw.fabric import Fabric
from pim_macro.hw.isa import ARCHES, Counter, MacroConfig
from pim_macro.hw.mac_array import MacArray
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.cycle_model import CycleModel, predict
from pim_macro.sw.compiler.gemv import compile_gemv, run_gemv
from pim_macro.tb.harness.macro_sim import play
from pim_macro.tb.harness.programs import compare, compare_timing, random_program


def matvec_cycles(n, config, arch):
    """CYCLES between READ_COUNTERS(clear) and READ_COUNTERS around one n-row MATVEC, worked
    out from the timing rules in hw/macro.py by hand:

    clear dispatches at g; its C = len(Counter) data words take g+1..g+C (C = 9 since ISA version
    5); the MATVEC header and argument take g+C+1, g+C+2 and it dispatches at g+C+3; its rows are
    requested from g+C+4, one every B cycles
    (B = 1 for PIM, beats per row for the baseline); the last one lands LATENCY after its
    request (1 for PIM, B + 1 for the baseline); the engine is idle MacArray.LATENCY cycles
    after that (the MAC pipeline), and the READ_COUNTERS waiting in DISPATCH since g+C+2 goes
    the cycle after (the controller acts on a verdict registered the cycle before)."""
    beats = 1 if arch == "pim" else config.beats_per_row
    latency = 1 if arch == "pim" else config.beats_per_row + 1
    last_request = len(Counter) + 4 + (n - 1) * beats
    return last_request + latency + MacArray.LATENCY + 1


HAND_CONFIGS = [MacroConfig(), MacroConfig(lanes=16, rows_per_cycle=2, bus_bits=8),
                MacroConfig(lanes=4, rows_per_cycle=4, bus_bits=64)]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("config", HAND_CONFIGS, ids=lambda c: c.tag("baseline"))
@pytest.mark.parametrize("n", [1, 5, 40])
def test_model_matches_hand_worked_matvec(config, arch, n):
    words = (asm.encode_read_counters(clear=True) + asm.encode_matvec(0, 0, n)
             + asm.encode_read_counters())
    prediction = predict(words, config, arch=arch)
    assert prediction.cycles == matvec_cycles(n, config, arch), \
        f"{arch}: {n} rows should take {matvec_cycles(n, config, arch)} cycles"
    assert prediction.counters["row_reads"] == n
    if arch == "baseline":
        assert prediction.counters["bus_beats"] == n * config.beats_per_row


@pytest.mark.parametrize("arch", ARCHES)
def test_rtl_matches_hand_worked_matvec(arch):
    config = HAND_CONFIGS[1]
    for n in (1, 7):
        words = (asm.encode_read_counters(clear=True) + asm.encode_matvec(0, 0, n)
                 + asm.encode_read_counters())
        out, finished = play(words, config, arch=arch)
        assert finished
        counters = asm.parse_responses(out)[-1].counters()
        assert counters["cycles"] == matvec_cycles(n, config, arch), \
            f"{arch}: the RTL should take {matvec_cycles(n, config, arch)} cycles for {n} rows"


def load_quant_cycles(n):
    """CYCLES around one LOAD_QUANT of n channels, by hand: as for the MATVEC it dispatches at
    g+C+3, takes its 2n payload words in g+C+4 .. g+C+3+2n; the READ_COUNTERS header comes in
    g+C+4+2n and it dispatches in the next cycle (its status word left long before)."""
    return len(Counter) + 5 + 2 * n


@pytest.mark.parametrize("n", [1, 3, 16])
def test_load_quant_takes_two_cycles_per_channel(n):
    config = MacroConfig(bias_depth=16)
    words = (asm.encode_read_counters(clear=True)
             + asm.encode_load_quant(0, [2**30] * n, [-3] * n) + asm.encode_read_counters())
    assert predict(words, config).cycles == load_quant_cycles(n)
    if n == 3:
        out, finished = play(words, config)
        assert finished
        assert asm.parse_responses(out)[-1].counters()["cycles"] == load_quant_cycles(n), \
            "the RTL should take two cycles per channel"


def test_multi_pass_requantizers_space_their_groups():
    """With 2-pass requantizers an EMIT_INT8 of g groups issues over 2g - 1 cycles instead of g
    and each group takes three cycles longer (the second pass, and the two pipeline stages of
    multi-pass requantizers): 8 lanes, 4 requantizers: 2 groups, 4 cycles more."""
    config = MacroConfig()
    words = (asm.encode_read_counters(clear=True) + asm.encode_emit_int8(8, channel=0)
             + asm.encode_read_counters())
    one, two = (predict(words, config, fabric=Fabric(requant_passes=p)).cycles for p in (1, 2))
    assert two - one == (2 * 2 - 1) - 2 + 3


@pytest.mark.parametrize("passes,seed", [(2, 0), (2, 1), (4, 2)])
def test_model_matches_rtl_with_multi_pass_requantizers(passes, seed):
    """The multi-pass requantizer (hw/fabric.py requant_passes, the iCE40's form) in the whole
    macro: random programs, results and every counter against the models."""
    rng = random.Random(100 + seed)
    config, arch = _random_config(rng), ARCHES[seed % 2]
    fabric = Fabric(requant_passes=passes)
    words = random_program(config, seed, commands=40)
    out, finished = play(words, config, arch=arch, fabric=fabric)
    assert finished, "the macro should not hang"
    compare(words, out, config, arch=arch, where=f"{passes} passes, seed {seed}")
    assert compare_timing(words, out, config, arch=arch, fabric=fabric,
                          where=f"{passes} passes, seed {seed}") >= 1


def test_baseline_is_slower_by_the_bus():
    """Long MATVECs: the cycle ratio tends to the beats per row (the ideal speedup)."""
    config = MacroConfig(lanes=16, bus_bits=16)
    words = (asm.encode_read_counters(clear=True) + asm.encode_matvec(0, 0, 200)
             + asm.encode_read_counters())
    pim, base = (predict(words, config, arch=arch).cycles for arch in ARCHES)
    assert config.beats_per_row == 8
    assert base - pim == 200 * 7 + 1, "7 extra cycles per row, plus the bus register"


def _random_config(rng):
    lanes = rng.choice([4, 8, 12, 16])
    r = rng.choice([1, 2, 4])
    buses = [b for b in (8, 16, 32, 64) if (8 * lanes * r) % b == 0]
    return MacroConfig(lanes=lanes, rows_per_cycle=r, depth=rng.choice([16, 32, 64]),
                       act_depth=rng.choice([64, 128, 256]), bias_depth=rng.choice([16, 32]),
                       bus_bits=rng.choice(buses), requantizers=rng.choice([1, 2, 4]))


@pytest.mark.parametrize("seed", range(8))
def test_model_matches_rtl_on_random_programs(seed):
    """Seeded random configurations and programs (every command, some invalid): every
    READ_COUNTERS after the clearing one, CYCLES included, equals the model's."""
    rng = random.Random(seed)
    config, arch = _random_config(rng), ARCHES[seed % 2]
    words = random_program(config, seed, commands=40)
    out, finished = play(words, config, arch=arch)
    assert finished, "the macro should not hang"
    compare(words, out, config, arch=arch, where=f"seed {seed}")
    assert compare_timing(words, out, config, arch=arch, where=f"seed {seed}") >= 1


@pytest.mark.parametrize("arch", ARCHES)
def test_model_matches_rtl_on_gemv(arch):
    """A double-buffered batch GEMV with weights preloaded, and one that spills the SRAM."""
    config = MacroConfig(lanes=8, rows_per_cycle=2, depth=32, act_depth=128, bias_depth=16,
                         bus_bits=16)
    rng = np.random.default_rng(5)
    for n, k, batch, preloaded in ((8, 64, 4, True), (20, 90, 2, False)):
        w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        x = rng.integers(-128, 128, (batch, k), dtype=np.int8)
        program = compile_gemv(w, x, config, preloaded=preloaded)
        out, finished = play(program.words, config, arch=arch)
        assert finished
        y, counters = program.extract(out)
        assert np.array_equal(y, x.astype(np.int64) @ w.T.astype(np.int64))
        assert compare_timing(program.words, out, config, arch=arch) == 1


def test_model_gemv_results_and_counters():
    """run_gemv(sim="model"): golden results, every counter predicted, utilization near 1 for
    a preloaded stream of vectors (the double buffering hides the activation loads)."""
    config = MacroConfig()
    rng = np.random.default_rng(9)
    w = rng.integers(-128, 128, (config.lanes, 64), dtype=np.int8)
    x = rng.integers(-128, 128, (64, 64), dtype=np.int8)
    result = run_gemv(w, x, config, sim="model", preloaded=True)
    assert np.array_equal(result.y, x.astype(np.int64) @ w.T.astype(np.int64))
    assert result.counters["row_reads"] == 64 * 64
    assert result.counters["cycles"] >= 64 * 64
    assert result.utilization >= 0.97, f"utilization {result.utilization:.3f}"
    assert result.program.act_buffers == 2


def test_untimed_read_counters_before_a_clear_are_not_claimed():
    model = CycleModel(MacroConfig())
    model.run(asm.encode_read_counters() + asm.encode_read_counters(clear=True)
              + asm.encode_status() + asm.encode_read_counters())
    assert model.timed == [3], "only the READ_COUNTERS after the clearing one is predicted"
