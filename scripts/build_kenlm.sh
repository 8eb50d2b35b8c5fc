#!/usr/bin/env bash
# Build KenLM's `lmplz` and `build_binary` (needed by `refine train-lm` and its tests) from the
# kenlm PyPI sdist, and install them into PREFIX/bin.
#
#   scripts/build_kenlm.sh [PREFIX]      # PREFIX default: .venv (so the tools land in .venv/bin)
#
# Idempotent: does nothing when both tools already exist in PREFIX/bin and run. Needs root (or
# the packages already installed) for apt-get; set KENLM_SKIP_APT=1 to skip that step. Takes about
# 25 s (apt) + 40 s (compile, 2 cores). The sdist comes from PyPI through pip, no other network.
set -euo pipefail

KENLM_VERSION="${KENLM_VERSION:-0.3.0}"
cd "$(dirname "$0")/.."
PREFIX="${1:-${VENV:-.venv}}"
mkdir -p "$PREFIX/bin"
PREFIX="$(cd "$PREFIX" && pwd)"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x "$PREFIX/bin/python" ]; then PYTHON="$PREFIX/bin/python"; else PYTHON=python3; fi
fi

have_tools() {
    [ -x "$PREFIX/bin/lmplz" ] && [ -x "$PREFIX/bin/build_binary" ] \
        && { "$PREFIX/bin/lmplz" --help 2>&1 || true; } | grep -q "Kneser-Ney"
}

if have_tools; then
    echo "build_kenlm: lmplz and build_binary already in $PREFIX/bin"
    exit 0
fi

start=$(date +%s)
if [ -z "${KENLM_SKIP_APT:-}" ]; then
    pkgs="libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
          zlib1g-dev libbz2-dev liblzma-dev cmake g++ make"
    missing=""
    for p in $pkgs; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
fi
apt_done=$(date +%s)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$work"
tar -xzf "$work"/kenlm-"$KENLM_VERSION".tar.gz -C "$work"
src="$work/kenlm-$KENLM_VERSION"
if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
        && make -C "$work/build" -j"$(nproc)" lmplz build_binary; } >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    echo "build_kenlm: build failed" >&2
    exit 1
fi
install -m 755 "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$PREFIX/bin/"
end=$(date +%s)

have_tools
echo "build_kenlm: installed lmplz and build_binary into $PREFIX/bin" \
    "(apt $((apt_done - start)) s, build $((end - apt_done)) s)"
