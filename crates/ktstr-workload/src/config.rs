//! How a workload is set up: worker count, work, affinity, priority, comm and cgroup.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::{WorkType, WorkloadError};

/// Highest CPU id a `cpu_set_t` (and so an affinity request) can name.
pub const MAX_AFFINITY_CPU: usize = libc::CPU_SETSIZE as usize - 1;

/// Scheduling policy each worker asks for before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `SCHED_OTHER` (the fair class), left as inherited.
    #[default]
    Normal,
    /// `SCHED_BATCH`.
    Batch,
    /// `SCHED_IDLE`.
    Idle,
    /// `SCHED_FIFO` at the given real-time priority (1..=99).
    Fifo(u32),
    /// `SCHED_RR` at the given real-time priority (1..=99).
    RoundRobin(u32),
}

/// Which CPUs each worker pins itself to before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AffinityMode {
    /// Keep the affinity inherited from the spawning thread.
    #[default]
    Inherit,
    /// Every worker on this set.
    Fixed(BTreeSet<usize>),
    /// Worker `i` on `sets[i % sets.len()]`.
    PerWorker(Vec<BTreeSet<usize>>),
}

impl AffinityMode {
    /// The CPU set worker `index` asks for, `None` to inherit.
    pub fn for_worker(&self, index: usize) -> Option<&BTreeSet<usize>> {
        match self {
            Self::Inherit => None,
            Self::Fixed(cpus) => Some(cpus),
            Self::PerWorker(sets) if sets.is_empty() => None,
            Self::PerWorker(sets) => sets.get(index % sets.len()),
        }
    }
}

/// A workload: `num_workers` forked processes all running `work_type`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Workers to fork; must be a multiple of `work_type.group_size()`.
    pub num_workers: usize,
    /// What each worker does.
    pub work_type: WorkType,
    /// CPUs each worker pins itself to.
    pub affinity: AffinityMode,
    /// Nice value each worker sets, if any.
    pub nice: Option<i32>,
    /// Scheduling policy each worker sets.
    pub sched_policy: SchedPolicy,
    /// Worker comm (at most 15 bytes kept); default `ktstr-<work type lower-cased>`.
    pub comm: Option<String>,
    /// cgroup v2 directory every worker is moved into before it starts working.
    pub cgroup: Option<PathBuf>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self::new(1, WorkType::SpinWait)
    }
}

impl WorkloadConfig {
    /// `num_workers` workers of `work_type`, everything else default.
    pub fn new(num_workers: usize, work_type: WorkType) -> Self {
        Self {
            num_workers,
            work_type,
            affinity: AffinityMode::Inherit,
            nice: None,
            sched_policy: SchedPolicy::Normal,
            comm: None,
            cgroup: None,
        }
    }

    /// Sets the affinity mode.
    pub fn affinity(mut self, affinity: AffinityMode) -> Self {
        self.affinity = affinity;
        self
    }

    /// Sets the nice value.
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    /// Sets the scheduling policy.
    pub fn sched_policy(mut self, policy: SchedPolicy) -> Self {
        self.sched_policy = policy;
        self
    }

    /// Sets the worker comm.
    pub fn comm(mut self, comm: impl Into<String>) -> Self {
        self.comm = Some(comm.into());
        self
    }

    /// Sets the cgroup v2 directory workers join.
    pub fn cgroup(mut self, cgroup: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(cgroup.into());
        self
    }

    /// The comm workers will carry (explicit or default), cut to 15 bytes.
    pub fn effective_comm(&self) -> String {
        match &self.comm {
            Some(comm) => crate::work::truncate_comm(comm),
            None => self.work_type.default_comm(),
        }
    }

    /// Checks what `WorkloadHandle::spawn` needs: whole groups, sane work, non-empty CPU sets.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.num_workers == 0 {
            return Err(WorkloadError::Config(
                "num_workers must be at least 1".into(),
            ));
        }
        self.work_type.validate()?;
        let group_size = self.work_type.group_size();
        if self.num_workers % group_size != 0 {
            return Err(WorkloadError::GroupSize {
                num_workers: self.num_workers,
                group_size,
                work_type: self.work_type.name().to_string(),
            });
        }
        let sets: Vec<&BTreeSet<usize>> = match &self.affinity {
            AffinityMode::Inherit => Vec::new(),
            AffinityMode::Fixed(cpus) => vec![cpus],
            AffinityMode::PerWorker(sets) if sets.is_empty() => {
                return Err(WorkloadError::Config(
                    "AffinityMode::PerWorker needs at least one CPU set".into(),
                ))
            }
            AffinityMode::PerWorker(sets) => sets.iter().collect(),
        };
        for cpus in sets {
            if cpus.is_empty() {
                return Err(WorkloadError::Config("affinity CPU set is empty".into()));
            }
            if let Some(cpu) = cpus.iter().find(|&&cpu| cpu > MAX_AFFINITY_CPU) {
                return Err(WorkloadError::Config(format!(
                    "affinity CPU {cpu} is beyond the highest supported id {MAX_AFFINITY_CPU}"
                )));
            }
        }
        if let Some(nice) = self.nice {
            if !(-20..=19).contains(&nice) {
                return Err(WorkloadError::Config(format!(
                    "nice {nice} is outside -20..=19"
                )));
            }
        }
        if let Some(comm) = &self.comm {
            if comm.is_empty() || comm.contains('\0') {
                return Err(WorkloadError::Config(format!("bad comm {comm:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_everything() {
        let cfg = WorkloadConfig::new(2, WorkType::pipe_io())
            .affinity(AffinityMode::Fixed([0].into()))
            .nice(5)
            .sched_policy(SchedPolicy::Batch)
            .comm("pinger")
            .cgroup("/sys/fs/cgroup/x");
        assert_eq!(cfg.num_workers, 2);
        assert_eq!(cfg.nice, Some(5));
        assert_eq!(cfg.sched_policy, SchedPolicy::Batch);
        assert_eq!(cfg.effective_comm(), "pinger");
        assert_eq!(cfg.cgroup, Some(PathBuf::from("/sys/fs/cgroup/x")));
        cfg.validate().unwrap();
        let default = WorkloadConfig::default();
        assert_eq!(default.affinity, AffinityMode::Inherit);
        assert_eq!(default.sched_policy, SchedPolicy::Normal);
        assert_eq!(default.effective_comm(), "ktstr-spinwait");
    }

    #[test]
    fn group_size_must_divide() {
        let err = WorkloadConfig::new(3, WorkType::pipe_io()).validate();
        assert!(matches!(
            err,
            Err(WorkloadError::GroupSize {
                num_workers: 3,
                group_size: 2,
                ..
            })
        ));
        WorkloadConfig::new(8, WorkType::futex_fan_out())
            .validate()
            .unwrap();
        assert!(WorkloadConfig::new(0, WorkType::SpinWait)
            .validate()
            .is_err());
    }

    #[test]
    fn bad_affinity_nice_comm_rejected() {
        let empty = WorkloadConfig::new(1, WorkType::SpinWait)
            .affinity(AffinityMode::Fixed(BTreeSet::new()));
        assert!(empty.validate().is_err());
        let none = WorkloadConfig::new(1, WorkType::SpinWait)
            .affinity(AffinityMode::PerWorker(Vec::new()));
        assert!(none.validate().is_err());
        let huge = WorkloadConfig::new(1, WorkType::SpinWait)
            .affinity(AffinityMode::Fixed([MAX_AFFINITY_CPU + 1].into()));
        assert!(huge.validate().is_err());
        assert!(WorkloadConfig::new(1, WorkType::SpinWait)
            .nice(20)
            .validate()
            .is_err());
        assert!(WorkloadConfig::new(1, WorkType::SpinWait)
            .comm("")
            .validate()
            .is_err());
    }

    #[test]
    fn per_worker_affinity_wraps() {
        let mode = AffinityMode::PerWorker(vec![[0].into(), [1, 2].into()]);
        assert_eq!(mode.for_worker(0), Some(&[0].into()));
        assert_eq!(mode.for_worker(3), Some(&[1, 2].into()));
        assert_eq!(AffinityMode::Inherit.for_worker(0), None);
    }
}
