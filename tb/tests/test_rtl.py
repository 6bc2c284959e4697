"""The macro's RTL on Icarus and Verilator, checked against hand-computed results and the golden
model, with every stall combination, every error code and a reset in the middle of a command.

One pytest test per (configuration, simulator) plays all its jobs in one simulator run; the
configurations cover R = 1, 2, 4 and a lane count that is not a power of two.
"""

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Error, Opcode, MacroConfig
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import Job, run_rtl, SIMULATORS
from pim_macro.sw.compiler.gemv import compile_gemv
from pim_macro.sw.models.requant import requantize, wrap32
from pim_macro.tb.harness.programs import (CONFIGS, HAND_RESPONSES, STALLS, compare,
                                          compare_timing, error_programs, hand_expected,
                                          hand_program, init_program, random_channels,
                                          random_program)


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
        """``check(out)``, or ``check(out, result)`` for one that reads more of the result."""
        jobs.append(job)
        checks.append(check)

    # Layer 1: hand-computed.
    def check_hand(out):
        responses = asm.parse_responses(out)
        assert all(resp.ok for resp in responses), f"every hand-written command should pass"
        raw1, raw2, raw3, q, qd = (responses[i] for i in HAND_RESPONSES.values())
        exp = hand_expected(config)
        assert list(raw1.int32()) == exp[0], "identity weights should return the activations"
        assert list(raw2.int32()) == exp[1], "bias 100 should be added to every lane"
        assert list(raw3.int32()) == exp[2], "accumulating -128 * sum(x) should add 64 * lanes"
        assert list(asm.unpack_bytes(q.data, config.lanes)) == exp[3], \
            "int8 should be (v + 1) >> 1, saturated"
        assert list(asm.unpack_bytes(qd.data, config.lanes)) == exp[4], \
            "double rounding by 1/8 and 1/16 per channel, zero point -10, clamp -100 .. 50"
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

        def check_random(out, words=words, where=f"random seed {seed} {stall}",
                         smooth=not (idle or bp)):
            compare(words, out, config, arch=arch, where=where)
            if smooth:
                assert compare_timing(words, out, config, arch=arch, fabric=fabric,
                                      where=where) > 0
        add(Job(words, idle=idle, backpressure=bp, seed=seed), check_random)

    # Layer 4: a real workload, a tiled GEMV (bias, requantized per channel in double rounding
    # with a zero point and a ReLU, several passes and a batch), against numpy; then without
    # stalls, its cycles against the cycle model.
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, (2 * config.lanes + 3, 3 * config.depth // 2 + 5), dtype=np.int8)
    x = rng.integers(-128, 128, (3, w.shape[1]), dtype=np.int8)
    b = rng.integers(-2**20, 2**20, w.shape[0], dtype=np.int32)
    m0, _ = random_channels(rng, w.shape[0])
    s = rng.integers(-16, -12, w.shape[0])
    quant = dict(zero_point=-7, act_min=-7, act_max=127, double_rounding=True)
    program = compile_gemv(w, x, config, bias=b, multiplier=m0, shift=s, **quant)
    want = requantize(wrap32(x.astype(np.int64) @ w.T.astype(np.int64) + b), m0, s, -7, -7, 127,
                      double_rounding=True)
    assert len(np.unique(want)) >= 8, "the GEMV's outputs should spread over the int8 range"
    for stall, idle, bp in (STALLS[0], STALLS[3]):
        def check_gemv(out, smooth=not (idle or bp), where=f"gemv {stall}"):
            y, counters = program.extract(out)
            assert np.array_equal(y, want), f"{where}: the GEMV should match numpy"
            if smooth:
                assert compare_timing(program.words, out, config, arch=arch, fabric=fabric,
                                      where=where) == 1
        add(Job(program.words, idle=idle, backpressure=bp, seed=4), check_gemv)

    # Reset in the middle of a load, of a MATVEC and of an output blocked by backpressure: the
    # next program (which rewrites every memory first) must run as on a fresh macro. But for
    # the first, the prefixes play with the sink holding `ready` low, so the answers back up;
    # the reset comes after a number of words taken or of cycles, whichever first, and the
    # player reports what the streams were doing then, which each case checks (`at_reset`).
    victim = random_program(config, 99, init=False)
    init = init_program(config, np.random.default_rng(5))
    loads = asm.frame_program(init, config)
    matvec = init + asm.encode_matvec(0, 0, config.depth)
    busy = matvec + asm.encode_emit_raw(config.lanes) * 4 + asm.encode_status()
    after = random_program(config, 100, commands=12)
    # STATUS waits for the output FIFO to empty, which it never does while the sink refuses:
    # the EMIT_RAW behind it is never taken, and the input stalls.
    stuck = busy + asm.encode_emit_raw(config.lanes)
    # A random program, reset half-way with the sink taking everything (as a host that stops
    # in the middle of a command).
    add(Job(after, prefix=victim, reset_after=len(victim) // 2, backpressure=0.7, seed=3),
        lambda out: compare(after, out, config, arch=arch, where="after reset"))
    resets = [
        # inside the first load's payload (the weights), its status waiting in the output
        (busy, loads[0][2] // 2, None,
         lambda s: s["out_blocked"] and s["taken"] == loads[0][2] // 2),
        # half-way through a MATVEC over every row (each load takes a cycle per word)
        (matvec, len(matvec) + 1, len(matvec) + config.depth // 2,
         lambda s: s["out_blocked"] and s["taken"] == len(matvec)),
        # everything answered but blocked: the output engine stopped mid-EMIT, STATUS waiting,
        # the source offering the next header in vain
        (stuck, len(stuck), len(busy) + 2 * config.depth * config.beats_per_row + 200,
         lambda s: s["out_blocked"] and s["in_stalled"] and s["taken"] == len(busy)),
    ]
    for prefix, cut, cycles, at_reset in resets:
        def check_reset(out, result, at_reset=at_reset, cut=cut):
            assert at_reset(result.reset), (
                f"reset after {cut} words: the streams at the reset were {result.reset}")
            compare(after, out, config, arch=arch, where="after reset")
        check_reset.wants_result = True
        add(Job(after, prefix=prefix, reset_after=cut, reset_cycles=cycles, prefix_blocked=True,
                backpressure=0.7, seed=3), check_reset)

    results = run_rtl(jobs, config, sim=sim, arch=arch, fabric=fabric)
    assert len(results) == len(jobs)
    for i, (result, check) in enumerate(zip(results, checks)):
        assert result.finished, f"job {i} did not finish within {jobs[i].max_cycles} cycles"
        if getattr(check, "wants_result", False):
            check(result.out, result)
        else:
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
