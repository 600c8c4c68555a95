#!/usr/bin/env bash
# ExpressionLab: set up (idempotent) and run.
#   ./run.sh app          create .venv, install the pinned environment as a Space does, serve the UI on 127.0.0.1:7860
#   ./run.sh test [ARGS]  the same plus test tools and Chromium, then pytest (ARGS go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"

# The Space's builder (sdk: gradio, README front matter) installs, in a fresh environment:
#   apt-get install $(cat packages.txt); pip install -r pre-requirements.txt; pip install -r requirements.txt;
#   pip install "gradio[oauth]==<sdk_version>" spaces
# run.sh does the same, so that the app and the tests run in the environment a Space gets
# (tools/check_space_build.py checks it; docs/deploy.md).
SDK_VERSION="$(sed -n 's/^sdk_version: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' README.md)"
[ -n "$SDK_VERSION" ] || { echo "README.md front matter has no sdk_version" >&2; exit 1; }
BUILDER_STEP=("gradio[oauth]==${SDK_VERSION}" spaces)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

setup_apt() {
    # packages.txt (one Debian package a line, no comments: the builder passes every word to apt-get):
    # what the Space's builder installs with apt, here OpenCV's libGL and GLib
    local missing=()
    for package in $(grep -v '^#' packages.txt); do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        as_root apt-get update -qq && as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_stamp() {
    cat pre-requirements.txt requirements.txt packages.txt
    echo "builder step: ${BUILDER_STEP[*]}"
}

setup_venv() {
    setup_apt
    # A fresh environment whenever the lock changed (as on a Space: a plain install never removes what an
    # older lock left behind, such as a second OpenCV).
    if [ ! -x .venv/bin/pip ] || ! cmp -s <(install_stamp) .venv/.installed-requirements; then
        "$PYTHON" -m venv --clear .venv
        # --retries 1: PyTorch's CPU index (pre-requirements.txt) cannot be reached from every machine;
        # where it cannot, pip warns once per package and takes the CPU build from local wheels.
        .venv/bin/pip install --retries 1 -r pre-requirements.txt
        .venv/bin/pip install -r requirements.txt
        .venv/bin/pip install "${BUILDER_STEP[@]}"
        install_stamp > .venv/.installed-requirements
        rm -f .venv/.installed-requirements-test
    fi
}

setup_tests() {
    if ! cmp -s requirements-test.txt .venv/.installed-requirements-test; then
        # resolving too, but never moving a runtime pin (-c)
        .venv/bin/pip install -r requirements-test.txt -c requirements.txt
        cp requirements-test.txt .venv/.installed-requirements-test
    fi
    # The browser test drives Debian's Chromium through Playwright (Playwright's own browser
    # download is not possible offline).
    if [ ! -x /usr/bin/chromium ]; then
        as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null
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
