"""The message link between a host :class:`pim_macro.sw.runtime.rtl.RTLSession` and the cocotb
server inside the simulator (:mod:`pim_macro.tb.harness.session`).

One stream socket (a ``socketpair`` whose simulator end the simulator process inherits; its
file descriptor is in ``PIM_SESSION_FD``). A message is a 4-byte big-endian length, then that
many bytes of UTF-8 JSON (one object). Word data does not cross it: the host writes the input
words to, and reads the output words from, the files of
:mod:`pim_macro.tb.harness.session_top`.

Messages, host to simulator: ``{"op": "run", ...}`` (the ``pim_session`` inputs by name:
``n_in``, ``n_answers``, ``max_cycles``, ``drain_cycles``, ``idle_level``, ``bp_level``,
``seed_idle``, ``seed_bp``) and ``{"op": "stop"}``. Simulator to host: ``{"op": "ready"}`` once
the macro is out of reset, and after each run ``{"op": "done", "finished", "taken", "n_out",
"cycles", "extra"}``.
"""

import json
import struct


__all__ = ["FD_ENV", "send", "receive", "LinkClosed", "RUN_INPUTS", "RUN_OUTPUTS"]


#: Environment variable that holds the simulator's end of the socket.
FD_ENV = "PIM_SESSION_FD"
#: Inputs of ``pim_session`` a run message sets, and outputs the answer reports.
RUN_INPUTS = ("n_in", "n_answers", "max_cycles", "drain_cycles", "idle_level", "bp_level",
              "seed_idle", "seed_bp")
RUN_OUTPUTS = ("finished", "taken", "n_out", "cycles", "extra")
_LENGTH = struct.Struct(">I")


class LinkClosed(ConnectionError):
    """The other end closed the link (or died) before a whole message arrived."""


def send(sock, message):
    """Send ``message`` (a JSON-able dict)."""
    data = json.dumps(message).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _exactly(sock, size):
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise LinkClosed("the link closed in the middle of a message" if chunks or
                             left != size else "the link closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock):
    """The next message (a dict); raises :class:`LinkClosed` when the link closes first. A
    timeout set on ``sock`` applies to each read (``socket.timeout`` / ``TimeoutError``)."""
    size, = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    return json.loads(_exactly(sock, size).decode())
