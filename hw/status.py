"""The words a ``STATUS`` command answers with, and the error record behind the first one."""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .isa import (ERROR_COUNT_MAX, Error, ErrorsWord, MacroConfig, StatusWord,
                  status_words, unpack)


__all__ = ["StatusWords"]


class StatusWords(wiring.Component):
    """The ``STATUS`` answer of a macro of ``config`` built as ``arch``, in :class:`StatusWord`
    order, on ``words`` (combinational on the error record).

    Every word but ``ERRORS`` is a constant taken from :func:`pim_macro.hw.isa.status_words`.
    ``ERRORS`` (an :data:`~pim_macro.hw.isa.ErrorsWord`) holds the error record: ``fail`` (a
    command failed with ``error``) sets the last error and counts one failed command, saturating
    at :data:`~pim_macro.hw.isa.ERROR_COUNT_MAX`; ``clear`` (the answer has been read) resets
    the last error to ``OK``. Both take effect in the next cycle.
    """

    def __init__(self, config: MacroConfig, *, arch):
        self._config, self._arch = config, arch
        super().__init__({
            "fail":  In(1),
            "error": In(Error),
            "clear": In(1),
            "words": Out(data.ArrayLayout(32, len(StatusWord))),
        })

    def elaborate(self, platform):
        m = Module()
        constants = status_words(self._config, self._arch)
        errors = Signal(ErrorsWord)
        last_error = Signal(Error)
        error_count = Signal.like(errors.error_count)
        with m.If(self.fail):
            m.d.sync += [last_error.eq(self.error),
                         error_count.eq(error_count + (error_count != ERROR_COUNT_MAX))]
        with m.Elif(self.clear):
            m.d.sync += last_error.eq(Error.OK)
        fixed = unpack(ErrorsWord, constants[StatusWord.ERRORS.value])
        m.d.comb += [errors.last_error.eq(last_error), errors.error_count.eq(error_count),
                     errors.isa_version.eq(fixed.isa_version)]
        for word in StatusWord:
            value = errors if word == StatusWord.ERRORS else constants[word.value]
            m.d.comb += self.words[word.value].eq(value)
        return m
