// SPDX-License-Identifier: GPL-2.0-only
/*
 * bpf_loop() with a callback summing a map value at the index it is given. The callback
 * checks the index against 32; _fail's value holds 31 u32, so the verifier finds an index
 * (31) that reads past its end.
 */
#include "corpus.h"
#define N 32
VALUE_MAP(full, N * sizeof(__u32));
VALUE_MAP(short_by_one, (N - 1) * sizeof(__u32));
__u64 total;

struct cb_ctx {
	__u32 *v;
	__u64 sum;
};

static int add_one(__u32 idx, struct cb_ctx *c)
{
	if (idx >= N)
		return 1;
	c->sum += c->v[idx];
	return 0;
}

static __attribute__((always_inline)) int body(void *map)
{
	__u32 zero = 0;
	struct cb_ctx c = {};
	c.v = bpf_map_lookup_elem(map, &zero);
	if (!c.v)
		return 0;
	bpf_loop(N, add_one, &c, 0);
	total = c.sum;
	return 0;
}

SEC("socket") int bpf_loop_cb_pass(void *ctx)
{
	return body(&full);
}
SEC("socket") int bpf_loop_cb_fail(void *ctx)
{
	return body(&short_by_one);
}
