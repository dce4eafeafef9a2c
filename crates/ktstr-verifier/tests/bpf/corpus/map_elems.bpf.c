// SPDX-License-Identifier: GPL-2.0-only
/*
 * A loop over the 32 elements of an array map, one lookup per element, skipping missing ones.
 * _fail reads its 8-byte value 4 bytes further on in the last iteration (i / 31 is 1 only
 * there), past the value's end.
 */
#include "corpus.h"
#define N 32
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, N);
	__type(key, __u32);
	__type(value, __u64);
} elems SEC(".maps");
__u64 total;

static __attribute__((always_inline)) int body(int fail)
{
	__u64 sum = 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++) {
		__u32 k = i;
		char *e = bpf_map_lookup_elem(&elems, &k);
		if (!e)
			continue;
		sum += *(__u64 *)(e + (fail ? (i / (N - 1)) * 4 : 0));
	}
	total = sum;
	return 0;
}

SEC("socket") int map_elems_pass(void *ctx)
{
	return body(0);
}
SEC("socket") int map_elems_fail(void *ctx)
{
	return body(1);
}
