"""The STATUS words: constants from the ISA, the error record and its saturating count."""

import pytest
from amaranth.sim import Simulator

from pim_macro.hw.isa import (ARCHES, ERROR_COUNT_MAX, Error, ErrorsWord, MacroConfig,
                              StatusWord, status_words, unpack)
from pim_macro.hw.status import StatusWords


def _words(ctx, dut):
    return [ctx.get(dut.words[word.value]) for word in StatusWord]


@pytest.mark.parametrize("arch", ARCHES)
def test_status_words_follow_the_isa(arch):
    """After reset, after failures and after a clear the words are ``isa.status_words`` of the
    same record."""
    config = MacroConfig(lanes=12, rows_per_cycle=2, depth=100, act_depth=64, bias_depth=9,
                         bus_bits=16, requantizers=2)
    dut = StatusWords(config, arch=arch)

    async def bench(ctx):
        assert _words(ctx, dut) == status_words(config, arch), "reset: no error recorded"
        for error in (Error.BAD_FIELD, Error.MISALIGNED):
            ctx.set(dut.fail, 1)
            ctx.set(dut.error, error)
            await ctx.tick()
        ctx.set(dut.fail, 0)
        assert _words(ctx, dut) == status_words(config, arch, last_error=Error.MISALIGNED,
                                                error_count=2), "the last of two failures"
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert _words(ctx, dut) == status_words(config, arch, error_count=2), \
            "a clear resets the last error and keeps the count"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_error_count_saturates():
    dut = StatusWords(MacroConfig(), arch="pim")

    async def bench(ctx):
        ctx.set(dut.fail, 1)
        ctx.set(dut.error, Error.BAD_OPCODE)
        await ctx.tick().repeat(ERROR_COUNT_MAX + 3)
        errors = unpack(ErrorsWord, ctx.get(dut.words[StatusWord.ERRORS.value]))
        assert errors.error_count == ERROR_COUNT_MAX, "the failed-command count saturates"
        assert errors.last_error == Error.BAD_OPCODE

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
