"""A short fuzz run in the suite (the long one is ``make fuzz``): seeded streams from
:mod:`pim_macro.tb.harness.fuzz` on both simulators and both architectures, checked word for
word against the golden model and, without stalls, against the cycle model's counters.

Configurations: the largest addresses (``max``: depth = act_depth = bias_depth = 65536, R = 4,
4 lanes; its builds are shared with ``test_limits.py``) and ``l4r4q1`` (R = 4, one requantizer;
shared with ``test_rtl.py``). Cost: with those builds made, about 22 s for the whole file on
two pytest workers (20 streams per simulator run, 3-6 s a run); cold, the ``max`` builds add
about 3 minutes of one core (see ``test_limits.py``), which ``make test`` pays once for both
files.
"""

import dataclasses

import pytest

from pim_macro.hw.isa import ARCHES, Error, MacroConfig, Opcode
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import SIMULATORS, run_rtl
from pim_macro.tb.harness.fuzz import (FUZZ_CONFIGS, INVALID_KINDS, check, expected_answers,
                                       fuzz_case, fuzz_cases, minimise, model_check)


#: Streams per (configuration, architecture, simulator) run, and their first seed.
STREAMS, SEED = 20, 1000
#: Configurations of the RTL runs (their builds are made by other tests as well).
RTL_CONFIGS = ("max", "l4r4q1")
#: Lanes = 256 at the largest addresses: too big to simulate (see the fuzz module), not for the
#: models.
WIDE = MacroConfig(lanes=256, rows_per_cycle=4, depth=65536, act_depth=65536, bias_depth=65536,
                   bus_bits=64)


def test_expected_answers_of_a_cut_stream():
    """A stream cut inside a command's arguments answers the commands before it; cut inside a
    payload, the cut command's status as well (it is checked before its payload comes)."""
    config = FUZZ_CONFIGS["l4r4q1"]
    load = asm.encode_load_bias(0, [1, 2, 3])
    emit = asm.encode_emit_int8(4, channel=0)
    words = asm.encode_status() + load + emit
    assert expected_answers(words, config) == (words, 3, False)
    assert expected_answers(words[:-1], config) == (words[:-3], 2, True), \
        "cut in the arguments of EMIT_INT8: the STATUS and LOAD_BIAS answer"
    ref, answers, cut = expected_answers(words[:3], config)
    assert (answers, cut, len(ref)) == (2, True, 1 + len(load)), \
        "LOAD_BIAS with its argument and none of its payload: its status is due"
    assert asm.parse_responses(GoldenMacro(config).run(ref))[1].ok
    assert expected_answers(words[:2], config) == (words[:1], 1, True), \
        "a header without its argument is not answered"
    assert expected_answers([0xFFFFFF0B], config) == ([0xFFFFFF0B], 1, False), \
        "an unknown opcode is a whole command of one word"


def test_generator_covers_every_invalid_kind_and_error():
    """Over a few seeds the streams hold every kind of invalid command, every error code,
    cut streams, resets with the output blocked and stalls; equal seeds give equal streams."""
    config = FUZZ_CONFIGS["max"]
    cases = fuzz_cases(config, 0, 40)
    kinds = set().union(*(case.kinds for case in cases))
    assert kinds == set(INVALID_KINDS), f"missing invalid kinds {set(INVALID_KINDS) - kinds}"
    errors = {r.error for case in cases
              for r in asm.parse_responses(GoldenMacro(config).run(case.reference))}
    assert errors == set(Error), f"missing error codes {set(Error) - errors}"
    assert any(case.cut for case in cases) and any(case.smooth for case in cases)
    assert any(case.prefix is not None and case.prefix_blocked for case in cases)
    assert any(case.idle and case.backpressure for case in cases)
    assert fuzz_case(config, 5).words == fuzz_case(config, 5).words


@pytest.mark.parametrize("name", ["max", "odd", "wide", "l8r1", "l12r1q2"])
@pytest.mark.parametrize("arch", ARCHES)
def test_cycle_model_agrees_with_golden(name, arch):
    """The cycle model's output stream is the golden model's on fuzzed streams, lanes = 256
    included (no RTL: milliseconds a stream)."""
    config = WIDE if name == "wide" else FUZZ_CONFIGS[name]
    for case in fuzz_cases(config, SEED, 10):
        model_check(case, config, arch)


# Configurations where memories are narrower than a row of lanes, or tiny, at every R: the
# generator once built negative addresses there (`make fuzz --configs l4r2d1a4b1q1w8`), each
# tag found so by a sweep of random legal configurations.
CORNER_TAGS = ["l4r2d1a4b1q1w8", "l252r1d256a12b3q2w8", "l20r1d5a4b64q1w8", "l12r2d256a16b1q2w64",
               "l64r4d2a4b1q1w64", "l256r4d5a12b7q2w32", "l20r4d65535a8b65536q2w8",
               "l4r1d1a4b1", "l256r4d1a4b1q1w64"]


@pytest.mark.parametrize("tag", CORNER_TAGS)
def test_generator_at_corner_configurations(tag):
    """The fuzzer makes valid streams (the golden and cycle models agree on them) at every legal
    configuration, the smallest memories and the widest rows among them."""
    config = MacroConfig.from_tag(tag)
    for arch in ARCHES:
        for case in fuzz_cases(config, 23, 12):
            model_check(case, config, arch)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", RTL_CONFIGS)
def test_fuzz(name, arch, sim):
    config = FUZZ_CONFIGS[name]
    cases = fuzz_cases(config, SEED, STREAMS)
    # One more job proves that the sink's drain catches a word too many: it waits for one
    # answer fewer than the stream has (as if the golden model said the last READ_COUNTERS, one
    # word, were not there), so the last answer arrives as extra words.
    short = fuzz_case(config, SEED + STREAMS, cut=0, reset=0)
    assert asm.frame_program(short.words, config)[-1][2] == 1
    trimmed = dataclasses.replace(short, words=short.words[:-1], reference=short.reference[:-1],
                                  answers=short.answers - 1)
    jobs = [case.job() for case in cases] + [dataclasses.replace(short.job(),
                                                                 answers=trimmed.answers)]
    results = run_rtl(jobs, config, sim=sim, arch=arch)
    timed = 0
    for case, result in zip(cases, results):
        timed += check(case, result, config, arch, where=f"{name} {arch} {sim}: ")
    assert timed > 0, "some streams should have had their counters checked"
    assert results[-1].extra > 0, "the drain should see the answer the sink did not wait for"
    # Even unflagged, the extra words are in `out`, and the comparison fails on them.
    results[-1].extra = 0
    with pytest.raises(AssertionError, match="answered"):
        check(trimmed, results[-1], config, arch)


def test_check_fails_on_a_wrong_word():
    """check() is not vacuous: one flipped data bit fails it."""
    config = FUZZ_CONFIGS["l4r4q1"]
    case = fuzz_case(config, 3, cut=0, reset=0, stalls=0)
    from pim_macro.sw.models.cycle_model import CycleModel
    from pim_macro.sw.runtime.rtl import JobResult
    out = CycleModel(config).run(case.reference)
    check(case, JobResult(list(out), 0, True), config, "pim")
    responses = asm.parse_responses(out)
    index = next(i for i, r in enumerate(responses)
                 if r.ok and r.data and r.opcode != Opcode.READ_COUNTERS.value)
    position = sum(1 + len(r.data) for r in responses[:index]) + 1
    out[position] ^= 1
    with pytest.raises(AssertionError):
        check(case, JobResult(list(out), 0, True), config, "pim")


def test_minimise_keeps_what_fails():
    """The reproducer drops the reset prefix and the stalls, keeps the stream's initialisation
    and shrinks the rest to the command that fails (here a stand-in verdict: any stream holding
    one given MATVEC fails)."""
    config = FUZZ_CONFIGS["l4r4q1"]
    case = fuzz_case(config, 12, commands=30, cut=0, reset=1, stalls=1)
    assert case.prefix is not None and (case.idle or case.backpressure)
    frames = asm.frame_program(case.words, config)
    culprit = next(case.words[s:s + n] for op, s, n in frames[len(frames) // 2:]
                   if op == Opcode.MATVEC.value)

    def holds(words):
        return any(words[i:i + len(culprit)] == culprit for i in range(len(words)))

    runs = []

    def fails(candidates):
        runs.append(len(candidates))
        return [holds(c.words) for c in candidates]
    small = minimise(case, config, fails)
    assert holds(small.words), "the reproducer should still fail"
    first_clear = next(i for i, (op, _, _) in enumerate(frames)
                       if op == Opcode.READ_COUNTERS.value)
    head = frames[first_clear][1] + frames[first_clear][2]
    assert small.words[:head] == case.words[:head], "the initialisation should stay"
    assert len(small.words) == head + len(culprit), "everything else should go"
    assert small.reference == small.words and small.answers == first_clear + 2
    assert small.prefix is None and not small.idle and not small.backpressure, \
        "it should play without the reset and the stalls, which it does not need"


@pytest.mark.parametrize("argv,message", [
    (["--configs", "huge"], "'huge' is not a configuration tag"),
    (["--configs", "l8r3d3a4b4"], "l8r3d3a4b4: rows_per_cycle must be 1, 2 or 4"),
    (["--sims", "modelsim"], "unknown simulator 'modelsim'"),
    (["--streams", "0"], "must be positive"),
    (["--streams", "abc"], "argument --streams: invalid int value: 'abc'"),
    (["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    (["stray"], "unrecognized arguments: stray"),
    (["--seed", "-5"], "--seed must be 0 or more"),
    (["--configs", "l4r1d4a4b4,l4r1d4a4b4"], "--configs names l4r1d4a4b4 twice"),
    (["--configs", "l" + "9" * 5000 + "r1d4a4b4"], "..."),
    (["--configs", "l\u0664r1d4a4b4"], "is not a configuration tag"),
])
def test_long_run_rejects_bad_arguments(argv, message, capsys):
    """`make fuzz`'s runner: one line `pim: error: ...` and status 2, before anything runs."""
    from pim_macro.tb.experiments.fuzz import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pim: error: ") and message in err and err.count("\n") == 1
    assert len(err) < 400, "a message echoes at most a short cut of the user's input"
