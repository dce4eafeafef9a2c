// SPDX-License-Identifier: GPL-2.0-only
/*
 * A 24-iteration loop with two branches in its body, on the value read and on the running
 * sum. _fail's second value is one u32 short, so the taken side of the first branch in
 * iteration 24 reads past its end.
 */
#include "corpus.h"
#define N 24
VALUE_MAP(vals, N * sizeof(__u32));
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total, big;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0, n = 0;
	__u32 *v = bpf_map_lookup_elem(&vals, &zero);
	__u32 *w = bpf_map_lookup_elem(map, &zero);
	if (!v || !w)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++) {
		if (v[i] & 1)
			sum += w[i];
		else
			sum += v[i];
		if (sum > 1000)
			n++;
	}
	total = sum;
	big = n;
	return 0;
}

SEC("socket") int loop_branch2_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int loop_branch2_fail(void *ctx)
{
	return body(&short_by_one);
}
