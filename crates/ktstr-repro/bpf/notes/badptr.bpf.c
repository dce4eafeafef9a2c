// Which "bad pointer" dereferences does the 7.3 verifier let a program make?
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";
__u64 sink;

/* A chain through BTF pointers: p->scx.dsq may be NULL or stale; the load is a
 * BPF_PROBE_MEM load whose fault the JIT's exception table turns into 0. */
SEC("fentry/scx_do_enqueue_task")
int BPF_PROG(btf_chain, struct rq *rq, struct task_struct *p, u64 enq_flags, int sticky_cpu)
{
	sink = p->scx.dsq->id;
	return 0;
}

/* A pointer made from an integer: the verifier sees a scalar and refuses the load. */
SEC("fentry/scx_do_enqueue_task")
int BPF_PROG(scalar_deref, struct rq *rq, struct task_struct *p, u64 enq_flags, int sticky_cpu)
{
	sink = *(volatile __u64 *)(unsigned long)p->scx.dsq_vtime;
	return 0;
}

/* NULL itself. */
SEC("fentry/scx_do_enqueue_task")
int BPF_PROG(null_deref, struct rq *rq, struct task_struct *p, u64 enq_flags, int sticky_cpu)
{
	sink = *(volatile __u64 *)0;
	return 0;
}

/* A write through a BTF pointer (a task field): refused unless the field is writable. */
SEC("fentry/scx_do_enqueue_task")
int BPF_PROG(btf_write, struct rq *rq, struct task_struct *p, u64 enq_flags, int sticky_cpu)
{
	p->scx.dsq_vtime = 0;
	return 0;
}
