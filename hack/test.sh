#!/usr/bin/env bash
# The test suite: doc examples, then unit, integration (each test starts its own etcd) and
# end-to-end tests (the built dctl binary against a real etcd). nextest runs last so its
# summary is the run's closing line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
cargo test --workspace --locked --doc
cargo nextest run --workspace --locked --no-fail-fast
