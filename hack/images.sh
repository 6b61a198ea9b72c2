#!/usr/bin/env bash
# Builds the test workload images from e2e/testserver: a static binary in a FROM scratch
# image (no registry is reachable, so nothing is pulled), tagged dctl-test/server:1 and
# dctl-demo/web:1 (the name manifests/ use), and the same with a Docker HEALTHCHECK of
# its /ready every second, dctl-test/server-healthcheck:1 (for tests of HEALTHCHECK and
# for Swarm in the benchmarks); and dctl-test/busybox:1, Debian's static busybox alone, for
# tests that need a shell and network tools in a container; all labelled
# dctl.test-image=true.
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

# Whether image $1 was built from the binary of digest $2.
built_from() {
  local have
  have=$(docker image inspect "$1" --format '{{index .Config.Labels "dctl.test-binary"}}' 2>/dev/null || true)
  [ "$have" = "$2" ]
}

# Builds context $1, labelled with digest $2, tagged by the other arguments; quiet unless
# it fails: the legacy builder's deprecation notice is noise here.
build() {
  local context=$1 digest=$2 log
  shift 2
  if ! log=$(docker build --quiet \
    --label dctl.test-image=true \
    --label "dctl.test-binary=$digest" \
    "$@" "$context" 2>&1); then
    echo "$log" >&2
    exit 1
  fi
}

busybox=$(command -v busybox)
busybox_digest=$(sha256sum "$busybox" | cut -c1-64)
busybox_tag=dctl-test/busybox:1
if ! built_from "$busybox_tag" "$busybox_digest"; then
  busybox_context=$(mktemp -d)
  cp "$busybox" "$busybox_context/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n' >"$busybox_context/Dockerfile"
  build "$busybox_context" "$busybox_digest" --tag "$busybox_tag"
  rm -rf "$busybox_context"
  echo "hack/images.sh: built $busybox_tag"
fi

up_to_date=true
for tag in "${tags[@]}" "$healthcheck_tag"; do
  built_from "$tag" "$digest" || up_to_date=false
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
build "$context" "$digest" "${tag_args[@]}"
# Exec form: a FROM scratch image has no /bin/sh for the shell form.
cat >>"$context/Dockerfile" <<'EOF'
HEALTHCHECK --interval=1s --timeout=1s --retries=3 \
  CMD ["/dctl-testserver", "--check", "http://127.0.0.1:8080/ready"]
EOF
build "$context" "$digest" --tag "$healthcheck_tag"
echo "hack/images.sh: built ${tags[*]} $healthcheck_tag"
