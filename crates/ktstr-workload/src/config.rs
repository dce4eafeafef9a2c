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

/// NUMA memory policy each worker sets with `set_mempolicy(2)` before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MemPolicy {
    /// Leave the inherited policy (`MPOL_DEFAULT` unless the runner set one).
    #[default]
    Default,
    /// `MPOL_BIND`: allocate only on these nodes.
    Bind(BTreeSet<usize>),
    /// `MPOL_PREFERRED`: prefer this node.
    Preferred(usize),
    /// `MPOL_INTERLEAVE`: interleave pages over these nodes.
    Interleave(BTreeSet<usize>),
    /// `MPOL_LOCAL`: allocate on the node of the CPU running the task.
    Local,
}

impl MemPolicy {
    /// `MPOL_BIND` to these nodes.
    pub fn bind(nodes: impl IntoIterator<Item = usize>) -> Self {
        MemPolicy::Bind(nodes.into_iter().collect())
    }
    /// `MPOL_INTERLEAVE` over these nodes.
    pub fn interleave(nodes: impl IntoIterator<Item = usize>) -> Self {
        MemPolicy::Interleave(nodes.into_iter().collect())
    }
    /// The `set_mempolicy` mode number and node set, `None` for [`MemPolicy::Default`].
    pub fn mode_and_nodes(&self) -> Option<(i32, BTreeSet<usize>)> {
        match self {
            MemPolicy::Default => None,
            MemPolicy::Bind(n) => Some((MPOL_BIND, n.clone())),
            MemPolicy::Preferred(n) => Some((MPOL_PREFERRED, BTreeSet::from([*n]))),
            MemPolicy::Interleave(n) => Some((MPOL_INTERLEAVE, n.clone())),
            MemPolicy::Local => Some((MPOL_LOCAL, BTreeSet::new())),
        }
    }
}

/// `MPOL_PREFERRED` (uapi/linux/mempolicy.h).
const MPOL_PREFERRED: i32 = 1;
/// `MPOL_BIND`.
const MPOL_BIND: i32 = 2;
/// `MPOL_INTERLEAVE`.
const MPOL_INTERLEAVE: i32 = 3;
/// `MPOL_LOCAL`.
const MPOL_LOCAL: i32 = 4;
/// Highest NUMA node id a memory policy may name (the node mask is one word).
pub const MAX_MEMPOLICY_NODE: usize = 63;

/// Mode flags OR-ed into a [`MemPolicy`]'s mode (`MPOL_F_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MpolFlags(pub u32);

impl MpolFlags {
    /// No flags.
    pub const NONE: MpolFlags = MpolFlags(0);
    /// `MPOL_F_STATIC_NODES`: the node set is not remapped when the cpuset changes.
    pub const STATIC_NODES: MpolFlags = MpolFlags(1 << 15);
    /// `MPOL_F_RELATIVE_NODES`: the node set is relative to the allowed nodes.
    pub const RELATIVE_NODES: MpolFlags = MpolFlags(1 << 14);
    /// `MPOL_F_NUMA_BALANCING`: NUMA balancing may migrate pages of a bound task.
    pub const NUMA_BALANCING: MpolFlags = MpolFlags(1 << 13);

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for MpolFlags {
    type Output = MpolFlags;
    fn bitor(self, rhs: MpolFlags) -> MpolFlags {
        MpolFlags(self.0 | rhs.0)
    }
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
    /// NUMA memory policy each worker sets.
    pub mem_policy: MemPolicy,
    /// Flags for `mem_policy`.
    pub mpol_flags: MpolFlags,
    /// User id each worker switches to (`setresuid`), after everything that needs root.
    pub uid: Option<u32>,
    /// Group id each worker switches to (`setresgid`, supplementary groups dropped).
    pub gid: Option<u32>,
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
            mem_policy: MemPolicy::Default,
            mpol_flags: MpolFlags::NONE,
            uid: None,
            gid: None,
        }
    }

    /// Sets the NUMA memory policy and its flags.
    pub fn mem_policy(mut self, policy: MemPolicy, flags: MpolFlags) -> Self {
        self.mem_policy = policy;
        self.mpol_flags = flags;
        self
    }

    /// Sets the user id workers run as.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Sets the group id workers run as.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
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
        if let Some((_, nodes)) = self.mem_policy.mode_and_nodes() {
            let needs_nodes = !matches!(self.mem_policy, MemPolicy::Local);
            if needs_nodes && nodes.is_empty() {
                return Err(WorkloadError::Config(format!(
                    "memory policy {:?} names no NUMA node",
                    self.mem_policy
                )));
            }
            if let Some(n) = nodes.iter().find(|&&n| n > MAX_MEMPOLICY_NODE) {
                return Err(WorkloadError::Config(format!(
                    "NUMA node {n} is beyond the highest supported id {MAX_MEMPOLICY_NODE}"
                )));
            }
        } else if self.mpol_flags != MpolFlags::NONE {
            return Err(WorkloadError::Config(
                "memory policy flags without a memory policy".into(),
            ));
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
    fn memory_policies_and_ids() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
            .mem_policy(MemPolicy::bind([0]), MpolFlags::STATIC_NODES)
            .uid(1000)
            .gid(100);
        cfg.validate().unwrap();
        assert_eq!((cfg.uid, cfg.gid), (Some(1000), Some(100)));
        assert_eq!(
            cfg.mem_policy.mode_and_nodes(),
            Some((MPOL_BIND, BTreeSet::from([0])))
        );
        assert_eq!(
            (MpolFlags::STATIC_NODES | MpolFlags::NUMA_BALANCING).bits(),
            (1 << 15) | (1 << 13)
        );
        let empty = WorkloadConfig::new(1, WorkType::SpinWait)
            .mem_policy(MemPolicy::Bind(BTreeSet::new()), MpolFlags::NONE);
        assert!(empty.validate().is_err());
        let far = WorkloadConfig::new(1, WorkType::SpinWait)
            .mem_policy(MemPolicy::Preferred(64), MpolFlags::NONE);
        assert!(far.validate().is_err());
        let flags_only = WorkloadConfig::new(1, WorkType::SpinWait)
            .mem_policy(MemPolicy::Default, MpolFlags::STATIC_NODES);
        assert!(flags_only.validate().is_err());
        WorkloadConfig::new(1, WorkType::SpinWait)
            .mem_policy(MemPolicy::Local, MpolFlags::NONE)
            .validate()
            .unwrap();
    }

    #[test]
    fn per_worker_affinity_wraps() {
        let mode = AffinityMode::PerWorker(vec![[0].into(), [1, 2].into()]);
        assert_eq!(mode.for_worker(0), Some(&[0].into()));
        assert_eq!(mode.for_worker(3), Some(&[1, 2].into()));
        assert_eq!(AffinityMode::Inherit.for_worker(0), None);
    }
}
