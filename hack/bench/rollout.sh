#!/usr/bin/env bash
# The rollout benchmark (issue 5): a 10-replica service updated with parallelism 2 and
# start-first under client load through dctl's proxy, beside Swarm's `docker service
# update` with the same update config and a HEALTHCHECK (Swarm mode on the same engine,
# which the bench enters and always leaves), all in one run. Release builds; takes about 3
# minutes. Other work on the machine skews the figures: run it on an otherwise idle one.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
bash hack/images.sh
cargo bench --locked -p dctl-e2e --bench rollout
