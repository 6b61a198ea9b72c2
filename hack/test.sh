#!/usr/bin/env bash
# The test suite: doc examples, then unit, integration (each test starts its own etcd) and
# end-to-end tests (the built dctl binary against a real etcd and the local Docker engine,
# with the test image built from e2e/testserver). nextest runs last so its summary is the
# run's closing line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
bash hack/images.sh
cargo test --workspace --locked --doc
cargo nextest run --workspace --locked --no-fail-fast
