//! sched_ext schedulers in the guest: start one, prove it attached, watch it
//! while the command runs, stop it, and say what became of it.
//!
//! The verdict comes from the kernel (`/sys/kernel/sched_ext/state`,
//! `root/ops`, the `sched_ext:` lines of the kernel log) and from the
//! scheduler process, never from its exit status alone: a scheduler ejected
//! by the kernel may still exit 0.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// sched_ext's state file.
pub const STATE_PATH: &str = "/sys/kernel/sched_ext/state";
/// The attached scheduler's name.
pub const OPS_PATH: &str = "/sys/kernel/sched_ext/root/ops";
/// Where the scheduler binary is packed in the guest.
pub const GUEST_SCHED_DIR: &str = "/ktstr/sched";
/// Where guest init records the scheduler it started (a [`SchedulerJob`] as JSON), so a test
/// process can restart it.
pub const STARTED_JOB_PATH: &str = "/run/ktstr/sched-job.json";
/// Created by a test process to ask guest init to stop and report its scheduler now
/// (`Op::detach_scheduler` and friends); init answers by creating [`HANDOVER_DONE_PATH`].
pub const HANDOVER_PATH: &str = "/run/ktstr/sched-handover";
/// Created by guest init once its scheduler is stopped and reported after a handover.
pub const HANDOVER_DONE_PATH: &str = "/run/ktstr/sched-handover-done";
/// Lines of scheduler output kept for the report.
const OUTPUT_TAIL: usize = 200;

/// The scheduler the guest runs before the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerJob {
    /// Guest path of the binary.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it may take to reach `enabled`, milliseconds.
    pub attach_timeout_ms: u64,
}

/// What became of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerVerdict {
    /// Attached before the command and still attached after it.
    Healthy,
    /// The process ended before sched_ext was enabled.
    ExitedAtStartup {
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that killed it, if any.
        signal: Option<i32>,
    },
    /// sched_ext was not enabled within the attach timeout.
    AttachTimeout {
        /// The state it was in.
        state: String,
    },
    /// The kernel ejected it; `reason` is the kernel's (`runnable task stall`, `scx_bpf_error`, `SysRq-S` ...).
    Ejected {
        /// The reason in the kernel's words.
        reason: String,
    },
    /// It detached and exited with status 0 on its own while the command ran.
    ExitedCleanly,
    /// It was killed by a signal.
    Crashed {
        /// The signal.
        signal: i32,
    },
    /// It stopped scheduling and neither the kernel nor the process says why.
    DiedUnknown {
        /// What was observed.
        detail: String,
    },
}

/// The scheduler part of a run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerReport {
    /// The binary's file name.
    pub name: String,
    /// `root/ops` once attached.
    pub ops: Option<String>,
    /// Start to `enabled`, milliseconds.
    pub attach_ms: Option<u64>,
    /// Whether it was still attached when the command ended.
    pub attached_at_end: bool,
    /// Milliseconds after attach when it stopped scheduling, if it did.
    pub lost_after_ms: Option<u64>,
    /// The verdict.
    pub verdict: SchedulerVerdict,
    /// `sched_ext:` lines of the kernel log (including the stalled task, if any).
    pub kernel_log: Vec<String>,
    /// The last lines the scheduler printed (its `EXIT:` line and debug dump among them).
    pub output_tail: Vec<String>,
}

impl SchedulerReport {
    /// True if the scheduler did its job for the whole command.
    pub fn healthy(&self) -> bool {
        self.verdict == SchedulerVerdict::Healthy
    }

    /// One line: how it attached and what became of it.
    pub fn summary(&self) -> String {
        use SchedulerVerdict as V;

        let attach = self
            .attach_ms
            .map(|ms| {
                format!(
                    "attached in {:.2}s as `{}`",
                    ms as f64 / 1000.0,
                    self.ops.as_deref().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "never attached".into());
        let lost = self
            .lost_after_ms
            .map(|ms| format!(" {:.2}s after attaching", ms as f64 / 1000.0))
            .unwrap_or_default();
        let verdict = match &self.verdict {
            V::Healthy => "still attached when the command ended".to_string(),
            V::ExitedAtStartup { code, signal } => format!(
                "exited at start-up ({})",
                match (code, signal) {
                    (Some(c), _) => format!("status {c}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "could not be started".into(),
                }
            ),
            V::AttachTimeout { state } => {
                format!("did not attach in time (sched_ext state: {state})")
            }
            V::Ejected { reason } => format!("FAILED: ejected by the kernel{lost}: {reason}"),
            V::ExitedCleanly => {
                format!("FAILED: detached and exited cleanly{lost} while the command ran")
            }
            V::Crashed { signal } => format!("FAILED: crashed with signal {signal}{lost}"),
            V::DiedUnknown { detail } => {
                format!("FAILED: stopped scheduling{lost} for no known reason: {detail}")
            }
        };
        format!("scheduler {}: {attach}; {verdict}", self.name)
    }
}

/// The kernel's reason from a `sched_ext: BPF scheduler "x" disabled (reason)` line.
pub fn ejection_reason(kernel_log: &[String]) -> Option<String> {
    kernel_log.iter().rev().find_map(|l| {
        let rest = l.split(" disabled (").nth(1)?;
        l.contains("BPF scheduler")
            .then(|| rest.rsplit_once(')').map(|(r, _)| r.to_string()))
            .flatten()
    })
}

/// A running scheduler in the guest.
pub struct RunningScheduler {
    child: Child,
    name: String,
    started: Instant,
    attached: Instant,
    ops: Option<String>,
    output: Arc<Mutex<VecDeque<String>>>,
    kmsg: Kmsg,
}

fn read_state() -> String {
    std::fs::read_to_string(STATE_PATH)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// Starts the scheduler and waits until sched_ext is enabled with it.
pub fn start(job: &SchedulerJob) -> Result<RunningScheduler, Box<SchedulerReport>> {
    let name = job.path.rsplit('/').next().unwrap_or(&job.path).to_string();
    let mut kmsg = Kmsg::open();
    let fail = |verdict, output: Vec<String>, kernel_log| {
        Box::new(SchedulerReport {
            name: name.clone(),
            ops: None,
            attach_ms: None,
            attached_at_end: false,
            lost_after_ms: None,
            verdict,
            kernel_log,
            output_tail: output,
        })
    };
    if !std::path::Path::new(STATE_PATH).exists() {
        return Err(fail(
            SchedulerVerdict::AttachTimeout {
                state: format!("{STATE_PATH} missing: this kernel has no sched_ext"),
            },
            vec![],
            vec![],
        ));
    }
    let started = Instant::now();
    let mut child = match Command::new(&job.path)
        .args(&job.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(fail(
                SchedulerVerdict::ExitedAtStartup {
                    code: None,
                    signal: None,
                },
                vec![format!("cannot start {}: {e}", job.path)],
                vec![],
            ))
        }
    };
    let output = Arc::new(Mutex::new(VecDeque::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut q) = sink.lock() {
                    if q.len() == OUTPUT_TAIL {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            }
        });
    }
    let tail = |o: &Arc<Mutex<VecDeque<String>>>| {
        // Give the output threads a moment to drain what the process printed last.
        std::thread::sleep(Duration::from_millis(100));
        o.lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    };
    let deadline = started + Duration::from_millis(job.attach_timeout_ms);
    loop {
        let state = read_state();
        let ops = std::fs::read_to_string(OPS_PATH)
            .ok()
            .map(|s| s.trim().to_string());
        if state == "enabled" && ops.is_some() {
            return Ok(RunningScheduler {
                child,
                name,
                started,
                attached: Instant::now(),
                ops,
                output,
                kmsg,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            let verdict = SchedulerVerdict::ExitedAtStartup {
                code: status.code(),
                signal: status.signal(),
            };
            return Err(fail(verdict, tail(&output), kmsg.sched_ext_lines()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(
                SchedulerVerdict::AttachTimeout { state },
                tail(&output),
                kmsg.sched_ext_lines(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls while the command runs; returns when the scheduler stops scheduling or `done` says so.
pub fn watch(sched: &mut RunningScheduler, done: &dyn Fn() -> bool) -> Option<Duration> {
    loop {
        if done() {
            return None;
        }
        if let Some(lost) = sched.lost() {
            return Some(lost);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RunningScheduler {
    /// `Some(time after attach)` once it stopped scheduling (sched_ext not enabled, or the
    /// process gone); `None` while it schedules.
    pub fn lost(&mut self) -> Option<Duration> {
        let gone = read_state() != "enabled" || matches!(self.child.try_wait(), Ok(Some(_)));
        gone.then(|| self.attached.elapsed())
    }

    /// Its file name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Waits (up to `limit`) until sched_ext is no longer enabled or disabling, so another
/// scheduler can attach; returns the state seen last.
pub fn wait_detached(limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let state = read_state();
        if state != "enabled" && state != "disabling" || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks the scheduler after the command, stops it, and reports.
pub fn finish(mut sched: RunningScheduler, lost_after: Option<Duration>) -> SchedulerReport {
    use std::os::unix::process::ExitStatusExt;
    let attached_at_end = lost_after.is_none()
        && read_state() == "enabled"
        && matches!(sched.child.try_wait(), Ok(None));
    let lost_after = lost_after.or_else(|| (!attached_at_end).then(|| sched.attached.elapsed()));
    let exit_before_stop = sched.child.try_wait().ok().flatten();
    if exit_before_stop.is_none() {
        // SAFETY: kill(2) on our own child's pid; at worst the process has just exited.
        unsafe { libc::kill(sched.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(sched.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = sched.child.kill();
        let _ = sched.child.wait();
    }
    std::thread::sleep(Duration::from_millis(100));
    let kernel_log = sched.kmsg.sched_ext_lines();
    let output_tail: Vec<String> = sched
        .output
        .lock()
        .map(|q| q.iter().cloned().collect())
        .unwrap_or_default();
    let verdict = if attached_at_end {
        SchedulerVerdict::Healthy
    } else if let Some(reason) = ejection_reason(&kernel_log) {
        SchedulerVerdict::Ejected { reason }
    } else {
        match exit_before_stop {
            Some(s) if s.signal().is_some() => SchedulerVerdict::Crashed {
                signal: s.signal().unwrap_or(0),
            },
            Some(s) if s.code() == Some(0) => SchedulerVerdict::ExitedCleanly,
            Some(s) => SchedulerVerdict::DiedUnknown {
                detail: format!("the scheduler exited with {s} and the kernel gave no reason"),
            },
            None => SchedulerVerdict::DiedUnknown {
                detail: format!(
                    "sched_ext state became `{}` with the scheduler process still running",
                    read_state()
                ),
            },
        }
    };
    SchedulerReport {
        name: sched.name,
        ops: sched.ops,
        attach_ms: Some(sched.attached.duration_since(sched.started).as_millis() as u64),
        attached_at_end,
        lost_after_ms: lost_after.map(|d| d.as_millis() as u64),
        verdict,
        kernel_log,
        output_tail,
    }
}

/// The kernel log, read from `/dev/kmsg` without blocking.
struct Kmsg {
    file: Option<std::fs::File>,
    lines: Vec<String>,
}

impl Kmsg {
    fn open() -> Kmsg {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok();
        Kmsg {
            file,
            lines: Vec::new(),
        }
    }

    /// Every `sched_ext` line logged so far.
    fn sched_ext_lines(&mut self) -> Vec<String> {
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; 8192];
        // Each read returns one record; EAGAIN ends the log, EPIPE means records were overwritten.
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, msg)) = rec.split_once(';') {
                        let msg = msg.lines().next().unwrap_or("").to_string();
                        if msg.contains("sched_ext") {
                            self.lines.push(msg);
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        self.lines.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_reasons_from_kernel_lines() {
        let log = vec![
            "sched_ext: BPF scheduler \"simple\" enabled".to_string(),
            "sched_ext: simple: spin[77] failed to run for 5.064s".to_string(),
            "sched_ext: BPF scheduler \"simple\" disabled (runnable task stall)".to_string(),
        ];
        assert_eq!(
            ejection_reason(&log).as_deref(),
            Some("runnable task stall")
        );
        assert_eq!(ejection_reason(&log[..1]), None);
    }

    #[test]
    fn report_json_round_trip() {
        let r = SchedulerReport {
            name: "scx_simple".into(),
            ops: Some("simple".into()),
            attach_ms: Some(2500),
            attached_at_end: false,
            lost_after_ms: Some(10),
            verdict: SchedulerVerdict::Ejected {
                reason: "SysRq-S".into(),
            },
            kernel_log: vec![],
            output_tail: vec!["EXIT: ...".into()],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SchedulerReport>(&s).unwrap(), r);
        assert!(!r.healthy());
    }
}
