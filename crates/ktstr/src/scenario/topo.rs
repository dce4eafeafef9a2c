//! The CPU layout a test sees, read from sysfs in the guest (or on the host for `host_only`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// CPUs, grouped by LLC and NUMA node, as the running kernel reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTopo {
    /// Online CPUs.
    pub cpus: BTreeSet<usize>,
    /// CPUs sharing each last-level cache, ordered by their lowest CPU.
    pub llcs: Vec<BTreeSet<usize>>,
    /// CPUs of each NUMA node that has any, ordered by node id.
    pub nodes: Vec<BTreeSet<usize>>,
    /// SMT sibling groups with more than one CPU.
    pub smt_groups: Vec<BTreeSet<usize>>,
}

fn read_list(path: &Path) -> Option<BTreeSet<usize>> {
    let text = std::fs::read_to_string(path).ok()?;
    let cpus = ktstr_topology::parse_cpu_list(text.trim()).ok()?;
    Some(cpus.into_iter().map(|c| c as usize).collect())
}

impl CpuTopo {
    /// Reads `/sys/devices/system/{cpu,node}`.
    pub fn from_sysfs() -> std::io::Result<CpuTopo> {
        Self::from_sysfs_at(Path::new("/sys/devices/system"))
    }

    /// Reads the layout under `root` (a copy of `/sys/devices/system` in tests).
    pub fn from_sysfs_at(root: &Path) -> std::io::Result<CpuTopo> {
        let cpu_dir = root.join("cpu");
        let cpus = read_list(&cpu_dir.join("online")).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("cannot read {}", cpu_dir.join("online").display()),
            )
        })?;
        let mut llcs: Vec<BTreeSet<usize>> = Vec::new();
        let mut smt: Vec<BTreeSet<usize>> = Vec::new();
        for &cpu in &cpus {
            let base = cpu_dir.join(format!("cpu{cpu}"));
            let llc = read_list(&base.join("cache/index3/shared_cpu_list"))
                .or_else(|| read_list(&base.join("topology/package_cpus_list")))
                .or_else(|| read_list(&base.join("topology/core_siblings_list")))
                .unwrap_or_else(|| cpus.clone());
            let llc: BTreeSet<usize> = llc.intersection(&cpus).copied().collect();
            if !llcs.contains(&llc) {
                llcs.push(llc);
            }
            if let Some(sib) = read_list(&base.join("topology/thread_siblings_list")) {
                if sib.len() > 1 && !smt.contains(&sib) {
                    smt.push(sib);
                }
            }
        }
        llcs.sort_by_key(|s| s.iter().next().copied());
        let mut nodes = Vec::new();
        let node_dir = root.join("node");
        let mut ids: Vec<usize> = std::fs::read_dir(&node_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("node")?
                            .parse::<usize>()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        for id in ids {
            if let Some(list) = read_list(&node_dir.join(format!("node{id}/cpulist"))) {
                let list: BTreeSet<usize> = list.intersection(&cpus).copied().collect();
                if !list.is_empty() {
                    nodes.push(list);
                }
            }
        }
        if nodes.is_empty() {
            nodes.push(cpus.clone());
        }
        Ok(CpuTopo {
            cpus,
            llcs,
            nodes,
            smt_groups: smt,
        })
    }

    /// Online CPUs in order.
    pub fn cpu_vec(&self) -> Vec<usize> {
        self.cpus.iter().copied().collect()
    }

    /// Number of online CPUs.
    pub fn total_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// The LLC index holding `cpu`.
    pub fn llc_of(&self, cpu: usize) -> Option<usize> {
        self.llcs.iter().position(|l| l.contains(&cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_llcs_nodes_and_siblings() {
        let dir = std::env::temp_dir().join(format!("ktstr-topo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, "cpu/online", "0-3\n");
        for cpu in 0..4 {
            let llc = if cpu < 2 { "0-1" } else { "2-3" };
            let sib = format!("{cpu}");
            write(
                &dir,
                &format!("cpu/cpu{cpu}/cache/index3/shared_cpu_list"),
                llc,
            );
            write(
                &dir,
                &format!("cpu/cpu{cpu}/topology/thread_siblings_list"),
                &sib,
            );
        }
        write(&dir, "node/node0/cpulist", "0-1\n");
        write(&dir, "node/node1/cpulist", "2-3\n");
        write(&dir, "node/node2/cpulist", "\n");
        let t = CpuTopo::from_sysfs_at(&dir).unwrap();
        assert_eq!(t.total_cpus(), 4);
        assert_eq!(t.llcs.len(), 2);
        assert_eq!(t.llcs[1], BTreeSet::from([2, 3]));
        assert_eq!(t.nodes.len(), 2);
        assert!(t.smt_groups.is_empty());
        assert_eq!(t.llc_of(3), Some(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_host_has_a_layout() {
        let t = CpuTopo::from_sysfs().unwrap();
        assert!(t.total_cpus() >= 1);
        assert_eq!(
            t.llcs.iter().map(BTreeSet::len).sum::<usize>(),
            t.total_cpus()
        );
    }
}
