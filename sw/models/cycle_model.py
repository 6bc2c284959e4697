"""Exact cycle model of the macro: what the RTL's counters will report, without running the RTL.

The model replays a command stream on :class:`pim_macro.sw.models.golden.GoldenMacro` (which gives
every command's error code, outputs and untimed counters) and computes, command by command, the
cycle in which each piece of the gateware does its part, with the timing rules documented in
:class:`pim_macro.hw.macro.Macro`, :class:`pim_macro.hw.mac_engine.MacEngine`,
:class:`pim_macro.hw.output_engine.OutputEngine` and the weight stores. It is exact when the source
never idles and the sink never refuses a word (the ``smooth`` stall pattern): then every
``READ_COUNTERS`` after the first clearing one reports the same ``CYCLES``, ``STALL_IN`` (0) and
``STALL_OUT`` (0) as the RTL, on either architecture.

The requantizers' multiplier passes (:class:`pim_macro.hw.fabric.Fabric` ``requant_passes``, 2
on the iCE40) space the lane groups of ``EMIT_INT8`` and ``WRITEBACK``; the model takes the
fabric (``fabric=``, the portable one by default) and is exact for each. On a fabric whose weight
store has a single port (the iCE40 SPRAM, :attr:`pim_macro.hw.fabric.Fabric.single_port`) a
``WRITE_WEIGHTS`` waits for every live ``MATVEC``, not only those reading its rows.

It is event-driven: each command costs O(1) whatever its length, so a program with millions of
MACs is predicted in milliseconds (the golden model's numpy arithmetic dominates).

Time is counted in clock cycles from the cycle the first header word is taken (``t = 0``).
"""

from dataclasses import dataclass, field

from pim_macro.hw.fabric import FABRICS, PORTABLE, Fabric
from pim_macro.hw.isa import (
    BARRIERS, LANE_COUNTED, OPCODES, STREAM_BITS, Counter, Error, Flag, Header, MacroConfig, Opcode,
    Status, unpack,
)
from pim_macro.hw.mac_array import MacArray
from pim_macro.hw.mac_engine import OP_SLOTS
from pim_macro.hw.macro import DISPATCH_LAG, RESPONSE_SLOTS
from pim_macro.hw.weight_store import weight_store_for
from pim_macro.hw.output_engine import RAW_LATENCY, ResponseKind, issue_cycles, lane_latency
from pim_macro.sw.runtime import asm
from pim_macro.sw.models.golden import GoldenMacro


__all__ = ["CycleModel", "Prediction", "predict", "STATUS_ONLY_CYCLES", "EMIT_OVERHEAD_CYCLES"]


# MacArray: a capture entering the pipeline in cycle x strobes `captured` in x + _CAPTURED and
# `acc_out_full` is high from the next cycle; rows landing in L have left the pipeline by
# L + LATENCY.
_CAPTURED = MacArray.LATENCY - 1
_DRAINED = MacArray.LATENCY
# OutputEngine: the last lane group issued in cycle u leaves the requantizer pipeline in
# u + lane_latency(passes), and the engine is back in IDLE two cycles later (one cycle to see
# its pipeline empty, one to change state). The queue sizes come from the gateware as well.
#: Output engine: cycles from taking a status-only response (pushing its status word) to
#: taking the next.
STATUS_ONLY_CYCLES = 1
#: Output engine, one-pass requantizers: cycles from taking a requantizing response to taking the
#: next, beyond its issue cycles (:func:`pim_macro.hw.output_engine.issue_cycles`): its status
#: word, the lane pipeline's drain and the return to IDLE.
EMIT_OVERHEAD_CYCLES = lane_latency(1) + 2
# The commands whose count is a number of lanes are those that emit lanes (a capture, then a
# response the output engine streams); each has the output engine's response kind of its name.
_KINDS = {op: getattr(ResponseKind, op.name) for op in LANE_COUNTED}


@dataclass
class Prediction:
    """What :func:`predict` returns."""
    #: The output stream, with the timed counters of every ``READ_COUNTERS`` filled in.
    out: list
    #: ``CYCLES`` of the last ``READ_COUNTERS`` (``None`` if there is none after a clearing one).
    cycles: int | None
    #: Every counter of the last ``READ_COUNTERS``, by name.
    counters: dict = field(default_factory=dict)


class _Op:
    """An operation in the MAC engine's queue."""
    __slots__ = ("capture", "push", "retire", "rows", "act", "count", "resolved", "start",
                 "captured", "after")

    def __init__(self, capture, push, rows=None, act=None, count=0):
        self.capture, self.push = capture, push
        self.rows, self.act, self.count = rows, act, count
        self.retire = None          # cycle its slot is released (free from the next cycle)
        self.resolved = False
        self.start = None           # capture: cycle after which it may issue (T0 inputs)
        self.captured = None        # capture: cycle `captured` strobes
        self.after = 0              # capture: responses the output engine must have taken first


class _Response:
    __slots__ = ("go", "capture", "count", "kind", "act")

    def __init__(self, go, capture=None, count=0, kind=None, act=0):
        self.go, self.capture, self.count, self.kind, self.act = go, capture, count, kind, act


class CycleModel:
    """Replays commands and tracks when every unit of the macro is free.

    Use :meth:`run` (like :meth:`GoldenMacro.run`); :attr:`golden` holds the architectural state.
    ``fabric`` is a :class:`pim_macro.hw.fabric.Fabric` or a name in
    :data:`pim_macro.hw.fabric.FABRICS` (its ``requant_passes`` and, with a single-port weight
    store, the rule that ``WRITE_WEIGHTS`` waits for every live ``MATVEC`` change the timing).
    """

    def __init__(self, config: MacroConfig, *, arch="pim", fabric=PORTABLE):
        self.golden = GoldenMacro(config, arch=arch)
        self.config, self.arch = config, arch
        if not isinstance(fabric, Fabric):
            if fabric not in FABRICS:
                raise ValueError(f"fabric must be one of {', '.join(FABRICS)}, not {fabric!r}")
            fabric = FABRICS[fabric]
        self.passes = fabric.requant_passes
        self.single_port = fabric.single_port
        self._lane_push = lane_latency(self.passes)
        self._lane_done = self._lane_push + 2
        self.latency, self.interval = weight_store_for(arch).timing(config)
        self.t = 0                  # cycle the controller takes the next header
        self.trace = []             # (opcode, dispatch cycle) of every command
        #: Indices (in command order) of the READ_COUNTERS whose every counter is predicted:
        #: those after a clearing one (before it, CYCLES counts from an unknown reset).
        self.timed = []
        self.clear_at = None        # cycle of the last clearing READ_COUNTERS
        # MAC engine
        self.ops = []               # every engine op, in push order
        self.ip_free = 0            # first cycle the next op may start issuing
        self.rd_free = 0            # first cycle the weight store accepts a row
        self.last_land = -10        # cycle the last requested row lands
        self.last_captured = -10    # cycle the last capture strobed `captured`
        self.pending_capture = None  # a capture whose issue depends on the op behind it
        self.acc_free = 0           # acc_out released: a capture may issue from this cycle
        self.emitted = 0            # responses up to the last emitting one
        self.live_mv = []           # MATVECs that may still be live: (retire, rows, acts)
        # Output engine
        self.responses = []         # every queued response, in order
        self.popped = []            # pop cycle of each response processed so far
        self.oe_next = 0            # index of the next response the output engine takes
        self.oe_free = 0            # first cycle the output engine is IDLE again
        self.fifo_empty = 0         # first cycle the output FIFO is empty
        self.writebacks_done = 0    # first cycle no write-back is pending
        self.last_writeback = 0     # responses up to the last write-back
        self.wb_span = None         # activation bytes the pending write-backs may write

    # -- the engine -------------------------------------------------------------------------

    def _slot_free(self):
        """First cycle the next op's slot is free (the op OP_SLOTS back has retired)."""
        k = len(self.ops)
        if k < OP_SLOTS:
            return 0
        old = self.ops[k - OP_SLOTS]
        if not old.resolved:
            self._resolve_capture(None)
        return old.retire + 1

    def _issue_rows(self, op, first):
        """Rows of MATVEC ``op`` are accepted from cycle ``first``, one per interval."""
        last = first + (op.count - 1) * self.interval
        self.ip_free = last + 1
        self.rd_free = last + self.interval
        self.last_land = last + self.latency
        op.retire = self.last_land
        op.resolved = True
        self.live_mv.append((op.retire, op.rows, op.act))

    def _resolve_capture(self, matvec):
        """Decide when the pending capture issues: riding on ``matvec``'s first row (the next
        op, pushed in ``matvec.push``), or on its own once the store is idle."""
        cap = self.pending_capture
        if cap is None:
            return
        self.pending_capture = None
        # It may issue once the previous capture's lanes have been read out (acc_out released).
        self._drain_responses(cap.after)
        t0 = max(cap.start, self.acc_free)
        idle = self.last_land + 1
        visible = matvec.push + 1 if matvec is not None else None
        if visible is not None and visible <= max(t0, idle):
            x = max(t0, visible, self.rd_free)
            cap.captured = x + self.latency + _CAPTURED
            self._issue_rows(matvec, x)
        else:
            x = max(t0, idle)
            cap.captured = x + _CAPTURED
            self.ip_free = x + 1
        cap.retire = x
        cap.resolved = True
        self.last_captured = max(self.last_captured, cap.captured)

    def _push_matvec(self, go, rows, act, count):
        op = _Op(False, go, rows, act, count)
        self.ops.append(op)
        if self.pending_capture is not None:
            self._resolve_capture(op)
            if op.resolved:
                return
        self._issue_rows(op, max(go + 1, self.ip_free, self.rd_free))

    def _push_capture(self, go):
        self._resolve_capture(None)          # a capture behind a capture never rides
        op = _Op(True, go)
        op.start = max(go + 1, self.ip_free)
        op.after = self.emitted
        self.emitted = len(self.responses) + 1
        self.ops.append(op)
        self.pending_capture = op
        return op

    def _engine_idle(self):
        self._resolve_capture(None)
        return max(self.last_land + _DRAINED, self.last_captured + 1)

    # -- the output engine ------------------------------------------------------------------

    def _drain_responses(self, upto):
        """Let the output engine take responses ``0 .. upto - 1`` (resolving captures)."""
        while self.oe_next < upto:
            resp = self.responses[self.oe_next]
            pop = max(resp.go + 1, self.oe_free)
            if resp.capture is None:
                self.oe_free = pop + STATUS_ONLY_CYCLES
                self.fifo_empty = pop + 2
            else:
                if not resp.capture.resolved:
                    self._resolve_capture(None)
                pop = max(pop, resp.capture.captured + 1)
                n = issue_cycles(_KINDS[resp.kind], resp.count, resp.act,
                                 self.config.requantizers, self.passes)
                # EMIT_RAW lanes skip the requantizers.
                push = RAW_LATENCY if resp.kind == Opcode.EMIT_RAW else self._lane_push
                self.acc_free = pop + n + 1
                self.oe_free = pop + n + push + 2
                if resp.kind == Opcode.WRITEBACK:
                    self.fifo_empty = pop + 2
                    self.writebacks_done = pop + n + self._lane_done
                else:
                    self.fifo_empty = pop + n + push + 2
            self.popped.append(pop)
            self.oe_next += 1

    def _response_slot(self):
        """First cycle the response queue has room for one more response."""
        m = len(self.responses)
        if m < RESPONSE_SLOTS:
            return 0
        self._drain_responses(m - RESPONSE_SLOTS + 1)
        return self.popped[m - RESPONSE_SLOTS] + 1

    def _oe_quiet(self):
        self._drain_responses(len(self.responses))
        return self.oe_free

    def _writebacks_done(self):
        """First cycle no write-back is pending (only write-backs are waited for)."""
        self._drain_responses(self.last_writeback)
        return self.writebacks_done

    def _writeback_wait(self, d, span):
        """First cycle from ``d`` at which activation bytes ``span`` may be touched: at once
        unless the span of the pending write-backs overlaps it, else when none is pending."""
        if self.wb_span is None or not (span[0] < self.wb_span[1] and self.wb_span[0] < span[1]):
            return d
        return max(d, self._writebacks_done())

    # -- commands ---------------------------------------------------------------------------

    def _conflict(self, d, lo, hi, act):
        """First cycle from ``d`` no live MATVEC reads rows (or, with ``act``, activation bytes)
        in ``[lo, hi)``."""
        self.live_mv = [entry for entry in self.live_mv if entry[0] + 1 > d]
        t = d
        for retire, rows, acts in self.live_mv:
            a, b = acts if act else rows
            if a < hi and lo < b:
                t = max(t, retire + 1)
        return t

    def run(self, words):
        """Execute ``words``; return the output words with timed counters filled in."""
        out = []
        golden = self.golden
        program = [int(w) for w in words]
        for hdr, args, payload in golden.frame(program):
            response = golden.step(hdr, args, payload)
            out.extend(self._time(hdr, args, payload, response))
        return out

    def _time(self, hdr, args, payload, response):
        cfg = self.config
        hdr = unpack(Header, hdr)
        error = unpack(Status, response[0]).error
        flags, count = hdr.flags, hdr.count
        try:
            op = Opcode(hdr.opcode)
        except ValueError:
            op = None
        d = self.t + 1 + len(args)            # first cycle in DISPATCH

        # A condition coming true in cycle T is acted on from T + DISPATCH_LAG (the controller
        # registers its verdict); a command goes no earlier than its first DISPATCH cycle.
        seen = lambda t: t + DISPATCH_LAG
        if error != Error.OK or op not in BARRIERS:
            go = max(d, seen(self._response_slot()))
        if error != Error.OK:
            self.trace.append((op, go))
            self.responses.append(_Response(go))
            self.t = go + 1 + len(payload)
            return response

        if op in BARRIERS:
            go = max(d, seen(max(self._engine_idle(), self._oe_quiet(), self.fifo_empty)))
            data = len(response) - 1
            self.trace.append((op, go))
            self.fifo_empty = go + data + 2
            self.t = go + data + 1
            if op == Opcode.READ_COUNTERS:
                if self.clear_at is not None:
                    self.timed.append(len(self.trace) - 1)
                response = list(response)
                since = go if self.clear_at is None else go - self.clear_at
                response[1 + Counter.CYCLES.value] = since & ((1 << STREAM_BITS) - 1)
                response[1 + Counter.STALL_IN.value] = 0
                response[1 + Counter.STALL_OUT.value] = 0
                if flags & Flag.CLEAR:
                    self.clear_at = go
            return response

        # Every command past the barriers has one argument word first (the ISA's table).
        arg = unpack(OPCODES[op].args[0], args[0])
        if op == Opcode.WRITE_WEIGHTS:
            # A single-port store: every live MATVEC conflicts (each reads a row of [0, depth)).
            lo, hi = (0, cfg.depth) if self.single_port else (arg.row, arg.row + count)
            go = max(go, seen(self._conflict(d - DISPATCH_LAG, lo, hi, act=False)))
        elif op == Opcode.LOAD_ACT:
            go = max(go, seen(self._conflict(d - DISPATCH_LAG, arg.addr, arg.addr + count, act=True)),
                     seen(self._writebacks_done()))
        elif op in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):     # the channel memory
            go = max(go, seen(self._oe_quiet()))
        elif op == Opcode.MATVEC:
            go = max(go, seen(self._slot_free()))
            span = (arg.act, arg.act + count * cfg.rows_per_cycle)
            go = max(go, seen(self._writeback_wait(d - DISPATCH_LAG, span)))
        else:                                  # EMIT_RAW, EMIT_INT8, WRITEBACK
            go = max(go, seen(self._slot_free()))

        capture = None
        if op == Opcode.MATVEC:
            r = cfg.rows_per_cycle
            self._push_matvec(go, (arg.row, arg.row + count), (arg.act, arg.act + count * r),
                              count)
        elif op in LANE_COUNTED:
            if op == Opcode.WRITEBACK:
                # The span of pending write-backs restarts when none is pending at dispatch.
                span = (arg.act, arg.act + count)
                if self.wb_span is None or self._writebacks_done() <= go:
                    self.wb_span = span
                else:
                    self.wb_span = (min(self.wb_span[0], span[0]), max(self.wb_span[1], span[1]))
            capture = self._push_capture(go)
        # Only a write-back has a destination; its lane groups depend on it.
        act = arg.act if op == Opcode.WRITEBACK else 0
        self.responses.append(_Response(go, capture, count, op, act))
        if op == Opcode.WRITEBACK:
            self.last_writeback = len(self.responses)
        self.t = go + 1 + len(payload)
        self.trace.append((op, go))
        return response


def predict(words, config: MacroConfig, *, arch="pim", fabric=PORTABLE):
    """Predict the macro's output for ``words`` run with no stalls on ``fabric`` (see
    :class:`CycleModel`); see :class:`Prediction`."""
    model = CycleModel(config, arch=arch, fabric=fabric)
    out = model.run(words)
    responses = asm.parse_responses(out)
    last = None
    for resp in responses:
        if resp.opcode == Opcode.READ_COUNTERS.value and resp.ok:
            last = resp
    counters = last.counters() if last else {}
    cycles = counters.get("cycles") if model.clear_at is not None else None
    return Prediction(out=out, cycles=cycles, counters=counters)
