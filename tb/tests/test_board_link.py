"""The host side of the board link (sw/runtime/board_link.py) against a fake board: the golden model
behind a receive FIFO of the bridge's size that a slow macro drains a few bytes at a time, so
the credit flow control is what keeps the FIFO from overflowing. (The bridge itself, UART
included, is simulated on Icarus and Verilator in test_uart.py.)"""

import time

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

    def __init__(self, config, *programs, arch="pim", out_room=64, silent=False, stale=b""):
        self.config, self.golden = config, GoldenMacro(config, arch=arch)
        self.out_room, self.silent = out_room, silent
        # ``stale``: bytes waiting in the host's receive buffer before the link opens (the
        # answers of an interrupted run, line noise).
        self.rx, self.tx, self.taken = bytearray(), bytearray(stale), bytearray()
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

    def reset_input_buffer(self):
        del self.tx[:]

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

    def reset_input_buffer(self):
        pass

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
    with pytest.raises(BoardError, match=f"announces {len(StatusWord) - 1} data words, not the "
                                         f"{len(StatusWord)} of an OK STATUS of ISA version "
                                         f"{ISA_VERSION} .*make synth"):
        check(_status_answer(status_words(CONFIG, "pim")[:-1]))
    with pytest.raises(BoardError, match="answer to command 0 .* echoes opcode 0x04, not 0x09"):
        check([pack(Status, opcode=Opcode.MATVEC.value)])
    garbled = status_words(CONFIG, "pim")
    garbled[StatusWord.ERRORS.value] |= 228               # last_error: no Error has code 228
    with pytest.raises(BoardError, match=r"the board's answer to command 0 \(STATUS at word 0\) "
                                         rf"is not one: its ERRORS data word "
                                         rf"{(ISA_VERSION << 8) | 228:#010x} holds "
                                         r"error code 228, none of the ISA's"):
        check(_status_answer(garbled))
    with pytest.raises(BoardError, match="the board answered STATUS with error BAD_FIELD"):
        check([pack(Status, opcode=Opcode.STATUS.value, error=Error.BAD_FIELD)])


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
    monkeypatch.setattr(driver, "RTLSession", missing)
    w, x = np.ones((4, 8), dtype=np.int8), np.ones(8, dtype=np.int8)
    with pytest.raises(SimulatorMissing, match="Icarus Verilog is missing"):
        run_gemv(w, x, CONFIG, sim="icarus")
    with pytest.raises(BoardMissing, match="cannot open /nonexistent/tty"):
        run_gemv(w, x, CONFIG, sim="board", port="/nonexistent/tty")


# -- a board that misbehaves: one line saying what it did wrong --------------------------------

def test_stale_bytes_are_flushed_when_the_link_opens():
    """Bytes waiting before the link opens (the answers of an interrupted run) are thrown away,
    not taken for the answers of this run."""
    words = random_program(CONFIG, 7, commands=20)
    stale = asm.words_to_bytes(run_golden(asm.encode_status() + asm.encode_emit_raw(3), CONFIG))
    board = FakeBoard(CONFIG, words, stale=stale[:-3])
    assert BoardLink(board, timeout=1).run(words, CONFIG) == run_golden(words, CONFIG)


def test_a_loopback_is_named():
    """pyserial's loop:// (a real serial object that echoes what it is sent, as a loopback
    adapter or a port with TX tied to RX does): the first check says the board echoed."""
    with BoardLink("loop://", timeout=1) as link:
        with pytest.raises(BoardError, match=r"^the board echoed command 0 \(STATUS at word 0\) "
                                             r"back instead of answering it"):
            check_board_config(link, CONFIG, "pim")


class _Scripted:
    """A board that answers with ``script``, a list of byte strings handed out one per read
    (then nothing), whatever it is sent; ``fail_read`` / ``fail_write``: the read or write call
    (counted from 1) at which the port vanishes."""

    def __init__(self, *script, fail_read=None, fail_write=None, delay=0.0):
        self.script = [bytes(chunk) for chunk in script]
        self.fail_read, self.fail_write, self.delay = fail_read, fail_write, delay
        self.reads = self.writes = 0

    def write(self, data):
        import serial
        self.writes += 1
        if self.writes == self.fail_write:
            raise serial.SerialException("write failed: [Errno 5] Input/output error")

    @property
    def in_waiting(self):
        return len(self.script[0]) if self.script else 0

    def read(self, n):
        import serial
        import time
        self.reads += 1
        if self.reads == self.fail_read:
            raise serial.SerialException("device reports readiness to read but returned no "
                                         "data (device disconnected or multiple access on port?)")
        time.sleep(self.delay)
        return self.script.pop(0) if self.script else b""

    def reset_input_buffer(self):
        pass

    def close(self):
        pass


def _status_bytes(**fields):
    return asm.words_to_bytes([pack(Status, **fields)])


STATUS_OK = asm.words_to_bytes(_status_answer(status_words(CONFIG, "pim")))
TWO = asm.encode_status() + asm.encode_emit_raw(4)          # commands 0 and 1 (word 1)
EMIT_OK = asm.words_to_bytes([pack(Status, opcode=Opcode.EMIT_RAW.value, count=4), 1, 2, 3, 4])

MISBEHAVIOURS = {
    "extra answers": (
        [STATUS_OK + EMIT_OK + STATUS_OK], TWO,
        r"the board sent 32 bytes more than the answers to the 2 commands sent \(stale bytes "
        r"from an earlier run, line noise, or a loopback\?\)"),
    "extra answers in a later read": (
        [STATUS_OK + EMIT_OK[:8], EMIT_OK[8:] + b"\x00"], TWO,
        r"the board sent 1 byte more than the answers to the 2 commands sent"),
    "a single noise byte": (
        [b"\x5a" + STATUS_OK], asm.encode_status(),
        r"the board's answer to command 0 \(STATUS at word 0\) is 0x0700095a, not a status "
        r"word of it: it echoes opcode 0x5a, not 0x09 \(line noise, or stale bytes\?\)"),
    "a status word announcing 65535 data words": (
        [_status_bytes(opcode=Opcode.STATUS.value, count=65535)], asm.encode_status(),
        r"the board's answer to command 0 \(STATUS at word 0\) is 0xffff0009, not a status "
        r"word of it: it announces 65535 data words, not the 7 of an OK STATUS"),
    "an error status with data": (
        [asm.words_to_bytes([pack(Status, opcode=Opcode.EMIT_RAW.value,
                                  error=Error.BAD_LENGTH, count=4)])], asm.encode_emit_raw(4),
        r"announces 4 data words, not the 0 of a failed command"),
    "an error code that does not exist": (
        [asm.words_to_bytes([(228 << 8) | Opcode.STATUS.value])], asm.encode_status(),
        r"command 0 \(STATUS at word 0\) is 0x0000e409, not a status word of it: its error "
        r"code 228 is none of the ISA's"),
    "the wrong opcode": (
        [asm.words_to_bytes([pack(Status, opcode=0xEE)])], asm.encode_status(),
        r"it echoes opcode 0xee, not 0x09"),
    "OK for an unknown opcode": (
        [asm.words_to_bytes([pack(Status, opcode=0xEE)])], [asm.header(0xEE, flags=1)],
        r"command 0 \(opcode 0xee at word 0\) is 0x000000ee, not a status word of it: it says "
        r"OK to an unknown opcode"),
    "a board that stops mid-answer": (
        [STATUS_OK[:4 * 4 + 2]], asm.encode_status(),
        r"the board stopped inside its answer to command 0 \(STATUS at word 0\): 3 of 7 data "
        r"words and 2 bytes, then nothing for 0.2 s"),
    "a port that vanishes mid-read": (
        [STATUS_OK[:6]], asm.encode_status(),
        r"the serial port failed \(unplugged\?\): device reports readiness to read but returned "
        r"no data"),
}


@pytest.mark.parametrize("case", MISBEHAVIOURS)
def test_a_misbehaving_board_is_one_line(case):
    """Each way a board (or the line) can go wrong is a BoardError, one line, saying what the
    board did: never an IndexError, a SerialException, a silence that was not one, or an
    enum's complaint."""
    script, words, message = MISBEHAVIOURS[case]
    port = _Scripted(*script, fail_read=2 if "vanishes" in case else None)
    with pytest.raises(BoardError, match=message) as info:
        BoardLink(port, timeout=0.2).run(words, CONFIG)
    assert "\n" not in str(info.value), f"{case}: the error should be one line"


def test_a_port_that_vanishes_mid_write():
    program = asm.encode_status() * 300                   # more than a window: several writes
    with pytest.raises(BoardError, match=r"^the serial port failed \(unplugged\?\): write "
                                         r"failed: \[Errno 5\]"):
        BoardLink(_Scripted(STATUS_OK * 300, fail_write=2), timeout=0.2).run(program, CONFIG)


def test_an_overall_deadline():
    """A board that keeps answering, but too slowly to finish: the overall deadline ends the
    run though the board is never silent for ``timeout``."""
    chunks = [STATUS_OK[i:i + 1] for i in range(len(STATUS_OK))]
    with pytest.raises(BoardError, match=r"the board answered 0 of 1 commands in 0.1 s, the "
                                         r"time allowed for the run"):
        BoardLink(_Scripted(*chunks, delay=0.01), timeout=0.2, deadline=0.1).run(
            asm.encode_status(), CONFIG)


@pytest.mark.parametrize("command", ["gemv", "run"])
def test_cli_exits_1_for_a_misbehaving_board(tmp_path, capsys, command):
    """The board's fault, not the user's input: one line and exit 1 (here a loopback)."""
    from pim_macro.sw import cli
    np.save(tmp_path / "w.npy", np.ones((4, 8), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.ones(8, dtype=np.int8))
    (tmp_path / "p.txt").write_text("0x00000009\n")
    files = (["--weights", str(tmp_path / "w.npy"), "--input", str(tmp_path / "x.npy")]
             if command == "gemv" else ["--program", str(tmp_path / "p.txt")])
    code = cli.main([command, *files, "--sim", "board", "--port", "loop://"])
    err = capsys.readouterr().err
    assert code == 1, f"a misbehaving board should exit 1, got {code}: {err!r}"
    assert err.startswith("pim: error: ") and err.count("\n") == 1 and "echoed" in err, err


def test_corrupted_answers_are_board_errors():
    """Seeded corruptions of a real program's answers (bytes overwritten, dropped, inserted,
    the answer cut short): a one-line BoardError, or, when only data bits changed (the protocol
    has no checksum: a data word can be any word), every status word as the golden model's;
    nothing else ever escapes."""
    rng = np.random.default_rng(11)
    words = random_program(CONFIG, 3, commands=12)
    golden = run_golden(words, CONFIG)
    answer = asm.words_to_bytes(golden)
    errors = 0
    for i in range(300):
        data = bytearray(answer)
        at = int(rng.integers(0, len(data)))
        if i % 4 == 0:
            data[at] ^= int(rng.integers(1, 256))
        elif i % 4 == 1:
            del data[at]
        elif i % 4 == 2:
            data[at:at] = bytes([int(rng.integers(0, 256))])
        else:
            del data[at:]
        try:
            out = BoardLink(_Scripted(bytes(data)), timeout=0.005).run(words, CONFIG)
        except BoardError as exc:
            assert "\n" not in str(exc), f"corruption {i}: {exc}"
            errors += 1
            continue
        shape = [(r.opcode, r.error, len(r.data)) for r in asm.parse_responses(out)]
        assert shape == [(r.opcode, r.error, len(r.data)) for r in asm.parse_responses(golden)], \
            f"corruption {i}: a run that succeeds must hold the program's status words"
        assert len(out) == len(golden) and i % 4 == 0, \
            f"corruption {i}: only an overwritten byte can pass unseen"
    assert errors > 200, f"most corruptions should be caught, only {errors} of 300 were"


def test_a_board_that_stops_reading_is_a_board_error():
    """A board (here a pty nobody reads) that takes no more bytes: the writes time out (they
    used to block forever: pyserial writes without a timeout) and the run ends in one line."""
    import os
    import time
    pytest.importorskip("serial")
    master, slave = os.openpty()
    try:
        import tty
        tty.setraw(slave)
        rows = np.zeros((65536 // CONFIG.lanes, CONFIG.rows_per_cycle, CONFIG.lanes), np.int8)
        program = asm.encode_write_weights(0, rows, CONFIG) * 4          # 256 KB
        start = time.monotonic()
        with pytest.raises(BoardError, match=r"^the board took no bytes for .* s"):
            with BoardLink(os.ttyname(slave), timeout=0.3) as link:
                link.run(program, CONFIG)
        assert time.monotonic() - start < 5
    finally:
        os.close(master)
        os.close(slave)


def _bad_status(**fields):
    words = status_words(CONFIG, "pim")
    for index, value in fields.items():
        words[StatusWord[index].value] = value
    return asm.words_to_bytes(_status_answer(words))


@pytest.mark.parametrize("index, value, message", [
    ("ERRORS", pack(ErrorsWord, last_error=Error.OK, isa_version=ISA_VERSION) | 0x77,
     r"its ERRORS data word 0x[0-9a-f]{8} holds error code 119, none of the ISA's"),
    ("SHAPE", (9 << 24) | (1 << 16) | CONFIG.lanes,
     r"its SHAPE data word 0x09010008 holds architecture 9, none of pim, baseline"),
])
def test_status_data_words_are_checked(index, value, message):
    """The data words of a STATUS answer that must hold ISA values (an error code, an
    architecture) are checked as they arrive: a BoardError naming the word, not a ValueError
    of an enum later on."""
    port = _Scripted(_bad_status(**{index: value}))
    with pytest.raises(BoardError, match=r"^the board's answer to command 0 \(STATUS at word "
                                         r"0\) is not one: " + message):
        BoardLink(port, timeout=0.2).run(asm.encode_status(), CONFIG)
    with pytest.raises(ValueError, match=message.replace("its ", "")):
        asm.decode_status_words(asm.bytes_to_words(_bad_status(**{index: value}))[1:])


@pytest.mark.parametrize("gap", [0, 1, 2])
def test_extra_bytes_after_the_last_answer_are_seen(gap):
    """A word that comes a little after the last answer (``gap`` empty reads later) is caught
    by the quiet period the link listens for after the last answer."""
    port = _Scripted(STATUS_OK, *[b""] * gap, b"\x01\x00\x00\x00", delay=0.01)
    with pytest.raises(BoardError, match=r"the board sent 4 bytes more than the answers"):
        BoardLink(port, timeout=0.5).run(asm.encode_status(), CONFIG)


def _termios_error():
    termios = pytest.importorskip("termios")
    return termios.error(5, "Input/output error")


@pytest.mark.parametrize("where, error", [
    ("reset", _termios_error), ("read", _termios_error), ("write", _termios_error),
    ("read", lambda: ValueError("I/O operation on closed file")),
    ("write", lambda: __import__("serial").PortNotOpenError()),
])
def test_every_port_failure_is_a_board_error(where, error):
    """Whatever the port raises (termios.error, which is no OSError; pyserial's exceptions; a
    ValueError from a closed file) is a one-line BoardError."""
    class Failing(_Scripted):
        def _maybe(self, name):
            if name == where:
                raise error()

        def reset_input_buffer(self):
            self._maybe("reset")

        def read(self, n):
            self._maybe("read")
            return super().read(n)

        def write(self, data):
            self._maybe("write")

    with pytest.raises(BoardError, match=r"^the serial port failed"):
        BoardLink(Failing(STATUS_OK), timeout=0.2).run(asm.encode_status(), CONFIG)


class _SlowTaker(FakeBoard):
    """A board that takes bytes steadily but slowly: each write call of the host blocks a
    while (the line's own pace), and the whole of one long command takes longer than the
    link's silence timeout to send."""

    last_write = 0.0

    def write(self, data):
        time.sleep(0.004)
        super().write(data)
        self.last_write = time.monotonic()

    # The bytes still on the line (a pty's or adapter's buffer) reach the macro a while after
    # the host's last write returned: its answer comes that much later.
    @property
    def in_waiting(self):
        return len(self.tx) if time.monotonic() - self.last_write > 0.05 else 0

    def read(self, n):
        return super().read(n) if time.monotonic() - self.last_write > 0.05 else b""


def test_a_long_write_is_activity_not_silence():
    """A command whose bytes take longer than ``timeout`` to go out (a 64 KiB weight load)
    is not a silent board: bytes taken by the port count as activity (tester, round 2:
    a 1 MB program failed with "the board sent nothing for 5 s" after 34 s)."""
    config = MacroConfig(lanes=64, depth=1024, act_depth=256, bias_depth=16)
    rows = np.ones((1024, 1, 64), np.int8)
    words = asm.encode_write_weights(0, rows, config) + asm.encode_status()
    board = _SlowTaker(config, words, out_room=4096)
    link = BoardLink(board, timeout=0.1)
    start = time.monotonic()
    out = link.run(words, config)
    assert time.monotonic() - start > 0.1, "the write should take longer than the timeout"
    assert out == GoldenMacro(config).run(words)
