"""Where the repository's files and the project's outputs live, named once.

The gateware, host software and testbenches are installed as the ``pim_macro`` package, but the
folders stay side by side at the top of the repository (``hw/``, ``sw/``, ``tb/``,
``constraints/``, ``models/``): these paths are found from the gateware's own folder.
"""

import os
from pathlib import Path

from pim_macro import hw


__all__ = ["HW_DIR", "REPO_ROOT", "IN_CHECKOUT", "BUILD_ROOT", "REPORT_DIR", "CONSTRAINTS_DIR",
           "MODELS_DIR"]


#: The gateware sources (``hw/``): a simulation or FPGA build is redone when they change.
HW_DIR = Path(hw.__file__).resolve().parent
#: The top of the repository (in an installed copy: the folder holding ``hw``, ``sw``, ``tb``).
REPO_ROOT = HW_DIR.parent
#: True when running from a checkout (``pip install -e .`` or the Makefile's venv), False for a
#: copy installed by ``pip install .``, which has no ``constraints/`` or ``models/``.
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
#: Every build product (simulator builds, bitstreams, reports): ``build/`` in the checkout, or
#: in the current directory for an installed copy (never inside site-packages); ``PIM_BUILD``
#: moves it.
BUILD_ROOT = Path(os.environ.get("PIM_BUILD", (REPO_ROOT if IN_CHECKOUT else Path.cwd()) / "build"))
#: Where `make sim`, `make demo`, `make spill` and `make synth` write their reports.
REPORT_DIR = BUILD_ROOT / "report"
#: The FPGA pin constraints, generated from the amaranth-boards platforms.
CONSTRAINTS_DIR = REPO_ROOT / "constraints"
#: The digits demo's float models (ONNX).
MODELS_DIR = REPO_ROOT / "models"
