// SPDX-License-Identifier: GPL-2.0
/*
 * ktstr-repro's probe program. One copy of a program per probed function: the agent
 * points each copy at its target (bpf_program__set_attach_target: a kernel function, or a
 * scheduler's BPF program for its callbacks) and gives its probe index as the attach
 * cookie. Each event becomes one wire-format v1 record (src/event.rs) in the next slot of
 * a ring of the last RING_SLOTS records, so the window before the failure is kept; the
 * exit trigger's record carries the kernel stack and freezes the ring.
 *
 * The SEC() targets below are defaults that exist on 7.3, so the object loads as it is.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "probe.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef RING_SLOTS
#define RING_SLOTS 4096
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KTSTR_REPRO_MAX_FUNCS + 1);
	__type(key, __u32);
	__type(value, struct ktstr_repro_probe_cfg);
} probe_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RING_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ktstr_repro_slot);
} ring SEC(".maps");

/* Records written so far; the reader counts drops as head - RING_SLOTS. */
__u64 ring_head;
/* Set by the trigger: later events are not recorded, so the window stays as it was. */
__u32 frozen;

static __always_inline void put_u32(__u8 *p, __u32 v)
{
	__builtin_memcpy(p, &v, 4);
}

static __always_inline void put_u64(__u8 *p, __u64 v)
{
	__builtin_memcpy(p, &v, 8);
}

/* What the per-field callback of bpf_loop() needs. */
struct emit_ctx {
	struct ktstr_repro_probe_cfg *cfg;
	struct ktstr_repro_slot *slot;
	__u64 args[KTSTR_REPRO_MAX_ARGS];
	__u32 base;			/* offset of the first field slot */
};

/* Reads field i into its slot. A callback of bpf_loop(), so the verifier checks it once
 * rather than once per field and path (the unrolled loop went past 1M instructions). */
static long field_cb(__u64 i, void *data)
{
	struct emit_ctx *c = data;
	struct ktstr_repro_field_cfg *f;
	__u8 *fs;
	__u64 p;
	__u32 size, a, off;
	long err = 0;

	if (i >= KTSTR_REPRO_MAX_FIELDS || c->base > KTSTR_REPRO_HDR_LEN + 8 * KTSTR_REPRO_MAX_ARGS)
		return 1;
	f = &c->cfg->fields[i];
	off = c->base + i * KTSTR_REPRO_SLOT_LEN;
	fs = &c->slot->rec[off];
	__builtin_memset(fs, 0, KTSTR_REPRO_SLOT_LEN);
	a = f->arg;
	if (a >= KTSTR_REPRO_MAX_ARGS)
		a = 0;
	p = c->args[a];
	if (f->nr_derefs > 0)
		err = bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + f->derefs[0]));
	if (!err && f->nr_derefs > 1)
		err = bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + f->derefs[1]));
	size = f->size;
	if (size > KTSTR_REPRO_FIELD_BYTES)
		size = KTSTR_REPRO_FIELD_BYTES;
	if (!err) {
		if (f->is_str)
			err = bpf_probe_read_kernel_str(fs + 8, size, (void *)(p + f->offset)) < 0;
		else
			err = bpf_probe_read_kernel(fs + 8, size, (void *)(p + f->offset));
	}
	fs[0] = err ? 1 : 0;
	fs[1] = err ? 0 : size;
	return 0;
}

/* Writes one record for probe `key` into the next ring slot. `c->args` holds the
 * arguments as plain numbers (never pointers the verifier tracks). */
static __always_inline int emit(void *ctx, __u32 key, __u8 kind, struct emit_ctx *c, __u64 ret)
{
	struct ktstr_repro_probe_cfg *cfg;
	struct ktstr_repro_slot *slot;
	__u32 nr_args, nr_fields, off, i, idx;
	__u64 seq, pid_tgid;

	if (frozen)
		return 0;
	/* The trigger's config sits past the probes', whatever program fired for it
	 * (tp_btf/sched_ext_exit, or fentry on scx_vexit or scx_dump_state). */
	if (key == KTSTR_REPRO_MAX_FUNCS)
		kind = KTSTR_REPRO_TRIGGER_EV;
	cfg = bpf_map_lookup_elem(&probe_cfg, &key);
	if (!cfg)
		return 0;
	seq = __sync_fetch_and_add(&ring_head, 1);
	idx = seq % RING_SLOTS;
	slot = bpf_map_lookup_elem(&ring, &idx);
	if (!slot)
		return 0;

	nr_args = cfg->nr_args;
	if (nr_args > KTSTR_REPRO_MAX_ARGS)
		nr_args = KTSTR_REPRO_MAX_ARGS;
	nr_fields = cfg->nr_fields;
	if (nr_fields > KTSTR_REPRO_MAX_FIELDS)
		nr_fields = KTSTR_REPRO_MAX_FIELDS;

	pid_tgid = bpf_get_current_pid_tgid();
	put_u32(&slot->rec[0], KTSTR_REPRO_MAGIC);
	slot->rec[4] = KTSTR_REPRO_VERSION;
	slot->rec[5] = kind;
	slot->rec[6] = nr_args;
	slot->rec[7] = nr_fields;
	slot->rec[8] = cfg->probe & 0xff;
	slot->rec[9] = cfg->probe >> 8;
	slot->rec[10] = 0;
	slot->rec[11] = kind == KTSTR_REPRO_EXIT && cfg->has_ret;
	put_u32(&slot->rec[12], bpf_get_smp_processor_id());
	put_u32(&slot->rec[16], (__u32)pid_tgid);
	put_u32(&slot->rec[20], pid_tgid >> 32);
	put_u64(&slot->rec[24], bpf_ktime_get_ns());
	put_u64(&slot->rec[32], kind == KTSTR_REPRO_EXIT ? ret : 0);
	put_u64(&slot->rec[40], seq);

	off = KTSTR_REPRO_HDR_LEN;
	for (i = 0; i < KTSTR_REPRO_MAX_ARGS; i++) {
		if (i >= nr_args)
			break;
		put_u64(&slot->rec[off], c->args[i]);
		off += 8;
	}

	c->cfg = cfg;
	c->slot = slot;
	c->base = off;
	bpf_loop(nr_fields, field_cb, c, 0);
	off += nr_fields * KTSTR_REPRO_SLOT_LEN;

	if (cfg->stack && off <= KTSTR_REPRO_MAX_RECORD - 8 * KTSTR_REPRO_MAX_STACK) {
		long n = bpf_get_stack(ctx, &slot->rec[off], 8 * KTSTR_REPRO_MAX_STACK, 0);

		if (n > 0) {
			slot->rec[10] = n / 8;
			off += n & ~7L;
		}
	}
	slot->len = off;
	if (kind == KTSTR_REPRO_TRIGGER_EV)
		frozen = 1;
	/* Published last: the reader (after the trigger froze the ring) takes a slot's
	 * record only when seq says it was written. */
	*(volatile __u64 *)&slot->seq = seq + 1;
	return 0;
}

SEC("kprobe/scx_do_enqueue_task")
int BPF_KPROBE(ktstr_repro_kprobe)
{
	struct emit_ctx c = {
		.args = {
			PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
			PT_REGS_PARM4(ctx), PT_REGS_PARM5(ctx), PT_REGS_PARM6(ctx),
		},
	};

	return emit(ctx, bpf_get_attach_cookie(ctx), KTSTR_REPRO_ENTRY, &c, 0);
}

static __always_inline void func_args(void *ctx, __u64 *args)
{
	int i;

	for (i = 0; i < KTSTR_REPRO_MAX_ARGS; i++)
		if (bpf_get_func_arg(ctx, i, &args[i]))
			args[i] = 0;
}

SEC("fentry/scx_do_enqueue_task")
int ktstr_repro_fentry(__u64 *ctx)
{
	struct emit_ctx c = {};

	func_args(ctx, c.args);
	return emit(ctx, bpf_get_attach_cookie(ctx), KTSTR_REPRO_ENTRY, &c, 0);
}

SEC("fexit/scx_do_enqueue_task")
int ktstr_repro_fexit(__u64 *ctx)
{
	struct emit_ctx c = {};
	__u64 ret = 0;

	func_args(ctx, c.args);
	bpf_get_func_ret(ctx, &ret);
	return emit(ctx, bpf_get_attach_cookie(ctx), KTSTR_REPRO_EXIT, &c, ret);
}

/* sched_ext_exit(struct scx_sched *sch, __u32 kind): the trigger on 7.x. The arguments
 * are copied out of the context as numbers: the verifier would track ctx[0] as a trusted
 * scx_sched pointer and refuse the byte arithmetic of the record. */
SEC("tp_btf/sched_ext_exit")
int ktstr_repro_exit(__u64 *ctx)
{
	struct emit_ctx c = {};

	bpf_probe_read_kernel(&c.args[0], sizeof(__u64), &ctx[0]);
	bpf_probe_read_kernel(&c.args[1], sizeof(__u64), &ctx[1]);
	return emit(ctx, KTSTR_REPRO_MAX_FUNCS, KTSTR_REPRO_TRIGGER_EV, &c, 0);
}
