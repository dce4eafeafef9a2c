//! The test knobs: command-line flags, checked and typed, and their one way
//! into the BPF program's read-only data.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

use crate::bpf_skel::types::ktstr_callback;
use crate::bpf_skel::OpenMainSkel;

/// Longest watchdog timeout sched_ext accepts (`SCX_WATCHDOG_MAX_TIMEOUT`, 30 s).
pub const MAX_WATCHDOG_MS: u64 = 30_000;
/// Longest busy-wait `--slow-dispatch-us` may ask for in one ops.dispatch.
pub const MAX_SLOW_DISPATCH_US: u64 = 1_000_000;
/// Bytes of a task's comm, not counting the NUL (`TASK_COMM_LEN - 1`).
pub const MAX_COMM_LEN: usize = 15;

/// scx_ktstr: a global-vtime sched_ext scheduler with knobs that make it
/// misbehave on purpose, for testing ktstr.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Opts {
    /// Never schedule every Nth task (counted as tasks join the scheduler); 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub stall_every: u32,
    /// Never schedule tasks whose comm is NAME (at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub stall_comm: Option<String>,
    /// Call scx_bpf_error() once N tasks have been dispatched; 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub error_after: u64,
    /// Call scx_bpf_error() the first time CALLBACK runs.
    #[arg(long, value_name = "CALLBACK")]
    pub error_on: Option<Callback>,
    /// Busy-wait this long in every ops.dispatch.
    #[arg(long, value_name = "US", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SLOW_DISPATCH_US))]
    pub slow_dispatch_us: u64,
    /// Time slice of every task.
    #[arg(long, value_name = "US", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub slice_us: u64,
    /// sched_ext's watchdog: eject the scheduler when a runnable task waits this long
    /// (kernel default and maximum 30000).
    #[arg(long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_WATCHDOG_MS))]
    pub watchdog_ms: Option<u64>,
}

/// The callbacks `--error-on` can fail in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Callback {
    /// ops.enqueue: a task becomes runnable.
    Enqueue,
    /// ops.dispatch: a CPU looks for work.
    Dispatch,
    /// ops.running: a task starts running.
    Running,
    /// ops.init_task: a task joins the scheduler (fails while loading).
    InitTask,
}

impl Callback {
    fn to_bpf(self) -> ktstr_callback {
        match self {
            Callback::Enqueue => ktstr_callback::KTSTR_CB_ENQUEUE,
            Callback::Dispatch => ktstr_callback::KTSTR_CB_DISPATCH,
            Callback::Running => ktstr_callback::KTSTR_CB_RUNNING,
            Callback::InitTask => ktstr_callback::KTSTR_CB_INIT_TASK,
        }
    }
}

fn parse_comm(s: &str) -> Result<String> {
    if s.is_empty() || s.len() > MAX_COMM_LEN || s.contains('\0') {
        bail!("a comm is 1 to {MAX_COMM_LEN} bytes without NUL, not {s:?}");
    }
    Ok(s.to_string())
}

/// The knobs in their own units, ready for the BPF program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// Every Nth task is never scheduled; 0 = off.
    pub stall_every: u32,
    /// Tasks with this comm are never scheduled.
    pub stall_comm: Option<String>,
    /// scx_bpf_error() after this many dispatches; 0 = off.
    pub error_after: u64,
    /// scx_bpf_error() in this callback.
    pub error_on: Option<Callback>,
    /// Busy-wait in ops.dispatch.
    pub slow_dispatch: Duration,
    /// Time slice.
    pub slice: Duration,
    /// sched_ext's watchdog timeout; `None` keeps the kernel's.
    pub watchdog: Option<Duration>,
}

impl From<&Opts> for Tunables {
    fn from(o: &Opts) -> Tunables {
        Tunables {
            stall_every: o.stall_every,
            stall_comm: o.stall_comm.clone(),
            error_after: o.error_after,
            error_on: o.error_on,
            slow_dispatch: Duration::from_micros(o.slow_dispatch_us),
            slice: Duration::from_micros(o.slice_us),
            watchdog: o.watchdog_ms.map(Duration::from_millis),
        }
    }
}

/// Nanoseconds of `d` for a u64 rodata field (saturating: flags are range-checked).
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `comm` as the NUL-padded `char[16]` the BPF side compares with `task->comm`.
fn comm_bytes(comm: &str) -> [i8; MAX_COMM_LEN + 1] {
    let mut out = [0i8; MAX_COMM_LEN + 1];
    for (o, b) in out.iter_mut().zip(comm.bytes().take(MAX_COMM_LEN)) {
        *o = b as i8;
    }
    out
}

impl Tunables {
    /// Writes the knobs into the opened (not yet loaded) skeleton: rodata and the ops' timeout.
    pub fn apply(&self, skel: &mut OpenMainSkel<'_>) -> Result<()> {
        let Some(rodata) = skel.maps.rodata_data.as_deref_mut() else {
            bail!("the BPF object has no .rodata section");
        };
        rodata.stall_every = self.stall_every;
        rodata.stall_comm = comm_bytes(self.stall_comm.as_deref().unwrap_or(""));
        rodata.error_after = self.error_after;
        rodata.error_on = self
            .error_on
            .map_or(ktstr_callback::KTSTR_CB_NONE, Callback::to_bpf);
        rodata.slow_dispatch_ns = ns(self.slow_dispatch);
        rodata.slice_ns = ns(self.slice);
        if let Some(w) = self.watchdog {
            skel.struct_ops.ktstr_ops_mut().timeout_ms = u32::try_from(w.as_millis())
                .map_err(|_| anyhow::anyhow!("watchdog timeout {w:?} does not fit"))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Tunables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slice {:?}", self.slice)?;
        if let Some(w) = self.watchdog {
            write!(f, ", watchdog {w:?}")?;
        }
        if self.stall_every > 0 {
            write!(f, ", stalling every task #{}", self.stall_every)?;
        }
        if let Some(c) = &self.stall_comm {
            write!(f, ", stalling comm {c:?}")?;
        }
        if self.error_after > 0 {
            write!(f, ", error after {} dispatches", self.error_after)?;
        }
        if let Some(cb) = self.error_on {
            write!(f, ", error on {cb:?}")?;
        }
        if !self.slow_dispatch.is_zero() {
            write!(f, ", dispatch delay {:?}", self.slow_dispatch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Tunables, clap::Error> {
        let argv = std::iter::once("scx_ktstr").chain(args.iter().copied());
        Opts::try_parse_from(argv).map(|o| Tunables::from(&o))
    }

    #[test]
    fn defaults_keep_the_kernel_watchdog_and_a_20ms_slice() {
        let t = parse(&[]).unwrap();
        assert_eq!(t.slice, Duration::from_millis(20));
        assert_eq!(t.watchdog, None);
        assert_eq!((t.stall_every, t.error_after, t.error_on), (0, 0, None));
        assert_eq!(t.to_string(), "slice 20ms");
    }

    #[test]
    fn knobs_convert_units() {
        let t = parse(&[
            "--stall-comm",
            "spin",
            "--watchdog-ms",
            "2000",
            "--slice-us",
            "500",
            "--slow-dispatch-us",
            "250",
            "--error-on",
            "init-task",
            "--error-after",
            "100",
        ])
        .unwrap();
        assert_eq!(t.stall_comm.as_deref(), Some("spin"));
        assert_eq!(t.watchdog, Some(Duration::from_secs(2)));
        assert_eq!(ns(t.slice), 500_000);
        assert_eq!(ns(t.slow_dispatch), 250_000);
        assert_eq!(t.error_on, Some(Callback::InitTask));
        assert_eq!(t.error_after, 100);
        assert_eq!(
            Callback::InitTask.to_bpf(),
            ktstr_callback::KTSTR_CB_INIT_TASK
        );
    }

    #[test]
    fn out_of_range_knobs_are_refused() {
        assert!(parse(&["--watchdog-ms", "30001"]).is_err());
        assert!(parse(&["--watchdog-ms", "0"]).is_err());
        assert!(parse(&["--slice-us", "0"]).is_err());
        assert!(parse(&["--stall-comm", "sixteen-bytes-xx"]).is_err());
        assert!(parse(&["--stall-comm", ""]).is_err());
        assert!(parse(&["--error-on", "tick"]).is_err());
    }

    #[test]
    fn comm_is_nul_padded() {
        let c = comm_bytes("spin");
        assert_eq!(
            &c[..5],
            &[b's' as i8, b'p' as i8, b'i' as i8, b'n' as i8, 0]
        );
        assert_eq!(comm_bytes("")[0], 0);
    }
}
