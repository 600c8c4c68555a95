#!/usr/bin/env bash
# ExpressionLab: set up (idempotent) and run.
#   ./run.sh app          create .venv, install the pinned environment, serve the UI on 127.0.0.1:7860
#   ./run.sh test [ARGS]  the same plus test tools and Chromium, then pytest (ARGS go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"

setup_venv() {
    if [ ! -x .venv/bin/pip ]; then
        # --clear: a half-made .venv (e.g. python3-venv missing on the first try) is rebuilt
        "$PYTHON" -m venv --clear .venv
    fi
    # requirements.txt is a complete lock of the runtime. --no-deps installs exactly it: resolving
    # mediapipe's and facenet-pytorch's declared deps would pull a second OpenCV, jax, numpy<2 and a
    # CUDA torch, none of which the code needs.
    if ! cmp -s requirements.txt .venv/.installed-requirements; then
        .venv/bin/pip install --no-deps -r requirements.txt
        cp requirements.txt .venv/.installed-requirements
    fi
}

setup_tests() {
    if ! cmp -s requirements-test.txt .venv/.installed-requirements-test; then
        .venv/bin/pip install --no-deps -r requirements-test.txt
        cp requirements-test.txt .venv/.installed-requirements-test
    fi
    # The browser test drives Debian's Chromium through Playwright (Playwright's own browser
    # download is not possible offline).
    if [ ! -x /usr/bin/chromium ]; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
    fi
}

case "${1:-}" in
    app)
        setup_venv
        exec .venv/bin/python app.py
        ;;
    test)
        shift
        setup_venv
        setup_tests
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh app | ./run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
