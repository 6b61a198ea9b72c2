#!/usr/bin/env bash
# The compose benchmark (issue 6): a 50-service compose file, `dctl apply -f` until every
# service is ready, beside `docker stack deploy` of the same file (Swarm mode on the same
# engine, which the bench enters and always leaves), in one run. Release builds; takes a
# few minutes. Other work on the machine skews the figures: run it on an idle one.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
bash hack/images.sh
cargo bench --locked -p dctl-e2e --bench compose
