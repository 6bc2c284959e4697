"""The steady-state model (pim_macro.sw.models.scale_model) against the exact cycle model, where its
assumptions hold (many weight rows per command, activations on chip), and its verdicts at full
scale."""

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, MacroConfig
from pim_macro.sw.compiler.compiler import compile_network
from pim_macro.sw.models.cycle_model import CycleModel
from pim_macro.sw.compiler.network import Dense, Network
from pim_macro.sw.models.scale_model import estimate, shapes_of
from pim_macro.sw.models.zoo import NETWORKS


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
