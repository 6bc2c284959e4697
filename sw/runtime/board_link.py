"""The host side of a board's UART link (``--sim board --port /dev/ttyUSB0``), with pyserial.

The board top (:class:`pim_macro.hw.board.BoardTop`) turns the bytes it receives into the
macro's command stream and sends the macro's output words back, least significant byte first
(:func:`pim_macro.sw.runtime.asm.words_to_bytes`). A UART cannot be paused, so the host keeps
the bytes in flight below what the board's receive FIFO holds
(:data:`pim_macro.hw.uart_bridge.RX_FIFO_BYTES`): *credit flow control* by whole commands.

* A command's bytes count as in flight from when they are sent until its response (status
  word and data) has come back: conservative, since the macro takes a command before it
  answers it.
* A command is sent when it fits in the window beside those in flight. One larger than the
  window (a long load) is sent when nothing is in flight: the macro, idle by then, takes a
  load's payload a word per cycle, far faster than the line brings it.

Nothing the macro does keeps it from reading its input for as long as the FIFO lasts (512 bytes
are 44 ms at 115200 baud; the longest command, a baseline MATVEC over the whole SRAM, takes a
few thousand cycles), so no byte is lost; the board's ``overrun`` LED would say otherwise.
"""

import time

from pim_macro.hw import isa
from pim_macro.hw.board import BAUD
from pim_macro.hw.isa import ARCHES, WORD_BYTES, MacroConfig, Opcode
from pim_macro.hw.uart_bridge import RX_FIFO_BYTES
from pim_macro.sw.runtime import asm


__all__ = ["BoardError", "BoardMissing", "BoardLink", "run_on_board", "check_board_config"]


class BoardError(RuntimeError):
    """The board did not answer, answered something that is not a response, or holds a macro
    of another configuration."""


class BoardMissing(BoardError):
    """The serial port cannot be opened (no board there, or pyserial missing)."""


#: Bytes of one stream word on the line.


class BoardLink:
    """A serial connection to a board top. ``port`` is a device path or a pyserial URL, or an
    already open object with pyserial's ``write``, ``read``, ``in_waiting`` and ``close``
    (tests use one). ``timeout`` is how long to wait for a byte before calling the board
    silent."""

    def __init__(self, port, *, baud=BAUD, timeout=5.0, window=RX_FIFO_BYTES):
        if window < 8:
            raise ValueError(f"window must be at least 8 bytes, not {window}")
        self.window, self.timeout = window, timeout
        if isinstance(port, str):
            try:
                import serial
            except ImportError:
                raise BoardMissing("pyserial is not installed; run `make venv`") from None
            try:
                self._port = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
            except (serial.SerialException, ValueError) as exc:
                raise BoardMissing(f"cannot open {port}: {exc}") from None
        else:
            self._port = port

    def close(self):
        self._port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, words, config: MacroConfig):
        """Send program ``words`` (framed for ``config``) and return the output words, once
        every command has answered. Raises :class:`BoardError` when the board is silent for
        ``timeout`` seconds."""
        commands = asm.frame_program(words, config)
        sizes = [WORD_BYTES * count for _, _, count in commands]
        out, pending = [], bytearray()
        answers = asm.AnswerCounter()
        sent = acked = in_flight = 0
        last_heard = time.monotonic()
        while acked < len(commands):
            while sent < len(commands) and (in_flight == 0
                                            or in_flight + sizes[sent] <= self.window):
                _, first, count = commands[sent]
                self._port.write(asm.words_to_bytes(words[first:first + count]))
                in_flight += sizes[sent]
                sent += 1
            data = self._port.read(max(1, self._port.in_waiting))
            if data:
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard > self.timeout:
                raise BoardError(
                    f"the board sent nothing for {self.timeout:g} s with {len(commands) - acked} "
                    f"of {len(commands)} commands unanswered (wrong port or bitstream? press "
                    f"button 0 to reset the macro, then retry)")
            pending += data
            whole = len(pending) - len(pending) % WORD_BYTES
            for word in asm.bytes_to_words(pending[:whole]):
                out.append(word)
                answers.add(word)
                while acked < answers.complete:
                    in_flight -= sizes[acked]
                    acked += 1
            del pending[:whole]
        return out


#: Fields of the ``STATUS`` answer that describe what happened, not which macro it is.
_DYNAMIC = ("last_error", "error_count")


def _describe(fields):
    """The static fields of decoded status words, with the architecture by name."""
    described = {k: v for k, v in fields.items() if k not in _DYNAMIC}
    arch = described["arch"]
    described["arch"] = ARCHES[arch] if arch < len(ARCHES) else arch
    return described


def check_board_config(link, config: MacroConfig, arch):
    """Ask the board for its ``STATUS`` and raise :class:`BoardError` unless it holds a macro
    of ``config`` and ``arch`` (programs are compiled for one configuration): its status words
    must be :func:`pim_macro.hw.isa.status_words` of them, but for the ``ERRORS`` word's last
    error and error count, which say what the macro saw, not what it is."""
    out = link.run(asm.encode_status(), config)
    try:
        responses = asm.parse_responses(out)
    except ValueError as exc:
        raise BoardError(f"the board answered STATUS with {out!r}, not a response: {exc}") \
            from None
    if len(responses) != 1 or responses[0].opcode != Opcode.STATUS.value or not responses[0].ok:
        raise BoardError(f"the board answered STATUS with {out!r}, not a status response")
    data = responses[0].data
    want = isa.status_words(config, arch)
    if len(data) != len(want):
        raise BoardError(f"the board answered STATUS with {len(data)} words, not the "
                         f"{len(want)} of ISA version {isa.ISA_VERSION}: its bitstream is of "
                         f"another version of the macro (rebuild it with `make synth`)")
    try:
        got = asm.decode_status_words(data)
    except ValueError as exc:
        raise BoardError(f"the board's STATUS words {data!r} do not decode: {exc}") from None
    # The board's own last error and error count, so that only what the macro is compares.
    want = isa.status_words(config, arch, **{k: got[k] for k in _DYNAMIC})
    if data == want:
        return
    board, asked = _describe(got), _describe(asm.decode_status_words(want))
    if board["isa_version"] != asked["isa_version"]:
        raise BoardError(f"the board's macro implements ISA version {board['isa_version']}, "
                         f"this software version {asked['isa_version']} (rebuild the bitstream "
                         f"with `make synth`)")
    differ = [k for k in board if board[k] != asked[k]]
    # The options that would ask for the board's macro: those the run set otherwise (a
    # PIM macro reports no bus width, which no option asks for).
    settings = dict(config.as_dict(), arch=arch)
    options = " ".join(f"--{k.replace('_', '-')} {board[k]}" for k in differ
                       if settings.get(k, board[k]) != board[k]
                       and not (k == "bus_bits" and board["arch"] == "pim"))
    raise BoardError(f"the board holds another macro: {board}; the run asked for "
                     f"{', '.join(f'{k} {asked[k]}' for k in differ)} (pass the board's "
                     f"configuration, {options + ', ' if options else ''}or its --board name)")


def run_on_board(words, config: MacroConfig, *, arch, port, baud=BAUD, timeout=5.0):
    """:func:`pim_macro.sw.runtime.driver.execute`'s ``sim="board"``: check the board's macro,
    run ``words``."""
    with BoardLink(port, baud=baud, timeout=timeout) as link:
        check_board_config(link, config, arch)
        return link.run(words, config)
