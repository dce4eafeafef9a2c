/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What libbpf's bpf_helpers.h and the selftests' bpf_experimental.h would give, so the corpus
 * programs need only clang and <linux/bpf.h> (Debian 12's, which predates open-coded
 * iterators). See ../../fixtures/corpus/README.md for how they are built and captured.
 */
#ifndef KTSTR_CORPUS_H
#define KTSTR_CORPUS_H
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
#define __noinline __attribute__((noinline))
#define NO_UNROLL _Pragma("clang loop unroll(disable)")
/* Hides a value from clang's range reasoning, so out-of-range accesses reach the verifier. */
#define barrier_var(v) asm volatile("" : "+r"(v))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) =
	(void *)BPF_FUNC_loop;

struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __weak __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __weak __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __weak __ksym;

/* bpf_helpers.h's bpf_for and bpf_repeat. */
#define bpf_for(i, start, end) for (							\
	struct bpf_iter_num ___it __attribute__((aligned(8),				\
						 cleanup(bpf_iter_num_destroy))),	\
			    *___p __attribute__((unused)) = (				\
				bpf_iter_num_new(&___it, (start), (end)),		\
				(void)bpf_iter_num_destroy, (void *)0);			\
	({										\
		int *___t = bpf_iter_num_next(&___it);					\
		(___t && ((i) = *___t, (i) >= (start) && (i) < (end)));			\
	});										\
)

#define bpf_repeat(N) for (								\
	struct bpf_iter_num ___it __attribute__((aligned(8),				\
						 cleanup(bpf_iter_num_destroy))),	\
			    *___p __attribute__((unused)) = (				\
				bpf_iter_num_new(&___it, 0, (N)),			\
				(void)bpf_iter_num_destroy, (void *)0);			\
	bpf_iter_num_next(&___it);							\
)

/*
 * bpf_experimental.h's cond_break for a clang without the may_goto mnemonic: the
 * instruction (BPF_JMP | BPF_JCOND, 0xe5) written as bytes.
 */
#define cond_break								\
	({ __label__ l_break, l_continue;					\
	asm volatile goto("1:.byte 0xe5;					\
		      .byte 0;							\
		      .long ((%l[l_break] - 1b - 8) / 8) & 0xffff;		\
		      .short 0"							\
		      :::: l_break);						\
	goto l_continue;							\
	l_break: break;								\
	l_continue:;								\
	})

/* An array map of one value of `size` bytes. */
#define VALUE_MAP(name, size)							\
	struct {								\
		__uint(type, BPF_MAP_TYPE_ARRAY);				\
		__uint(max_entries, 1);						\
		__uint(key_size, sizeof(__u32));				\
		__uint(value_size, size);					\
	} name SEC(".maps")

char LICENSE[] SEC("license") = "GPL";
#endif
