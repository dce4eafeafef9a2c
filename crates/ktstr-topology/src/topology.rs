//! The topology itself and where each CPU sits in it.

use std::fmt;
use std::str::FromStr;

use crate::{format_cpu_list, TopologyError};

/// Most vCPUs a ktstr guest may have.
pub const MAX_CPUS: u32 = 252;

/// A guest CPU topology: NUMA nodes x LLCs per node x cores per LLC x threads per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topology {
    /// NUMA nodes.
    pub numa_nodes: u32,
    /// Last-level caches in each NUMA node.
    pub llcs: u32,
    /// Cores sharing each LLC.
    pub cores: u32,
    /// SMT threads in each core.
    pub threads: u32,
}

/// Where one CPU sits: every index is global (unique across the whole guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPlace {
    /// Logical CPU number as Linux numbers it.
    pub cpu: u32,
    /// NUMA node.
    pub node: u32,
    /// LLC index, 0..total LLCs.
    pub llc: u32,
    /// Core index, 0..total cores.
    pub core: u32,
    /// Thread index within its core.
    pub thread: u32,
}

/// What Linux in the guest should report for a topology, as sysfs strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLayout {
    /// `/sys/devices/system/node/nodeN/cpulist` for each node N.
    pub node_cpulists: Vec<String>,
    /// `cpuN/cache/index3/shared_cpu_list` for each CPU N.
    pub llc_shared_cpu_lists: Vec<String>,
    /// `cpuN/topology/thread_siblings_list` for each CPU N.
    pub thread_siblings_lists: Vec<String>,
}

impl Default for Topology {
    /// One node, one LLC, two cores, one thread: the existing ktstr's default.
    fn default() -> Self {
        Topology {
            numa_nodes: 1,
            llcs: 1,
            cores: 2,
            threads: 1,
        }
    }
}

impl Topology {
    /// A validated topology of `numa_nodes` x `llcs` per node x `cores` per LLC x `threads` per core.
    pub fn new(
        numa_nodes: u32,
        llcs: u32,
        cores: u32,
        threads: u32,
    ) -> Result<Self, TopologyError> {
        let t = Topology {
            numa_nodes,
            llcs,
            cores,
            threads,
        };
        t.validate()?;
        Ok(t)
    }

    /// Like [`Topology::new`] but with `total_llcs` across all nodes, which must divide evenly.
    pub fn with_total_llcs(
        numa_nodes: u32,
        total_llcs: u32,
        cores: u32,
        threads: u32,
    ) -> Result<Self, TopologyError> {
        if numa_nodes == 0 {
            return Err(TopologyError::ZeroDimension {
                dimension: "numa_nodes",
            });
        }
        if total_llcs % numa_nodes != 0 {
            return Err(TopologyError::BadSpec {
                input: format!(
                    "{total_llcs} LLCs do not divide evenly over {numa_nodes} NUMA nodes"
                ),
            });
        }
        Self::new(numa_nodes, total_llcs / numa_nodes, cores, threads)
    }

    /// Checks every dimension is non-zero and the CPU count is supported.
    pub fn validate(&self) -> Result<(), TopologyError> {
        for (dimension, v) in [
            ("numa_nodes", self.numa_nodes),
            ("llcs", self.llcs),
            ("cores", self.cores),
            ("threads", self.threads),
        ] {
            if v == 0 {
                return Err(TopologyError::ZeroDimension { dimension });
            }
        }
        // Four u32s can overflow even a u64: an overflow is as many CPUs as there can be.
        let cpus = [self.llcs, self.cores, self.threads]
            .into_iter()
            .try_fold(u64::from(self.numa_nodes), |n, v| {
                n.checked_mul(u64::from(v))
            })
            .unwrap_or(u64::MAX);
        if cpus > u64::from(MAX_CPUS) {
            return Err(TopologyError::TooManyCpus {
                cpus,
                max: MAX_CPUS,
            });
        }
        Ok(())
    }

    /// Total logical CPUs.
    pub fn total_cpus(&self) -> u32 {
        self.numa_nodes * self.llcs * self.cores * self.threads
    }

    /// Total LLCs across all nodes.
    pub fn total_llcs(&self) -> u32 {
        self.numa_nodes * self.llcs
    }

    /// Total cores across all nodes.
    pub fn total_cores(&self) -> u32 {
        self.total_llcs() * self.cores
    }

    /// CPUs in one LLC.
    pub fn cpus_per_llc(&self) -> u32 {
        self.cores * self.threads
    }

    /// CPUs in one NUMA node.
    pub fn cpus_per_node(&self) -> u32 {
        self.llcs * self.cpus_per_llc()
    }

    /// Where `cpu` sits, or `None` if it is beyond the topology.
    pub fn place(&self, cpu: u32) -> Option<CpuPlace> {
        if cpu >= self.total_cpus() {
            return None;
        }
        Some(CpuPlace {
            cpu,
            node: cpu / self.cpus_per_node(),
            llc: cpu / self.cpus_per_llc(),
            core: cpu / self.threads,
            thread: cpu % self.threads,
        })
    }

    /// Every CPU's place, in CPU order.
    pub fn places(&self) -> impl Iterator<Item = CpuPlace> + '_ {
        (0..self.total_cpus()).filter_map(|c| self.place(c))
    }

    /// CPUs of NUMA node `node`.
    pub fn node_cpus(&self, node: u32) -> Vec<u32> {
        self.places()
            .filter(|p| p.node == node)
            .map(|p| p.cpu)
            .collect()
    }

    /// CPUs sharing LLC `llc` (global index).
    pub fn llc_cpus(&self, llc: u32) -> Vec<u32> {
        self.places()
            .filter(|p| p.llc == llc)
            .map(|p| p.cpu)
            .collect()
    }

    /// Splits `total_mib` of memory over the NUMA nodes, in whole MiB; the first nodes take the remainder.
    pub fn split_memory_mib(&self, total_mib: u64) -> Vec<u64> {
        let n = u64::from(self.numa_nodes);
        (0..n)
            .map(|i| total_mib / n + u64::from(i < total_mib % n))
            .collect()
    }

    /// What the guest's sysfs should say for this topology.
    pub fn expected(&self) -> ExpectedLayout {
        let places: Vec<CpuPlace> = self.places().collect();
        let list_where = |f: &dyn Fn(&CpuPlace) -> bool| {
            format_cpu_list(
                &places
                    .iter()
                    .filter(|p| f(p))
                    .map(|p| p.cpu)
                    .collect::<Vec<_>>(),
            )
        };
        ExpectedLayout {
            node_cpulists: (0..self.numa_nodes)
                .map(|n| list_where(&|p| p.node == n))
                .collect(),
            llc_shared_cpu_lists: places
                .iter()
                .map(|me| list_where(&|p| p.llc == me.llc))
                .collect(),
            thread_siblings_lists: places
                .iter()
                .map(|me| list_where(&|p| p.core == me.core))
                .collect(),
        }
    }
}

impl fmt::Display for Topology {
    /// `N,L,C,T`, the form `--topology` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.numa_nodes, self.llcs, self.cores, self.threads
        )
    }
}

impl FromStr for Topology {
    type Err = TopologyError;

    /// Parses `N,L,C,T` (NUMA nodes, LLCs per node, cores per LLC, threads per core).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TopologyError::BadSpec {
            input: s.to_string(),
        };
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [n, l, c, t] => Topology::new(n, l, c, t),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let t = Topology::new(2, 2, 4, 2).unwrap();
        assert_eq!(t.total_cpus(), 32);
        assert_eq!(t.total_llcs(), 4);
        assert_eq!(t.total_cores(), 16);
        assert_eq!(t.cpus_per_node(), 16);
    }

    #[test]
    fn places_are_node_major() {
        let t = Topology::new(2, 2, 2, 2).unwrap();
        let p = t.place(13).unwrap();
        assert_eq!((p.node, p.llc, p.core, p.thread), (1, 3, 6, 1));
        assert_eq!(t.place(16), None);
        assert_eq!(t.node_cpus(1), (8..16).collect::<Vec<_>>());
        assert_eq!(t.llc_cpus(1), vec![4, 5, 6, 7]);
    }

    #[test]
    fn expected_layout_strings() {
        let t = Topology::new(2, 2, 2, 1).unwrap();
        let e = t.expected();
        assert_eq!(e.node_cpulists, vec!["0-3", "4-7"]);
        assert_eq!(
            e.llc_shared_cpu_lists,
            vec!["0-1", "0-1", "2-3", "2-3", "4-5", "4-5", "6-7", "6-7"]
        );
        assert_eq!(e.thread_siblings_lists[5], "5");
        let smt = Topology::new(1, 1, 2, 2).unwrap().expected();
        assert_eq!(smt.thread_siblings_lists, vec!["0-1", "0-1", "2-3", "2-3"]);
    }

    #[test]
    fn parse_and_display_round_trip() {
        let t: Topology = "1,2,4,2".parse().unwrap();
        assert_eq!(t, Topology::new(1, 2, 4, 2).unwrap());
        assert_eq!(t.to_string(), "1,2,4,2");
        assert!("1,2,4".parse::<Topology>().is_err());
        assert!("1,x,4,2".parse::<Topology>().is_err());
        assert_eq!(
            "1,0,4,2".parse::<Topology>(),
            Err(TopologyError::ZeroDimension { dimension: "llcs" })
        );
    }

    #[test]
    fn limits() {
        assert!(matches!(
            Topology::new(4, 4, 4, 4),
            Err(TopologyError::TooManyCpus { cpus: 256, .. })
        ));
        // A product beyond even u64 is refused, not wrapped into a small number.
        let huge = u32::MAX;
        assert!(matches!(
            Topology::new(huge, huge, huge, huge),
            Err(TopologyError::TooManyCpus { cpus: u64::MAX, .. })
        ));
        assert!(Topology::with_total_llcs(2, 3, 1, 1).is_err());
        assert_eq!(
            Topology::with_total_llcs(2, 4, 1, 1).unwrap(),
            Topology::new(2, 2, 1, 1).unwrap()
        );
    }

    #[test]
    fn memory_split_sums_to_total() {
        let t = Topology::new(3, 1, 1, 1).unwrap();
        assert_eq!(t.split_memory_mib(1024), vec![342, 341, 341]);
        assert_eq!(t.split_memory_mib(1024).iter().sum::<u64>(), 1024);
    }
}
