#!/usr/bin/env bash
# The proxy benchmark (issue 4): dctl's routing-mesh proxy beside docker-proxy and a direct
# connection (short requests, a bulk stream), how fast it acts on a readiness change, and
# failed requests while scaling with and without readiness gating, all in one run. Release
# builds; takes about 5 minutes once built. Other work on the machine skews the figures:
# run it on an otherwise idle one.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p dctl
bash hack/images.sh
cargo bench --locked -p dctl-e2e --bench proxy
