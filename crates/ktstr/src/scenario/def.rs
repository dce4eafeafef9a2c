//! Cgroups as data: what each cgroup of a scenario is, where its CPUs are, what its workers do.

use std::collections::BTreeSet;

use ktstr_workload::{SchedPolicy, WorkType};

use super::topo::CpuTopo;

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

/// One cgroup of a scenario and its workers.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupDef {
    /// Name, relative to the workload root (may be nested: `a/b`).
    pub name: String,
    /// Workers (`None`: the context's `workers_per_cgroup`).
    pub workers: Option<usize>,
    /// What they do.
    pub work_type: WorkType,
    /// Its cpuset.
    pub cpuset: Option<CpusetSpec>,
    /// `cpu.weight` (1..=10000).
    pub cpu_weight: Option<u32>,
    /// `cpu.max` as a percentage of one CPU.
    pub cpu_quota_pct: Option<u32>,
    /// Nice value of its workers.
    pub nice: Option<i32>,
    /// Its workers' affinity.
    pub affinity: AffinityIntent,
    /// Its workers' scheduling policy.
    pub sched_policy: SchedPolicy,
    /// Its workers' comm.
    pub comm: Option<String>,
}

impl CgroupDef {
    /// A cgroup called `name` running SpinWait workers.
    pub fn named(name: impl Into<String>) -> Self {
        CgroupDef {
            name: name.into(),
            workers: None,
            work_type: WorkType::SpinWait,
            cpuset: None,
            cpu_weight: None,
            cpu_quota_pct: None,
            nice: None,
            affinity: AffinityIntent::Inherit,
            sched_policy: SchedPolicy::Normal,
            comm: None,
        }
    }
    /// Sets how many workers it runs.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    /// Sets what its workers do.
    pub fn work_type(mut self, w: WorkType) -> Self {
        self.work_type = w;
        self
    }
    /// Sets its cpuset.
    pub fn cpuset(mut self, c: CpusetSpec) -> Self {
        self.cpuset = Some(c);
        self
    }
    /// Sets its `cpu.weight`.
    pub fn cpu_weight(mut self, w: u32) -> Self {
        self.cpu_weight = Some(w);
        self
    }
    /// Sets its CPU quota, percent of one CPU.
    pub fn cpu_quota_pct(mut self, pct: u32) -> Self {
        self.cpu_quota_pct = Some(pct);
        self
    }
    /// Sets its workers' nice value.
    pub fn nice(mut self, n: i32) -> Self {
        self.nice = Some(n);
        self
    }
    /// Sets its workers' affinity.
    pub fn affinity(mut self, a: AffinityIntent) -> Self {
        self.affinity = a;
        self
    }
    /// Sets its workers' scheduling policy.
    pub fn sched_policy(mut self, p: SchedPolicy) -> Self {
        self.sched_policy = p;
        self
    }
    /// Sets its workers' comm.
    pub fn comm(mut self, c: impl Into<String>) -> Self {
        self.comm = Some(c.into());
        self
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
        assert_eq!(d.workers, Some(2));
        assert_eq!(d.cpu_weight, Some(200));
        assert_eq!(d.work_type, WorkType::SpinWait);
        assert_eq!(d.comm.as_deref(), Some("spin"));
    }
}
