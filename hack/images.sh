#!/usr/bin/env bash
# Builds the test workload images from e2e/testserver: a static binary in a FROM scratch
# image (no registry is reachable, so nothing is pulled), tagged dctl-test/server:1 and
# dctl-demo/web:1 (the name manifests/ use), and the same with a Docker HEALTHCHECK of
# its /ready every second, dctl-test/server-healthcheck:1 (for tests of HEALTHCHECK and
# for Swarm in the benchmarks); all labelled dctl.test-image=true.
# Idempotent: when every tag already holds this exact binary, it only checks and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test processes run this concurrently (nextest: one process per test); one at a time.
mkdir -p target
exec 9>target/.images.lock
flock 9

target=x86_64-unknown-linux-gnu
tags=(dctl-test/server:1 dctl-demo/web:1)
healthcheck_tag=dctl-test/server-healthcheck:1

# --target keeps this static build apart from the workspace's ordinary one, so neither
# invalidates the other's cache.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --quiet -p dctl-testserver --target "$target"
binary="${CARGO_TARGET_DIR:-target}/$target/release/dctl-testserver"
digest=$(sha256sum "$binary" | cut -c1-64)

up_to_date=true
for tag in "${tags[@]}" "$healthcheck_tag"; do
  have=$(docker image inspect "$tag" --format '{{index .Config.Labels "dctl.test-binary"}}' 2>/dev/null || true)
  [ "$have" = "$digest" ] || up_to_date=false
done
if $up_to_date; then
  exit 0
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/dctl-testserver"
cat >"$context/Dockerfile" <<'EOF'
FROM scratch
COPY dctl-testserver /dctl-testserver
EXPOSE 8080
ENTRYPOINT ["/dctl-testserver"]
EOF
tag_args=()
for tag in "${tags[@]}"; do tag_args+=(--tag "$tag"); done
# Quiet unless it fails: the legacy builder's deprecation notice is noise here.
build() {
  local log
  if ! log=$(docker build --quiet \
    --label dctl.test-image=true \
    --label "dctl.test-binary=$digest" \
    "$@" "$context" 2>&1); then
    echo "$log" >&2
    exit 1
  fi
}
build "${tag_args[@]}"
# Exec form: a FROM scratch image has no /bin/sh for the shell form.
cat >>"$context/Dockerfile" <<'EOF'
HEALTHCHECK --interval=1s --timeout=1s --retries=3 \
  CMD ["/dctl-testserver", "--check", "http://127.0.0.1:8080/ready"]
EOF
build --tag "$healthcheck_tag"
echo "hack/images.sh: built ${tags[*]} $healthcheck_tag"
