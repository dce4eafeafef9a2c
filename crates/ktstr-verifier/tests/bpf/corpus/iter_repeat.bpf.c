// SPDX-License-Identifier: GPL-2.0-only
/* bpf_repeat(24) with its own counter, summing a map value; _fail's value is one u32 short. */
#include "corpus.h"
#define N 24
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 i = 0;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	bpf_repeat(N) {
		if (i >= N)
			break;
		sum += v[i];
		i++;
	}
	total = sum;
	return 0;
}

SEC("socket") int iter_repeat_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int iter_repeat_fail(void *ctx)
{
	return body(&short_by_one);
}
