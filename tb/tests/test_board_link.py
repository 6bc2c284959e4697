"""The host side of the board link (sw/runtime/board_link.py) against a fake board: the golden model
behind a receive FIFO of the bridge's size that a slow macro drains a few bytes at a time, so
the credit flow control is what keeps the FIFO from overflowing. (The bridge itself, UART
included, is simulated on Icarus and Verilator in test_uart.py.)"""

import numpy as np
import pytest

from pim_macro.hw.isa import (ERROR_COUNT_MAX, ISA_VERSION, WORD_BYTES, Error, ErrorsWord,
                              MacroConfig, Opcode, Status, StatusWord, pack, status_words, unpack)
from pim_macro.hw.uart_bridge import RX_FIFO_BYTES
from pim_macro.sw.runtime import asm
from pim_macro.sw.runtime.board_link import (BoardError, BoardLink, BoardMissing,
                                             check_board_config)
from pim_macro.sw.runtime.driver import check_run_options, execute
from pim_macro.sw.compiler.gemv import compile_gemv
from pim_macro.sw.models.golden import GoldenMacro, run_golden
from pim_macro.tb.harness.programs import random_program


class FakeBoard:
    """pyserial's ``write/read/in_waiting/close`` over a golden macro behind the bridge's
    receive FIFO. The macro takes bytes as they arrive (it is far faster than the line) except
    while ``out_room`` bytes of its answers wait to be read by the host: then it stalls, as the
    real one does behind its full output FIFO and UART, and the FIFO fills. Each command is
    answered once its last byte is taken. ``overrun`` records a byte arriving at a full FIFO.
    The fake is told the programs it will see, to know where their commands end."""

    def __init__(self, config, *programs, arch="pim", out_room=64, silent=False):
        self.config, self.golden = config, GoldenMacro(config, arch=arch)
        self.out_room, self.silent = out_room, silent
        self.rx, self.tx, self.taken = bytearray(), bytearray(), bytearray()
        self.ends, base = [], 0         # byte offsets where commands end, in stream order
        for words in programs:
            self.ends += [base + WORD_BYTES * (first + count)
                          for _, first, count in asm.frame_program(words, config)]
            base += WORD_BYTES * len(words)
        self.done = 0                   # bytes of the stream executed
        self.overrun, self.peak, self.closed = False, 0, False

    def write(self, data):
        for byte in data:
            if len(self.rx) >= RX_FIFO_BYTES:
                self.overrun = True
            else:
                self.rx.append(byte)
            self.peak = max(self.peak, len(self.rx))
            self._take()

    @property
    def in_waiting(self):
        return len(self.tx)

    def _take(self):
        while self.rx and not self.silent and len(self.tx) < self.out_room:
            self.taken.append(self.rx.pop(0))
            self._execute()

    def _execute(self):
        while self.ends and self.done + len(self.taken) >= self.ends[0]:
            size = self.ends.pop(0) - self.done
            words = asm.bytes_to_words(self.taken[:size])
            self.tx += asm.words_to_bytes(self.golden.run(words))
            del self.taken[:size]
            self.done += size

    def read(self, n):
        data = bytes(self.tx[:n])
        del self.tx[:n]
        self._take()
        return data

    def close(self):
        self.closed = True


CONFIG = MacroConfig(lanes=8, depth=64, act_depth=256, bias_depth=16)


@pytest.mark.parametrize("out_room", [4, 40, 4096])
def test_random_programs_match_golden_without_overrun(out_room):
    """Seeded random programs (every command, some invalid) through a fake board whose macro
    stalls while its answers wait: the outputs are the golden model's and the FIFO never
    overflows."""
    peaks = []
    for seed in range(4):
        words = random_program(CONFIG, seed, commands=40)
        board = FakeBoard(CONFIG, words, out_room=out_room)
        out = BoardLink(board, timeout=5).run(words, CONFIG)
        assert out == run_golden(words, CONFIG), f"seed {seed}: outputs differ from golden"
        assert not board.overrun, f"seed {seed}: a byte was lost"
        peaks.append(board.peak)
    if out_room == 4:
        assert max(peaks) > RX_FIFO_BYTES // 2, "the stalls should fill the FIFO a good way"


def test_commands_larger_than_the_window_go_alone():
    """Weight loads larger than the window: sent only when nothing is in flight, and taken as
    they arrive, so the FIFO still never overflows."""
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (16, 64), dtype=np.int8)
    x = rng.integers(-128, 128, (2, 64), dtype=np.int8)
    program = compile_gemv(w, x, CONFIG)
    assert max(WORD_BYTES * count for _, _, count in asm.frame_program(program.words, CONFIG)) \
        > RX_FIFO_BYTES
    board = FakeBoard(CONFIG, program.words, out_room=4)
    out = BoardLink(board).run(program.words, CONFIG)
    y, _ = program.extract(out)
    assert np.array_equal(y, x.astype(np.int64) @ w.T.astype(np.int64))
    assert not board.overrun


def test_window_bounds_the_bytes_in_flight():
    """With a board that answers nothing, the link sends no more than the window."""
    words = asm.encode_status() * 200
    board = FakeBoard(CONFIG, words, silent=True)
    with pytest.raises(BoardError, match="sent nothing for 0.2 s with 200 of 200 commands"):
        BoardLink(board, timeout=0.2).run(words, CONFIG)
    assert len(board.rx) == RX_FIFO_BYTES and not board.overrun


def test_board_config_is_checked():
    status = asm.encode_status()
    check_board_config(BoardLink(FakeBoard(CONFIG, status)), CONFIG, "pim")
    with pytest.raises(BoardError, match=r"the board holds another macro: .*'lanes': 8.*; the run "
                                         r"asked for lanes 4, act_depth 1024, bias_depth 256 "
                                         r"\(pass the board's configuration, --lanes 8 "
                                         r"--act-depth 256 --bias-depth 16, or its --board name"):
        check_board_config(BoardLink(FakeBoard(CONFIG, status)), MacroConfig(lanes=4, depth=64),
                           "pim")
    with pytest.raises(BoardError, match="another macro: .*'arch': 'pim'.* asked for arch "
                                         "baseline, bus_bits 32 .*--arch pim, or"):
        check_board_config(BoardLink(FakeBoard(CONFIG, status)), CONFIG, "baseline")
    check_board_config(BoardLink(FakeBoard(CONFIG, status, arch="baseline")), CONFIG, "baseline")


class _Answers:
    """A board that answers with the given words, whatever it is sent."""

    def __init__(self, words):
        self.tx = bytearray(asm.words_to_bytes(words))

    def write(self, data):
        pass

    @property
    def in_waiting(self):
        return len(self.tx)

    def read(self, n):
        data = bytes(self.tx[:n])
        del self.tx[:n]
        return data

    def close(self):
        pass


def _status_answer(words):
    return [pack(Status, opcode=Opcode.STATUS.value, count=len(words))] + words


def test_board_status_compares_the_status_words():
    """The check compares the board's status words with the ISA's for the configuration, but
    for what the ERRORS word says about past commands; another ISA version, a STATUS of another
    length and an answer that is not a STATUS are errors that say so."""
    def check(words):
        check_board_config(BoardLink(_Answers(words), timeout=0.2), CONFIG, "pim")

    check(_status_answer(status_words(CONFIG, "pim", last_error=Error.BAD_ADDRESS,
                                      error_count=ERROR_COUNT_MAX)))
    words = status_words(CONFIG, "pim")
    errors = unpack(ErrorsWord, words[StatusWord.ERRORS.value])
    words[StatusWord.ERRORS.value] = pack(ErrorsWord, last_error=errors.last_error,
                                          isa_version=ISA_VERSION - 1,
                                          error_count=errors.error_count)
    with pytest.raises(BoardError, match=f"implements ISA version {ISA_VERSION - 1}, this "
                                         f"software version {ISA_VERSION} .*make synth"):
        check(_status_answer(words))
    with pytest.raises(BoardError, match=f"with {len(StatusWord) - 1} words, not the "
                                         f"{len(StatusWord)} of ISA version {ISA_VERSION}"):
        check(_status_answer(status_words(CONFIG, "pim")[:-1]))
    with pytest.raises(BoardError, match="not a status response"):
        check([pack(Status, opcode=Opcode.MATVEC.value)])


def test_board_options_are_checked():
    with pytest.raises(ValueError, match="needs the board's serial port"):
        check_run_options("board", "pim")
    with pytest.raises(ValueError, match="only for sim 'board'"):
        check_run_options("golden", "pim", port="/dev/ttyUSB0")
    with pytest.raises(BoardMissing, match="cannot open /nonexistent/tty"):
        execute(asm.encode_status(), CONFIG, sim="board", port="/nonexistent/tty")
    with pytest.raises(ValueError, match="window must be at least 8 bytes"):
        BoardLink(FakeBoard(CONFIG), window=4)


def test_cli_reports_a_missing_board(tmp_path, capsys):
    from pim_macro.sw import cli
    np.save(tmp_path / "w.npy", np.ones((4, 8), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(8, dtype=np.int8))
    code = cli.main(["gemv", "--weights", str(tmp_path / "w.npy"), "--input",
                     str(tmp_path / "x.npy"), "--sim", "board", "--port", "/nonexistent/tty"])
    assert code == 2
    assert "cannot open /nonexistent/tty" in capsys.readouterr().err


def test_cli_board_option_sets_the_configuration(tmp_path, capsys):
    """`--board icebreaker` runs with the board build's configuration (here on the golden
    model, whose JSON echoes it); unknown boards and configurations are one-line errors."""
    import json as json_module
    from pim_macro.hw.board import BOARDS
    from pim_macro.sw import cli
    np.save(tmp_path / "w.npy", np.ones((4, 8), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(8, dtype=np.int8))
    args = ["gemv", "--weights", str(tmp_path / "w.npy"), "--input", str(tmp_path / "x.npy"),
            "--json"]
    assert cli.main(args + ["--board", "icebreaker"]) == 0
    report = json_module.loads(capsys.readouterr().out)
    assert report["config"] == BOARDS["icebreaker"].config().as_dict()
    assert report["output"] == [8, 8, 8, 8]
    assert cli.main(args + ["--board", "ulx3s:l12"]) == 0
    assert json_module.loads(capsys.readouterr().out)["config"]["lanes"] == 12
    assert cli.main(args + ["--board", "de10"]) == 2
    assert "unknown board 'de10'" in capsys.readouterr().err
    assert cli.main(args + ["--board", "ulx3s:l99"]) == 2
    assert "ulx3s has no configuration 'l99'" in capsys.readouterr().err


def test_missing_back_ends_keep_their_type(monkeypatch):
    """run_gemv adds context to a failed run, but a missing simulator or board stays what it
    is, so that callers (the CLI: exit 2) can tell it from a failure."""
    from pim_macro.sw.runtime import driver
    from pim_macro.sw.compiler.gemv import run_gemv
    from pim_macro.sw.runtime.rtl import SimulatorMissing

    def missing(*args, **kwargs):
        raise SimulatorMissing("Icarus Verilog is missing")
    monkeypatch.setattr(driver, "run_rtl", missing)
    w, x = np.ones((4, 8), dtype=np.int8), np.ones(8, dtype=np.int8)
    with pytest.raises(SimulatorMissing, match="Icarus Verilog is missing"):
        run_gemv(w, x, CONFIG, sim="icarus")
    with pytest.raises(BoardMissing, match="cannot open /nonexistent/tty"):
        run_gemv(w, x, CONFIG, sim="board", port="/nonexistent/tty")
