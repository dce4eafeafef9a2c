//! Cgroups as data: what each cgroup of a scenario is, where its CPUs are, what its workers do.

use std::borrow::Cow;

use std::collections::BTreeSet;
use std::time::Duration;

use ktstr_workload::{MemPolicy, MpolFlags, SchedPolicy, WorkType};

use super::owned;
use super::topo::CpuTopo;
use crate::test_support::Payload;

/// Which CPUs a cgroup's cpuset holds, relative to the guest's topology.
#[derive(Debug, Clone, PartialEq)]
pub enum CpusetSpec {
    /// The CPUs of LLC `i`.
    Llc(usize),
    /// The CPUs of NUMA node `i`.
    Numa(usize),
    /// CPUs from `start_frac` to `end_frac` of the ordered CPU list.
    Range {
        /// Start, 0.0..=1.0.
        start_frac: f64,
        /// End, 0.0..=1.0, above start.
        end_frac: f64,
    },
    /// Part `index` of `of` equal, disjoint parts of the CPU list.
    Disjoint {
        /// Which part.
        index: usize,
        /// How many parts.
        of: usize,
    },
    /// Part `index` of `of` parts, widened by `frac` of a part on each side so neighbours overlap.
    Overlap {
        /// Which part.
        index: usize,
        /// How many parts.
        of: usize,
        /// Overlap, as a fraction of one part.
        frac: f64,
    },
    /// Exactly these CPUs.
    Exact(BTreeSet<usize>),
}

impl CpusetSpec {
    /// Exactly these CPUs.
    pub fn exact(cpus: impl IntoIterator<Item = usize>) -> Self {
        CpusetSpec::Exact(cpus.into_iter().collect())
    }
    /// The CPUs of LLC `i`.
    pub fn llc(i: usize) -> Self {
        CpusetSpec::Llc(i)
    }
    /// The CPUs of NUMA node `i`.
    pub fn numa(i: usize) -> Self {
        CpusetSpec::Numa(i)
    }
    /// CPUs from `start_frac` to `end_frac` of the CPU list.
    pub fn range(start_frac: f64, end_frac: f64) -> Self {
        CpusetSpec::Range {
            start_frac,
            end_frac,
        }
    }
    /// Part `index` of `of` disjoint parts.
    pub fn disjoint(index: usize, of: usize) -> Self {
        CpusetSpec::Disjoint { index, of }
    }
    /// Part `index` of `of` parts, overlapping its neighbours by `frac` of a part.
    pub fn overlap(index: usize, of: usize, frac: f64) -> Self {
        CpusetSpec::Overlap { index, of, frac }
    }

    /// The concrete CPUs on `topo`, or why there are none.
    pub fn resolve(&self, topo: &CpuTopo) -> Result<BTreeSet<usize>, String> {
        let cpus = topo.cpu_vec();
        let n = cpus.len();
        let slice = |lo: usize, hi: usize| -> BTreeSet<usize> {
            cpus[lo.min(n)..hi.min(n)].iter().copied().collect()
        };
        let set = match self {
            CpusetSpec::Llc(i) => topo
                .llcs
                .get(*i)
                .cloned()
                .ok_or_else(|| format!("LLC {i} does not exist ({} LLCs)", topo.llcs.len()))?,
            CpusetSpec::Numa(i) => topo.nodes.get(*i).cloned().ok_or_else(|| {
                format!("NUMA node {i} does not exist ({} nodes)", topo.nodes.len())
            })?,
            CpusetSpec::Range {
                start_frac,
                end_frac,
            } => {
                if !(0.0..=1.0).contains(start_frac)
                    || !(0.0..=1.0).contains(end_frac)
                    || start_frac >= end_frac
                {
                    return Err(format!(
                        "range {start_frac}..{end_frac} is not within 0..1 and increasing"
                    ));
                }
                let lo = (start_frac * n as f64).floor() as usize;
                let hi = ((end_frac * n as f64).ceil() as usize).max(lo + 1);
                slice(lo, hi)
            }
            CpusetSpec::Disjoint { index, of } => {
                check_part(*index, *of, n)?;
                let (lo, hi) = part(*index, *of, n);
                slice(lo, hi)
            }
            CpusetSpec::Overlap { index, of, frac } => {
                check_part(*index, *of, n)?;
                if !(0.0..=1.0).contains(frac) {
                    return Err(format!("overlap fraction {frac} is not within 0..1"));
                }
                let (lo, hi) = part(*index, *of, n);
                let widen = ((hi - lo) as f64 * frac).ceil() as usize;
                slice(lo.saturating_sub(widen), hi + widen)
            }
            CpusetSpec::Exact(set) => {
                let missing: Vec<usize> = set.difference(&topo.cpus).copied().collect();
                if !missing.is_empty() {
                    return Err(format!("CPUs {missing:?} are not online"));
                }
                set.clone()
            }
        };
        if set.is_empty() {
            return Err(format!("{self:?} selects no CPU of {n}"));
        }
        Ok(set)
    }
}

fn check_part(index: usize, of: usize, n: usize) -> Result<(), String> {
    if of == 0 || index >= of {
        return Err(format!("part {index} of {of} does not exist"));
    }
    if of > n {
        return Err(format!("cannot split {n} CPUs into {of} parts"));
    }
    Ok(())
}

/// Bounds of part `index` of `of` over `n` items (earlier parts take the remainder).
fn part(index: usize, of: usize, n: usize) -> (usize, usize) {
    let base = n / of;
    let extra = n % of;
    let lo = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    (lo, lo + len)
}

/// How each worker's CPU affinity is chosen.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AffinityIntent {
    /// No affinity: the cgroup's cpuset (or every CPU) applies.
    #[default]
    Inherit,
    /// `count` CPUs picked at random from `from`, per worker.
    RandomSubset {
        /// CPUs to pick from.
        from: BTreeSet<usize>,
        /// How many per worker.
        count: usize,
    },
    /// Each worker pinned to one LLC's CPUs (round robin over the LLCs the cgroup may use).
    LlcAligned,
    /// Every online CPU, whatever the cgroup's cpuset (the kernel clips it to the cpuset).
    CrossCgroup,
    /// Each worker pinned to one CPU (round robin over the cgroup's CPUs).
    SingleCpu,
    /// Exactly these CPUs for every worker.
    Exact(BTreeSet<usize>),
}

impl AffinityIntent {
    /// Exactly these CPUs.
    pub fn exact(cpus: impl IntoIterator<Item = usize>) -> Self {
        AffinityIntent::Exact(cpus.into_iter().collect())
    }

    /// The CPU set for each of `workers` workers (`None` for no affinity), given the CPUs the
    /// cgroup may use. `seed` varies random picks between calls.
    pub fn resolve(
        &self,
        topo: &CpuTopo,
        allowed: &BTreeSet<usize>,
        workers: usize,
        seed: u64,
    ) -> Result<Option<Vec<BTreeSet<usize>>>, String> {
        let allowed_vec: Vec<usize> = allowed.iter().copied().collect();
        if allowed_vec.is_empty() {
            return Err("no CPU to place workers on".into());
        }
        let per: Vec<BTreeSet<usize>> = match self {
            AffinityIntent::Inherit => return Ok(None),
            AffinityIntent::CrossCgroup => vec![topo.cpus.clone(); workers],
            AffinityIntent::Exact(set) => {
                if set.is_empty() {
                    return Err("an empty exact affinity".into());
                }
                vec![set.clone(); workers]
            }
            AffinityIntent::SingleCpu => (0..workers)
                .map(|i| BTreeSet::from([allowed_vec[i % allowed_vec.len()]]))
                .collect(),
            AffinityIntent::LlcAligned => {
                let llcs: Vec<BTreeSet<usize>> = topo
                    .llcs
                    .iter()
                    .map(|l| l.intersection(allowed).copied().collect::<BTreeSet<_>>())
                    .filter(|l| !l.is_empty())
                    .collect();
                (0..workers).map(|i| llcs[i % llcs.len()].clone()).collect()
            }
            AffinityIntent::RandomSubset { from, count } => {
                let pool: Vec<usize> = from.iter().copied().collect();
                if pool.is_empty() || *count == 0 || *count > pool.len() {
                    return Err(format!(
                        "cannot pick {count} CPUs from {} candidates",
                        pool.len()
                    ));
                }
                let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                (0..workers)
                    .map(|_| {
                        let mut p = pool.clone();
                        for i in 0..*count {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let j = i + (rng as usize) % (p.len() - i);
                            p.swap(i, j);
                        }
                        p[..*count].iter().copied().collect()
                    })
                    .collect()
            }
        };
        Ok(Some(per))
    }
}

/// One group of workers in a cgroup: what they do, how many, and their attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkSpec {
    /// Workers (`None`: the context's `workers_per_cgroup`, rounded up to whole groups).
    pub num_workers: Option<usize>,
    /// Workers per CPU the cgroup may use, rounded up (`2.0`: two per CPU).
    pub workers_pct: Option<f64>,
    /// What they do.
    pub work_type: WorkType,
    /// Their scheduling policy.
    pub sched_policy: SchedPolicy,
    /// Their CPU affinity.
    pub affinity: AffinityIntent,
    /// Their NUMA memory policy (`set_mempolicy`).
    pub mem_policy: MemPolicy,
    /// Flags for `mem_policy`.
    pub mpol_flags: MpolFlags,
    /// Their nice value.
    pub nice: Option<i32>,
    /// Their comm.
    pub comm: Option<String>,
    /// The user id they run as.
    pub uid: Option<u32>,
    /// The group id they run as.
    pub gid: Option<u32>,
    /// Keep them on the CPUs of this NUMA node.
    pub numa_node: Option<u32>,
}

impl Default for WorkSpec {
    fn default() -> Self {
        WorkSpec {
            num_workers: None,
            workers_pct: None,
            work_type: WorkType::SpinWait,
            sched_policy: SchedPolicy::Normal,
            affinity: AffinityIntent::Inherit,
            mem_policy: MemPolicy::Default,
            mpol_flags: MpolFlags::NONE,
            nice: None,
            comm: None,
            uid: None,
            gid: None,
            numa_node: None,
        }
    }
}

impl WorkSpec {
    /// Sets how many workers.
    pub fn workers(mut self, n: usize) -> Self {
        self.num_workers = Some(n);
        self
    }
    /// Sets workers per CPU the cgroup may use (rounded up).
    pub fn workers_pct(mut self, pct: f64) -> Self {
        self.workers_pct = Some(pct);
        self
    }
    /// Sets what they do.
    pub fn work_type(mut self, w: WorkType) -> Self {
        self.work_type = w;
        self
    }
    /// Sets their scheduling policy.
    pub fn sched_policy(mut self, p: SchedPolicy) -> Self {
        self.sched_policy = p;
        self
    }
    /// Sets their CPU affinity.
    pub fn affinity(mut self, a: AffinityIntent) -> Self {
        self.affinity = a;
        self
    }
    /// Sets their NUMA memory policy.
    pub fn mem_policy(mut self, p: MemPolicy) -> Self {
        self.mem_policy = p;
        self
    }
    /// Sets the flags of their NUMA memory policy.
    pub fn mpol_flags(mut self, f: MpolFlags) -> Self {
        self.mpol_flags = f;
        self
    }
    /// Sets their nice value.
    pub fn nice(mut self, n: i32) -> Self {
        self.nice = Some(n);
        self
    }
    /// Sets their comm.
    pub fn comm(mut self, c: impl Into<Cow<'static, str>>) -> Self {
        self.comm = Some(owned(c));
        self
    }
    /// Sets the user id they run as.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }
    /// Sets the group id they run as.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }
    /// Keeps them on the CPUs of NUMA node `node`.
    pub fn numa_node(mut self, node: u32) -> Self {
        self.numa_node = Some(node);
        self
    }

    /// How many workers to start on a cgroup that may use `cpus` CPUs, when the context
    /// gives `per_cgroup` by default; always whole groups of the work type.
    pub fn resolve_workers(&self, cpus: usize, per_cgroup: usize) -> Result<usize, String> {
        let g = self.work_type.group_size().max(1);
        match (self.num_workers, self.workers_pct) {
            (Some(_), Some(_)) => Err("both workers(n) and workers_pct(p) are set".into()),
            (Some(n), None) => Ok(n),
            (None, Some(p)) => {
                if !(p.is_finite() && p > 0.0) {
                    return Err(format!("workers_pct({p}) is not a positive number"));
                }
                let n = (cpus as f64 * p).ceil() as usize;
                Ok(n.max(1).div_ceil(g) * g)
            }
            (None, None) => Ok(per_cgroup.div_ceil(g) * g),
        }
    }
}

/// One cgroup of a scenario: its limits, its worker groups and an optional payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupDef {
    /// Name, relative to the workload root (may be nested: `a/b`).
    pub name: String,
    /// Its cpuset.
    pub cpuset: Option<CpusetSpec>,
    /// Its `cpuset.mems` (NUMA nodes).
    pub cpuset_mems: Option<BTreeSet<usize>>,
    /// Its worker groups (none given: one default group).
    pub works: Vec<WorkSpec>,
    /// Its work types give way to the context's `work_type_override`, when there is one.
    pub swappable: bool,
    /// A payload started in it after its workers, stopped when it is removed.
    pub payload: Option<&'static Payload>,
    /// `cpu.weight` (1..=10000).
    pub cpu_weight: Option<u32>,
    /// `cpu.max` as (quota µs, `None` for `max`; period µs).
    pub cpu_max: Option<(Option<u64>, u64)>,
    /// Other interface files written when it is created, in order: (file, value).
    pub knobs: Vec<(&'static str, String)>,
}

impl CgroupDef {
    /// A cgroup called `name` running SpinWait workers.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        CgroupDef {
            name: owned(name),
            cpuset: None,
            cpuset_mems: None,
            works: Vec::new(),
            swappable: false,
            payload: None,
            cpu_weight: None,
            cpu_max: None,
            knobs: Vec::new(),
        }
    }
    /// Its worker groups: those given, or one default group.
    pub fn merged_works(&self) -> Vec<WorkSpec> {
        if self.works.is_empty() {
            vec![WorkSpec::default()]
        } else {
            self.works.clone()
        }
    }
    /// The worker groups to start when the test overrides work types with `work_type`:
    /// a swappable cgroup's groups take it, others keep their own.
    pub fn works_with_override(&self, work_type: Option<&WorkType>) -> Vec<WorkSpec> {
        let mut works = self.merged_works();
        if let (true, Some(w)) = (self.swappable, work_type) {
            for spec in &mut works {
                spec.work_type = w.clone();
            }
        }
        works
    }
    fn first_work(&mut self) -> &mut WorkSpec {
        if self.works.is_empty() {
            self.works.push(WorkSpec::default());
        }
        &mut self.works[0]
    }
    fn each_work(mut self, f: impl Fn(&mut WorkSpec)) -> Self {
        self.first_work();
        self.works.iter_mut().for_each(f);
        self
    }
    fn knob(mut self, file: &'static str, value: String) -> Self {
        self.knobs.retain(|(f, _)| *f != file);
        self.knobs.push((file, value));
        self
    }
    /// Adds a worker group (call again for groups running side by side).
    pub fn work(mut self, w: WorkSpec) -> Self {
        self.works.push(w);
        self
    }
    /// Sets how many workers its first group runs.
    pub fn workers(mut self, n: usize) -> Self {
        self.first_work().num_workers = Some(n);
        self
    }
    /// Sets its first group's workers per CPU the cgroup may use (rounded up).
    pub fn workers_pct(mut self, pct: f64) -> Self {
        self.first_work().workers_pct = Some(pct);
        self
    }
    /// Sets what its first group does.
    pub fn work_type(mut self, w: WorkType) -> Self {
        self.first_work().work_type = w;
        self
    }
    /// Sets its first group's scheduling policy.
    pub fn sched_policy(mut self, p: SchedPolicy) -> Self {
        self.first_work().sched_policy = p;
        self
    }
    /// Sets its first group's affinity.
    pub fn affinity(mut self, a: AffinityIntent) -> Self {
        self.first_work().affinity = a;
        self
    }
    /// Sets its first group's NUMA memory policy.
    pub fn mem_policy(mut self, p: MemPolicy) -> Self {
        self.first_work().mem_policy = p;
        self
    }
    /// Sets the flags of its first group's NUMA memory policy.
    pub fn mpol_flags(mut self, f: MpolFlags) -> Self {
        self.first_work().mpol_flags = f;
        self
    }
    /// Sets every group's nice value.
    pub fn nice(self, n: i32) -> Self {
        self.each_work(|w| w.nice = Some(n))
    }
    /// Sets every group's comm.
    pub fn comm(self, c: impl Into<Cow<'static, str>>) -> Self {
        let c = owned(c);
        self.each_work(|w| w.comm = Some(c.clone()))
    }
    /// Sets the user id every group runs as.
    pub fn uid(self, uid: u32) -> Self {
        self.each_work(|w| w.uid = Some(uid))
    }
    /// Sets the group id every group runs as.
    pub fn gid(self, gid: u32) -> Self {
        self.each_work(|w| w.gid = Some(gid))
    }
    /// Keeps every group on the CPUs of NUMA node `node`.
    pub fn numa_node(self, node: u32) -> Self {
        self.each_work(|w| w.numa_node = Some(node))
    }
    /// Lets the context's `work_type_override` replace its work types.
    pub fn swappable(mut self, swappable: bool) -> Self {
        self.swappable = swappable;
        self
    }
    /// Starts `payload` (a binary packed with `payload` or `workloads`) in it.
    pub fn workload(mut self, payload: &'static Payload) -> Self {
        self.payload = Some(payload);
        self
    }
    /// Sets its cpuset.
    pub fn cpuset(mut self, c: CpusetSpec) -> Self {
        self.cpuset = Some(c);
        self
    }
    /// Sets its `cpuset.mems`.
    pub fn cpuset_mems(mut self, nodes: impl IntoIterator<Item = usize>) -> Self {
        self.cpuset_mems = Some(nodes.into_iter().collect());
        self
    }
    /// Sets its `cpu.weight`.
    pub fn cpu_weight(mut self, w: u32) -> Self {
        self.cpu_weight = Some(w);
        self
    }
    /// Sets `cpu.max` to `pct`% of one CPU over a 100 ms period.
    pub fn cpu_quota_pct(mut self, pct: u32) -> Self {
        self.cpu_max = Some((Some(u64::from(pct) * 1000), 100_000));
        self
    }
    /// Sets `cpu.max` to `quota` per `period`.
    pub fn cpu_quota(mut self, quota: Duration, period: Duration) -> Self {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.cpu_max = Some((Some(us(quota)), us(period)));
        self
    }
    /// Sets `cpu.max` to `max` (no quota), keeping the period.
    pub fn cpu_unlimited(mut self) -> Self {
        let period = self.cpu_max.map_or(100_000, |(_, p)| p);
        self.cpu_max = Some((None, period));
        self
    }
    /// Sets `memory.max`, bytes.
    pub fn memory_max(self, bytes: u64) -> Self {
        self.knob("memory.max", bytes.to_string())
    }
    /// Sets `memory.high`, bytes.
    pub fn memory_high(self, bytes: u64) -> Self {
        self.knob("memory.high", bytes.to_string())
    }
    /// Sets `memory.low`, bytes.
    pub fn memory_low(self, bytes: u64) -> Self {
        self.knob("memory.low", bytes.to_string())
    }
    /// Sets `memory.max` and `memory.high` to `max` and `memory.low` to 0.
    pub fn memory_unlimited(self) -> Self {
        self.knob("memory.max", "max".into())
            .knob("memory.high", "max".into())
            .knob("memory.low", "0".into())
    }
    /// Sets `memory.swap.max`, bytes.
    pub fn memory_swap_max(self, bytes: u64) -> Self {
        self.knob("memory.swap.max", bytes.to_string())
    }
    /// Sets `memory.swap.max` to `max`.
    pub fn memory_swap_unlimited(self) -> Self {
        self.knob("memory.swap.max", "max".into())
    }
    /// Sets `io.weight` (1..=10000).
    pub fn io_weight(self, weight: u16) -> Self {
        self.knob("io.weight", weight.to_string())
    }
    /// Sets `pids.max`.
    pub fn pids_max(self, n: u64) -> Self {
        self.knob("pids.max", n.to_string())
    }
    /// Sets `pids.max` to `max`.
    pub fn pids_unlimited(self) -> Self {
        self.knob("pids.max", "max".into())
    }

    /// Checks what can be checked before the cgroup exists.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(w) = self.cpu_weight {
            if !(1..=10000).contains(&w) {
                return Err(format!("cpu.weight {w} is outside 1..=10000"));
            }
        }
        if let Some((quota, period)) = self.cpu_max {
            if !(1000..=1_000_000).contains(&period) {
                return Err(format!(
                    "cpu.max period {period} µs is outside 1000..=1000000"
                ));
            }
            if quota == Some(0) {
                return Err("a cpu.max quota of 0 would never run".into());
            }
        }
        for (file, value) in &self.knobs {
            match (*file, value.as_str()) {
                ("pids.max", "0") => return Err("pids.max 0 forbids every worker".into()),
                ("io.weight", v) if !matches!(v.parse::<u32>(), Ok(1..=10000)) => {
                    return Err(format!("io.weight {v} is outside 1..=10000"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(n: usize, per_llc: usize) -> CpuTopo {
        let cpus: BTreeSet<usize> = (0..n).collect();
        CpuTopo {
            llcs: (0..n / per_llc)
                .map(|l| (l * per_llc..(l + 1) * per_llc).collect())
                .collect(),
            nodes: vec![cpus.clone()],
            cpus,
            smt_groups: vec![],
        }
    }

    #[test]
    fn cpuset_specs_resolve_on_a_topology() {
        let t = topo(8, 4);
        assert_eq!(CpusetSpec::llc(1).resolve(&t).unwrap(), (4..8).collect());
        assert_eq!(CpusetSpec::numa(0).resolve(&t).unwrap(), (0..8).collect());
        assert_eq!(
            CpusetSpec::disjoint(0, 2).resolve(&t).unwrap(),
            (0..4).collect()
        );
        assert_eq!(
            CpusetSpec::disjoint(2, 3).resolve(&t).unwrap(),
            (6..8).collect()
        );
        assert_eq!(
            CpusetSpec::range(0.0, 0.25).resolve(&t).unwrap(),
            (0..2).collect()
        );
        assert_eq!(
            CpusetSpec::overlap(1, 2, 0.5).resolve(&t).unwrap(),
            (2..8).collect()
        );
        assert_eq!(
            CpusetSpec::exact([1, 3]).resolve(&t).unwrap(),
            BTreeSet::from([1, 3])
        );
        assert!(CpusetSpec::llc(2)
            .resolve(&t)
            .unwrap_err()
            .contains("LLC 2"));
        assert!(CpusetSpec::exact([9])
            .resolve(&t)
            .unwrap_err()
            .contains("[9]"));
        assert!(CpusetSpec::disjoint(0, 9).resolve(&t).is_err());
        assert!(CpusetSpec::range(0.5, 0.5).resolve(&t).is_err());
    }

    #[test]
    fn parts_cover_every_cpu_once() {
        for n in 1..20 {
            for of in 1..=n {
                let mut covered = Vec::new();
                for i in 0..of {
                    let (lo, hi) = part(i, of, n);
                    assert!(hi > lo);
                    covered.extend(lo..hi);
                }
                assert_eq!(covered, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn affinity_intents_place_workers() {
        let t = topo(4, 2);
        let all: BTreeSet<usize> = (0..4).collect();
        assert_eq!(
            AffinityIntent::Inherit.resolve(&t, &all, 3, 1).unwrap(),
            None
        );
        let single = AffinityIntent::SingleCpu
            .resolve(&t, &all, 5, 1)
            .unwrap()
            .unwrap();
        assert_eq!(single[4], BTreeSet::from([0]));
        let llc = AffinityIntent::LlcAligned
            .resolve(&t, &all, 3, 1)
            .unwrap()
            .unwrap();
        assert_eq!(llc[1], BTreeSet::from([2, 3]));
        let r = AffinityIntent::RandomSubset {
            from: all.clone(),
            count: 2,
        }
        .resolve(&t, &all, 10, 7)
        .unwrap()
        .unwrap();
        assert!(r.iter().all(|s| s.len() == 2 && s.is_subset(&all)));
        assert!(AffinityIntent::RandomSubset {
            from: all.clone(),
            count: 5
        }
        .resolve(&t, &all, 1, 1)
        .is_err());
    }

    #[test]
    fn cgroup_def_builders() {
        let d = CgroupDef::named("cg_0")
            .workers(2)
            .cpu_weight(200)
            .cpuset(CpusetSpec::llc(0))
            .comm("spin");
        assert_eq!(d.works.len(), 1);
        assert_eq!(d.works[0].num_workers, Some(2));
        assert_eq!(d.cpu_weight, Some(200));
        assert_eq!(d.works[0].work_type, WorkType::SpinWait);
        assert_eq!(d.works[0].comm.as_deref(), Some("spin"));
        assert_eq!(
            CgroupDef::named("x").merged_works(),
            vec![WorkSpec::default()]
        );
    }

    #[test]
    fn several_work_groups_and_cgroup_wide_attributes() {
        let d = CgroupDef::named("mixed")
            .work(WorkSpec::default().workers(4))
            .work(
                WorkSpec::default()
                    .workers(2)
                    .work_type(WorkType::YieldHeavy),
            )
            .uid(1000)
            .gid(100)
            .numa_node(0)
            .nice(3);
        assert_eq!(d.works.len(), 2);
        for w in &d.works {
            assert_eq!(
                (w.uid, w.gid, w.numa_node, w.nice),
                (Some(1000), Some(100), Some(0), Some(3))
            );
        }
        assert_eq!(d.works[1].work_type, WorkType::YieldHeavy);
        // The first-group builders touch only the first group.
        let d = d
            .mem_policy(MemPolicy::bind([0]))
            .mpol_flags(MpolFlags::STATIC_NODES);
        assert_eq!(d.works[0].mem_policy, MemPolicy::bind([0]));
        assert_eq!(d.works[1].mem_policy, MemPolicy::Default);
    }

    #[test]
    fn limits_become_interface_file_writes() {
        let d = CgroupDef::named("lim")
            .memory_max(64 << 20)
            .memory_high(48 << 20)
            .memory_low(1 << 20)
            .memory_swap_max(0)
            .io_weight(200)
            .pids_max(64)
            .cpuset_mems([0])
            .cpu_quota(Duration::from_millis(20), Duration::from_millis(50));
        let get = |f: &str| {
            d.knobs
                .iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("memory.max").as_deref(), Some("67108864"));
        assert_eq!(get("memory.high").as_deref(), Some("50331648"));
        assert_eq!(get("memory.low").as_deref(), Some("1048576"));
        assert_eq!(get("memory.swap.max").as_deref(), Some("0"));
        assert_eq!(get("io.weight").as_deref(), Some("200"));
        assert_eq!(get("pids.max").as_deref(), Some("64"));
        assert_eq!(d.cpuset_mems, Some(BTreeSet::from([0])));
        assert_eq!(d.cpu_max, Some((Some(20_000), 50_000)));
        d.validate().unwrap();
        // A later builder for the same file wins, once.
        let d = d
            .memory_unlimited()
            .pids_unlimited()
            .memory_swap_unlimited()
            .cpu_unlimited();
        assert_eq!(get_of(&d, "memory.max"), Some("max"));
        assert_eq!(get_of(&d, "memory.low"), Some("0"));
        assert_eq!(get_of(&d, "pids.max"), Some("max"));
        assert_eq!(get_of(&d, "memory.swap.max"), Some("max"));
        assert_eq!(
            d.knobs.iter().filter(|(k, _)| *k == "memory.max").count(),
            1
        );
        assert_eq!(d.cpu_max, Some((None, 50_000)));
        assert!(CgroupDef::named("z").pids_max(0).validate().is_err());
        assert!(CgroupDef::named("z").io_weight(0).validate().is_err());
        assert!(CgroupDef::named("z").cpu_weight(0).validate().is_err());
        assert!(CgroupDef::named("z").cpu_quota_pct(0).validate().is_err());
    }

    fn get_of<'d>(d: &'d CgroupDef, f: &str) -> Option<&'d str> {
        d.knobs
            .iter()
            .find(|(k, _)| *k == f)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn only_swappable_cgroups_take_the_override() {
        let yield_heavy = WorkType::YieldHeavy;
        let fixed = CgroupDef::named("f").work_type(WorkType::Mixed);
        let swap = fixed.clone().swappable(true);
        let types = |d: &CgroupDef, o: Option<&WorkType>| -> Vec<WorkType> {
            d.works_with_override(o)
                .into_iter()
                .map(|w| w.work_type)
                .collect()
        };
        assert_eq!(types(&fixed, Some(&yield_heavy)), [WorkType::Mixed]);
        assert_eq!(types(&swap, Some(&yield_heavy)), [WorkType::YieldHeavy]);
        assert_eq!(types(&swap, None), [WorkType::Mixed]);
    }

    #[test]
    fn worker_counts_resolve() {
        let w = WorkSpec::default();
        assert_eq!(w.resolve_workers(4, 3), Ok(3));
        assert_eq!(w.clone().workers(5).resolve_workers(4, 3), Ok(5));
        assert_eq!(w.clone().workers_pct(2.0).resolve_workers(4, 3), Ok(8));
        assert_eq!(w.clone().workers_pct(0.3).resolve_workers(4, 3), Ok(2));
        // Whole groups: pipe pairs round up.
        let pipe = WorkSpec::default().work_type(WorkType::pipe_io());
        assert_eq!(pipe.clone().workers_pct(0.75).resolve_workers(4, 1), Ok(4));
        assert_eq!(pipe.resolve_workers(4, 3), Ok(4));
        assert!(w
            .clone()
            .workers(1)
            .workers_pct(1.0)
            .resolve_workers(4, 3)
            .is_err());
        assert!(w.workers_pct(f64::NAN).resolve_workers(4, 3).is_err());
    }
}
