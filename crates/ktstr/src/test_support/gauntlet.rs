//! Topology constraints and the gauntlet: the topology presets a test runs on under
//! `cargo ktstr test --gauntlet`, each one a test named `gauntlet/<test>/<preset>`, filtered
//! by the test's [`TopologyConstraints`] and by what the host can hold.

use ktstr_topology::Topology;

/// Which topologies a test (or every test of a scheduler) accepts. The default admits one
/// NUMA node, 1 to 12 LLCs and 1 to 192 CPUs, with or without SMT, as the existing ktstr's.
///
/// A test takes its scheduler's constraints and changes those its keys name. Constraints no
/// topology meets, or a test's (or scheduler's) own topology outside them, do not compile:
/// the macros name the key where the values are literals, and a `const` check of the
/// declared test or scheduler catches the rest, such as a topology that comes from the
/// scheduler:
///
/// ```compile_fail,E0080
/// use ktstr::prelude::*;
///
/// declare_scheduler!(WIDE, { name = "wide", binary = "wide", topology = (1, 4, 4, 1) });
///
/// // WIDE's 16 CPUs, but the test allows 8.
/// #[ktstr_test(scheduler = WIDE, max_cpus = 8)]
/// fn too_big(ctx: &Ctx) -> Result<AssertResult> {
///     Ok(AssertResult::pass())
/// }
/// # fn main() {}
/// ```
///
/// The same test allowing 16 CPUs compiles:
///
/// ```no_run
/// use ktstr::prelude::*;
///
/// declare_scheduler!(WIDE, { name = "wide", binary = "wide", topology = (1, 4, 4, 1) });
///
/// #[ktstr_test(scheduler = WIDE, max_cpus = 16)]
/// fn fits(ctx: &Ctx) -> Result<AssertResult> {
///     Ok(AssertResult::pass())
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyConstraints {
    /// Fewest NUMA nodes.
    pub min_numa_nodes: u32,
    /// Most NUMA nodes (`None`: no bound).
    pub max_numa_nodes: Option<u32>,
    /// Fewest LLCs, across all nodes.
    pub min_llcs: u32,
    /// Most LLCs, across all nodes (`None`: no bound).
    pub max_llcs: Option<u32>,
    /// Only topologies with more than one thread per core.
    pub requires_smt: bool,
    /// Fewest CPUs.
    pub min_cpus: u32,
    /// Most CPUs (`None`: no bound).
    pub max_cpus: Option<u32>,
}

impl Default for TopologyConstraints {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `min <= max`, or no max.
const fn range_ok(min: u32, max: Option<u32>) -> bool {
    match max {
        Some(m) => min <= m,
        None => true,
    }
}

impl TopologyConstraints {
    /// 1 NUMA node, 1..=12 LLCs, 1..=192 CPUs, SMT not required.
    pub const DEFAULT: TopologyConstraints = TopologyConstraints {
        min_numa_nodes: 1,
        max_numa_nodes: Some(1),
        min_llcs: 1,
        max_llcs: Some(12),
        requires_smt: false,
        min_cpus: 1,
        max_cpus: Some(192),
    };

    /// Sets the fewest NUMA nodes.
    pub const fn with_min_numa_nodes(mut self, n: u32) -> Self {
        self.min_numa_nodes = n;
        self
    }

    /// Sets the most NUMA nodes.
    pub const fn with_max_numa_nodes(mut self, n: u32) -> Self {
        self.max_numa_nodes = Some(n);
        self
    }

    /// Removes the bound on NUMA nodes.
    pub const fn without_max_numa_nodes(mut self) -> Self {
        self.max_numa_nodes = None;
        self
    }

    /// Sets the fewest LLCs.
    pub const fn with_min_llcs(mut self, n: u32) -> Self {
        self.min_llcs = n;
        self
    }

    /// Sets the most LLCs.
    pub const fn with_max_llcs(mut self, n: u32) -> Self {
        self.max_llcs = Some(n);
        self
    }

    /// Removes the bound on LLCs.
    pub const fn without_max_llcs(mut self) -> Self {
        self.max_llcs = None;
        self
    }

    /// Requires SMT (or not).
    pub const fn with_requires_smt(mut self, on: bool) -> Self {
        self.requires_smt = on;
        self
    }

    /// SMT not required.
    pub const fn without_requires_smt(self) -> Self {
        self.with_requires_smt(false)
    }

    /// Sets the fewest CPUs.
    pub const fn with_min_cpus(mut self, n: u32) -> Self {
        self.min_cpus = n;
        self
    }

    /// Sets the most CPUs.
    pub const fn with_max_cpus(mut self, n: u32) -> Self {
        self.max_cpus = Some(n);
        self
    }

    /// Removes the bound on CPUs.
    pub const fn without_max_cpus(mut self) -> Self {
        self.max_cpus = None;
        self
    }

    /// `Err(what)` when a minimum is above its maximum (or a minimum is 0): no topology
    /// could pass. Usable in `const` context, where ktstr checks declared tests.
    pub const fn consistent(&self) -> Result<(), &'static str> {
        if self.min_numa_nodes == 0 || self.min_llcs == 0 || self.min_cpus == 0 {
            return Err("impossible topology constraints: min_numa_nodes, min_llcs and min_cpus are at least 1");
        }
        if !range_ok(self.min_numa_nodes, self.max_numa_nodes) {
            return Err("impossible topology constraints: min_numa_nodes is above max_numa_nodes");
        }
        if !range_ok(self.min_llcs, self.max_llcs) {
            return Err("impossible topology constraints: min_llcs is above max_llcs");
        }
        if !range_ok(self.min_cpus, self.max_cpus) {
            return Err("impossible topology constraints: min_cpus is above max_cpus");
        }
        Ok(())
    }

    /// `Err(which bound)` when a topology of `numa_nodes` nodes, `llcs` LLCs in all and
    /// `cpus` CPUs with `threads` per core is outside these constraints; `const`, for
    /// compile-time checks of declared topologies.
    pub const fn check_shape(
        &self,
        numa_nodes: u32,
        llcs: u32,
        cpus: u32,
        threads: u32,
    ) -> Result<(), &'static str> {
        if numa_nodes < self.min_numa_nodes {
            return Err("the topology has fewer NUMA nodes than its min_numa_nodes");
        }
        if let Some(m) = self.max_numa_nodes {
            if numa_nodes > m {
                return Err("the topology has more NUMA nodes than its max_numa_nodes");
            }
        }
        if llcs < self.min_llcs {
            return Err("the topology has fewer LLCs than its min_llcs");
        }
        if let Some(m) = self.max_llcs {
            if llcs > m {
                return Err("the topology has more LLCs than its max_llcs");
            }
        }
        if self.requires_smt && threads < 2 {
            return Err(
                "the topology has one thread per core, and its constraints say requires_smt",
            );
        }
        if cpus < self.min_cpus {
            return Err("the topology has fewer CPUs than its min_cpus");
        }
        if let Some(m) = self.max_cpus {
            if cpus > m {
                return Err("the topology has more CPUs than its max_cpus");
            }
        }
        Ok(())
    }

    /// `Ok` when `t` is admitted, else why not, with the numbers (`9 CPUs > max_cpus 4`).
    pub fn admits(&self, t: &Topology) -> Result<(), String> {
        self.admits_shape(t.numa_nodes, t.total_llcs(), t.total_cpus(), t.threads)
    }

    /// [`TopologyConstraints::admits`] for `nodes` NUMA nodes, `llcs` LLCs in all, `cpus`
    /// CPUs and `threads` per core.
    pub fn admits_shape(
        &self,
        nodes: u32,
        llcs: u32,
        cpus: u32,
        threads: u32,
    ) -> Result<(), String> {
        let over = |what: &str, n: u32, key: &str, bound: Option<u32>| match bound {
            Some(b) if n > b => Err(format!("{n} {what} > {key} {b}")),
            _ => Ok(()),
        };
        let under = |what: &str, n: u32, key: &str, bound: u32| {
            if n < bound {
                Err(format!("{n} {what} < {key} {bound}"))
            } else {
                Ok(())
            }
        };
        under("NUMA nodes", nodes, "min_numa_nodes", self.min_numa_nodes)?;
        over("NUMA nodes", nodes, "max_numa_nodes", self.max_numa_nodes)?;
        under("LLCs", llcs, "min_llcs", self.min_llcs)?;
        over("LLCs", llcs, "max_llcs", self.max_llcs)?;
        if self.requires_smt && threads < 2 {
            return Err("no SMT, and requires_smt".into());
        }
        under("CPUs", cpus, "min_cpus", self.min_cpus)?;
        over("CPUs", cpus, "max_cpus", self.max_cpus)
    }
}

/// One gauntlet topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopoPreset {
    /// Its name, as in `gauntlet/<test>/<name>`.
    pub name: &'static str,
    /// What it is, in a few words.
    pub description: &'static str,
    /// NUMA nodes.
    pub numa_nodes: u32,
    /// LLCs across all nodes.
    pub llcs: u32,
    /// Cores per LLC (for a non-uniform preset, its widest LLC).
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Cores of each LLC when they differ (`192cpu-11llc-smt`). ktstr's topologies are
    /// uniform, so such a preset is listed but never run: the gauntlet skips it.
    pub llc_cores: Option<&'static [u32]>,
}

impl TopoPreset {
    const fn uniform(
        name: &'static str,
        description: &'static str,
        numa_nodes: u32,
        llcs: u32,
        cores: u32,
        threads: u32,
        memory_mib: u64,
    ) -> TopoPreset {
        TopoPreset {
            name,
            description,
            numa_nodes,
            llcs,
            cores,
            threads,
            memory_mib,
            llc_cores: None,
        }
    }

    /// False for a preset of unequal LLCs, which the gauntlet does not run (as the existing
    /// ktstr keeps `192cpu-11llc-smt` for its verifier sweep).
    pub fn in_gauntlet(&self) -> bool {
        self.llc_cores.is_none()
    }

    /// Its CPUs.
    pub fn cpus(&self) -> u32 {
        match self.llc_cores {
            Some(per_llc) => per_llc.iter().sum::<u32>() * self.threads,
            None => self.llcs * self.cores * self.threads,
        }
    }

    /// The topology it boots, or why it cannot be one ktstr builds.
    pub fn topology(&self) -> Result<Topology, String> {
        if self.llc_cores.is_some() {
            return Err("its LLCs differ in size, which ktstr's topologies cannot express".into());
        }
        Topology::with_total_llcs(self.numa_nodes, self.llcs, self.cores, self.threads)
            .map_err(|e| e.to_string())
    }
}

/// Cores of each LLC of `192cpu-11llc-smt`: ten of 9 and one of 6.
const UNEVEN_11LLC_CORES: [u32; 11] = [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 6];

/// The gauntlet's presets, with the existing ktstr's names and shapes (x86_64's set).
/// Multi-NUMA presets, those over 12 LLCs and those over 192 CPUs are outside
/// [`TopologyConstraints::DEFAULT`]: a test opts in by raising its bounds.
pub const GAUNTLET_PRESETS: &[TopoPreset] = &[
    TopoPreset::uniform("4cpu-1llc-nosmt", "4 CPUs, 1 LLC", 1, 1, 4, 1, 2048),
    TopoPreset::uniform("4cpu-2llc-nosmt", "4 CPUs, 2 LLCs", 1, 2, 2, 1, 2048),
    TopoPreset::uniform("9cpu-3llc-nosmt", "9 CPUs, 3 LLCs (odd)", 1, 3, 3, 1, 2048),
    TopoPreset::uniform(
        "15cpu-5llc-nosmt",
        "15 CPUs, 5 LLCs (prime)",
        1,
        5,
        3,
        1,
        2048,
    ),
    TopoPreset::uniform(
        "14cpu-7llc-nosmt",
        "14 CPUs, 7 LLCs (prime)",
        1,
        7,
        2,
        1,
        2048,
    ),
    TopoPreset::uniform("8cpu-2llc-smt", "8 CPUs, 2 LLCs, SMT", 1, 2, 2, 2, 2048),
    TopoPreset::uniform("12cpu-3llc-smt", "12 CPUs, 3 LLCs, SMT", 1, 3, 2, 2, 2048),
    TopoPreset::uniform("32cpu-4llc-smt", "32 CPUs, 4 LLCs, SMT", 1, 4, 4, 2, 2048),
    TopoPreset::uniform("64cpu-8llc-smt", "64 CPUs, 8 LLCs, SMT", 1, 8, 4, 2, 2048),
    TopoPreset::uniform(
        "128cpu-4llc-smt",
        "128 CPUs, 4 LLCs, SMT",
        1,
        4,
        16,
        2,
        2048,
    ),
    TopoPreset::uniform("128cpu-8llc-smt", "128 CPUs, 8 LLCs, SMT", 1, 8, 8, 2, 2048),
    TopoPreset::uniform(
        "240cpu-15llc-smt",
        "240 CPUs, 15 LLCs, SMT",
        1,
        15,
        8,
        2,
        2048,
    ),
    TopoPreset::uniform(
        "252cpu-14llc-smt",
        "252 CPUs, 14 LLCs, SMT",
        1,
        14,
        9,
        2,
        4096,
    ),
    TopoPreset::uniform("32cpu-4llc-nosmt", "32 CPUs, 4 LLCs", 1, 4, 8, 1, 2048),
    TopoPreset::uniform("64cpu-8llc-nosmt", "64 CPUs, 8 LLCs", 1, 8, 8, 1, 2048),
    TopoPreset::uniform("128cpu-4llc-nosmt", "128 CPUs, 4 LLCs", 1, 4, 32, 1, 2048),
    TopoPreset::uniform("128cpu-8llc-nosmt", "128 CPUs, 8 LLCs", 1, 8, 16, 1, 2048),
    TopoPreset::uniform(
        "240cpu-15llc-nosmt",
        "240 CPUs, 15 LLCs",
        1,
        15,
        16,
        1,
        2048,
    ),
    TopoPreset::uniform(
        "252cpu-14llc-nosmt",
        "252 CPUs, 14 LLCs",
        1,
        14,
        18,
        1,
        4096,
    ),
    TopoPreset::uniform(
        "2numa-32cpu-2llc-smt",
        "32 CPUs, 2 NUMA nodes, one LLC each, SMT",
        2,
        2,
        8,
        2,
        2048,
    ),
    TopoPreset::uniform(
        "2numa-16cpu-4llc-nosmt",
        "16 CPUs, 2 NUMA nodes, 4 LLCs",
        2,
        4,
        4,
        1,
        2048,
    ),
    TopoPreset::uniform(
        "2numa-128cpu-8llc-smt",
        "128 CPUs, 2 NUMA nodes, 8 LLCs, SMT",
        2,
        8,
        8,
        2,
        2048,
    ),
    TopoPreset::uniform(
        "2numa-128cpu-8llc-nosmt",
        "128 CPUs, 2 NUMA nodes, 8 LLCs",
        2,
        8,
        16,
        1,
        2048,
    ),
    TopoPreset::uniform(
        "4numa-32cpu-8llc-nosmt",
        "32 CPUs, 4 NUMA nodes, 8 LLCs",
        4,
        8,
        4,
        1,
        2048,
    ),
    TopoPreset::uniform(
        "4numa-192cpu-12llc-smt",
        "192 CPUs, 4 NUMA nodes, 12 LLCs, SMT",
        4,
        12,
        8,
        2,
        4096,
    ),
    TopoPreset {
        name: "192cpu-11llc-smt",
        description: "192 CPUs, 11 LLCs of unequal size (ten of 18 CPUs, one of 12), SMT",
        numa_nodes: 1,
        llcs: 11,
        cores: 9,
        threads: 2,
        memory_mib: 4096,
        llc_cores: Some(&UNEVEN_11LLC_CORES),
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static TopoPreset> {
    GAUNTLET_PRESETS.iter().find(|p| p.name == name)
}

/// The name of a test's run on a preset: `gauntlet/<test>/<preset>`.
pub fn variant_name(test: &str, preset: &str) -> String {
    format!("gauntlet/{test}/{preset}")
}

/// `gauntlet/<test>/<preset>` split into its test and preset (`None` for other names).
pub fn parse_variant_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("gauntlet/")?;
    let (test, preset) = rest.rsplit_once('/')?;
    (!test.is_empty() && !preset.is_empty()).then_some((test, preset))
}

/// What the gauntlet does with one preset for one test on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Boot it; `single_tcg` says why it runs under single-threaded TCG (more vCPUs than
    /// the host has CPUs), if it does.
    Run {
        /// The reason, when the preset is bigger than the host.
        single_tcg: Option<String>,
    },
    /// The test's constraints reject it (the reason names the bound).
    Rejected(String),
    /// Admitted, but this host cannot run it (its memory does not fit, or it is a shape
    /// ktstr cannot build).
    Skip(String),
}

/// The host's size, as the gauntlet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSize {
    /// CPUs this process may use.
    pub cpus: u32,
    /// MemTotal, MiB (`None`: unknown, no preset is skipped for memory).
    pub memory_mib: Option<u64>,
}

impl HostSize {
    /// This host: the CPUs available to this process and `/proc/meminfo`'s MemTotal.
    pub fn here() -> HostSize {
        HostSize {
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            memory_mib: crate::run::host_memory_mib(),
        }
    }
}

/// The guest memory of `preset` for a test that asked for `test_memory_mib`: the larger.
pub fn preset_memory_mib(preset: &TopoPreset, test_memory_mib: Option<u64>) -> u64 {
    test_memory_mib.map_or(preset.memory_mib, |m| m.max(preset.memory_mib))
}

/// Decides what becomes of `preset` for a test with `constraints` (and `test_memory_mib`)
/// on `host`.
pub fn plan(
    preset: &TopoPreset,
    constraints: &TopologyConstraints,
    test_memory_mib: Option<u64>,
    host: HostSize,
) -> Plan {
    if let Err(why) = constraints.admits_shape(
        preset.numa_nodes,
        preset.llcs,
        preset.cpus(),
        preset.threads,
    ) {
        return Plan::Rejected(why);
    }
    let topology = match preset.topology() {
        Ok(t) => t,
        Err(why) => return Plan::Skip(why),
    };
    let memory = preset_memory_mib(preset, test_memory_mib);
    if let Some(host_mib) = host.memory_mib {
        if memory > host_mib {
            return Plan::Skip(format!(
                "its {memory} MiB of guest memory do not fit in this host's {host_mib} MiB (MemTotal)"
            ));
        }
    }
    let cpus = topology.total_cpus();
    let single_tcg = (cpus > host.cpus).then(|| {
        format!(
            "{cpus} vCPUs on {} host CPUs: single-threaded TCG",
            host.cpus
        )
    });
    Plan::Run { single_tcg }
}

/// Set to `1` (by `cargo ktstr test --gauntlet`) to list and run the gauntlet.
pub const GAUNTLET_ENV: &str = "KTSTR_GAUNTLET";
/// Set to `1` (by `cargo ktstr test -v`) for the gauntlet to say why it leaves presets out.
pub const VERBOSE_ENV: &str = "KTSTR_VERBOSE";

/// Files in `$KTSTR_RESULTS_DIR` that list the presets a binary's tests reject
/// (`<prefix><pid>.txt`, one `gauntlet/<test>/<preset>: not run: <why>` a line).
pub const REJECTED_PREFIX: &str = "gauntlet-rejected-";

/// True under `cargo ktstr test --gauntlet` (`$KTSTR_GAUNTLET=1`).
pub fn gauntlet_mode() -> bool {
    std::env::var(GAUNTLET_ENV).is_ok_and(|v| v == "1")
}

/// The gauntlet of `tests` on `host`: the `gauntlet/<test>/<preset>` names to list (those
/// the constraints admit, including those the host will skip, so that the skip is reported),
/// and one line per preset a test's constraints reject, saying why.
/// `ignored` lists the runs of `#[ignore]`d tests (libtest's `--ignored`), else the others'.
pub fn listing<'a>(
    tests: impl IntoIterator<Item = &'a super::KtstrTestEntry>,
    host: HostSize,
    ignored: bool,
) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut rejected = Vec::new();
    for t in tests
        .into_iter()
        .filter(|t| !t.host_only && t.ignore == ignored)
    {
        for p in GAUNTLET_PRESETS.iter().filter(|p| p.in_gauntlet()) {
            match plan(p, &t.constraints, t.memory_mib, host) {
                Plan::Rejected(why) => {
                    rejected.push(format!("{}: not run: {why}", variant_name(t.name, p.name)))
                }
                Plan::Run { .. } | Plan::Skip(_) => names.push(variant_name(t.name, p.name)),
            }
        }
    }
    (names, rejected)
}

/// What libtest's command line (as nextest and `cargo test` give it) asks of the gauntlet.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LibtestArgs {
    /// `--list`.
    pub list: bool,
    /// `--ignored`: list (or run) the ignored tests, the gauntlet runs of `#[ignore]`d tests
    /// among them.
    pub ignored: bool,
    /// `--exact`: filters are whole names.
    pub exact: bool,
    /// Name filters.
    pub filters: Vec<String>,
    /// `--skip` filters.
    pub skips: Vec<String>,
}

impl LibtestArgs {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> LibtestArgs {
        let mut out = LibtestArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--list" => out.list = true,
                "--ignored" => out.ignored = true,
                "--exact" => out.exact = true,
                "--skip" => out.skips.extend(it.next().cloned()),
                "--format" | "--test-threads" | "--color" | "--logfile" | "--shuffle-seed"
                | "-Z" => {
                    let _ = it.next();
                }
                a if a.starts_with('-') => {}
                a => out.filters.push(a.to_string()),
            }
        }
        out
    }

    /// True when `name` passes the filters.
    pub fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                f == name
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skips.iter().any(hit)
    }

    /// The `gauntlet/..` names asked for by name (what nextest runs: `--exact NAME`).
    pub fn gauntlet_runs(&self) -> Vec<&str> {
        if self.list {
            return Vec::new();
        }
        self.filters
            .iter()
            .map(String::as_str)
            .filter(|f| parse_variant_name(f).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG_HOST: HostSize = HostSize {
        cpus: 512,
        memory_mib: Some(1 << 20),
    };

    fn runs(c: &TopologyConstraints) -> Vec<&'static str> {
        GAUNTLET_PRESETS
            .iter()
            .filter(|p| matches!(plan(p, c, None, BIG_HOST), Plan::Run { .. }))
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn the_preset_table_has_upstreams_shapes() {
        // (name, NUMA nodes, LLCs, CPUs, SMT)
        let want: &[(&str, u32, u32, u32, bool)] = &[
            ("4cpu-1llc-nosmt", 1, 1, 4, false),
            ("4cpu-2llc-nosmt", 1, 2, 4, false),
            ("9cpu-3llc-nosmt", 1, 3, 9, false),
            ("15cpu-5llc-nosmt", 1, 5, 15, false),
            ("14cpu-7llc-nosmt", 1, 7, 14, false),
            ("8cpu-2llc-smt", 1, 2, 8, true),
            ("12cpu-3llc-smt", 1, 3, 12, true),
            ("32cpu-4llc-smt", 1, 4, 32, true),
            ("64cpu-8llc-smt", 1, 8, 64, true),
            ("128cpu-4llc-smt", 1, 4, 128, true),
            ("128cpu-8llc-smt", 1, 8, 128, true),
            ("240cpu-15llc-smt", 1, 15, 240, true),
            ("252cpu-14llc-smt", 1, 14, 252, true),
            ("32cpu-4llc-nosmt", 1, 4, 32, false),
            ("64cpu-8llc-nosmt", 1, 8, 64, false),
            ("128cpu-4llc-nosmt", 1, 4, 128, false),
            ("128cpu-8llc-nosmt", 1, 8, 128, false),
            ("240cpu-15llc-nosmt", 1, 15, 240, false),
            ("252cpu-14llc-nosmt", 1, 14, 252, false),
            ("2numa-32cpu-2llc-smt", 2, 2, 32, true),
            ("2numa-16cpu-4llc-nosmt", 2, 4, 16, false),
            ("2numa-128cpu-8llc-smt", 2, 8, 128, true),
            ("2numa-128cpu-8llc-nosmt", 2, 8, 128, false),
            ("4numa-32cpu-8llc-nosmt", 4, 8, 32, false),
            ("4numa-192cpu-12llc-smt", 4, 12, 192, true),
            ("192cpu-11llc-smt", 1, 11, 192, true),
        ];
        assert_eq!(GAUNTLET_PRESETS.len(), want.len());
        for &(name, nodes, llcs, cpus, smt) in want {
            let p = preset(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(
                (p.numa_nodes, p.llcs, p.cpus(), p.threads > 1),
                (nodes, llcs, cpus, smt),
                "{name}"
            );
            // The name says what it is.
            let smt_tag = if smt { "smt" } else { "nosmt" };
            assert!(name.ends_with(&format!("-{smt_tag}")), "{name}");
            assert!(name.contains(&format!("{cpus}cpu-{llcs}llc")), "{name}");
            assert!(p.description.contains(&format!("{cpus} CPUs")), "{name}");
            assert!(p.memory_mib >= 2048 && p.memory_mib >= u64::from(cpus) * 8);
            if p.llc_cores.is_none() {
                let t = p.topology().unwrap();
                assert_eq!((t.total_cpus(), t.total_llcs()), (cpus, llcs), "{name}");
            }
        }
        assert!(preset("192cpu-11llc-smt").unwrap().topology().is_err());
    }

    #[test]
    fn default_constraints_admit_upstreams_fifteen() {
        let admitted = runs(&TopologyConstraints::DEFAULT);
        assert_eq!(admitted.len(), 15, "{admitted:?}");
        for name in admitted {
            assert!(!name.contains("numa"), "{name}");
            assert!(
                !name.starts_with("240") && !name.starts_with("252"),
                "{name}"
            );
        }
        // Raising the NUMA bound opts in to the NUMA presets within the other bounds.
        let numa = runs(&TopologyConstraints::DEFAULT.with_max_numa_nodes(4));
        assert!(numa.contains(&"2numa-16cpu-4llc-nosmt"));
        assert!(numa.contains(&"4numa-192cpu-12llc-smt"));
        assert_eq!(numa.len(), 21, "{numa:?}");
    }

    #[test]
    fn each_bound_rejects_with_its_reason() {
        let c = TopologyConstraints::DEFAULT.with_max_cpus(4);
        assert_eq!(runs(&c), ["4cpu-1llc-nosmt", "4cpu-2llc-nosmt"]);
        let p = preset("9cpu-3llc-nosmt").unwrap();
        assert_eq!(
            plan(p, &c, None, BIG_HOST),
            Plan::Rejected("9 CPUs > max_cpus 4".into())
        );
        let smt = TopologyConstraints::DEFAULT.with_requires_smt(true);
        assert!(runs(&smt).iter().all(|n| n.ends_with("-smt")));
        assert_eq!(
            plan(preset("4cpu-1llc-nosmt").unwrap(), &smt, None, BIG_HOST),
            Plan::Rejected("no SMT, and requires_smt".into())
        );
        let llcs = TopologyConstraints::DEFAULT.with_min_llcs(8);
        assert_eq!(
            plan(preset("4cpu-2llc-nosmt").unwrap(), &llcs, None, BIG_HOST),
            Plan::Rejected("2 LLCs < min_llcs 8".into())
        );
        assert_eq!(
            runs(&llcs),
            [
                "64cpu-8llc-smt",
                "128cpu-8llc-smt",
                "64cpu-8llc-nosmt",
                "128cpu-8llc-nosmt"
            ]
        );
        let numa = TopologyConstraints::DEFAULT
            .with_min_numa_nodes(2)
            .without_max_numa_nodes();
        assert_eq!(
            plan(preset("4cpu-1llc-nosmt").unwrap(), &numa, None, BIG_HOST),
            Plan::Rejected("1 NUMA nodes < min_numa_nodes 2".into())
        );
        assert_eq!(
            plan(
                preset("2numa-16cpu-4llc-nosmt").unwrap(),
                &TopologyConstraints::DEFAULT,
                None,
                BIG_HOST
            ),
            Plan::Rejected("2 NUMA nodes > max_numa_nodes 1".into())
        );
        let min_cpus = TopologyConstraints::DEFAULT.with_min_cpus(100);
        assert!(runs(&min_cpus).iter().all(|n| n.starts_with("128")));
        let unbounded = TopologyConstraints::DEFAULT
            .without_max_cpus()
            .without_max_llcs()
            .without_max_numa_nodes();
        // Every preset ktstr can build; the uneven one is skipped, never rejected.
        assert_eq!(runs(&unbounded).len(), 25);
        assert!(matches!(
            plan(preset("192cpu-11llc-smt").unwrap(), &unbounded, None, BIG_HOST),
            Plan::Skip(w) if w.contains("differ in size")
        ));
    }

    #[test]
    fn host_size_decides_memory_skips_and_single_tcg() {
        let p = preset("4cpu-2llc-nosmt").unwrap();
        let c = TopologyConstraints::DEFAULT;
        let small = HostSize {
            cpus: 2,
            memory_mib: Some(1024),
        };
        assert_eq!(
            plan(p, &c, None, small),
            Plan::Skip(
                "its 2048 MiB of guest memory do not fit in this host's 1024 MiB (MemTotal)".into()
            )
        );
        // A test asking for more than the preset's memory gets it, and may not fit.
        assert_eq!(preset_memory_mib(p, Some(8192)), 8192);
        assert_eq!(preset_memory_mib(p, Some(256)), 2048);
        let mid = HostSize {
            cpus: 2,
            memory_mib: Some(4096),
        };
        assert!(matches!(plan(p, &c, Some(8192), mid), Plan::Skip(_)));
        assert_eq!(
            plan(p, &c, None, mid),
            Plan::Run {
                single_tcg: Some("4 vCPUs on 2 host CPUs: single-threaded TCG".into())
            }
        );
        let wide = HostSize {
            cpus: 4,
            memory_mib: None,
        };
        assert_eq!(plan(p, &c, None, wide), Plan::Run { single_tcg: None });
        // Rejection comes before the host's size is looked at.
        let tight = TopologyConstraints::DEFAULT.with_max_llcs(1);
        assert!(matches!(plan(p, &tight, None, small), Plan::Rejected(_)));
    }

    #[test]
    fn constraint_sets_check_themselves_and_shapes_in_const() {
        const C: TopologyConstraints = TopologyConstraints::DEFAULT.with_min_llcs(2);
        const OK: Result<(), &str> = C.check_shape(1, 2, 4, 1);
        assert_eq!(OK, Ok(()));
        assert_eq!(
            C.check_shape(1, 1, 2, 1),
            Err("the topology has fewer LLCs than its min_llcs")
        );
        assert_eq!(
            C.check_shape(2, 2, 4, 1),
            Err("the topology has more NUMA nodes than its max_numa_nodes")
        );
        assert_eq!(
            TopologyConstraints::DEFAULT
                .with_requires_smt(true)
                .check_shape(1, 1, 2, 1),
            Err("the topology has one thread per core, and its constraints say requires_smt")
        );
        assert_eq!(TopologyConstraints::DEFAULT.consistent(), Ok(()));
        assert_eq!(
            TopologyConstraints::DEFAULT.with_min_cpus(200).consistent(),
            Err("impossible topology constraints: min_cpus is above max_cpus")
        );
        assert_eq!(
            TopologyConstraints::DEFAULT
                .with_min_cpus(200)
                .without_max_cpus()
                .consistent(),
            Ok(())
        );
        assert!(TopologyConstraints::DEFAULT
            .with_min_llcs(0)
            .consistent()
            .is_err());
        assert_eq!(TopologyConstraints::default(), TopologyConstraints::DEFAULT);
    }

    #[test]
    fn libtest_arguments_as_nextest_gives_them() {
        let a = |s: &str| LibtestArgs::parse(&s.split(' ').map(String::from).collect::<Vec<_>>());
        let list = a("--list --format terse");
        assert!(list.list && !list.ignored && list.filters.is_empty());
        assert!(list.selects("gauntlet/t/4cpu-1llc-nosmt"));
        assert!(a("--list --format terse --ignored").ignored);
        let run = a("--exact gauntlet/t/4cpu-1llc-nosmt --nocapture");
        assert_eq!(run.gauntlet_runs(), ["gauntlet/t/4cpu-1llc-nosmt"]);
        assert!(!run.selects("gauntlet/t/4cpu-2llc-nosmt"));
        let filtered = a("--list tiny --skip 2llc");
        assert!(filtered.selects("gauntlet/tiny/4cpu-1llc-nosmt"));
        assert!(!filtered.selects("gauntlet/tiny/4cpu-2llc-nosmt"));
        assert!(!filtered.selects("gauntlet/other/4cpu-1llc-nosmt"));
        assert!(filtered.gauntlet_runs().is_empty());
        assert!(a("--test-threads 1 quick_taste").gauntlet_runs().is_empty());
    }

    #[test]
    fn the_listing_names_admitted_runs_and_says_why_the_rest_are_not() {
        use crate::test_support::KtstrTestEntry;
        let tiny = KtstrTestEntry {
            name: "tiny",
            constraints: TopologyConstraints::DEFAULT.with_max_cpus(4),
            ..KtstrTestEntry::DEFAULT
        };
        let ignored = KtstrTestEntry {
            name: "later",
            ignore: true,
            ..KtstrTestEntry::DEFAULT
        };
        let host_only = KtstrTestEntry {
            name: "here",
            host_only: true,
            ..KtstrTestEntry::DEFAULT
        };
        let tests = [tiny, ignored, host_only];
        let (names, rejected) = listing(tests.iter(), BIG_HOST, false);
        assert_eq!(
            names,
            [
                "gauntlet/tiny/4cpu-1llc-nosmt",
                "gauntlet/tiny/4cpu-2llc-nosmt"
            ]
        );
        assert_eq!(rejected.len(), GAUNTLET_PRESETS.len() - 3);
        assert!(rejected
            .contains(&"gauntlet/tiny/9cpu-3llc-nosmt: not run: 9 CPUs > max_cpus 4".to_string()));
        assert!(!rejected.iter().any(|r| r.contains("192cpu-11llc-smt")));
        let (names, _) = listing(tests.iter(), BIG_HOST, true);
        assert_eq!(names.len(), 15, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("gauntlet/later/")));
        // A preset the host cannot hold is still listed: its run says why it skips.
        let small = HostSize {
            cpus: 2,
            memory_mib: Some(1024),
        };
        assert_eq!(listing(tests.iter(), small, false).0.len(), 2);
    }

    #[test]
    fn declared_tests_and_schedulers_check_their_own_topology() {
        use crate::test_support::{KtstrTestEntry, Scheduler};
        static WIDE: Scheduler = Scheduler::named("wide").topology(1, 4, 4, 1);
        let inherits = KtstrTestEntry {
            scheduler: &WIDE,
            constraints: WIDE.constraints.with_max_cpus(8),
            ..KtstrTestEntry::DEFAULT
        };
        assert_eq!(
            inherits.check_constraints(),
            Err("the topology has more CPUs than its max_cpus")
        );
        // The test's own keys win over the scheduler's topology.
        let own = KtstrTestEntry {
            llcs: Some(2),
            cores: Some(2),
            ..inherits
        };
        assert_eq!(own.check_constraints(), Ok(()));
        // requires_smt on a topology without SMT is a skip at run time, not an error here.
        let smt = KtstrTestEntry {
            constraints: TopologyConstraints::DEFAULT.with_requires_smt(true),
            ..KtstrTestEntry::DEFAULT
        };
        assert_eq!(smt.check_constraints(), Ok(()));
        let impossible = KtstrTestEntry {
            constraints: TopologyConstraints::DEFAULT.with_min_llcs(13),
            ..KtstrTestEntry::DEFAULT
        };
        assert!(impossible
            .check_constraints()
            .unwrap_err()
            .starts_with("impossible"));
        assert_eq!(WIDE.check_constraints(), Ok(()));
        assert_eq!(
            WIDE.max_llcs(2).check_constraints(),
            Err("the topology has more LLCs than its max_llcs")
        );
        assert_eq!(
            WIDE.requires_smt(true).check_constraints(),
            Err("the topology has one thread per core, and its constraints say requires_smt")
        );
    }

    #[test]
    fn variant_names_round_trip() {
        let n = variant_name("my_test", "4cpu-1llc-nosmt");
        assert_eq!(n, "gauntlet/my_test/4cpu-1llc-nosmt");
        assert_eq!(parse_variant_name(&n), Some(("my_test", "4cpu-1llc-nosmt")));
        assert_eq!(parse_variant_name("ktstr/my_test"), None);
        assert_eq!(parse_variant_name("gauntlet/x"), None);
    }
}
