// SPDX-License-Identifier: GPL-2.0-only
/*
 * A 24-iteration loop calling a static subprogram (verified again at each call) that reads
 * a map value at the index; _fail's value is one u32 short, so the last call reads past it.
 */
#include "corpus.h"
#define N 24
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total;

static __noinline __u64 weigh(__u32 *v, __u32 i)
{
	__u64 x = v[i];

	return x * 3 + (x >> 2);
}

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < N; i++)
		sum += weigh(v, i);
	total = sum;
	return 0;
}

SEC("socket") int subprog_loop_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int subprog_loop_fail(void *ctx)
{
	return body(&short_by_one);
}
