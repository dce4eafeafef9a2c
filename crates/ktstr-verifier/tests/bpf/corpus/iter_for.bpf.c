// SPDX-License-Identifier: GPL-2.0-only
/* An open-coded bpf_for() over 0..24 summing a map value; _fail's value is one u32 short. */
#include "corpus.h"
#define N 24
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	int i;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	bpf_for(i, 0, N)
		sum += v[i];
	total = sum;
	return 0;
}

SEC("socket") int iter_for_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int iter_for_fail(void *ctx)
{
	return body(&short_by_one);
}
