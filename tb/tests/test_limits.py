"""Regression tests at the address limits: the fault-1 streams of issue 11 on the RTL.

A MATVEC reads the activation bytes ``[act, act + count * R)``. With ``R = 4``, ``act`` near 65535
and ``count`` near 65535 the end is ``2**18``: an end register of 17 bits wraps it to 0, the
check ``end <= act_depth`` passes, and the macro runs a MATVEC of tens of thousands of rows over
activations it was never given. The decoder's ends are 19 bits wide (``hi_rows_span`` in
``hw/decoder.py``); these streams fail if they are narrowed back to 17.

Cost in ``make test``: the builds of the configuration with the largest memories (``max``,
``depth`` 65536: about 350k lines of Verilog, most of them memory initialisation), about 60 s of
Verilator C++ and 30 s of Icarus per architecture, cold, shared with ``test_fuzz.py``. The runs
themselves take a few seconds.
"""

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Error, Header, MacroConfig, MatvecArg, Opcode, unpack
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.rtl import SIMULATORS, Job, run_rtl
from pim_macro.tb.harness.fuzz import FUZZ_CONFIGS
from pim_macro.tb.harness.programs import compare


#: The two MATVECs of the issue, as raw words: (header, argument).
STREAM_D49153 = [0xC0010004, 0xFFFC0000]    # count 49153, row 0, act 65532
STREAM_D65536 = [0xFFFF0004, 0x00040001]    # count 65535, row 1, act 4

#: The issue's configuration for the first stream. ``depth`` 49153 puts the last row read at
#: the last row there is, so only the activation span is out of range; ``act_depth`` 65536, the
#: largest, so that no narrower check (``act`` itself beyond the buffer) rejects it first.
CONFIG_D49153 = MacroConfig(lanes=4, rows_per_cycle=4, depth=49153, act_depth=65536,
                            bias_depth=16)
#: Where each stream runs: the second needs ``depth`` 65536 (rows 1 .. 65535); the largest
#: configuration takes the first as well.
CASES = {"d49153": (CONFIG_D49153, [STREAM_D49153]),
         "max": (FUZZ_CONFIGS["max"], [STREAM_D49153, STREAM_D65536])}


def _fields(stream):
    hdr, arg = unpack(Header, stream[0]), unpack(MatvecArg, stream[1])
    return hdr, arg.row, arg.act


@pytest.mark.parametrize("name", CASES)
def test_streams_are_at_the_limit(name):
    """The streams are what the issue says, and only the wrapped end lets them through: the rows
    are in range, the end of the activation span is 2**18, which is 0 modulo 2**17, and the
    golden model rejects them with BAD_ADDRESS."""
    config, streams = CASES[name]
    r = config.rows_per_cycle
    for stream in streams:
        hdr, row, act = _fields(stream)
        assert hdr.opcode == Opcode.MATVEC.value and hdr.flags.value == 0
        assert row + hdr.count <= config.depth, "the rows alone are in range"
        assert act % r == 0, "the activation address is aligned"
        end = act + hdr.count * r
        assert end == 1 << 18 and end % (1 << 17) <= config.act_depth, \
            "a 17-bit end would wrap to a value inside the buffer"
        [status] = asm.parse_responses(GoldenMacro(config).run(stream))
        assert status.error == Error.BAD_ADDRESS, "the golden model should reject the MATVEC"


def _jobs(config, streams):
    """For each stream: on its own then an EMIT_RAW (the issue's case: a fresh macro, zeros),
    and after a valid MATVEC over non-zero weights and activations, among them those a wrapped
    MATVEC would read (rows 0 and 1, bytes 65532.. and 0..), then an EMIT_RAW that must still
    show the valid MATVEC's sums, and a STATUS."""
    rng = np.random.default_rng(7)
    r, lanes = config.rows_per_cycle, config.lanes
    setup = asm.encode_write_weights(0, rng.integers(-128, 128, (4, r, lanes)), config)
    setup += asm.encode_load_act(0, rng.integers(-128, 128, 16))
    setup += asm.encode_load_act(config.act_depth - 16, rng.integers(-128, 128, 16))
    setup += asm.encode_matvec(0, 0, 4) + asm.encode_emit_raw(lanes)
    programs = []
    for stream in streams:
        programs.append(stream + asm.encode_emit_raw(lanes) + asm.encode_status())
        programs.append(setup + stream + asm.encode_emit_raw(lanes) + asm.encode_status())
    # A wrapped MATVEC of 65535 rows takes tens of thousands of cycles: the budget lets it end,
    # so a fault shows as wrong answers, not as a hang.
    return programs, [Job(words, max_cycles=400_000) for words in programs]


# On the RTL, both streams run on ``max`` (whose builds test_fuzz shares); ``d49153`` would cost
# four more cold builds of a 200k-line design for a stream ``max`` runs already (its decoder
# verdict at that configuration is in test_decoder.py, and `make fuzz --configs` can take it).
@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", ["max"])
def test_fault1_streams(name, arch, sim):
    config, streams = CASES[name]
    programs, jobs = _jobs(config, streams)
    results = run_rtl(jobs, config, sim=sim, arch=arch)
    for words, result in zip(programs, results):
        where = f"{name} {arch} {sim}, stream {words[-5]:#010x} {words[-4]:#010x}"
        assert result.finished, f"{where}: the macro should answer every command"
        responses = asm.parse_responses(result.out)
        matvec = len(responses) - 3
        assert responses[matvec].error == Error.BAD_ADDRESS, (
            f"{where}: the MATVEC should be rejected with BAD_ADDRESS, "
            f"not {responses[matvec].error.name}")
        compare(words, result.out, config, arch=arch, where=where)
        assert result.extra == 0, f"{where}: the macro answered {result.extra} words too many"
