// SPDX-License-Identifier: GPL-2.0-only
/* A bounded 32-iteration loop summing a map value; _fail's value is one u64 short, so iteration 32 reads past its end. */
#include "corpus.h"
#define N 32
VALUE_MAP(full, N * sizeof(__u64));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u64));
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u64 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++)
		sum += v[i];
	total = sum;
	return 0;
}

SEC("socket") int loop_bounded_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int loop_bounded_fail(void *ctx)
{
	return body(&short_by_one);
}
