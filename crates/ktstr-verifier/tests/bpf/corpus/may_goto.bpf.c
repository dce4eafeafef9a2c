// SPDX-License-Identifier: GPL-2.0-only
/* A 24-iteration loop guarded by cond_break (may_goto), summing a map value; _fail's value is one u32 short. */
#include "corpus.h"
#define N 24
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++) {
		cond_break;
		sum += v[i];
	}
	total = sum;
	return 0;
}

SEC("socket") int may_goto_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int may_goto_fail(void *ctx)
{
	return body(&short_by_one);
}
