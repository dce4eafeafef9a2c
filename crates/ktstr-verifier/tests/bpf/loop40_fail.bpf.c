// SPDX-License-Identifier: GPL-2.0-only
/*
 * The loop of loop40_pass.bpf.c over a value one u32 too short: 40 iterations sum an
 * array map's value of 39 u32, so the 40th (i == 39) reads offset 156 of a 156-byte value
 * and the load fails there, after 39 good iterations. See tests/fixtures/README.md for how
 * its verifier log (real-loop40-fail.log) was captured.
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
	__uint(value_size, (N - 1) * sizeof(__u32));
} values SEC(".maps");

__u64 total;

SEC("socket")
int loop40_fail(struct __sk_buff *skb)
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
