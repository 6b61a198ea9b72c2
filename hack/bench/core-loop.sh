#!/usr/bin/env bash
# The core-loop benchmark (issue 3): time from `dctl apply -f` to all replicas running, for
# 1, 10 and 30 replicas, beside `docker service create --replicas N` (Swarm mode on the same
# engine, which the bench enters and leaves) and beside creating and starting N containers
# directly through the Docker API, all in one run. Release builds; takes about 3 minutes and
# stops by itself (its own budget is 8 minutes). Other work on the machine skews the figures:
# run it on an otherwise idle one. DCTL_BIN=path measures another dctl binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
bash hack/images.sh
cargo bench --locked -p dctl-e2e --bench core_loop
