/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_ktstr: a small sched_ext scheduler with knobs for testing ktstr.
 *
 * Scheduling: one global dispatch queue ordered by virtual time. A task's
 * vtime advances by the time it ran divided by its effective weight, which is
 * its own weight (nice) times its cgroup's cpu.weight / 100. This is not
 * hierarchical fairness: a cgroup's weight scales each of its tasks, it is not
 * split among them, and only the task's own cgroup counts (not its ancestors).
 * A wakeup that finds an idle CPU goes straight to that CPU's local queue.
 *
 * Test knobs (read-only data, set by the loader before load):
 * - stall_every / stall_comm: never queue every Nth task, or tasks whose comm
 *   matches; they stay runnable and unscheduled until the watchdog ejects us.
 * - error_after: scx_bpf_error() once N tasks have been dispatched.
 * - error_on: scx_bpf_error() the first time a chosen callback runs.
 * - slow_dispatch_ns: busy-wait that long in every ops.dispatch.
 * - slice_ns: the time slice given to every task.
 */
#include <scx/common.bpf.h>
#include "intf.h"

char _license[] SEC("license") = "GPL";

const volatile u32 stall_every;
const volatile char stall_comm[KTSTR_COMM_LEN];
const volatile u64 error_after;
const volatile enum ktstr_callback error_on;
const volatile u64 slow_dispatch_ns;
const volatile u64 slice_ns = 20ULL * 1000 * 1000; /* SCX_SLICE_DFL */

UEI_DEFINE(uei);

/* The vtime of the most recently started task: where new and idle tasks join. */
static u64 vtime_now;
/* Tasks seen by init_task, to pick every Nth one. */
static u64 nr_tasks_seen;
/* Tasks inserted into a dispatch queue. */
static u64 nr_dispatched;

struct task_ctx {
	/* This task is one of every `stall_every`: never queue it. */
	bool stall;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* cpu.weight of each cgroup, kept by the cgroup callbacks. */
struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u32);
} cgrp_weights SEC(".maps");

static bool comm_matches(const struct task_struct *p)
{
	int i;

	if (!stall_comm[0])
		return false;
	for (i = 0; i < KTSTR_COMM_LEN; i++) {
		if (p->comm[i] != stall_comm[i])
			return false;
		if (!stall_comm[i])
			return true;
	}
	return true;
}

/* True for the tasks the stall knobs keep off every queue. */
static bool must_stall(struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	return (tctx && tctx->stall) || comm_matches(p);
}

static void error_if(enum ktstr_callback cb, const char *name)
{
	if (error_on == cb)
		scx_bpf_error("error-on %s", name);
}

/* Counts a dispatch; errors out once there have been `error_after`. */
static void count_dispatch(void)
{
	u64 n = __sync_fetch_and_add(&nr_dispatched, 1) + 1;

	if (error_after && n == error_after)
		scx_bpf_error("error-after: %llu tasks dispatched", n);
}

/* The task's weight scaled by its cgroup's cpu.weight. */
static u64 effective_weight(struct task_struct *p)
{
	u64 weight = p->scx.weight ?: 1;
	struct cgroup *cgrp = scx_bpf_task_cgroup(p);
	u32 *cw;

	if (!cgrp)
		return weight;
	cw = bpf_cgrp_storage_get(&cgrp_weights, cgrp, 0, 0);
	if (cw && *cw)
		weight = weight * *cw / KTSTR_WEIGHT_DFL ?: 1;
	bpf_cgroup_release(cgrp);
	return weight;
}

s32 BPF_STRUCT_OPS(ktstr_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle && !must_stall(p)) {
		count_dispatch();
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void BPF_STRUCT_OPS(ktstr_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	error_if(KTSTR_CB_ENQUEUE, "enqueue");
	/* Held back: runnable, on no queue, so it never runs. */
	if (must_stall(p))
		return;

	/* A task that slept may bank at most one slice of credit. */
	if (time_before(vtime, vtime_now - slice_ns))
		vtime = vtime_now - slice_ns;
	count_dispatch();
	scx_bpf_dsq_insert_vtime(p, KTSTR_DSQ, slice_ns, vtime, enq_flags);
}

void BPF_STRUCT_OPS(ktstr_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 start;
	u32 i;

	error_if(KTSTR_CB_DISPATCH, "dispatch");
	if (slow_dispatch_ns) {
		start = bpf_ktime_get_ns();
		bpf_for(i, 0, KTSTR_MAX_SPIN_ITERS) {
			if (bpf_ktime_get_ns() - start >= slow_dispatch_ns)
				break;
		}
	}
	scx_bpf_dsq_move_to_local(KTSTR_DSQ, 0);
}

void BPF_STRUCT_OPS(ktstr_running, struct task_struct *p)
{
	error_if(KTSTR_CB_RUNNING, "running");
	/* Racy across CPUs, but any error is small and temporary. */
	if (time_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

void BPF_STRUCT_OPS(ktstr_stopping, struct task_struct *p, bool runnable)
{
	u64 used = slice_ns > p->scx.slice ? slice_ns - p->scx.slice : 0;

	scx_bpf_task_set_dsq_vtime(p, p->scx.dsq_vtime +
				   used * KTSTR_WEIGHT_DFL / effective_weight(p));
}

void BPF_STRUCT_OPS(ktstr_enable, struct task_struct *p)
{
	scx_bpf_task_set_dsq_vtime(p, vtime_now);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(ktstr_init_task, struct task_struct *p,
			     struct scx_init_task_args *args)
{
	struct task_ctx *tctx;
	u64 n;

	error_if(KTSTR_CB_INIT_TASK, "init_task");
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return -ENOMEM;
	n = __sync_fetch_and_add(&nr_tasks_seen, 1) + 1;
	tctx->stall = stall_every && n % stall_every == 0;
	return 0;
}

static s32 set_cgrp_weight(struct cgroup *cgrp, u32 weight)
{
	u32 *cw = bpf_cgrp_storage_get(&cgrp_weights, cgrp, 0,
				       BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!cw)
		return -ENOMEM;
	*cw = weight;
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(ktstr_cgroup_init, struct cgroup *cgrp,
			     struct scx_cgroup_init_args *args)
{
	return set_cgrp_weight(cgrp, args->weight);
}

void BPF_STRUCT_OPS(ktstr_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	set_cgrp_weight(cgrp, weight);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(ktstr_init)
{
	return scx_bpf_create_dsq(KTSTR_DSQ, -1);
}

void BPF_STRUCT_OPS(ktstr_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(ktstr_ops,
	       .select_cpu		= (void *)ktstr_select_cpu,
	       .enqueue			= (void *)ktstr_enqueue,
	       .dispatch		= (void *)ktstr_dispatch,
	       .running			= (void *)ktstr_running,
	       .stopping		= (void *)ktstr_stopping,
	       .enable			= (void *)ktstr_enable,
	       .init_task		= (void *)ktstr_init_task,
	       .cgroup_init		= (void *)ktstr_cgroup_init,
	       .cgroup_set_weight	= (void *)ktstr_cgroup_set_weight,
	       .init			= (void *)ktstr_init,
	       .exit			= (void *)ktstr_exit,
	       .name			= "ktstr");
