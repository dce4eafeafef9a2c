// SPDX-License-Identifier: GPL-2.0-only
/*
 * A bounded 40-iteration loop the verifier walks one iteration at a time: it sums the
 * 40 u32 of an array map's value. Loads. See tests/fixtures/README.md for how its
 * verifier log (real-loop40-pass.log) was captured.
 */
#include <linux/bpf.h>

/* What libbpf's bpf_helpers.h would give, so only clang and <linux/bpf.h> are needed. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

#define N 40

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, N * sizeof(__u32));
} values SEC(".maps");

__u64 total;

SEC("socket")
int loop40_pass(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 *v = bpf_map_lookup_elem(&values, &zero);

	if (!v)
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < N; i++)
		sum += v[i];
	total = sum;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
