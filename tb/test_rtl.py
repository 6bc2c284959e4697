"""The macro's RTL on Icarus and Verilator, checked against hand-computed results and the golden
model, with every stall combination, every error code and a reset in the middle of a command.

One pytest test per (configuration, simulator) plays all its jobs in one simulator run; the
configurations cover R = 1, 2, 4 and a lane count that is not a power of two.
"""

import numpy as np
import pytest

from hw.isa import ARCHES, Error, Opcode, MacroConfig
from sw import asm
from sw.rtl import Job, run_rtl, SIMULATORS
from sw.gemv import compile_gemv
from sw.golden import requantize, wrap32
from tb.programs import (STALLS, random_program, error_programs, compare, compare_timing,
                         init_program)


# bus_bits only matters to the baseline; each configuration gives it a different bus.
CONFIGS = {
    "l8r1": MacroConfig(bus_bits=8),
    "l8r2": MacroConfig(lanes=8, rows_per_cycle=2, depth=64, act_depth=256, bias_depth=32,
                        bus_bits=16),
    "l4r4q1": MacroConfig(lanes=4, rows_per_cycle=4, depth=32, act_depth=128, bias_depth=16,
                          bus_bits=64, requantizers=1),
    "l12r1q2": MacroConfig(lanes=12, rows_per_cycle=1, depth=48, act_depth=64, bias_depth=24,
                           requantizers=2),
}


def hand_program(config):
    """Identity weights (lane l reads activation l) and all -128 weights, with results written
    out by hand: y = x for the first, y = -128 * sum(x) for the second, then requantized."""
    lanes, r = config.lanes, config.rows_per_cycle
    k = lanes                                    # one activation per lane
    eye = np.zeros((lanes, k), dtype=np.int8)
    eye[np.arange(lanes), np.arange(lanes)] = 1
    x = np.array([(-1) ** i * (i + 1) for i in range(k)], dtype=np.int8)  # 1, -2, 3, -4, ...
    words = asm.encode_write_weights(0, asm.weight_rows(eye, config), config)
    words += asm.encode_write_weights(k // r, asm.weight_rows(np.full((lanes, k), -128), config),
                                      config)
    words += asm.encode_load_act(0, x)
    words += asm.encode_load_bias(0, [100] * lanes)
    words += asm.encode_matvec(0, 0, k // r)             # acc = x
    words += asm.encode_emit_raw(lanes)                   # 1, -2, 3, ...
    words += asm.encode_emit_raw(lanes, bias=0)           # 101, 98, 103, ...
    words += asm.encode_matvec(k // r, 0, k // r, accumulate=True)   # acc = x - 128 * sum(x)
    words += asm.encode_emit_raw(lanes)
    # -128 * sum(x): sum(1, -2, 3, ..., -lanes) = -lanes / 2
    words += asm.encode_emit_int8(lanes, mult=1, shift=1, relu=False)
    return words


def hand_expected(config):
    lanes = config.lanes
    x = [(-1) ** i * (i + 1) for i in range(lanes)]
    total = -128 * (-lanes // 2)                          # 64 * lanes
    after = [v + total for v in x]
    # mult 1, shift 1: (v + 1) >> 1, then saturate at 127 (every value here is positive).
    return [x, [v + 100 for v in x], after, [min((v + 1) // 2, 127) for v in after]]


# The FPGA forms of the multipliers (hw/fabric.py), vendor primitives simulated with Yosys'
# models, run the same layers as the portable form.
FABRIC_CASES = [(name, "portable") for name in CONFIGS] + [
    ("l8r1", "ice40_dual"), ("l8r2", "ice40_dual"), ("l12r1q2", "logic_requant")]


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name,fabric", FABRIC_CASES)
def test_macro(name, fabric, arch, sim):
    config = CONFIGS[name]
    jobs, checks = [], []

    def add(job, check):
        jobs.append(job)
        checks.append(check)

    # Layer 1: hand-computed.
    def check_hand(out):
        responses = asm.parse_responses(out)
        assert all(resp.ok for resp in responses), f"every hand-written command should pass"
        raw1, raw2, raw3, q = responses[5], responses[6], responses[8], responses[9]
        exp = hand_expected(config)
        assert list(raw1.int32()) == exp[0], "identity weights should return the activations"
        assert list(raw2.int32()) == exp[1], "bias 100 should be added to every lane"
        assert list(raw3.int32()) == exp[2], "accumulating -128 * sum(x) should add 64 * lanes"
        assert list(asm.unpack_bytes(q.data, config.lanes)) == exp[3], "int8 should be (v + 1) >> 1, saturated"
    for stall, idle, bp in STALLS:
        add(Job(hand_program(config), idle=idle, backpressure=bp, seed=1), check_hand)

    # Layer 2: each error code; the golden model says what must happen after it.
    for case, (words, index, error) in error_programs(config).items():
        def check_error(out, words=words, index=index, error=error, case=case):
            got = asm.parse_responses(out)[index].error
            assert got == error, f"{case}: the macro should report {error.name}, not {got.name}"
            compare(words, out, config, arch=arch, where=case)
        add(Job(words, idle=0.2, backpressure=0.3, seed=2), check_error)

    # Layer 3: seeded random programs under the four stall combinations; without stalls the
    # counters must also be exactly those the cycle model predicts.
    for seed, (stall, idle, bp) in enumerate(STALLS):
        words = random_program(config, seed)

        def check_random(out, words=words, where=f"random seed {seed} {stall}", smooth=not (idle or bp)):
            compare(words, out, config, arch=arch, where=where)
            if smooth:
                assert compare_timing(words, out, config, arch=arch, where=where) > 0
        add(Job(words, idle=idle, backpressure=bp, seed=seed), check_random)

    # Layer 4: a real workload, a tiled GEMV (bias, requantized, several passes and a batch),
    # against numpy; then without stalls, its cycles against the cycle model.
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, (2 * config.lanes + 3, 3 * config.depth // 2 + 5), dtype=np.int8)
    x = rng.integers(-128, 128, (3, w.shape[1]), dtype=np.int8)
    b = rng.integers(-2**20, 2**20, w.shape[0], dtype=np.int32)
    program = compile_gemv(w, x, config, bias=b, mult=300, shift=12)
    want = requantize(wrap32(x.astype(np.int64) @ w.T.astype(np.int64) + b), 300, 12, False)
    for stall, idle, bp in (STALLS[0], STALLS[3]):
        def check_gemv(out, smooth=not (idle or bp), where=f"gemv {stall}"):
            y, counters = program.extract(out)
            assert np.array_equal(y, want), f"{where}: the GEMV should match numpy"
            if smooth:
                assert compare_timing(program.words, out, config, arch=arch, where=where) == 1
        add(Job(program.words, idle=idle, backpressure=bp, seed=4), check_gemv)

    # Reset in the middle of a load, of a MATVEC and of an output blocked by backpressure: the
    # next program (which rewrites every memory first) must run as on a fresh macro.
    victim = random_program(config, 99, init=False)
    busy = (init_program(config, np.random.default_rng(5))
            + asm.encode_matvec(0, 0, config.depth) + asm.encode_emit_raw(config.lanes) * 4
            + asm.encode_status())
    after = random_program(config, 100, commands=12)
    for prefix, cut in ((victim, len(victim) // 2), (busy, len(busy) - 10), (busy, len(busy))):
        add(Job(after, prefix=prefix, reset_after=cut, backpressure=0.7, seed=3),
            lambda out: compare(after, out, config, arch=arch, where="after reset"))

    results = run_rtl(jobs, config, sim=sim, arch=arch, fabric=fabric)
    assert len(results) == len(jobs)
    for i, (result, check) in enumerate(zip(results, checks)):
        assert result.finished, f"job {i} did not finish within {jobs[i].max_cycles} cycles"
        check(result.out)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_long_accumulation_wraps(sim):
    """-128 x -128 over 2**17 products sums to exactly 2**31, which wraps to -2**31; and
    a bias of 2**31 - 1 plus 1 wraps too."""
    config = CONFIGS["l8r1"]
    words = asm.encode_write_weights(0, np.full((config.depth, 1, config.lanes), -128), config)
    words += asm.encode_load_act(0, np.full(config.depth, -128))
    for i in range(2**17 // config.depth):
        words += asm.encode_matvec(0, 0, config.depth, accumulate=i > 0)
    words += asm.encode_emit_raw(config.lanes)
    words += asm.encode_load_bias(0, [2**31 - 1] * config.lanes)
    words += asm.encode_load_act(0, [1] + [0] * (config.depth - 1))
    words += asm.encode_write_weights(0, np.ones((1, 1, config.lanes)), config)
    words += asm.encode_matvec(0, 0, 1) + asm.encode_emit_raw(config.lanes, bias=0)
    [result] = run_rtl([Job(words)], config, sim=sim)
    assert result.finished, "the long accumulation should finish"
    responses = asm.parse_responses(result.out)
    sums = responses[2 + 2**17 // config.depth].int32()
    assert list(sums) == [-2**31] * config.lanes, "2**31 should wrap to -2**31"
    assert list(responses[-1].int32()) == [-2**31] * config.lanes, \
        "(2**31 - 1) + 1 should wrap to -2**31"
