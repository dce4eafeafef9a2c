// SPDX-License-Identifier: GPL-2.0-only
/* An 8 x 12 nested loop summing a map value; _fail's value is one u32 short, so the last inner iteration of the last outer one reads past its end. */
#include "corpus.h"
#define OUTER 8
#define INNER 12
VALUE_MAP(full, OUTER * INNER * sizeof(__u32));
VALUE_MAP(short_by_one, (OUTER * INNER - 1) * sizeof(__u32));
__u64 total;

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	__u64 sum = 0;
	__u32 *v = bpf_map_lookup_elem(map, &zero);
	if (!v)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < OUTER; i++)
		NO_UNROLL for (__u32 j = 0; j < INNER; j++)
			sum += v[i * INNER + j];
	total = sum;
	return 0;
}

SEC("socket") int loop_nested_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int loop_nested_fail(void *ctx)
{
	return body(&short_by_one);
}
