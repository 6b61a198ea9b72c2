// The proxy's socket balancer: a loopback client's connect() to a published TCP port is
// sent straight to a Ready endpoint, round robin, before any packet exists. The
// connection is then the same as one opened to the endpoint directly: no NAT, no
// route_localnet, no proxy process in its way. Cilium's socket-LB does the same for
// Kubernetes services.
//
// Built by controllers/build.rs (clang -target bpf); loaded and fed by
// src/node/proxy/socket_balancer.rs, which documents the map layout it shares with this
// file.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_ENDPOINTS 256

// The Ready endpoints of one published port. Every field is a __u32 so that the user
// side can write the value as one array of them.
struct endpoints {
	__u32 next;  // the turn of the next connection
	__u32 count; // how many of the entries below are Ready endpoints
	__u32 addresses[MAX_ENDPOINTS]; // IPv4, network byte order
	__u32 ports[MAX_ENDPOINTS];     // host byte order
};

// By published port (host byte order).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct endpoints);
} published_ports SEC(".maps");

// The address and port a socket's program asked for, so that getpeername() still says
// what it connected to. Freed with the socket.
struct original {
	__u32 address;
	__u32 port; // as in bpf_sock_addr.user_port: network byte order in the low 16 bits
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct original);
} originals SEC(".maps");

// The one loopback address the proxy listens on (network byte order), or 0 for all of
// 127.0.0.0/8. Set at load time.
const volatile __u32 catch_address = 0;

static __always_inline int is_caught(struct bpf_sock_addr *ctx)
{
	__u32 address = ctx->user_ip4;
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	// Only the host's own loopback: a container's 127.0.0.1 is its own.
	if (bpf_get_netns_cookie(ctx) != bpf_get_netns_cookie(0))
		return 0;
	if (catch_address)
		return address == catch_address;
	return (bpf_ntohl(address) >> 24) == 127;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	if (!is_caught(ctx))
		return 1;
	__u32 port = bpf_ntohs((__u16)ctx->user_port);
	struct endpoints *endpoints = bpf_map_lookup_elem(&published_ports, &port);
	if (!endpoints)
		return 1;
	__u32 count = endpoints->count;
	if (count == 0 || count > MAX_ENDPOINTS)
		return 1;
	__u32 turn = __sync_fetch_and_add(&endpoints->next, 1) % count;
	// The compiler knows turn < count <= MAX_ENDPOINTS and would drop the check the
	// verifier needs to see.
	barrier_var(turn);
	if (turn >= MAX_ENDPOINTS)
		return 1;
	struct original *original =
		bpf_sk_storage_get(&originals, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (original) {
		original->address = ctx->user_ip4;
		original->port = ctx->user_port;
	}
	ctx->user_ip4 = endpoints->addresses[turn];
	ctx->user_port = bpf_htons((__u16)endpoints->ports[turn]);
	return 1;
}

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	struct original *original = bpf_sk_storage_get(&originals, ctx->sk, 0, 0);
	if (original) {
		ctx->user_ip4 = original->address;
		ctx->user_port = original->port;
	}
	return 1;
}

// The project's license; no helper used here is GPL-only.
char LICENSE[] SEC("license") = "Apache-2.0";
