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

Nothing from the line is taken on trust. The receive buffer is flushed when the link opens
(stale answers of an interrupted run); every status word must answer the command it stands
for (its opcode echoed, an ISA error code, as many data words as that command's response has);
the data words of a ``STATUS`` answer that must hold ISA values (the ``ERRORS`` word's error
code, the ``SHAPE`` word's architecture) are checked too. Bytes beyond the last answer (the
link listens for :data:`_QUIET_CHARS` character times plus :data:`_QUIET_MARGIN` seconds after
it, at most ``timeout``), a board silent for ``timeout`` (also in the middle of an answer;
silence counts from the later of the last byte read and the last chunk the port took: a long
load that takes longer than ``timeout`` to send is not silence), a
board that takes no bytes (a write blocked for ``timeout`` plus the line time of a
:data:`_WRITE_CHUNK`-byte chunk: writes go in such chunks), a run longer than its deadline and a
port that fails (a USB adapter pulled out; whatever the port raises: ``OSError``, pyserial's
``SerialException``, ``termios.error``, ``ValueError`` from a closed port) are each a
:class:`BoardError` of one line saying what the board did. The ``pim`` CLI exits 1 for them:
the board failed, not the user's input.
"""

import contextlib
import time

try:
    from termios import error as _TermiosError
except ImportError:                     # not a POSIX system: pyserial raises no termios.error
    class _TermiosError(Exception):
        pass

from pim_macro.hw import isa
from pim_macro.hw.board import BAUD
from pim_macro.hw.isa import (ARCHES, WORD_BYTES, Error, ErrorsWord, Header, MacroConfig, Opcode,
                              Status, StatusWord, unpack)
from pim_macro.hw.uart_bridge import RX_FIFO_BYTES
from pim_macro.sw.runtime import asm


__all__ = ["BoardError", "BoardMissing", "BoardLink", "run_on_board", "check_board_config"]


class BoardError(RuntimeError):
    """The board did not answer, answered something that is not a response, or holds a macro
    of another configuration; or its serial port failed during the run. The message is one line
    saying what the board (or the line) did."""


class BoardMissing(BoardError):
    """The serial port cannot be opened (no board there, or pyserial missing)."""


#: Bits a UART sends per byte (start bit, 8 data bits, stop bit).
_BITS_PER_BYTE = 10
#: The overall deadline of a run allows this many times the time its bytes take on the line
#: (both ways), beyond ``timeout``: the macro itself is far faster than the line.
_DEADLINE_SLACK = 4
#: After the last answer the link listens this many character times (plus
#: :data:`_QUIET_MARGIN` seconds, for the OS and the USB adapter's latency) for bytes that
#: should not be there.
_QUIET_CHARS = 8
_QUIET_MARGIN = 0.1
#: Bytes per write call: each may take ``timeout`` plus ``_DEADLINE_SLACK`` times its line time
#: (pyserial's write timeout); a board that takes none of them for that long is a BoardError.
_WRITE_CHUNK = 1024
#: What a serial port raises when it fails: OSError (pyserial's SerialException is one),
#: termios.error (a pty or adapter hung up: not an OSError), ValueError (a closed file).
_PORT_ERRORS = (OSError, _TermiosError, ValueError)


def _field(layout, name, word):
    """The raw bits of field ``name`` of ``word``, even those no enum member names (a word off
    the line can hold anything: :func:`pim_macro.hw.isa.unpack` would refuse it)."""
    field = layout[name]
    return (word >> field.offset) & ((1 << field.width) - 1)


class _Command:
    """What the answer to one command of a program must look like: its status word echoes the
    header's opcode byte, holds an :class:`~pim_macro.hw.isa.Error` code and announces the
    data words of the command's response if OK, none if not."""

    def __init__(self, index, words, first, config):
        self.index, self.first = index, first
        header = unpack(Header, words[first])
        self.header, self.opcode = words[first], header.opcode
        try:
            self.op = Opcode(header.opcode)
        except ValueError:
            self.op = None
        self.ok_words = (None if self.op is None
                         else isa.response_words(self.op, header.count, config))

    def __str__(self):
        name = self.op.name if self.op is not None else f"opcode {self.opcode:#04x}"
        return f"command {self.index} ({name} at word {self.first})"

    def check(self, word):
        """The data words that follow status ``word``; a :class:`BoardError` unless it is a
        status word answering this command."""
        opcode, error = _field(Status, "opcode", word), _field(Status, "error", word)
        count = _field(Status, "count", word)
        problem = None
        if opcode != self.opcode:
            problem = (f"it echoes opcode {opcode:#04x}, not {self.opcode:#04x} (line noise, or "
                       f"stale bytes?)")
        elif error not in {e.value for e in Error}:
            problem = f"its error code {error} is none of the ISA's"
        elif error == Error.OK.value and self.op is None:
            problem = "it says OK to an unknown opcode"
        elif error == Error.OK.value and count != self.ok_words:
            problem = (f"it announces {count} data words, not the {self.ok_words} of an OK "
                       f"{self.op.name}")
            if self.op == Opcode.STATUS:
                # The one answer whose length the ISA version changes.
                problem += (f" of ISA version {isa.ISA_VERSION} (a bitstream of another "
                            f"version of the macro? rebuild it with `make synth`)")
        elif error != Error.OK.value and count:
            problem = f"it announces {count} data words, not the 0 of a failed command"
        if problem is None:
            return count
        if word == self.header:
            raise BoardError(f"the board echoed {self} back instead of answering it (a "
                             f"loopback, or a port with its TX tied to RX: wrong port?)")
        raise BoardError(f"the board's answer to {self} is {word:#010x}, not a status word of "
                         f"it: {problem}")

    def check_data(self, data):
        """A :class:`BoardError` unless the data words of an OK answer hold what the ISA
        allows where it allows only some values (the ``STATUS`` words; the other responses'
        data words can be any word)."""
        if self.op == Opcode.STATUS and data:
            try:
                asm.decode_status_words(data)
            except ValueError as exc:
                raise BoardError(f"the board's answer to {self} is not one: its {exc} (line "
                                 f"noise?)") from None


class BoardLink:
    """A serial connection to a board top. ``port`` is a device path or a pyserial URL, or an
    already open object with pyserial's ``write``, ``read``, ``in_waiting``,
    ``reset_input_buffer`` and ``close`` (tests use one). Whatever waits in the receive buffer
    when the link opens (the answers of an interrupted run, line noise) is thrown away.

    ``timeout`` is how long the board may stay silent in the middle of a run (seconds), from
    the later of the last byte read and the last chunk the port took; ``deadline`` how long a
    whole :meth:`run` may take, by default ``timeout`` plus ``_DEADLINE_SLACK`` (4) times the
    time its bytes take on the line at ``baud``, both ways (so it scales with the program: a
    1 MB program at 115200 baud has 6 minutes)."""

    def __init__(self, port, *, baud=BAUD, timeout=5.0, window=RX_FIFO_BYTES, deadline=None):
        if window < 8:
            raise ValueError(f"window must be at least 8 bytes, not {window}")
        self.window, self.timeout, self.baud, self.deadline = window, timeout, baud, deadline
        self.name = port if isinstance(port, str) else getattr(port, "name", None)
        if isinstance(port, str):
            try:
                import serial
            except ImportError:
                raise BoardMissing("pyserial is not installed; run `make venv`") from None
            try:
                self._port = serial.serial_for_url(port, baudrate=baud, timeout=0.05,
                                                   write_timeout=self._write_timeout())
            except _PORT_ERRORS as exc:
                raise BoardMissing(f"cannot open {port}: {exc}") from None
        else:
            self._port = port
        with self._failures():
            self._port.reset_input_buffer()

    def _write_timeout(self):
        """How long one write of :data:`_WRITE_CHUNK` bytes may block (seconds)."""
        return self.timeout + _DEADLINE_SLACK * _BITS_PER_BYTE * _WRITE_CHUNK / self.baud

    def close(self):
        try:
            self._port.close()
        except _PORT_ERRORS:
            pass                    # a port that vanished: nothing left to close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _failures(self):
        """A port that fails (a USB adapter pulled out raises from read, write or in_waiting:
        any of :data:`_PORT_ERRORS`) as a :class:`BoardError`; a write that times out (the
        board takes no bytes) as one saying so."""
        try:
            yield
        except _PORT_ERRORS as exc:
            if type(exc).__name__ == "SerialTimeoutException":
                raise BoardError(f"the board took no bytes for {self._write_timeout():.3g} s "
                                 f"(a write timed out: is it reading? press button 0 to reset "
                                 f"the macro, then retry)") from None
            port = f" {self.name}" if self.name else ""
            raise BoardError(f"the serial port{port} failed (unplugged?): {exc}") from None

    def run(self, words, config: MacroConfig):
        """Send program ``words`` (framed for ``config``) and return the output words, once
        every command has answered. Each answer is checked as it arrives (see
        :class:`_Command`); after the last answer the link listens a quiet period more
        (:data:`_QUIET_CHARS` character times at ``baud`` plus :data:`_QUIET_MARGIN` s, at most
        ``timeout``: 0.1 s at 115200 baud) for bytes that should not come. Raises
        :class:`BoardError` when the board answers something else, more than was asked (also
        within the quiet period), stops for ``timeout`` seconds, takes no bytes (a write blocked
        for ``timeout`` plus the line time of a :data:`_WRITE_CHUNK`-byte chunk), takes longer
        than the deadline, or the port fails."""
        framed = asm.frame_program(words, config)
        commands = [_Command(i, words, first, config) for i, (_, first, _) in enumerate(framed)]
        sizes = [WORD_BYTES * count for _, _, count in framed]
        most_back = sum(1 + (c.ok_words or 0) for c in commands) * WORD_BYTES
        deadline = self.deadline
        if deadline is None:
            line = _BITS_PER_BYTE * (WORD_BYTES * len(words) + most_back) / self.baud
            deadline = self.timeout + _DEADLINE_SLACK * line
        out, pending = [], bytearray()
        sent = acked = in_flight = 0
        due = None                  # data words still due for the current answer; None: none
        start = last_heard = time.monotonic()
        quiet = min(self.timeout, _QUIET_CHARS * _BITS_PER_BYTE / self.baud + _QUIET_MARGIN)
        done_at = None              # when the last answer came; then listen ``quiet`` s more
        while done_at is None or time.monotonic() - done_at < quiet:
            while sent < len(commands) and (in_flight == 0
                                            or in_flight + sizes[sent] <= self.window):
                _, first, count = framed[sent]
                data = asm.words_to_bytes(words[first:first + count])
                for i in range(0, len(data), _WRITE_CHUNK):
                    with self._failures():
                        self._port.write(data[i:i + _WRITE_CHUNK])
                    # A chunk the port took is the board's activity as much as a byte it
                    # sent: a long load may take longer than ``timeout`` to go out.
                    last_heard = time.monotonic()
                    self._check_deadline(start, deadline, acked, len(commands))
                in_flight += sizes[sent]
                sent += 1
            with self._failures():
                data = self._port.read(max(1, self._port.in_waiting))
            now = time.monotonic()
            pending += data
            whole = len(pending) - len(pending) % WORD_BYTES
            for i, word in enumerate(asm.bytes_to_words(pending[:whole])):
                if acked == len(commands):
                    self._extra(whole - WORD_BYTES * i + len(pending) - whole, len(commands))
                if due is None:
                    due = commands[acked].check(word)
                    data_words = []
                else:
                    due -= 1
                    data_words.append(word)
                out.append(word)
                if due == 0:
                    commands[acked].check_data(data_words)
                    in_flight -= sizes[acked]
                    acked += 1
                    due = None
            del pending[:whole]
            if acked == len(commands) and pending:
                self._extra(len(pending), len(commands))
            if acked == len(commands) and done_at is None:
                done_at = now
            if data:
                last_heard = now
            elif acked < len(commands) and now - last_heard > self.timeout:
                raise self._silent(commands, acked, due, len(pending))
            if acked < len(commands):
                self._check_deadline(start, deadline, acked, len(commands))
        return out

    def _check_deadline(self, start, deadline, acked, commands):
        if time.monotonic() - start > deadline:
            raise BoardError(f"the board answered {acked} of {commands} commands in "
                             f"{deadline:g} s, the time allowed for the run (a board "
                             f"slower than {self.baud} baud?)")

    def _extra(self, count, commands):
        raise BoardError(f"the board sent {count} byte{'s' if count != 1 else ''} more than "
                         f"the answers to the {commands} commands sent (stale bytes from an "
                         f"earlier run, line noise, or a loopback?)")

    def _silent(self, commands, acked, due, partial):
        """The error for a board silent for ``timeout``, ``due`` data words (None: a status
        word) and ``partial`` bytes short of the answer to command ``acked``."""
        if due is None and not partial:
            return BoardError(
                f"the board sent nothing for {self.timeout:g} s with {len(commands) - acked} "
                f"of {len(commands)} commands unanswered (wrong port or bitstream? press "
                f"button 0 to reset the macro, then retry)")
        command = commands[acked]
        if due is None:
            got = f"{partial} bytes of its status word"
        else:
            total = command.ok_words
            got = f"{total - due} of {total} data words"
            got += f" and {partial} byte{'s' if partial != 1 else ''}" if partial else ""
        return BoardError(f"the board stopped inside its answer to {command}: {got}, then "
                          f"nothing for {self.timeout:g} s (press button 0 to reset the macro, "
                          f"then retry)")


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
    out = link.run(asm.encode_status(), config)       # an answer to STATUS: link.run checks
    status, = asm.parse_responses(out)
    if not status.ok:
        raise BoardError(f"the board answered STATUS with error {status.error.name}")
    data = status.data
    # link.run has checked the number of words (the ISA version's) and the words that must
    # hold ISA values (Command.check_data).
    want = isa.status_words(config, arch)
    got = asm.decode_status_words(data)
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
