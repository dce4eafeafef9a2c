//! Turn a sched_ext scheduler failure or a kernel oops into a probe plan, and decode
//! the events the probes send back. Nothing here knows about VMs.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`failure`] | parse the failure text: exit reason, backtrace, debug dump tasks, oops trace |
//! | [`symbol`] | stack frames and what a symbol is: kernel function, BPF program, struct_ops trampoline |
//! | [`ops`] | the scheduler's callbacks and the kernel functions that call them (7.3 source) |
//! | [`plan`](mod@plan) | the probe plan: kprobe/fexit on kernel functions, fentry/fexit on callbacks, the exit trigger, BTF-typed arguments and fields, what was left out and why |
//! | [`event`] | the probe events' wire format (version 1, documented there) and their decoding with the plan |
//! | [`probe_config`] | the probe program's config map entries and attachments for a plan (`bpf/probe.h`, `bpf/probe.bpf.c`) |
//! | [`symbolize`] | kernel addresses back to `function+0xoff` from kallsyms |
//! | [`error`] | [`ReproError`] |
//!
//! ```
//! use ktstr_repro::{Failure, FailureKind};
//!
//! let console = "\
//! [    4.631811] sched_ext: BPF scheduler \"ktstr\" disabled (scx_bpf_error)
//! [    4.631872] sched_ext: ktstr: src/bpf/main.bpf.c:96: error-after: 50 tasks dispatched
//! [    4.632444]    bpf_prog_cb55bb7efa107ee2_ktstr_enqueue+0x101/0x147
//! [    4.632590]    bpf__sched_ext_ops_enqueue+0x50/0xad
//! [    4.632602]    scx_do_enqueue_task+0x310/0x7d0
//! ";
//! let f = Failure::parse(console)?;
//! assert_eq!((f.kind, f.reason.as_str()), (FailureKind::ScxExit, "scx_bpf_error"));
//! let funcs = f.functions();
//! assert_eq!(funcs[0].op.as_deref(), Some("enqueue"));
//! assert_eq!(funcs[2].symbol, "scx_do_enqueue_task");
//! # Ok::<(), ktstr_repro::ReproError>(())
//! ```

pub mod error;
pub mod event;
pub mod failure;
pub mod ops;
pub mod plan;
pub mod probe_config;
pub mod symbol;
pub mod symbolize;

pub use error::ReproError;
pub use event::{decode, decode_stream, Event, EventKind, RawEvent, Value};
pub use failure::{DumpTask, Failure, FailureKind, StackFunction, TaskRef};
pub use ops::{op, op_of_prog, OpInfo, OPS};
pub use plan::{plan, KernelInfo, KernelVersion, ProbePlan};
pub use symbol::{classify, Frame, SymbolKind};

/// Most functions one plan probes.
pub const MAX_FUNCS: usize = 64;
/// Most frames kept of a backtrace (and of each dumped task's stack).
pub const MAX_STACK_DEPTH: usize = 32;
/// Most struct fields one probe reads.
pub const MAX_FIELDS: usize = 16;
/// Most arguments one probe records.
pub const MAX_ARGS: usize = 6;
