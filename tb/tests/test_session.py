"""The persistent session (:class:`pim_macro.sw.runtime.driver.Session`) on every back end.

Weights and activations written in one run are used by the next; answers are checked against
numpy's product (hand arithmetic, not a model); the RTL's counters are checked word for word
against the model session's prediction, run by run; a simulator that dies, stops or is
given too few cycles becomes a one-line error, never a hang.

Only commands whose meaning did not change with the requantization (WRITE_WEIGHTS, LOAD_ACT,
MATVEC, EMIT_RAW, READ_COUNTERS) are used. Cost: about 20 s of wall time once built (6 s of it
the wall-clock limits the error tests wait for), plus the session builds of CONFIG when cold
(about 25 s of Verilator C++ per architecture, shared with test_graph_compiler's RTL tests;
Icarus, under a second each).
"""

import os
import signal
import time

import numpy as np
import pytest

from pim_macro.hw.isa import ARCHES, Counter, Error, MacroConfig, Opcode
from pim_macro.sw.models.golden import GoldenMacro
from pim_macro.sw.runtime import asm, driver
from pim_macro.sw.runtime.board_link import BoardError
from pim_macro.sw.runtime.driver import Session, run_stream
from pim_macro.sw.runtime.rtl import SIMULATORS, RTLSession, SessionError
from pim_macro.tb.harness import session_top


#: A small macro (the graph compiler's RTL tests share its session builds).
CONFIG = MacroConfig(lanes=8, depth=128, act_depth=256, bias_depth=16, bus_bits=16)
K = 48                                      # weight columns (MATVEC rows)
RTL_SIMS = list(SIMULATORS)
STALLED = {"idle": 0.3, "backpressure": 0.4}
UNTIMED = sorted({c.value for c in Counter}
                 - {Counter.CYCLES.value, Counter.STALL_IN.value, Counter.STALL_OUT.value})


def _data():
    rng = np.random.default_rng(12)
    w = rng.integers(-128, 128, (2, CONFIG.lanes, K), dtype=np.int8)
    a = rng.integers(-128, 128, (2, K), dtype=np.int8)
    return w, a


def _runs():
    """Four runs: load two weight tiles and two activation vectors; multiply the first pair
    (counters cleared first, read last); multiply the second and accumulate the first again;
    read the counters alone."""
    w, a = _data()
    rows = [asm.weight_rows(w[i], CONFIG) for i in range(2)]
    load = (asm.encode_write_weights(0, rows[0], CONFIG)
            + asm.encode_write_weights(K, rows[1], CONFIG)
            + asm.encode_load_act(0, a[0]) + asm.encode_load_act(K, a[1]))
    first = (asm.encode_read_counters(clear=True) + asm.encode_matvec(0, 0, K)
             + asm.encode_emit_raw(CONFIG.lanes) + asm.encode_read_counters())
    second = (asm.encode_read_counters(clear=True) + asm.encode_matvec(K, K, K)
              + asm.encode_emit_raw(CONFIG.lanes) + asm.encode_matvec(0, 0, K, accumulate=True)
              + asm.encode_emit_raw(CONFIG.lanes) + asm.encode_read_counters())
    return [load, first, second, asm.encode_read_counters()]


def _products():
    """numpy's int32 products: tile 0 by vector 0, tile 1 by vector 1, and their sum."""
    w, a = _data()
    p = [w[i].astype(np.int64) @ a[i].astype(np.int64) for i in range(2)]
    return [list(p[0]), list(p[1]), list(p[0] + p[1])]


def _check_answers(outs):
    """The answers of :func:`_runs`, whatever the back end: every command OK, the products the
    state loaded in the first run gives, counters that count every run's work."""
    responses = [asm.parse_responses(out) for out in outs]
    assert [len(r) for r in responses] == [4, 4, 6, 1], "one answer per command"
    assert all(resp.ok for rs in responses for resp in rs), "every command should pass"
    p0, p1, both = _products()
    assert list(responses[1][2].int32()) == p0, "run 2 multiplies what run 1 loaded"
    assert list(responses[2][2].int32()) == p1, "run 3 multiplies the second tile and vector"
    assert list(responses[2][4].int32()) == both, "the accumulation adds the first product"
    rows = [r[-1].counters()["row_reads"] for r in responses[1:]]
    # Run 2 reads K rows after its clear; run 3, 2K after its own; run 4 counts on from run 3's
    # clear (nothing cleared in between): the counters persist across runs.
    assert rows == [K, 2 * K, 2 * K], f"rows read since the last clear: {rows}"
    beats = [r[-1].counters()["beats_in"] for r in responses[2:]]
    assert beats[1] > beats[0] > 0, f"input beats count on across runs: {beats}"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("sim", ["golden", "model"] + RTL_SIMS)
def test_state_persists(sim, arch):
    """Smooth and stalled streams (RTL), weights from run 1 used in runs 2 and 3; on the RTL
    the answers equal the model session's word for word when smooth (timed counters included,
    run by run), and everything but the timed counters when stalled."""
    stalls = [{}, STALLED] if sim in RTL_SIMS else [{}]
    model = None
    if sim in RTL_SIMS:
        with Session(CONFIG, sim="model", arch=arch) as session:
            model = [session.run(words) for words in _runs()]
    for stall in stalls:
        with Session(CONFIG, sim=sim, arch=arch, seed=3, **stall) as session:
            outs = [session.run(words) for words in _runs()]
        _check_answers(outs)
        if sim == "model":
            cycles = [asm.parse_responses(o)[-1].counters()["cycles"] for o in outs[1:3]]
            assert all(c > K for c in cycles), f"the model times each run: {cycles}"
        if model is None:
            continue
        stalls_seen = 0
        for run, (got, want) in enumerate(zip(outs, model)):
            for i, (g, m) in enumerate(zip(asm.parse_responses(got),
                                           asm.parse_responses(want))):
                if g.opcode != Opcode.READ_COUNTERS.value:
                    assert g == m, f"run {run} answer {i} should be the model's"
                    continue
                stalls_seen += g.counters()["stall_in"] + g.counters()["stall_out"]
                # Exact: a READ_COUNTERS after the run's clearing one, smooth. The clearing one
                # counts from before the run (the model times the run alone), so do run 4's.
                exact = not stall and run in (1, 2) and i > 0
                keep = range(len(Counter)) if exact else UNTIMED
                assert [g.data[k] for k in keep] == [m.data[k] for k in keep], \
                    f"run {run} answer {i}: counters {g.counters()} vs the model's " \
                    f"{m.counters()}"
        if stall:
            assert stalls_seen > 0, "the stalled session should have stalled the macro"


class _Board:
    """pyserial's ``write/read/in_waiting/reset_input_buffer/close`` over a golden macro that
    answers each command once all its bytes have come (a board without its FIFO limits;
    ``test_board_link.py`` models those)."""

    def __init__(self, arch="pim"):
        self.macro, self.rx, self.tx = GoldenMacro(CONFIG, arch=arch), bytearray(), bytearray()
        self.closed = False

    def write(self, data):
        self.rx += data
        words = asm.bytes_to_words(bytes(self.rx[:len(self.rx) // 4 * 4]))
        commands, _ = asm.frame_complete(words, CONFIG)
        done = commands[-1][1] + commands[-1][2] if commands else 0
        self.tx += bytes(asm.words_to_bytes(self.macro.run(words[:done])))
        del self.rx[:4 * done]
        return len(data)

    @property
    def in_waiting(self):
        return len(self.tx)

    def read(self, n):
        data = bytes(self.tx[:n])
        del self.tx[:n]
        return data

    def reset_input_buffer(self):
        del self.tx[:]

    def close(self):
        self.closed = True


def test_board_session():
    """sim="board": the board's configuration is checked once, the runs share its state."""
    board = _Board()
    with Session(CONFIG, sim="board", port=board) as session:
        outs = [session.run(words) for words in _runs()]
    _check_answers(outs)
    assert board.closed, "closing the session closes the port"
    with pytest.raises(BoardError):
        Session(CONFIG, sim="board", arch="baseline", port=_Board("pim"))


def test_golden_keeps_errors_and_refuses_cut_commands():
    """A cut command is refused before anything runs, and the session goes on; the sticky
    error count persists across runs."""
    with Session(CONFIG, sim="golden") as session:
        bad = asm.encode_matvec(CONFIG.depth, 0, 1)            # rows past the SRAM
        assert asm.parse_responses(session.run(bad))[0].error == Error.BAD_ADDRESS
        with pytest.raises(ValueError):
            session.run(asm.encode_load_act(0, np.zeros(8, dtype=np.int8))[:-1])
        status = asm.parse_responses(session.run(asm.encode_status()))[0]
        assert asm.decode_status_words(status.data)["error_count"] == 1
    with pytest.raises(RuntimeError, match="closed"):
        session.run(asm.encode_read_counters())


@pytest.mark.parametrize("sim", RTL_SIMS)
def test_rtl_session_errors(sim):
    """A cut command (ValueError, the session goes on), too few cycles (a hang: RuntimeError),
    a stopped simulator (the wall-clock limit) and a killed one (SessionError), each one line;
    no simulator process is left behind."""
    with Session(CONFIG, sim=sim, timeout=3) as session:
        load = asm.encode_load_act(0, np.arange(8, dtype=np.int8))
        with pytest.raises(ValueError):
            session.run(load[:-1])
        with pytest.raises(ValueError, match="word 1 = -1 does not fit"):
            session.run([load[0], -1] + load[2:])
        assert asm.parse_responses(session.run(load))[0].ok
        # The wrapper's own cycle limit: the answers are not all there after 3 cycles.
        result = session._rtl.play(asm.encode_matvec(0, 0, 40) + asm.encode_emit_raw(8),
                                   max_cycles=3)
        assert not result.finished and result.cycles == 3
        pid = session._rtl.pid
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(SessionError, match=r"gave no answer within 3 s") as stopped:
            session.run(asm.encode_read_counters())
        assert "\n" not in str(stopped.value)
        with pytest.raises(SessionError, match="closed"):
            session.run(asm.encode_read_counters())
    assert _gone(pid), "the stopped simulator should have been killed"

    with Session(CONFIG, sim=sim) as session:
        pid = session._rtl.pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SessionError, match=r"exited \(code -9\)") as died:
            session.run(asm.encode_read_counters())
        assert "\n" not in str(died.value) and "sim.log" in str(died.value)


def test_interrupted_request_stops_at_once():
    """Ctrl-C in the middle of a long request (here a timer's KeyboardInterrupt): closing the
    session kills the simulator at once instead of waiting for the request to end."""
    long = (asm.encode_matvec(0, 0, CONFIG.depth) + asm.encode_emit_raw(8)) * 20_000
    session = RTLSession(CONFIG, sim="verilator")
    pid = session.pid

    def interrupt(*_):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            session.play(long)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    start = time.monotonic()
    session.close()
    assert time.monotonic() - start < 5 and _gone(pid)


def test_hang_is_a_runtime_error(monkeypatch):
    """Session.run turns an unfinished run into one line naming the budget."""
    monkeypatch.setattr(driver, "cycle_budget", lambda *a, **k: 4)
    with Session(CONFIG, sim="verilator") as session:
        with pytest.raises(RuntimeError, match="did not finish the program on verilator "
                                               "within 4 cycles"):
            session.run(asm.encode_matvec(0, 0, 40) + asm.encode_emit_raw(8))


def test_run_stream_is_one_session():
    """run_stream (execute's engine) from reset on the RTL: the product and the testbench
    cycles of a smooth run."""
    w, a = _data()
    words = (asm.encode_write_weights(0, asm.weight_rows(w[0], CONFIG), CONFIG)
             + asm.encode_load_act(0, a[0]) + asm.encode_matvec(0, 0, K)
             + asm.encode_emit_raw(CONFIG.lanes))
    run = run_stream(words, CONFIG, sim="verilator")
    assert list(asm.parse_responses(run.out)[3].int32()) == _products()[0]
    assert len(words) <= run.cycles < len(words) + 100


def test_long_request_in_pieces(monkeypatch, tmp_path):
    """A request longer than half the wrapper's word memory is played in pieces cut between
    commands (here a 64-word memory on Icarus, built apart: under a second): the answers are
    whole and right; a command longer than the memory is a ValueError."""
    monkeypatch.setitem(session_top.ADDR_BITS, "icarus", 6)
    w, a = _data()
    tile = w[0][:, :8]
    loads = [asm.encode_load_act(4 * i, a[0][4 * i:4 * i + 4]) for i in range(K // 4)]
    request = (asm.encode_write_weights(0, asm.weight_rows(tile, CONFIG), CONFIG)
               + sum(loads, []) + asm.encode_matvec(0, 0, 8) + asm.encode_emit_raw(8))
    assert len(request) > 32
    with RTLSession(CONFIG, sim="icarus", build_dir=tmp_path) as session:
        result = session.play(request, idle=0.2, backpressure=0.2)
        responses = asm.parse_responses(result.out)
        assert result.finished and len(responses) == 2 + len(loads) + 1
        product = tile.astype(np.int64) @ a[0][:8].astype(np.int64)
        assert list(responses[-1].int32()) == list(product)
        with pytest.raises(ValueError, match="do not fit the session's 64-word memory"):
            session.play(asm.encode_load_act(0, np.zeros(4 * 64, dtype=np.int8)))


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
