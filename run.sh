#!/usr/bin/env bash
# Allegro Studio for Linux and macOS: ./run.sh (or double-click), ./run.sh update.
# Finds Python 3.10-3.13 (or installs a private one with uv), then hands over to the
# launcher helper (python -m launcher), which installs the right torch and starts the app.
cd "$(dirname "$0")" || exit 1
mkdir -p logs
say() { echo "$*"; echo "$(date '+%Y-%m-%d %H:%M:%S') $*" >> logs/launcher.log; }

supported() { "$1" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }

PY=""
if [ -x .venv/bin/python ] && supported .venv/bin/python; then
    PY=.venv/bin/python  # the environment made last time: no search
else
    for candidate in python3.13 python3.12 python3.11 python3.10 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then
            PY="$candidate"
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    UV="$(command -v uv || true)"
    if [ -z "$UV" ] && command -v python3 >/dev/null 2>&1; then
        say "No Python 3.10-3.13 found: installing uv (a Python installer) into .tools ..."
        python3 -m pip install --quiet --target .tools uv >> logs/launcher.log 2>&1 && UV=.tools/bin/uv
    fi
    if [ -n "$UV" ]; then
        say "Installing a private Python 3.12 with uv ..."
        "$UV" python install 3.12 >> logs/launcher.log 2>&1 && PY="$("$UV" python find 3.12)"
    fi
fi
if [ -z "$PY" ]; then
    say "Allegro Studio could not start: it needs Python 3.10 to 3.13; install it from https://www.python.org/downloads/ (or your package manager) and run this again. (full log: $PWD/logs/launcher.log)"
    exit 1
fi
exec "$PY" -m launcher "$@"
