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
//! | [`error`] | [`ReproError`] |

pub mod error;
pub mod event;
pub mod failure;
pub mod ops;
pub mod plan;
pub mod probe_config;
pub mod symbol;

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
