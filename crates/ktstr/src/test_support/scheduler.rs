//! Schedulers as data: which binary, its arguments, the topology it wants, its checks.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_assert::Assert;

use super::gauntlet::TopologyConstraints;

/// Where a scheduler's binary comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SchedulerSpec {
    /// No binary: the kernel's default (EEVDF).
    Eevdf,
    /// Found by name: `KTSTR_SCHEDULER`, then the ktstr scheduler cache, then `PATH`,
    /// then a binary built beside the test binary, then `cargo build --bin NAME` in the workspace.
    Discover(&'static str),
    /// This absolute path.
    Path(&'static str),
}

/// A sysctl a scheduler's tests set in the guest before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    /// Its key, e.g. `kernel.sched_rt_runtime_us`.
    pub key: &'static str,
    /// The value written.
    pub value: &'static str,
}

impl Sysctl {
    /// `key = value`.
    pub const fn new(key: &'static str, value: &'static str) -> Self {
        Sysctl { key, value }
    }
}

/// Every scheduler of the binary declared with `declare_scheduler!`, gathered at link time.
#[linkme::distributed_slice]
pub static KTSTR_SCHEDULERS: [&'static Scheduler];

/// The scheduler declared with `declare_scheduler!` under `name` (its `name = ".."` key).
pub fn declared_scheduler(name: &str) -> Option<&'static Scheduler> {
    KTSTR_SCHEDULERS.iter().copied().find(|s| s.name == name)
}

/// A scheduler under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduler {
    /// Name used in reports.
    pub name: &'static str,
    /// Its binary.
    pub binary: SchedulerSpec,
    /// Its arguments.
    pub sched_args: &'static [&'static str],
    /// Preferred topology: (numa_nodes, llcs in all, cores per LLC, threads per core).
    pub topology: (u32, u32, u32, u32),
    /// Checks every test of this scheduler gets (a test's own keys win).
    pub assert: Assert,
    /// Parent cgroup of the workload cgroups for this scheduler's tests.
    pub cgroup_parent: Option<&'static str>,
    /// Sysctls set in the guest before the scheduler starts.
    pub sysctls: &'static [Sysctl],
    /// Extra kernel command-line arguments for its tests.
    pub kargs: &'static [&'static str],
    /// The topologies its tests accept (each test's own keys win).
    pub constraints: TopologyConstraints,
}

impl Scheduler {
    /// The kernel's default scheduler: no sched_ext binary.
    pub const EEVDF: Scheduler = Scheduler {
        name: "eevdf",
        binary: SchedulerSpec::Eevdf,
        sched_args: &[],
        topology: (1, 1, 2, 1),
        assert: Assert::NO_OVERRIDES,
        cgroup_parent: None,
        sysctls: &[],
        kargs: &[],
        constraints: TopologyConstraints::DEFAULT,
    };

    /// A scheduler called `name`, discovered by that name until [`Scheduler::binary`] says otherwise.
    pub const fn named(name: &'static str) -> Scheduler {
        Scheduler {
            name,
            binary: SchedulerSpec::Discover(name),
            ..Scheduler::EEVDF
        }
    }

    /// Sets where the binary comes from.
    pub const fn binary(mut self, spec: SchedulerSpec) -> Self {
        self.binary = spec;
        self
    }

    /// Discovers the binary by this name.
    pub const fn binary_discover(self, name: &'static str) -> Self {
        self.binary(SchedulerSpec::Discover(name))
    }

    /// Sets its arguments.
    pub const fn sched_args(mut self, args: &'static [&'static str]) -> Self {
        self.sched_args = args;
        self
    }

    /// Sets its preferred topology (numa_nodes, llcs in all, cores per LLC, threads per core).
    pub const fn topology(mut self, numa: u32, llcs: u32, cores: u32, threads: u32) -> Self {
        self.topology = (numa, llcs, cores, threads);
        self
    }

    /// Sets checks for all its tests.
    pub const fn assert(mut self, assert: Assert) -> Self {
        self.assert = assert;
        self
    }

    /// Sets the parent cgroup of the workload cgroups.
    pub const fn cgroup_parent(mut self, path: &'static str) -> Self {
        self.cgroup_parent = Some(path);
        self
    }

    /// Sets sysctls written in the guest before it starts.
    pub const fn sysctls(mut self, sysctls: &'static [Sysctl]) -> Self {
        self.sysctls = sysctls;
        self
    }

    /// Sets extra kernel command-line arguments for its tests.
    pub const fn kargs(mut self, kargs: &'static [&'static str]) -> Self {
        self.kargs = kargs;
        self
    }

    /// Sets the topologies its tests accept.
    pub const fn constraints(mut self, c: TopologyConstraints) -> Self {
        self.constraints = c;
        self
    }

    /// Sets the fewest NUMA nodes its tests accept.
    pub const fn min_numa_nodes(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_min_numa_nodes(n);
        self
    }

    /// Sets the most NUMA nodes its tests accept.
    pub const fn max_numa_nodes(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_max_numa_nodes(n);
        self
    }

    /// Sets the fewest LLCs its tests accept.
    pub const fn min_llcs(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_min_llcs(n);
        self
    }

    /// Sets the most LLCs its tests accept.
    pub const fn max_llcs(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_max_llcs(n);
        self
    }

    /// Its tests accept only topologies with SMT (or any).
    pub const fn requires_smt(mut self, on: bool) -> Self {
        self.constraints = self.constraints.with_requires_smt(on);
        self
    }

    /// Sets the fewest CPUs its tests accept.
    pub const fn min_cpus(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_min_cpus(n);
        self
    }

    /// Sets the most CPUs its tests accept.
    pub const fn max_cpus(mut self, n: u32) -> Self {
        self.constraints = self.constraints.with_max_cpus(n);
        self
    }

    /// `Err(why)` when its constraints are inconsistent or its own topology is outside them
    /// (`declare_scheduler!` evaluates it in a `const`).
    pub const fn check_constraints(&self) -> Result<(), &'static str> {
        if let Err(why) = self.constraints.consistent() {
            return Err(why);
        }
        let (n, l, c, t) = self.topology;
        let cpus = l.saturating_mul(c).saturating_mul(t);
        self.constraints.check_shape(n, l, cpus, t)
    }

    /// True unless this is the kernel's default scheduler.
    pub const fn has_active_scheduling(&self) -> bool {
        !matches!(self.binary, SchedulerSpec::Eevdf)
    }

    /// True when a sched_ext (BPF) scheduler binary runs.
    pub const fn has_bpf_scheduler(&self) -> bool {
        self.has_active_scheduling()
    }

    /// The file name its binary has in the guest (`None` for EEVDF).
    pub fn binary_name(&self) -> Option<&'static str> {
        match self.binary {
            SchedulerSpec::Eevdf => None,
            SchedulerSpec::Discover(n) => Some(n),
            SchedulerSpec::Path(p) => Some(p.rsplit('/').next().unwrap_or(p)),
        }
    }

    /// Where its binary is in the guest (`None` for EEVDF).
    pub fn guest_path(&self) -> Option<String> {
        self.binary_name()
            .map(|n| format!("{}/{n}", crate::sched::GUEST_SCHED_DIR))
    }

    /// How the guest starts it: its own arguments (`None` for EEVDF).
    pub fn guest_job(&self) -> Option<crate::sched::SchedulerJob> {
        Some(crate::sched::SchedulerJob {
            path: self.guest_path()?,
            args: self.sched_args.iter().map(|a| a.to_string()).collect(),
            attach_timeout_ms: super::runner::TEST_ATTACH_TIMEOUT.as_millis() as u64,
        })
    }

    /// Finds the binary on the host (`None` for EEVDF).
    pub fn resolve_binary(&self) -> Result<Option<PathBuf>, String> {
        match self.binary {
            SchedulerSpec::Eevdf => Ok(None),
            SchedulerSpec::Path(p) => {
                let p = PathBuf::from(p);
                if p.is_file() {
                    Ok(Some(p))
                } else {
                    Err(format!(
                        "scheduler {}: {} does not exist",
                        self.name,
                        p.display()
                    ))
                }
            }
            SchedulerSpec::Discover(name) => discover(name).map(Some),
        }
    }
}

/// `KTSTR_SCHEDULER`, then `<cache>/schedulers/NAME`, then `PATH`, then a binary of that name
/// already built beside the running test binary, then `cargo build --bin NAME`.
fn discover(name: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KTSTR_SCHEDULER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("KTSTR_SCHEDULER={} does not exist", p.display()))
        };
    }
    match find_built(name) {
        Some(p) => Ok(p),
        None => cargo_build(name),
    }
}

/// A built binary called `name`: in `<cache>/schedulers/`, then `PATH`, then beside the
/// running executable (or in `target/<profile>/` when it runs from `target/<profile>/deps/`).
pub fn find_built(name: &str) -> Option<PathBuf> {
    let cached = crate::kernel::cache_root().join("schedulers").join(name);
    if cached.is_file() {
        return Some(cached);
    }
    crate::initramfs::find_in_path(name).or_else(|| beside_exe(name))
}

/// `name` in the running executable's directory, or in its parent when that is `deps/`.
pub fn beside_exe(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let profile = if dir.file_name()? == "deps" {
        dir.parent()?
    } else {
        dir
    };
    [dir.join(name), profile.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Builds binary `name` of the workspace the tests run from and returns it.
fn cargo_build(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "scheduler {name}: not in KTSTR_SCHEDULER, the scheduler cache or PATH, \
                 and no cargo workspace to build it in"
            )
        })?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args([
            "build",
            "--workspace",
            "--bin",
            name,
            "--message-format=json",
        ])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("scheduler {name}: running cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(format!(
            "scheduler {name}: `cargo build --workspace --bin {name}` failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    executable_from_messages(&String::from_utf8_lossy(&out.stdout), name)
        .ok_or_else(|| format!("scheduler {name}: cargo built, but reported no binary {name}"))
}

/// The `executable` of the compiler-artifact message for binary `name`.
fn executable_from_messages(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .find(|p| Path::new(p).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    static S: Scheduler = Scheduler::named("scx_x")
        .sched_args(&["--slice-us", "500"])
        .topology(1, 2, 4, 1)
        .sysctls(&[Sysctl::new("kernel.sched_rt_runtime_us", "-1")])
        .kargs(&["nohz_full=1"]);

    #[test]
    fn builders_are_const_and_keep_defaults() {
        assert_eq!(S.binary, SchedulerSpec::Discover("scx_x"));
        assert_eq!(S.topology, (1, 2, 4, 1));
        assert_eq!(S.sysctls[0].key, "kernel.sched_rt_runtime_us");
        assert_eq!(S.kargs, ["nohz_full=1"]);
        assert!(S.has_bpf_scheduler());
        assert!(!Scheduler::EEVDF.has_active_scheduling());
        assert_eq!(Scheduler::EEVDF.resolve_binary(), Ok(None));
        let missing = Scheduler::named("x").binary(SchedulerSpec::Path("/nonexistent/x"));
        assert!(missing
            .resolve_binary()
            .unwrap_err()
            .contains("/nonexistent/x"));
    }

    #[test]
    fn cargo_messages_name_the_executable() {
        let exe = std::env::current_exe().unwrap();
        let msg = serde_json::json!({
            "reason": "compiler-artifact",
            "target": {"name": "me"},
            "executable": exe,
        });
        let text = format!("{{\"reason\":\"build-script-executed\"}}\n{msg}\n");
        assert_eq!(executable_from_messages(&text, "me"), Some(exe));
        assert_eq!(executable_from_messages(&text, "other"), None);
    }
}
