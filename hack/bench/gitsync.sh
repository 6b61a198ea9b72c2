#!/usr/bin/env bash
# The gitsync benchmark (issue 7): a repository of 500 Services (replicas 0: no containers
# or images needed) synced by the gitsync controller, beside `dctl apply -f` of the same
# directory on the same etcd in the same run: create, update, and the cost of a sync that
# changes nothing (time and etcd writes; target under 1 s and zero writes). Release builds;
# takes about half a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
cargo bench --locked -p dctl-e2e --bench gitsync
