//! sched_ext schedulers under the test's control: detach, attach, restart and replace from
//! inside a scenario (`Op::detach_scheduler()` and friends).
//!
//! The scheduler a test starts with belongs to guest init, which started it before the test
//! process ran. Detaching it is a handover: the test process asks init to stop and report it
//! ([`sched::HANDOVER_PATH`]). Schedulers attached afterwards belong to the test process, which
//! watches them while steps hold and reports each one when it goes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::sched::{self, RunningScheduler, SchedulerJob, SchedulerReport};

/// How long init may take to stop its scheduler after a handover request.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long sched_ext may take to leave `enabled` after a scheduler stops.
const DETACH_TIMEOUT: Duration = Duration::from_secs(10);

struct Owned {
    running: RunningScheduler,
    job: SchedulerJob,
    lost: Option<Duration>,
}

/// The test process's view of sched_ext: init's scheduler until handed over, then its own.
#[derive(Default)]
pub struct SchedulerCtl {
    own: Option<Owned>,
    handed_over: bool,
    reports: Vec<SchedulerReport>,
}

impl std::fmt::Debug for SchedulerCtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerCtl")
            .field("own", &self.own.as_ref().map(|o| o.job.path.clone()))
            .field("handed_over", &self.handed_over)
            .field("reports", &self.reports.len())
            .finish()
    }
}

/// The job guest init started, if it started one.
fn init_job() -> Option<SchedulerJob> {
    let text = std::fs::read_to_string(sched::STARTED_JOB_PATH).ok()?;
    serde_json::from_str(&text).ok()
}

impl SchedulerCtl {
    fn init_attached(&self) -> bool {
        !self.handed_over && init_job().is_some()
    }

    /// True when some scheduler (init's or ours) is attached as far as the test knows.
    pub fn attached(&self) -> bool {
        self.own.is_some() || self.init_attached()
    }

    /// The job of the attached scheduler.
    pub fn current_job(&self) -> Option<SchedulerJob> {
        match &self.own {
            Some(o) => Some(o.job.clone()),
            None if self.init_attached() => init_job(),
            None => None,
        }
    }

    /// Stops the attached scheduler; the guest falls back to EEVDF.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        if let Some(own) = self.own.take() {
            self.reports.push(sched::finish(own.running, own.lost));
        } else if self.init_attached() {
            std::fs::write(sched::HANDOVER_PATH, b"")
                .map_err(|e| anyhow!("asking guest init to detach its scheduler: {e}"))?;
            let deadline = Instant::now() + HANDOVER_TIMEOUT;
            // Init answers once it stopped and reported; a scheduler that already died is
            // reported by init at the end instead, so a disabled state also ends the wait.
            while !Path::new(sched::HANDOVER_DONE_PATH).exists() {
                let state = std::fs::read_to_string(sched::STATE_PATH).unwrap_or_default();
                if Instant::now() >= deadline {
                    bail!("guest init did not stop its scheduler within {HANDOVER_TIMEOUT:?} (sched_ext state {})", state.trim());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.handed_over = true;
        } else {
            bail!("no scheduler is attached to detach");
        }
        let state = sched::wait_detached(DETACH_TIMEOUT);
        if state == "enabled" || state == "disabling" {
            bail!("sched_ext is still `{state}` {DETACH_TIMEOUT:?} after the scheduler stopped");
        }
        Ok(())
    }

    /// Starts `job` and waits until sched_ext is enabled with it.
    pub fn attach(&mut self, job: SchedulerJob) -> anyhow::Result<()> {
        if self.attached() {
            bail!("a scheduler is already attached: detach or replace it first");
        }
        if !Path::new(&job.path).is_file() {
            bail!(
                "scheduler {} is not in the guest: name it in `scheduler` or `staged_schedulers`",
                job.path
            );
        }
        match sched::start(&job) {
            Ok(running) => {
                self.own = Some(Owned {
                    running,
                    job,
                    lost: None,
                });
                Ok(())
            }
            Err(report) => {
                let summary = report.summary();
                self.reports.push(*report);
                bail!("{summary}")
            }
        }
    }

    /// Stops the attached scheduler and starts it again with the same arguments.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let job = self
            .current_job()
            .ok_or_else(|| anyhow!("no scheduler is attached to restart"))?;
        self.detach()?;
        self.attach(job)
    }

    /// Stops the attached scheduler (if any) and starts `job` instead.
    pub fn replace(&mut self, job: SchedulerJob) -> anyhow::Result<()> {
        if self.attached() {
            self.detach()?;
        }
        self.attach(job)
    }

    /// Notes when a scheduler of ours stopped scheduling (called while steps hold).
    pub fn poll(&mut self) {
        if let Some(o) = self.own.as_mut() {
            if o.lost.is_none() {
                o.lost = o.running.lost();
            }
        }
    }

    /// Stops our scheduler, if any, and returns every report of ours so far.
    pub fn finish(&mut self) -> Vec<SchedulerReport> {
        if let Some(own) = self.own.take() {
            self.reports.push(sched::finish(own.running, own.lost));
        }
        std::mem::take(&mut self.reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_detach_or_restart_outside_a_guest() {
        // The host has no /run/ktstr job: nothing is attached.
        let mut c = SchedulerCtl::default();
        assert!(!c.attached());
        assert!(c.detach().unwrap_err().to_string().contains("no scheduler"));
        assert!(c
            .restart()
            .unwrap_err()
            .to_string()
            .contains("no scheduler"));
        let missing = SchedulerJob {
            path: "/nonexistent/scx_x".into(),
            args: vec![],
            attach_timeout_ms: 10,
        };
        assert!(c
            .attach(missing)
            .unwrap_err()
            .to_string()
            .contains("staged_schedulers"));
        assert!(c.finish().is_empty());
    }
}
