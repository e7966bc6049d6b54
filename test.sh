#!/usr/bin/env bash
# The whole test suite: installs what the tests need (redis-server), then runs formatting,
# lints, every test (unit, integration, doc, fuzz-corpus replay), loom models and bench smoke
# runs. Used by .ci/run and by the README.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  # redis-cli (redis-tools, a dependency of redis-server) builds the Redis Cluster of the
  # redis-cluster tests; Debian's redis-server has TLS built in (redis-tls tests).
  step "installing redis-server (needed by the redis tests)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features -q

step "each feature alone builds"
for f in tokio serde redis redis-tls redis-cluster tower axum cli; do
  cargo check -q --no-default-features --features "$f"
done

step "cargo test (all features; unit, integration, doc, corpus replay)"
cargo test --workspace --all-features

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=3})"
# A preemption bound of 3 explores every schedule with at most three forced context switches
# (tokio and crossbeam use 2); our models are small, so 3 still runs in well under a minute.
LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS RUSTFLAGS="--cfg tollgate_loom -C debug-assertions" \
  CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release

step "benches compile and run once (smoke, not measurement)"
cargo bench --all-features --bench core -- --test
cargo bench --all-features --bench algorithms -- --test
