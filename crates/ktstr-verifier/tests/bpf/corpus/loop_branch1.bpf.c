// SPDX-License-Identifier: GPL-2.0-only
/*
 * A 40-iteration loop whose body branches on a map lookup: one path when the hash lookup
 * returns NULL (read the array value), another when it does not. _fail's array value is one
 * u32 short, so the NULL path of iteration 40 reads past its end.
 */
#include "corpus.h"
#define N 40
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} extra SEC(".maps");
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++) {
		__u32 k = i;
		__u64 *e = bpf_map_lookup_elem(&extra, &k);
		if (e)
			sum += *e;
		else
			sum += v[i];
	}
	total = sum;
	return 0;
}

SEC("socket") int loop_branch1_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int loop_branch1_fail(void *ctx)
{
	return body(&short_by_one);
}
