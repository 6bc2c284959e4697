"""The steady-state model (pim_macro.sw.models.scale_model) against the exact cycle model, where its
assumptions hold (many weight rows per command, activations on chip), and its verdicts at full
scale; its event counts against the exact model's counters (equal, or a stated bound), and the
energy columns of ``make spill`` (pim_macro.tb.experiments.spill) by hand. Pure Python, no RTL:
about 3-4 s on one core (the counts and energy tests about 2 s of it)."""

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Counter, MacroConfig
from pim_macro.sw.compiler.compiler import compile_network
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.compiler.network import Conv, Dense, Network
from pim_macro.sw.models.energy import energy
from pim_macro.sw.models.scale_model import Estimate, estimate, shapes_of
from pim_macro.sw.models.zoo import NETWORKS
from pim_macro.tb.experiments import spill


def chain(sizes, seed=0):
    """Dense layers with a fused ReLU (zero points -128), per-tensor scale 2**-12."""
    rng = np.random.default_rng(seed)
    return Network(tuple(
        Dense(rng.integers(-128, 128, (n_out, n_in), dtype=np.int8),
              rng.integers(-1000, 1000, n_out, dtype=np.int32), 1 << 30, -11,
              input_zero_point=-128, output_zero_point=-128, act_min=-128)
        for n_in, n_out in zip(sizes, sizes[1:])))


def exact_cycles(network, config, arch, batch, preloaded=True):
    x = np.random.default_rng(1).integers(-128, 128, (batch, network.layers[0].inputs),
                                          dtype=np.int8)
    program = compile_network(network, x, config, preloaded=preloaded)
    return program, program.extract(CycleModel(config, arch=arch).run(program.words))[1]["cycles"]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("case", ["resident", "spilled"])
def test_estimate_is_a_close_lower_bound(case, arch):
    if case == "resident":
        network, config = chain([1024, 16, 16]), MacroConfig(lanes=16, depth=2048,
                                                             act_depth=8192)
    else:
        network, config = chain([256, 16, 256, 16, 16]), MacroConfig(lanes=16, depth=300,
                                                                     act_depth=8192)
    program, exact = exact_cycles(network, config, arch, batch=8)
    assert (program.passes > 1) == (case == "spilled")
    guess = estimate(shapes_of(network), config, arch, batch=8, chunk=program.chunk)
    assert guess.fits == (case == "resident")
    assert guess.cycles <= exact, "the estimate leaves out overheads, it never adds any"
    assert guess.cycles >= 0.9 * exact, f"estimate {guess.cycles} vs exact {exact}"


@pytest.mark.parametrize("requantizers", [1, 4])
def test_output_bound_tiles_cost_what_the_exact_model_says(requantizers):
    """Few weight rows per tile (K = 8) and many outputs: the output engine bounds every tile. The
    marginal cost of more samples is then the estimate's lane groups plus its output overhead,
    as the exact model times it (a stale overhead shows up here, not in the looser bound above)."""
    network = chain([8, 256])
    config = MacroConfig(lanes=16, act_depth=8192, requantizers=requantizers)
    shapes = shapes_of(network)
    (_, few), (_, many) = (exact_cycles(network, config, "pim", batch) for batch in (8, 16))
    guess = [estimate(shapes, config, "pim", batch=batch).cycles for batch in (8, 16)]
    exact_delta, guess_delta = many - few, guess[1] - guess[0]
    assert guess_delta <= exact_delta, "the estimate leaves out overheads, it never adds any"
    assert guess_delta >= 0.98 * exact_delta, \
        f"8 more samples: the estimate adds {guess_delta} cycles, the exact model {exact_delta}"


def test_full_scale_verdicts():
    """ResNet-50 (25.5 MB of int8 weights) fits a 40 MiB macro, VGG-16 (138 MB) does not; the
    baseline computes exactly bus-ratio times longer; reloading VGG-16 costs its whole weights
    and most of the advantage."""
    config = MacroConfig(lanes=256, rows_per_cycle=4, depth=40 * 1024, act_depth=65536,
                         bias_depth=65536, bus_bits=64)
    resnet = {arch: estimate(NETWORKS["resnet50"], config, arch) for arch in ARCHES}
    vgg = {arch: estimate(NETWORKS["vgg16"], config, arch, bandwidth=4) for arch in ARCHES}
    assert resnet["pim"].fits and not vgg["pim"].fits
    shapes = NETWORKS["resnet50"]
    rows = sum(layer.positions * -(-layer.out_ch // 256) * -(-layer.rows_k // 4)
               for layer in shapes)
    assert resnet["baseline"].cycles == config.beats_per_row * rows, \
        "the baseline is bus-bound: beats per row times the rows read"
    assert rows <= resnet["pim"].cycles < resnet["baseline"].cycles / 16
    assert vgg["pim"].passes == 4 and vgg["pim"].reloaded_bytes >= 138_344_128
    assert vgg["pim"].reload_cycles == round(vgg["pim"].reloaded_bytes / 4)
    fit_speedup = resnet["baseline"].cycles / resnet["pim"].cycles
    vgg_speedup = vgg["baseline"].cycles / vgg["pim"].cycles
    assert vgg["pim"].reload_cycles > vgg["pim"].compute_cycles, \
        "at 4 bytes per cycle, reloading VGG-16 takes longer than computing it"
    assert vgg_speedup < config.beats_per_row / 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        estimate(NETWORKS["alexnet"], MacroConfig(), "pim", bandwidth=0)


# -- event counts for the energy model ------------------------------------------------------

COUNTED = ("MAC_ACTIVE", "ROW_READS", "BUS_BEATS", "WEIGHT_WORDS", "BEATS_IN", "BEATS_OUT")


def small_cnn(seed=3):
    """conv 3->8 (8x8, 3x3 pad 1), conv 8->16 (3x3 stride 2 pad 1), dense 256 -> 10: the second
    convolution takes exactly the first one's output, so its patches are filled on chip."""
    rng = np.random.default_rng(seed)
    quant = dict(input_zero_point=-128, output_zero_point=-128, act_min=-128)

    def conv(c_in, c_out, hw, stride):
        return Conv(rng.integers(-128, 128, (c_out, c_in, 3, 3), dtype=np.int8),
                    rng.integers(-1000, 1000, c_out, dtype=np.int32), 1 << 30, -11, **quant,
                    in_shape=(c_in, hw, hw), stride=(stride, stride), pad=(1, 1))
    return Network((conv(3, 8, 8, 1), conv(8, 16, 8, 2),
                    Dense(rng.integers(-128, 128, (10, 256), dtype=np.int8),
                          rng.integers(-1000, 1000, 10, dtype=np.int32), 1 << 30, -11, **quant)))


def exact_counters(network, config, arch, batch):
    """The exact cycle model's counters of the compiled steady-state program, and the program."""
    x = np.random.default_rng(1).integers(-128, 128, (batch, network.layers[0].inputs),
                                          dtype=np.int8)
    program = compile_network(network, x, config, preloaded=True)
    return program, program.extract(CycleModel(config, arch=arch).run(program.words))[1]


# (network, config, batch): the compiler needs no more passes than ceil(rows / depth)
EXACT_CASES = {
    "dense resident": (lambda: chain([1024, 16, 16]),
                       MacroConfig(lanes=16, depth=2048, act_depth=8192), 8),
    "dense spilled": (lambda: chain([256, 16, 256, 16, 16]),
                      MacroConfig(lanes=16, depth=300, act_depth=8192), 8),
    "output bound": (lambda: chain([8, 256]), MacroConfig(lanes=16, act_depth=8192), 8),
    "cnn resident": (small_cnn, MacroConfig(lanes=16, depth=512, act_depth=8192), 2),
    "cnn spilled, R = 4": (small_cnn, MacroConfig(lanes=16, rows_per_cycle=4, depth=70,
                                                  act_depth=8192), 2),
    # tiles taller than the SRAM: conv2 (72 rows) and the dense layer (256) are streamed for
    # every sample and position, conv1 (27 rows) is reloaded per chunk
    "cnn spilled, streamed": (small_cnn, MacroConfig(lanes=16, depth=64, act_depth=8192), 2),
    # an 8-word channel memory: tiles of 8 outputs, channels reloaded with each of 8 passes
    "dense spilled, 8 channels": (lambda: chain([64, 40, 24]),
                                  MacroConfig(lanes=16, depth=256, act_depth=8192,
                                              bias_depth=8), 3),
    # the first layer's 512 rows are streamed, the second's 2 x 32 rows reloaded
    "dense spilled, streamed": (lambda: chain([512, 32, 16]),
                                MacroConfig(lanes=16, depth=100, act_depth=8192), 3),
}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_counts_equal_the_exact_models(case, arch):
    """Where the compiler's passes are as many as the estimate's, every counted event (and so
    the energy) equals the exact cycle model's counters of the compiled program."""
    make, config, batch = EXACT_CASES[case]
    network = make()
    program, exact = exact_counters(network, config, arch, batch)
    guess = estimate(shapes_of(network), config, arch, batch=batch, chunk=program.chunk)
    assert guess.passes == program.passes
    assert (program.passes > 1) == ("spilled" in case) == (guess.counters["WEIGHT_WORDS"] > 0)
    assert {name: exact[name.lower()] for name in COUNTED} == guess.counters
    assert energy(guess.counters, config, arch).total_pj == \
        energy(exact, config, arch).total_pj


@pytest.mark.parametrize("case", ["dense spilled", "cnn spilled, R = 4"])
def test_reload_counts_are_what_spilling_adds(case):
    """An independent path to the reload's counts: the same network on a macro deep enough to
    hold every weight and channel differs from the spilled one by exactly the reload's events
    (in "dense spilled" the 304 channels exceed the 256-word channel memory: they are reloaded
    too)."""
    make, config, batch = EXACT_CASES[case]
    network = make()
    deep = MacroConfig(lanes=config.lanes, rows_per_cycle=config.rows_per_cycle, depth=4096,
                       act_depth=config.act_depth, bias_depth=4096)
    _, resident = exact_counters(network, deep, "baseline", batch)
    program, spilled = exact_counters(network, config, "baseline", batch)
    guess = estimate(shapes_of(network), config, "baseline", batch=batch, chunk=program.chunk)
    added = {name: spilled[name.lower()] - resident[name.lower()] for name in COUNTED}
    assert added == {"MAC_ACTIVE": 0, "ROW_READS": 0, "BUS_BEATS": 0, **guess.reload_counters}
    assert estimate(shapes_of(network), deep, "baseline", batch=batch).reload_counters == \
        {"WEIGHT_WORDS": 0, "BEATS_IN": 0, "BEATS_OUT": 0}


@pytest.mark.parametrize("arch", ARCHES)
def test_counts_are_lower_bounds_when_the_compiler_needs_more_passes(arch):
    """Channels reloaded with the weights (bias_depth 64): the compiler's tile packing needs 6
    passes, the estimate counts ceil(304 channels / 64) = 5. The events of the MACs and the
    weights stay exact; the stream words miss one pass's commands per reload, so they are a
    lower bound within 1 %."""
    network = chain([256, 16, 256, 16, 16])
    config = MacroConfig(lanes=16, depth=300, act_depth=8192, bias_depth=64)
    program, exact = exact_counters(network, config, arch, 8)
    guess = estimate(shapes_of(network), config, arch, batch=8, chunk=program.chunk)
    assert (guess.passes, program.passes) == (5, 6)
    for name in ("MAC_ACTIVE", "ROW_READS", "BUS_BEATS", "WEIGHT_WORDS"):
        assert guess.counters[name] == exact[name.lower()], name
    for name in ("BEATS_IN", "BEATS_OUT"):
        assert 0.99 * exact[name.lower()] <= guess.counters[name] <= exact[name.lower()], name


# -- the spill experiment's energy columns, on canned counts ---------------------------------

def unit_table(tmp_path):
    """A table of round numbers: 1 pJ per MAC, 1 pJ per SRAM bit at every size, 1 pJ per bit
    per mm of wire, 0.25 pJ per register bit, 10 pJ per DRAM byte, and a cell of
    1e6 / 32768 um^2, so that the RTL macro's 4 KiB (32768 bits) is a square of 1 mm."""
    path = tmp_path / "unit.toml"
    path.write_text("\n".join([
        'name = "unit"', 'node = "none"',
        '[mac_int8]', 'pj = 1.0', 'source = "test"',
        '[sram_access]', 'capacity_bytes = [1024]', 'pj_per_64_bits = [64.0]', 'source = "test"',
        '[wire]', 'pj_per_bit_mm = 1.0', 'source = "test"',
        '[register_write]', 'pj_per_bit = 0.25', 'source = "test"',
        '[dram_read]', 'pj_per_byte = 10.0', 'source = "test"',
        '[sram_cell]', f'um2 = {1e6 / 32768!r}', 'source = "test"', ""]))
    return path


# Two samples on spill.RTL_CONFIG (16 lanes, R = 1: 16-byte rows, 32-bit bus: 4 beats a row).
CANNED = {"MAC_ACTIVE": 100, "ROW_READS": 100, "WEIGHT_WORDS": 10, "BEATS_IN": 30,
          "BEATS_OUT": 5}
# By hand with the unit table (side 1 mm): MACs 100 x 16 lanes = 1600; SRAM reads 100 rows x 128
# bits = 12800; SRAM writes 10 x 32 = 320; stream 35 words x 32 bits = 1120; registers (100 x 16
# accumulators x 32 bits + the 1120 stream bits) x 0.25 = 13080; DRAM 40 bytes x 10 = 400.
PIM_PJ = 1600 + 12800 + 320 + 1120 + 13080 + 400
# The baseline adds its bus: 400 beats x 32 bits = 12800 bits over 1 mm, and as many register
# bits at 0.25.
BASELINE_PJ = PIM_PJ + 12800 + 12800 * 0.25


def test_family_energy_columns_by_hand(tmp_path):
    table = unit_table(tmp_path)
    lower = {name.lower(): value for name, value in CANNED.items()}     # as the RTL gives them
    row = spill.family_energy(lower, {**lower, "bus_beats": 400}, batch=2, table=table)
    assert row == pytest.approx({"pim_pj": PIM_PJ / 2, "baseline_pj": BASELINE_PJ / 2,
                                 "energy_ratio": BASELINE_PJ / PIM_PJ})
    assert PIM_PJ / 2 == 14660 and BASELINE_PJ / 2 == 22660
    text = spill.family_markdown([{
        "layers": 5, "weights_over_capacity": 1.25, "batch": 2, "passes": 2, "weight_loads": 1,
        "pim_cycles": 100, "baseline_cycles": 300, "speedup": 3.0, "estimated_speedup": 3.0,
        "pim_pj_per_inference": row["pim_pj"], "baseline_pj_per_inference": row["baseline_pj"],
        "energy_ratio": row["energy_ratio"], "estimated_energy_ratio": 1.5, "correct": True,
        "model_exact": True}])
    # nJ: 14.66 and 22.66; 45320 / 29320 = 1.5457
    assert text.splitlines()[-1] == ("| 5 | 1.25 | 2 | 2 | 1 | 100 | 300 | 3.00 | 3.00 | 14.66 | "
                                     "22.66 | 1.55 | 1.50 | exact | exact |")


def test_scale_energy_columns_and_reload_share_by_hand(tmp_path):
    table = unit_table(tmp_path)
    reload = {"WEIGHT_WORDS": 10, "BEATS_IN": 12, "BEATS_OUT": 1}
    # the reload by hand: SRAM writes 320, stream 13 x 32 = 416, registers 416 x 0.25 = 104,
    # DRAM 400
    reload_pj = 320 + 416 + 104 + 400

    def canned(arch, bus_beats):
        return Estimate(arch=arch, weight_bytes=0, stored_bytes=0, capacity_bytes=4096,
                        fits=False, passes=2, reloaded_bytes=40, compute_cycles=0,
                        reload_cycles=0, counters={**CANNED, "BUS_BEATS": bus_beats},
                        reload_counters=reload)
    row = spill.scale_energy(canned("pim", 0), canned("baseline", 400), spill.RTL_CONFIG,
                             batch=2, table=table)
    assert row == pytest.approx({
        "pim_pj": PIM_PJ / 2, "baseline_pj": BASELINE_PJ / 2, "reload_pj": reload_pj / 2,
        "energy_ratio": BASELINE_PJ / PIM_PJ, "pim_reload_share": reload_pj / PIM_PJ,
        "baseline_reload_share": reload_pj / BASELINE_PJ})
    text = spill.scale_energy_markdown([{"network": "canned", "macro_mib": 40,
                                         "weights_over_capacity": 3.3125,
                                         "energy": {"unit": row}}])
    # 14660 pJ = 1.47e-5 mJ; 22660 / 14660 = 1.55; 1240 / 29320 = 4 %, 1240 / 45320 = 3 %
    assert text.splitlines()[-1] == \
        "| canned | 40 MiB | 3.31 | 1.47e-05 | 2.27e-05 | **1.55x** | 4 % / 3 % |"


def test_full_scale_energy_verdicts():
    """ResNet-50 fits 40 MiB and reloads nothing; VGG-16 does not, and its reload costs at
    least its 138,344,128 weight bytes from DRAM at the 45 nm table's 162.5 pJ a byte (22.5 mJ),
    a visible share of its energy; PIM spends less than the baseline, which pays the bus."""
    config = spill.scale_config(40)
    rows = {}
    for name in ("resnet50", "vgg16"):
        est = {arch: estimate(NETWORKS[name], config, arch) for arch in ARCHES}
        rows[name] = spill.scale_energy(est["pim"], est["baseline"], config)
    assert rows["resnet50"]["reload_pj"] == 0 == rows["resnet50"]["pim_reload_share"]
    vgg = rows["vgg16"]
    assert vgg["reload_pj"] >= 138_344_128 * 162.5
    assert 0.05 < vgg["pim_reload_share"] < 1
    assert vgg["baseline_reload_share"] < vgg["pim_reload_share"]
    assert all(r["energy_ratio"] > 1 for r in rows.values())


@pytest.mark.parametrize("tables, message", [
    (["nope"], "energy table 'nope': no such file (tables shipped: 45nm, 7nm)"),
    (["45nm", "45nm"], "--energy-table: two tables have the same name"),
])
def test_spill_refuses_a_bad_energy_table_before_any_rtl(tables, message, capsys, monkeypatch):
    monkeypatch.setattr(spill, "run_family", lambda *a: pytest.fail("the RTL ran"))
    with pytest.raises(SystemExit) as exit_info:
        spill.main(["--energy-table", *tables])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
