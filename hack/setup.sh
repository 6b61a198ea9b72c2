#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test dctl: protoc (etcd-client's build
# needs it), etcd (the store; Debian's etcd-server gives /usr/bin/etcd), git (the gitsync
# controller runs the git program), nftables (the proxy's kernel path), clang and
# libbpf-dev (the proxy's socket balancer is compiled to BPF), static libc and
# busybox-static (test images are built FROM scratch from static binaries: no registry is
# reachable). Docker itself comes with the machine; without it, say so.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/descriptor.proto), which etcd-client's protos
# import; only recommended by protobuf-compiler, so --no-install-recommends leaves them out.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v git >/dev/null 2>&1 || need+=(git)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
# nft: the proxy's kernel path (nftables DNAT for published TCP ports) and its tests.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
# The test image is a static binary (glibc's libc.a, from libc6-dev) in a FROM scratch image.
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need+=(libc6-dev)
# The proxy's socket balancer is BPF bytecode, compiled at build time (controllers/build.rs)
# by clang against libbpf's helper definitions and the kernel's UAPI headers.
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "hack/setup.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian may start the packaged etcd as a service; dctl runs its own, so stop that one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

if ! docker info >/dev/null 2>&1; then
  echo "hack/setup.sh: warning: the Docker daemon does not answer; the end-to-end tests need it" >&2
fi

command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
echo "hack/setup.sh: protoc $(protoc --version | cut -d' ' -f2), $(etcd --version | head -1)"
