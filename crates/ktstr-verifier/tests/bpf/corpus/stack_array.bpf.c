// SPDX-License-Identifier: GPL-2.0-only
/*
 * Two loops over an array on the stack: one fills 24 u64, one sums them. _fail sums
 * through a pointer the compiler cannot see through and reads one element too many: the
 * last iteration reads above the frame.
 */
#include "corpus.h"
#define N 24
__u64 total;

static __attribute__((always_inline)) int body(int extra)
{
	__u64 arr[N];
	__u64 sum = 0;
	__u64 *p = arr;
	__u32 n = N + extra;

	NO_UNROLL for (__u32 i = 0; i < N; i++)
		arr[i] = i * 7 + bpf_get_prandom_u32();
	barrier_var(p);
	barrier_var(n);
	if (n > N + 1)
		return 0;
	NO_UNROLL for (__u32 i = 0; i < n; i++)
		sum += p[i];
	total = sum;
	return 0;
}

SEC("socket") int stack_array_pass(void *ctx) { return body(0); }
SEC("socket") int stack_array_fail(void *ctx) { return body(1); }
