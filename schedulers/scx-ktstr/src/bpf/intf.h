/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Constants shared by scx_ktstr's BPF program and its Rust loader. The loader
 * sees them through the skeleton's generated types.
 */
#ifndef __KTSTR_INTF_H
#define __KTSTR_INTF_H

enum ktstr_consts {
	/* The one dispatch queue, ordered by virtual time. */
	KTSTR_DSQ		= 0,
	/* Length of a task's comm, NUL included (TASK_COMM_LEN). */
	KTSTR_COMM_LEN		= 16,
	/* Upper bound on the iterations of the slow-dispatch busy-wait. */
	KTSTR_MAX_SPIN_ITERS	= 1 << 23,
	/* Weight of a task or cgroup of nice 0 (cpu.weight's default). */
	KTSTR_WEIGHT_DFL	= 100,
};

/* The callback `--error-on` makes call scx_bpf_error(). */
enum ktstr_callback {
	KTSTR_CB_NONE		= 0,
	KTSTR_CB_ENQUEUE	= 1,
	KTSTR_CB_DISPATCH	= 2,
	KTSTR_CB_RUNNING	= 3,
	KTSTR_CB_INIT_TASK	= 4,
};

#endif /* __KTSTR_INTF_H */
