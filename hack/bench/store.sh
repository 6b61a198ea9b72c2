#!/usr/bin/env bash
# The store benchmark (issue 2): typed store vs raw etcd-client puts, and `dctl apply` of
# 1,000 objects vs raw puts, each pair on the same etcd in the same run. Release builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
cargo bench --locked -p dctl-e2e --bench store
