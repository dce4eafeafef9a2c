//! Per-CPU runqueue samples from guest memory: resolve once, then sample cheaply.
//!
//! [`Sampler::new`] does the expensive, checked work once:
//!
//! 1. offsets of `struct rq`, `task_struct` and sched_ext's state from BTF ([`RqLayout`]);
//! 2. the kernel's own top-level page table: `phys_base` is read through a vCPU's CR3
//!    (any process's tables map the kernel), then `init_top_pgt`'s physical address is
//!    `va - __START_KERNEL_map + phys_base` and must translate to itself through itself;
//! 3. the direct-map base (`page_offset_base`, randomized with KASLR), the kernel-image
//!    fast path (`phys_base`), and `__per_cpu_offset[]`;
//! 4. each CPU's `runqueues` copy, which must hold its own CPU number in `rq.cpu`.
//!
//! Symbol addresses come from the running kernel (its `/proc/kallsyms`, see
//! [`KernelAddrs::WANTED`]), so KASLR needs no guessing. A vCPU in the kernel has its
//! per-CPU offset in GS base: where QEMU shows one, it is compared with
//! `__per_cpu_offset[cpu]` and the result is kept in [`SetupInfo::notes`].
//!
//! [`Sampler::sample`] then reads one span of each `rq` and of its current task, plus
//! sched_ext's state: its enable state and, while a scheduler is attached (`scx_root`),
//! its per-CPU event counters (summed over CPUs) and the depths of its global (per
//! NUMA node) and bypass (per CPU) DSQs. That is a few microseconds per CPU. The guest
//! keeps running while it is read, so a sample is not an atomic snapshot; a CPU whose
//! read fails gets an `error` instead of values and the others are still reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::btf::{resolve, Btf, BtfError, Field, Kind, TypeBody};
use crate::memory::GuestMemory;
use crate::snapshot::{read_snapshot, SnapLayout, SnapRoots, Snapshot};
use crate::symbols::{SymbolTable, START_KERNEL_MAP};
use crate::translate::{TranslateError, Translator};

/// Top bit of a kernel virtual address (4- and 5-level paging alike).
const KERNEL_BIT: u64 = 1 << 63;
/// CR3 bit 12 selects the user half of a PTI page-table pair.
const PTI_USER_BIT: u64 = 1 << 12;
/// Longest span of a struct read per sample (guards against absurd BTF offsets).
const MAX_SPAN: u32 = 64 << 10;
/// Most NUMA nodes whose global DSQs are read (guards against an absurd `nr_node_ids`).
const MAX_NODES: u32 = 1024;

/// Errors from setting up a [`Sampler`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// A type or member the sampler needs is not in the kernel's BTF.
    #[error("BTF has no {what}")]
    Btf {
        /// The type or member path.
        what: String,
        /// The resolver's error.
        #[source]
        source: BtfError,
    },
    /// A kernel symbol the sampler needs is missing.
    #[error("kernel symbol `{name}` is missing (is /proc/kallsyms readable in the guest?)")]
    MissingSymbol {
        /// The symbol.
        name: &'static str,
    },
    /// No vCPU's CR3 leads to the kernel's page tables.
    #[error("no vCPU's page tables lead to the kernel's init_top_pgt ({tried} tried): {reason}")]
    NoKernelPageTable {
        /// CR3 values tried.
        tried: usize,
        /// Why the last one failed.
        reason: String,
    },
    /// Reading a kernel variable failed.
    #[error("cannot read {what}")]
    Read {
        /// The variable.
        what: String,
        /// The translation or memory error.
        #[source]
        source: TranslateError,
    },
    /// What was read contradicts what must hold.
    #[error("inconsistent guest state: {what}")]
    Inconsistent {
        /// What did not hold.
        what: String,
    },
}

/// One vCPU's registers, as far as the sampler needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuRegs {
    /// vCPU index.
    pub cpu: u32,
    /// CR3.
    pub cr3: u64,
    /// CR4.LA57 (5-level paging).
    pub la57: bool,
    /// 64-bit paging is on (EFER.LMA and CR0.PG).
    pub long_mode: bool,
    /// GS base (the per-CPU offset while the vCPU is in the kernel).
    pub gs_base: u64,
}

/// Run-time addresses of the kernel variables the sampler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAddrs {
    /// The per-CPU `runqueues` (`struct rq`).
    pub runqueues: u64,
    /// `__per_cpu_offset[NR_CPUS]`.
    pub per_cpu_offset: u64,
    /// `page_offset_base`: start of the direct map.
    pub page_offset_base: u64,
    /// `phys_base`: physical minus link-time address of the kernel image.
    pub phys_base: u64,
    /// `init_top_pgt`: the kernel's top-level page table.
    pub init_top_pgt: u64,
    /// sched_ext's `scx_enable_state_var` (`atomic_t` of `enum scx_enable_state`).
    pub scx_enable_state: Option<u64>,
    /// sched_ext's `scx_root` (`struct scx_sched *`).
    pub scx_root: Option<u64>,
    /// `nr_node_ids` (`unsigned int`): NUMA node ids in use; absent without `CONFIG_NUMA`.
    pub nr_node_ids: Option<u64>,
    /// `init_task`: the head of the task list, for snapshots.
    pub init_task: Option<u64>,
    /// The scheduling classes' `struct sched_class` objects, in [`SCHED_CLASSES`] order.
    pub sched_classes: [Option<u64>; 6],
}

/// Short names of the kernel's scheduling classes; `<name>_sched_class` is the symbol.
pub const SCHED_CLASSES: [&str; 6] = ["stop", "dl", "rt", "fair", "ext", "idle"];

impl KernelAddrs {
    /// Symbols to ask the guest's `/proc/kallsyms` for; all but the first five are optional.
    pub const WANTED: [&'static str; 15] = [
        "runqueues",
        "__per_cpu_offset",
        "page_offset_base",
        "phys_base",
        "init_top_pgt",
        "scx_enable_state_var",
        "scx_root",
        "nr_node_ids",
        "init_task",
        "stop_sched_class",
        "dl_sched_class",
        "rt_sched_class",
        "fair_sched_class",
        "ext_sched_class",
        "idle_sched_class",
    ];

    /// Picks the addresses out of a symbol table (vmlinux symbols, not modules').
    pub fn from_symbols(syms: &SymbolTable) -> Result<Self, SamplerError> {
        let get = |name: &'static str| {
            syms.lookup_all(name)
                .find(|s| s.module.is_none())
                .map(|s| s.addr)
        };
        let need = |name: &'static str| get(name).ok_or(SamplerError::MissingSymbol { name });
        Ok(KernelAddrs {
            runqueues: need("runqueues")?,
            per_cpu_offset: need("__per_cpu_offset")?,
            page_offset_base: need("page_offset_base")?,
            phys_base: need("phys_base")?,
            init_top_pgt: need("init_top_pgt")?,
            scx_enable_state: get("scx_enable_state_var"),
            scx_root: get("scx_root"),
            nr_node_ids: get("nr_node_ids"),
            init_task: get("init_task"),
            sched_classes: SCHED_CLASSES.map(|c| {
                syms.lookup_all(&format!("{c}_sched_class"))
                    .find(|s| s.module.is_none())
                    .map(|s| s.addr)
            }),
        })
    }
}

/// sched_ext's layout: enum names and `struct scx_sched` members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScxLayout {
    /// `enum scx_enable_state` values and names (`SCX_ENABLED` -> `enabled`).
    pub states: Vec<(i64, String)>,
    /// `enum scx_exit_kind` values and names (`SCX_EXIT_ERROR` -> `error`).
    pub exit_kinds: Vec<(i64, String)>,
    /// `scx_sched.exit_kind` (an `atomic_t`).
    pub exit_kind: Option<Field>,
    /// `scx_sched.ops.name`.
    pub ops_name: Option<Field>,
    /// Per-CPU state off `scx_sched`: event counters and bypass DSQs.
    pub pcpu: Option<ScxPcpuLayout>,
    /// Per-node global DSQs off `scx_sched`.
    pub global_dsqs: Option<GlobalDsqLayout>,
    /// The scheduler's own DSQs in `scx_sched.dsq_hash`.
    pub user_dsqs: Option<UserDsqLayout>,
}

/// A DSQ's `nr` and `id`, at offsets inside the struct that holds the DSQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsqFields {
    /// Offset of the `scx_dispatch_q` itself in its container.
    pub base: u32,
    /// `scx_dispatch_q.nr`: tasks queued.
    pub nr: Field,
    /// `scx_dispatch_q.id`: the DSQ id (`SCX_DSQ_GLOBAL`, `SCX_DSQ_BYPASS`, ...).
    pub id: Field,
}

/// sched_ext's per-CPU state: a `__percpu` pointer in `scx_sched` and what it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScxPcpuLayout {
    /// The `__percpu` pointer: `scx_sched.pcpu` (7.x) or `scx_sched.event_stats_cpu`.
    pub ptr: Field,
    /// Each `s64` member of `scx_event_stats`: its name (`SCX_EV_` stripped, lowercase)
    /// and its offset in the per-CPU struct.
    pub events: Vec<(String, u32)>,
    /// The per-CPU bypass DSQ (`scx_sched_pcpu.bypass_dsq`), when the kernel has one.
    pub bypass_dsq: Option<DsqFields>,
    /// Bytes `start..end` of the per-CPU struct read per CPU and sample.
    pub span: (u32, u32),
}

/// sched_ext's global DSQs: `scx_sched.pnode[node]->global_dsq` (7.x) or
/// `scx_sched.global_dsqs[node]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalDsqLayout {
    /// The pointer to the array of per-node pointers.
    pub ptr: Field,
    /// The DSQ's fields inside each per-node object.
    pub dsq: DsqFields,
}

/// The DSQs a scheduler creates (`scx_bpf_create_dsq`): `scx_sched.dsq_hash`, an rhashtable
/// of `scx_dispatch_q` chained through `hash_node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDsqLayout {
    /// `scx_sched.dsq_hash.tbl`: the current `bucket_table`.
    pub tbl: Field,
    /// `bucket_table.size`: buckets in the table.
    pub size: Field,
    /// `bucket_table.nest`: non-zero for a nested table (not read).
    pub nest: Field,
    /// Offset of `bucket_table.buckets[]`.
    pub buckets: u32,
    /// Offset of `rhash_head.next`.
    pub next: u32,
    /// Offset of `scx_dispatch_q.hash_node`.
    pub hash_node: u32,
    /// `scx_dispatch_q.nr` and `.id`.
    pub dsq: DsqFields,
}

/// Most buckets read per sample; a bigger table is reported instead.
pub const MAX_DSQ_BUCKETS: u32 = 1 << 14;
/// Most user DSQs followed per sample, which also bounds a chain torn by a concurrent update.
pub const MAX_USER_DSQS: usize = 4096;

/// Where the sampled members live, resolved once from BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RqLayout {
    /// `rq.cpu`.
    pub cpu: Field,
    /// `rq.nr_running`.
    pub nr_running: Field,
    /// `rq.curr`.
    pub curr: Field,
    /// `rq.idle`.
    pub idle: Field,
    /// `rq.nr_switches`.
    pub nr_switches: Field,
    /// `rq.clock`.
    pub clock: Field,
    /// Fair-class tasks: `rq.cfs.h_nr_queued` (6.14+) or `rq.cfs.h_nr_running`.
    pub fair: Option<(Field, &'static str)>,
    /// `rq.scx.nr_running` (kernels with sched_ext).
    pub scx_nr_running: Option<Field>,
    /// `rq.scx.local_dsq.nr`: tasks in the CPU's local DSQ.
    pub scx_local_dsq_nr: Option<Field>,
    /// `task_struct.pid`.
    pub pid: Field,
    /// `task_struct.comm`.
    pub comm: Field,
    /// sched_ext state, when the kernel has it.
    pub scx: Option<ScxLayout>,
}

fn field(btf: &Btf, ty: &str, path: &str) -> Result<Field, SamplerError> {
    resolve(btf, ty, path).map_err(|source| SamplerError::Btf {
        what: format!("{ty}.{path}"),
        source,
    })
}

fn enum_names(btf: &Btf, name: &str, prefix: &str) -> Vec<(i64, String)> {
    let id = btf
        .find(name, Kind::Enum)
        .or_else(|| btf.find(name, Kind::Enum64));
    match id.and_then(|id| btf.get(id)).map(|t| &t.body) {
        Some(TypeBody::Enum { values, .. }) => values
            .iter()
            .map(|e| {
                let n = btf.str_at(e.name_off);
                (
                    e.value,
                    n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `nr` and `id` of the DSQ at `path` (`""` for the struct itself) in `ty`.
fn dsq_fields(btf: &Btf, ty: &str, path: &str) -> Option<DsqFields> {
    let at = |m: &str| match path {
        "" => resolve(btf, ty, m).ok(),
        p => resolve(btf, ty, &format!("{p}.{m}")).ok(),
    };
    let base = match path {
        "" => 0,
        p => resolve(btf, ty, p).ok()?.offset_bytes,
    };
    Some(DsqFields {
        base,
        nr: at("nr")?,
        id: at("id")?,
    })
}

/// Every 8-byte signed integer member of `struct scx_event_stats`, by its kernel name
/// (`SCX_EV_SELECT_CPU_FALLBACK` -> `select_cpu_fallback`), at `base` + its offset.
fn event_members(btf: &Btf, base: u32) -> Vec<(String, u32)> {
    let Some(t) = btf
        .find_struct("scx_event_stats")
        .ok()
        .and_then(|id| btf.get(id))
    else {
        return Vec::new();
    };
    t.members()
        .iter()
        .filter(|m| m.bitfield_size == 0 && m.bit_offset % 8 == 0)
        .filter(|m| {
            let ty = btf.skip_modifiers(m.ty).ok().and_then(|id| btf.get(id));
            matches!(
                ty.map(|t| &t.body),
                Some(TypeBody::Int { size: 8, encoding, .. }) if encoding & 1 != 0
            )
        })
        .filter_map(|m| {
            let n = btf.str_at(m.name_off);
            let off = base.checked_add(m.bit_offset / 8)?;
            (!n.is_empty()).then(|| {
                let short = n.strip_prefix("SCX_EV_").unwrap_or(n);
                (short.to_ascii_lowercase(), off)
            })
        })
        .collect()
}

/// The per-CPU state of `scx_sched`: `pcpu -> scx_sched_pcpu { event_stats, bypass_dsq }`
/// (7.x), else `event_stats_cpu -> scx_event_stats` (6.16 and 6.17).
fn scx_pcpu_layout(btf: &Btf) -> Option<ScxPcpuLayout> {
    let (ptr, events, bypass_dsq) = match (
        resolve(btf, "scx_sched", "pcpu"),
        resolve(btf, "scx_sched_pcpu", "event_stats"),
    ) {
        (Ok(ptr), Ok(ev)) => (
            ptr,
            event_members(btf, ev.offset_bytes),
            dsq_fields(btf, "scx_sched_pcpu", "bypass_dsq"),
        ),
        _ => (
            resolve(btf, "scx_sched", "event_stats_cpu").ok()?,
            event_members(btf, 0),
            None,
        ),
    };
    if ptr.size != 8 || (events.is_empty() && bypass_dsq.is_none()) {
        return None;
    }
    let mut fields: Vec<Field> = events
        .iter()
        .map(|(_, off)| Field {
            offset_bytes: *off,
            bit_offset: off.saturating_mul(8),
            bit_size: 64,
            size: 8,
            type_id: ptr.type_id,
        })
        .collect();
    fields.extend(bypass_dsq.iter().flat_map(|d| [d.nr, d.id]));
    Some(ScxPcpuLayout {
        ptr,
        events,
        bypass_dsq,
        span: span(&fields),
    })
}

/// `scx_sched.pnode[node]->global_dsq` (7.x), else `scx_sched.global_dsqs[node]`.
fn global_dsq_layout(btf: &Btf) -> Option<GlobalDsqLayout> {
    let (ptr, dsq) = match resolve(btf, "scx_sched", "pnode") {
        Ok(p) => (p, dsq_fields(btf, "scx_sched_pnode", "global_dsq")?),
        Err(_) => (
            resolve(btf, "scx_sched", "global_dsqs").ok()?,
            dsq_fields(btf, "scx_dispatch_q", "")?,
        ),
    };
    (ptr.size == 8).then_some(GlobalDsqLayout { ptr, dsq })
}

/// `scx_sched.dsq_hash` and the rhashtable types, when the kernel has them.
fn user_dsq_layout(btf: &Btf) -> Option<UserDsqLayout> {
    let at = |ty: &str, path: &str| resolve(btf, ty, path).ok();
    let tbl = at("scx_sched", "dsq_hash.tbl")?;
    (tbl.size == 8).then_some(())?;
    Some(UserDsqLayout {
        tbl,
        size: at("bucket_table", "size")?,
        nest: at("bucket_table", "nest")?,
        buckets: at("bucket_table", "buckets")?.offset_bytes,
        next: at("rhash_head", "next")?.offset_bytes,
        hash_node: at("scx_dispatch_q", "hash_node")?.offset_bytes,
        dsq: dsq_fields(btf, "scx_dispatch_q", "")?,
    })
}

impl RqLayout {
    /// Resolves the layout; sched_ext and fair-class fields are optional.
    pub fn from_btf(btf: &Btf) -> Result<Self, SamplerError> {
        let f = |ty, path| field(btf, ty, path);
        let fair = [
            ("cfs.h_nr_queued", "cfs.h_nr_queued"),
            ("cfs.h_nr_running", "cfs.h_nr_running"),
        ]
        .into_iter()
        .find_map(|(p, name)| resolve(btf, "rq", p).ok().map(|fl| (fl, name)));
        let scx_nr_running = resolve(btf, "rq", "scx.nr_running").ok();
        let scx = scx_nr_running.map(|_| ScxLayout {
            states: enum_names(btf, "scx_enable_state", "SCX_"),
            exit_kinds: enum_names(btf, "scx_exit_kind", "SCX_EXIT_"),
            exit_kind: resolve(btf, "scx_sched", "exit_kind.counter")
                .or_else(|_| resolve(btf, "scx_sched", "exit_kind"))
                .ok(),
            ops_name: resolve(btf, "scx_sched", "ops.name").ok(),
            pcpu: scx_pcpu_layout(btf),
            global_dsqs: global_dsq_layout(btf),
            user_dsqs: user_dsq_layout(btf),
        });
        Ok(RqLayout {
            cpu: f("rq", "cpu")?,
            nr_running: f("rq", "nr_running")?,
            curr: f("rq", "curr")?,
            idle: f("rq", "idle")?,
            nr_switches: f("rq", "nr_switches")?,
            clock: f("rq", "clock")?,
            fair,
            scx_nr_running,
            scx_local_dsq_nr: resolve(btf, "rq", "scx.local_dsq.nr").ok(),
            pid: f("task_struct", "pid")?,
            comm: f("task_struct", "comm")?,
            scx,
        })
    }

    fn rq_fields(&self) -> Vec<Field> {
        let mut v = vec![
            self.cpu,
            self.nr_running,
            self.curr,
            self.idle,
            self.nr_switches,
            self.clock,
        ];
        v.extend(self.fair.map(|(f, _)| f));
        v.extend(self.scx_nr_running);
        v.extend(self.scx_local_dsq_nr);
        v
    }
}

/// Bytes `start..end` of a struct that cover `fields`.
fn span(fields: &[Field]) -> (u32, u32) {
    let start = fields.iter().map(|f| f.offset_bytes).min().unwrap_or(0);
    let end = fields
        .iter()
        .map(|f| f.offset_bytes.saturating_add(f.size))
        .max()
        .unwrap_or(0);
    (start, end.min(start.saturating_add(MAX_SPAN)))
}

/// A field's value from an image that starts at byte `base` of the struct.
pub(crate) fn value(f: &Field, image: &[u8], base: u32) -> Option<u64> {
    let shifted = Field {
        offset_bytes: f.offset_bytes.checked_sub(base)?,
        bit_offset: f.bit_offset.checked_sub(base.checked_mul(8)?)?,
        ..*f
    };
    shifted.value_in(image)
}

/// What the setup found, for the log and for checking the sampler's footing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupInfo {
    /// Physical address of `init_top_pgt`, the root used for walks.
    pub page_table_root: u64,
    /// 5-level paging.
    pub la57: bool,
    /// The kernel's `phys_base`.
    pub phys_base: u64,
    /// The kernel's `page_offset_base` (direct-map start).
    pub page_offset_base: u64,
    /// `__per_cpu_offset[cpu]` for each sampled CPU.
    pub per_cpu_offsets: Vec<u64>,
    /// Virtual address of each CPU's `struct rq`.
    pub rq_addrs: Vec<u64>,
    /// Cross-checks done (GS base against `__per_cpu_offset`, ...).
    pub notes: Vec<String>,
}

/// One CPU's runqueue at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RqSample {
    /// `rq.nr_running`: runnable tasks of all classes, the running one included.
    pub nr_running: u32,
    /// Fair-class (EEVDF) tasks queued, hierarchically (`cfs.h_nr_queued`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fair_nr_running: Option<u32>,
    /// sched_ext tasks on this CPU (`scx.nr_running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx_nr_running: Option<u32>,
    /// Tasks in this CPU's sched_ext local DSQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx_local_dsq_nr: Option<u32>,
    /// PID of the running task (0 for the idle task).
    pub curr_pid: i32,
    /// Its `comm`.
    pub curr_comm: String,
    /// The running task is this CPU's idle task.
    pub curr_is_idle: bool,
    /// `rq.clock`, guest nanoseconds.
    pub rq_clock_ns: u64,
    /// `rq.nr_switches`: context switches on this CPU so far.
    pub nr_switches: u64,
}

/// One CPU in a sample: its runqueue, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuSample {
    /// CPU number.
    pub cpu: u32,
    /// The runqueue's state.
    #[serde(flatten)]
    pub rq: Option<RqSample>,
    /// Why the runqueue could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What kind of DSQ a [`DsqSample`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsqKind {
    /// A global DSQ (`SCX_DSQ_GLOBAL`), one per NUMA node.
    Global,
    /// A bypass DSQ (`SCX_DSQ_BYPASS`), one per CPU.
    Bypass,
    /// A DSQ the scheduler created (`scx_bpf_create_dsq`), in id order.
    User,
}

/// One built-in DSQ of the attached scheduler at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DsqSample {
    /// `dsq.id` as read from the guest (`SCX_DSQ_GLOBAL` is `1 << 63 | 1`).
    pub id: u64,
    /// Global, bypass or user.
    pub kind: DsqKind,
    /// The NUMA node of a global DSQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// The CPU of a bypass DSQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// `dsq.nr`: tasks queued.
    pub nr: u32,
    /// The guest virtual address of the `scx_dispatch_q` (for walking its tasks).
    #[serde(skip)]
    pub addr: u64,
}

/// sched_ext's global state at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScxSample {
    /// `scx_enable_state_var` by name (`enabled`, `disabled`, ...), or its number.
    pub state: String,
    /// The attached scheduler's `ops.name`, when `scx_root` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<String>,
    /// The attached scheduler's exit kind (`none` while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_kind: Option<String>,
    /// The attached scheduler's event counters summed over CPUs, by the kernel's names
    /// (`SCX_EV_SELECT_CPU_FALLBACK` -> `select_cpu_fallback`); empty when the kernel has
    /// none, no scheduler is attached, or a CPU's counters could not be read.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, i64>,
    /// Depths of the attached scheduler's global, bypass and user DSQs (per-CPU local DSQs
    /// are in [`RqSample::scx_local_dsq_nr`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dsqs: Vec<DsqSample>,
    /// The first failure reading the scheduler's per-CPU or per-node state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One sample of every CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Per CPU, in CPU order.
    pub cpus: Vec<CpuSample>,
    /// sched_ext's state, when the kernel has sched_ext and the symbols were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx: Option<ScxSample>,
}

/// Samples the runqueues of one guest.
pub struct Sampler<M> {
    mem: M,
    t: Translator,
    layout: RqLayout,
    addrs: KernelAddrs,
    info: SetupInfo,
    rq_span: (u32, u32),
    task_span: (u32, u32),
    rq_buf: Vec<u8>,
    task_buf: Vec<u8>,
    scx_buf: Vec<u8>,
    nr_nodes: u32,
    snap: Result<SnapLayout, String>,
}

impl<M> std::fmt::Debug for Sampler<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("info", &self.info).finish()
    }
}

/// Finds the kernel's own page-table root through the vCPUs' CR3s.
fn kernel_root(
    mem: &dyn GuestMemory,
    regs: &[CpuRegs],
    addrs: &KernelAddrs,
) -> Result<(Translator, u64, u64), SamplerError> {
    let img_off = addrs
        .init_top_pgt
        .checked_sub(START_KERNEL_MAP)
        .ok_or_else(|| SamplerError::Inconsistent {
            what: format!(
                "init_top_pgt {:#x} is below __START_KERNEL_map",
                addrs.init_top_pgt
            ),
        })?;
    let mut tried = 0;
    let mut reason = String::from("no vCPU is in 64-bit mode with paging on");
    for r in regs.iter().filter(|r| r.long_mode && r.cr3 != 0) {
        let mut candidates = vec![r.cr3];
        if r.cr3 & PTI_USER_BIT != 0 {
            candidates.push(r.cr3 & !PTI_USER_BIT);
        }
        for cr3 in candidates {
            tried += 1;
            let via = Translator::new(cr3, r.la57);
            let pb = match via.read_virt_u64(mem, addrs.phys_base) {
                Ok(pb) => pb,
                Err(e) => {
                    reason = format!("CPU {} CR3 {cr3:#x}: reading phys_base: {e}", r.cpu);
                    continue;
                }
            };
            let Some(root) = img_off.checked_add(pb) else {
                reason = format!("CPU {} CR3 {cr3:#x}: phys_base {pb:#x} overflows", r.cpu);
                continue;
            };
            let t = Translator::new(root, r.la57);
            match (
                t.translate(mem, addrs.init_top_pgt),
                via.translate(mem, addrs.init_top_pgt),
            ) {
                (Ok(a), Ok(b)) if a == root && b == root => return Ok((t, root, pb)),
                (a, b) => {
                    reason = format!(
                        "CPU {} CR3 {cr3:#x}: init_top_pgt at {root:#x} does not map itself \
                         ({a:?} / {b:?})",
                        r.cpu
                    );
                }
            }
        }
    }
    Err(SamplerError::NoKernelPageTable { tried, reason })
}

impl<M: GuestMemory> Sampler<M> {
    /// Sets up sampling of CPUs `0..nr_cpus` of the guest in `mem`, whose RAM ends at
    /// guest-physical `phys_end` (bounds the direct-map fast path).
    pub fn new(
        mem: M,
        btf: &Btf,
        regs: &[CpuRegs],
        addrs: KernelAddrs,
        nr_cpus: usize,
        phys_end: u64,
    ) -> Result<Self, SamplerError> {
        let layout = RqLayout::from_btf(btf)?;
        let (walker, root, phys_base) = kernel_root(&mem, regs, &addrs)?;
        let read = |what: &str, va: u64| {
            walker
                .read_virt_u64(&mem, va)
                .map_err(|source| SamplerError::Read {
                    what: what.to_string(),
                    source,
                })
        };
        let page_offset_base = read("page_offset_base", addrs.page_offset_base)?;
        let mut notes = Vec::new();
        let mut t = walker.with_kernel_image(phys_base);
        // Use the direct-map fast path only if the tables agree with it.
        match walker.walk(&mem, page_offset_base.wrapping_add(root)) {
            Ok((gpa, _)) if gpa == root => {
                t = t.with_direct_map(page_offset_base, phys_end);
            }
            other => notes.push(format!(
                "direct map at {page_offset_base:#x} not confirmed ({other:?}); walking tables"
            )),
        }
        let offsets = t
            .per_cpu_offsets(&mem, addrs.per_cpu_offset, nr_cpus)
            .map_err(|source| SamplerError::Read {
                what: "__per_cpu_offset".into(),
                source,
            })?;
        for r in regs {
            let Some(off) = offsets.get(r.cpu as usize) else {
                continue;
            };
            if r.gs_base & KERNEL_BIT == 0 {
                continue;
            }
            if r.gs_base == *off {
                notes.push(format!(
                    "CPU {}: GS base {:#x} = __per_cpu_offset[{}]",
                    r.cpu, r.gs_base, r.cpu
                ));
            } else {
                notes.push(format!(
                    "CPU {}: GS base {:#x} != __per_cpu_offset[{}] {off:#x} (vCPU not in the kernel?)",
                    r.cpu, r.gs_base, r.cpu
                ));
            }
        }
        let rq_addrs: Vec<u64> = offsets
            .iter()
            .map(|o| addrs.runqueues.wrapping_add(*o))
            .collect();
        // Only the global DSQs need the node count; a bad one skips them, not the sampler.
        let wants_nodes = layout.scx.as_ref().is_some_and(|l| l.global_dsqs.is_some());
        let nr_nodes = match addrs.nr_node_ids {
            Some(va) if wants_nodes => {
                let mut b = [0u8; 4];
                match t
                    .read_virt(&mem, va, &mut b)
                    .map(|()| u32::from_le_bytes(b))
                {
                    Ok(n) if (1..=MAX_NODES).contains(&n) => {
                        notes.push(format!("nr_node_ids = {n}"));
                        n
                    }
                    Ok(n) => {
                        notes.push(format!("nr_node_ids is {n}: global DSQs not read"));
                        0
                    }
                    Err(e) => {
                        notes.push(format!(
                            "nr_node_ids unreadable ({}): global DSQs not read",
                            error_chain(&e)
                        ));
                        0
                    }
                }
            }
            _ => 1,
        };
        let rq_span = span(&layout.rq_fields());
        let task_span = span(&[layout.pid, layout.comm]);
        let scx_len = layout
            .scx
            .as_ref()
            .and_then(|l| l.pcpu.as_ref())
            .map_or(0, |p| p.span.1 - p.span.0);
        let mut s = Sampler {
            snap: SnapLayout::from_btf(btf),
            rq_buf: vec![0; (rq_span.1 - rq_span.0) as usize],
            task_buf: vec![0; (task_span.1 - task_span.0) as usize],
            scx_buf: vec![0; scx_len as usize],
            nr_nodes,
            mem,
            t,
            layout,
            addrs,
            info: SetupInfo {
                page_table_root: root,
                la57: walker_la57(regs),
                phys_base,
                page_offset_base,
                per_cpu_offsets: offsets,
                rq_addrs,
                notes,
            },
            rq_span,
            task_span,
        };
        for cpu in 0..nr_cpus {
            let va = s.info.rq_addrs[cpu];
            let got =
                s.t.read_virt(&s.mem, va + u64::from(s.rq_span.0), &mut s.rq_buf)
                    .map_err(|source| SamplerError::Read {
                        what: format!("CPU {cpu}'s runqueue at {va:#x}"),
                        source,
                    })
                    .map(|()| value(&s.layout.cpu, &s.rq_buf, s.rq_span.0))?;
            if got != Some(cpu as u64) {
                return Err(SamplerError::Inconsistent {
                    what: format!("CPU {cpu}'s runqueue at {va:#x} says rq.cpu = {got:?}"),
                });
            }
        }
        s.info
            .notes
            .push(format!("rq.cpu matches for CPUs 0..{nr_cpus}"));
        Ok(s)
    }

    /// The address translator setup checked (direct map only where the page tables agree).
    pub fn translator(&self) -> Translator {
        self.t
    }

    /// The guest memory it reads.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// What the setup found.
    pub fn info(&self) -> &SetupInfo {
        &self.info
    }

    /// The resolved layout.
    pub fn layout(&self) -> &RqLayout {
        &self.layout
    }

    /// Reads every CPU's runqueue and sched_ext's state.
    pub fn sample(&mut self) -> Sample {
        let cpus = (0..self.info.rq_addrs.len())
            .map(|cpu| match self.sample_cpu(cpu) {
                Ok(rq) => CpuSample {
                    cpu: cpu as u32,
                    rq: Some(rq),
                    error: None,
                },
                Err(e) => CpuSample {
                    cpu: cpu as u32,
                    rq: None,
                    error: Some(error_chain(&e)),
                },
            })
            .collect();
        Sample {
            cpus,
            scx: self.sample_scx(),
        }
    }

    /// Reads a [`Snapshot`]: a sample, then every task, DSQ and cgroup behind it. The
    /// caller freezes the vCPUs around it; it names itself and its timing.
    pub fn snapshot(&mut self) -> Snapshot {
        let sample = self.sample();
        match &self.snap {
            Ok(l) => read_snapshot(
                &self.t,
                &self.mem,
                l,
                SnapRoots {
                    init_task: self.addrs.init_task,
                    rq_addrs: &self.info.rq_addrs,
                    sched_classes: &self.addrs.sched_classes,
                },
                &sample,
            ),
            Err(e) => Snapshot::of_sample(&sample, vec![format!("snapshots need {e}")]),
        }
    }

    fn sample_cpu(&mut self, cpu: usize) -> Result<RqSample, TranslateError> {
        let l = &self.layout;
        let base = self.info.rq_addrs[cpu];
        self.t.read_virt(
            &self.mem,
            base + u64::from(self.rq_span.0),
            &mut self.rq_buf,
        )?;
        let rb = self.rq_span.0;
        let get = |f: &Field| value(f, &self.rq_buf, rb).unwrap_or(0);
        let opt = |f: Option<Field>| {
            f.and_then(|f| value(&f, &self.rq_buf, rb))
                .map(|v| v as u32)
        };
        let curr = get(&l.curr);
        let idle = get(&l.idle);
        let mut rq = RqSample {
            nr_running: get(&l.nr_running) as u32,
            fair_nr_running: opt(l.fair.map(|(f, _)| f)),
            scx_nr_running: opt(l.scx_nr_running),
            scx_local_dsq_nr: opt(l.scx_local_dsq_nr),
            curr_pid: -1,
            curr_comm: String::new(),
            curr_is_idle: curr == idle,
            rq_clock_ns: get(&l.clock),
            nr_switches: get(&l.nr_switches),
        };
        self.t.read_virt(
            &self.mem,
            curr + u64::from(self.task_span.0),
            &mut self.task_buf,
        )?;
        let tb = self.task_span.0;
        rq.curr_pid = value(&l.pid, &self.task_buf, tb).unwrap_or(u64::MAX) as u32 as i32;
        rq.curr_comm = c_string(&self.task_buf, l.comm.offset_bytes - tb, l.comm.size);
        Ok(rq)
    }

    fn sample_scx(&mut self) -> Option<ScxSample> {
        let l = self.layout.scx.as_ref()?;
        let va = self.addrs.scx_enable_state?;
        let name = |table: &[(i64, String)], v: u64| {
            let v = v as u32 as i32 as i64;
            table
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| v.to_string())
        };
        let mut b = [0u8; 4];
        let state = match self.t.read_virt(&self.mem, va, &mut b) {
            Ok(()) => name(&l.states, u64::from(u32::from_le_bytes(b))),
            Err(e) => format!("unreadable: {e}"),
        };
        let mut out = ScxSample {
            state,
            ops: None,
            exit_kind: None,
            events: BTreeMap::new(),
            dsqs: Vec::new(),
            error: None,
        };
        let sch = self
            .addrs
            .scx_root
            .and_then(|p| self.t.read_virt_u64(&self.mem, p).ok())
            .filter(|&p| p & KERNEL_BIT != 0);
        if let Some(sch) = sch {
            if let Some(f) = l.exit_kind {
                let mut b = vec![0u8; f.size as usize];
                if self
                    .t
                    .read_virt(&self.mem, sch + u64::from(f.offset_bytes), &mut b)
                    .is_ok()
                {
                    let base = Field {
                        offset_bytes: 0,
                        bit_offset: f.bit_offset - f.offset_bytes * 8,
                        ..f
                    };
                    out.exit_kind = base.value_in(&b).map(|v| name(&l.exit_kinds, v));
                }
            }
            if let Some(f) = l.ops_name {
                let mut b = vec![0u8; f.size.min(256) as usize];
                if self
                    .t
                    .read_virt(&self.mem, sch + u64::from(f.offset_bytes), &mut b)
                    .is_ok()
                {
                    out.ops = Some(c_string(&b, 0, b.len() as u32));
                }
            }
            let read_ptr = |f: Field| {
                self.t
                    .read_virt_u64(&self.mem, sch.wrapping_add(u64::from(f.offset_bytes)))
            };
            if let Some(g) = &l.global_dsqs {
                let r = read_ptr(g.ptr).and_then(|arr| {
                    sample_global_dsqs(&self.t, &self.mem, g, arr, self.nr_nodes, &mut out)
                });
                if let Err(e) = r {
                    out.error.get_or_insert_with(|| error_chain(&e));
                }
            }
            if let Some(p) = &l.pcpu {
                let before = out.dsqs.len();
                let r = read_ptr(p.ptr).and_then(|pcpu| {
                    sample_pcpu(
                        &self.t,
                        &self.mem,
                        p,
                        pcpu,
                        &self.info.per_cpu_offsets,
                        &mut self.scx_buf,
                        &mut out,
                    )
                });
                if let Err(e) = r {
                    // No partial per-CPU state: the events and bypass DSQs read so far go.
                    out.events.clear();
                    out.dsqs.truncate(before);
                    out.error.get_or_insert_with(|| error_chain(&e));
                }
            }
            if let Some(u) = &l.user_dsqs {
                if let Err(e) = sample_user_dsqs(&self.t, &self.mem, u, sch, &mut out) {
                    out.error.get_or_insert(e);
                }
            }
        }
        Some(out)
    }
}

/// Reads `nr` and `id` of the DSQ whose container starts at `base`.
fn read_dsq(
    t: &Translator,
    mem: &dyn GuestMemory,
    d: &DsqFields,
    base: u64,
) -> Result<(u32, u64), TranslateError> {
    let (start, end) = span(&[d.nr, d.id]);
    let mut b = [0u8; 64];
    let len = ((end - start) as usize).min(b.len());
    t.read_virt(mem, base.wrapping_add(u64::from(start)), &mut b[..len])?;
    let nr = value(&d.nr, &b[..len], start).unwrap_or(0) as u32;
    let id = value(&d.id, &b[..len], start).unwrap_or(0);
    Ok((nr, id))
}

/// Sums the event counters of every CPU's copy of the per-CPU struct at `pcpu` and
/// reads each CPU's bypass DSQ.
fn sample_pcpu(
    t: &Translator,
    mem: &dyn GuestMemory,
    p: &ScxPcpuLayout,
    pcpu: u64,
    offsets: &[u64],
    buf: &mut [u8],
    out: &mut ScxSample,
) -> Result<(), TranslateError> {
    let mut sums = vec![0i64; p.events.len()];
    for (cpu, off) in offsets.iter().enumerate() {
        let base = pcpu.wrapping_add(*off);
        t.read_virt(mem, base.wrapping_add(u64::from(p.span.0)), buf)?;
        let at = |o: u32| {
            let i = o.checked_sub(p.span.0)? as usize;
            let b = buf.get(i..i + 8)?;
            Some(i64::from_le_bytes(b.try_into().ok()?))
        };
        for (sum, (_, o)) in sums.iter_mut().zip(&p.events) {
            *sum = sum.wrapping_add(at(*o).unwrap_or(0));
        }
        if let Some(d) = &p.bypass_dsq {
            let nr = value(&d.nr, buf, p.span.0).unwrap_or(0) as u32;
            let id = value(&d.id, buf, p.span.0).unwrap_or(0);
            out.dsqs.push(DsqSample {
                id,
                kind: DsqKind::Bypass,
                node: None,
                cpu: Some(cpu as u32),
                nr,
                addr: base.wrapping_add(u64::from(d.base)),
            });
        }
    }
    out.events = p
        .events
        .iter()
        .zip(sums)
        .map(|((name, _), v)| (name.clone(), v))
        .collect();
    Ok(())
}

/// Reads the global DSQ of each of `nodes` nodes from the pointer array at `arr`;
/// null entries (nodes never possible) are skipped.
fn sample_global_dsqs(
    t: &Translator,
    mem: &dyn GuestMemory,
    g: &GlobalDsqLayout,
    arr: u64,
    nodes: u32,
    out: &mut ScxSample,
) -> Result<(), TranslateError> {
    let mut raw = vec![0u8; nodes as usize * 8];
    t.read_virt(mem, arr, &mut raw)?;
    let mut global = Vec::new();
    for (node, p) in raw.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(p);
        let p = u64::from_le_bytes(w);
        if p == 0 {
            continue;
        }
        let (nr, id) = read_dsq(t, mem, &g.dsq, p)?;
        global.push(DsqSample {
            id,
            kind: DsqKind::Global,
            node: Some(node as u32),
            cpu: None,
            nr,
            addr: p.wrapping_add(u64::from(g.dsq.base)),
        });
    }
    out.dsqs.extend(global);
    Ok(())
}

/// Walks the bucket table of the scheduler at `sch` and appends its user DSQs in id order.
fn sample_user_dsqs(
    t: &Translator,
    mem: &dyn GuestMemory,
    u: &UserDsqLayout,
    sch: u64,
    out: &mut ScxSample,
) -> Result<(), String> {
    let e = |what: &str, err: TranslateError| format!("user DSQs: {what}: {}", error_chain(&err));
    let tbl = t
        .read_virt_u64(mem, sch.wrapping_add(u64::from(u.tbl.offset_bytes)))
        .map_err(|err| e("dsq_hash.tbl", err))?;
    if tbl == 0 {
        return Ok(());
    }
    let (start, end) = span(&[u.size, u.nest]);
    let mut hdr = [0u8; 16];
    let len = ((end - start) as usize).min(hdr.len());
    t.read_virt(mem, tbl.wrapping_add(u64::from(start)), &mut hdr[..len])
        .map_err(|err| e("bucket_table", err))?;
    let size = value(&u.size, &hdr[..len], start).unwrap_or(0) as u32;
    let nest = value(&u.nest, &hdr[..len], start).unwrap_or(0);
    if nest != 0 {
        return Err(format!(
            "user DSQs: nested bucket table (nest {nest}) not read"
        ));
    }
    if size > MAX_DSQ_BUCKETS {
        return Err(format!(
            "user DSQs: {size} buckets, more than the {MAX_DSQ_BUCKETS} read"
        ));
    }
    let mut raw = vec![0u8; size as usize * 8];
    t.read_virt(mem, tbl.wrapping_add(u64::from(u.buckets)), &mut raw)
        .map_err(|err| e("buckets", err))?;
    let mut user = Vec::new();
    for b in raw.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        // Bit 0 of a bucket is its lock; a chain ends at a "nulls" marker (bit 0 set).
        let mut node = u64::from_le_bytes(w) & !1;
        while node != 0 && node & 1 == 0 {
            if user.len() >= MAX_USER_DSQS {
                return Err(format!(
                    "user DSQs: more than {MAX_USER_DSQS} (a chain torn by an update?)"
                ));
            }
            let dsq = node.wrapping_sub(u64::from(u.hash_node));
            let (nr, id) = read_dsq(t, mem, &u.dsq, dsq).map_err(|err| e("dispatch queue", err))?;
            user.push(DsqSample {
                id,
                kind: DsqKind::User,
                node: None,
                cpu: None,
                nr,
                addr: dsq,
            });
            node = t
                .read_virt_u64(mem, node.wrapping_add(u64::from(u.next)))
                .map_err(|err| e("rhash_head.next", err))?;
        }
    }
    user.sort_by_key(|d| d.id);
    out.dsqs.extend(user);
    Ok(())
}

fn walker_la57(regs: &[CpuRegs]) -> bool {
    regs.iter().any(|r| r.long_mode && r.la57)
}

/// A NUL-terminated string of at most `len` bytes at `off`, lossily decoded.
pub(crate) fn c_string(buf: &[u8], off: u32, len: u32) -> String {
    let bytes = buf
        .get(off as usize..)
        .map(|b| &b[..b.len().min(len as usize)])
        .unwrap_or(&[]);
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `error: cause: cause` in one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        // An error that already prints its source (`{path}: {source}`) is not repeated.
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
