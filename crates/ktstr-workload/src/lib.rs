//! Scheduler test workloads: forked workers, their telemetry, and cgroup v2 control.
//!
//! - [`work`]: what a worker does in its loop ([`WorkType`]).
//! - [`config`]: how a workload is set up ([`WorkloadConfig`], [`AffinityMode`],
//!   [`SchedPolicy`]).
//! - [`handle`]: spawning, starting, watching and stopping workers ([`WorkloadHandle`]).
//! - [`report`]: what each worker measured ([`WorkerReport`]).
//! - [`cgroup`]: cgroup v2 trees for workers to run in ([`CgroupGroup`]).
//! - [`error`]: what can go wrong ([`WorkloadError`]).
//!
//! Internals: `worker` (the forked process and its loops), `shared` (memory shared with
//! workers), `telemetry` (checkpoints, gaps, latency reservoirs), `sys` (Linux calls),
//! `rng` (a fork-safe random generator).

pub mod cgroup;
pub mod config;
pub mod error;
pub mod handle;
pub mod report;
pub mod work;

mod rng;
mod shared;
mod sys;
mod telemetry;
mod worker;

pub use cgroup::{cgroup2_mount, CgroupGroup};
pub use config::{
    AffinityMode, MemPolicy, MpolFlags, SchedPolicy, WorkloadConfig, MAX_AFFINITY_CPU,
    MAX_MEMPOLICY_NODE,
};
pub use error::WorkloadError;
pub use handle::WorkloadHandle;
pub use report::{WorkerReport, MAX_LATENCY_SAMPLES};
pub use sys::set_affinity;
pub use work::{ReapMode, WakeMechanism, WorkType};

/// One `SpinWait` work unit, the exact code its worker loop runs (for the telemetry benchmark).
#[doc(hidden)]
pub use worker::spin_unit;
