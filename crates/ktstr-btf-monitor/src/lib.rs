//! Read a Linux guest's scheduler state from the host, through the kernel's own BTF.
//!
//! The monitor observes without perturbing: no BPF and no agent in the guest. The pieces:
//!
//! - [`btf`]: parse BTF (raw or from a vmlinux ELF) and [`resolve`] member paths such as
//!   `rq.scx.nr_running` to offsets, sizes and bitfield positions.
//! - [`symbols`]: kernel symbol addresses from `/proc/kallsyms` text, System.map, or an
//!   ELF symbol table, with a KASLR slide.
//! - [`memory`]: one [`GuestMemory`] trait over guest-physical memory, implemented for a
//!   byte buffer, QEMU's shared RAM files, and a `dump-guest-memory` ELF core.
//! - [`translate`]: kernel virtual to guest physical (direct map, kernel image, x86-64
//!   4- and 5-level page walks) and per-CPU variable addresses.
//! - [`sampler`]: per-CPU runqueue samples (`nr_running`, current task, rq clock, ...) and
//!   sched_ext's state (enable state, event counters, global, bypass and user DSQ depths),
//!   resolved once and then read cheaply.
//! - [`snapshot`]: with the vCPUs frozen, every task (state, CPU, cgroup, `sched_ext_entity`),
//!   each DSQ's queued tasks and each cgroup's members.
//! - [`checks`]: the monitor checks (`max_imbalance_ratio`, `max_local_dsq_depth`, a stuck
//!   rq clock, sched_ext fallback and keep-last event rates, a watchdog-free stall detector)
//!   over a sequence of samples.
//! - [`capture`]: record the pages a sample reads and write them as a small ELF core,
//!   for fixtures replayed without a VM.
//! - [`bpf`]: the guest's BPF maps and programs through `map_idr`/`prog_idr`, a map's
//!   own BTF, and the globals of a program's data maps.
//! - [`trace`]: a Chrome/Perfetto trace of per-CPU running tasks and queue depths.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("ktstr-btf-monitor supports 64-bit hosts only");

pub mod bpf;
pub mod btf;
pub mod capture;
pub mod checks;
pub mod memory;
pub mod sampler;
pub mod snapshot;
pub mod symbols;
pub mod trace;
pub mod translate;

pub use btf::{resolve, Btf, BtfError, Field, Kind, TypeId};
pub use checks::{CheckResult, Checker, LongestWait, MonitorReport, MonitorThresholds};
pub use memory::{
    BufferMemory, ElfCore, GuestMemory, MemError, PcRamLayout, QemuCpuState, RamFiles, RamRegion,
};
pub use sampler::{
    CpuRegs, CpuSample, DsqKind, DsqSample, KernelAddrs, RqLayout, RqSample, Sample, Sampler,
    SamplerError, ScxSample, SetupInfo,
};
pub use snapshot::{
    CgroupSnapshot, CpuSnapshot, DsqSnapshot, ScxEntity, Snapshot, TaskRef, TaskSnapshot,
};
pub use symbols::{Symbol, SymbolError, SymbolTable};
pub use trace::TraceWriter;
pub use translate::{per_cpu_addr, TranslateError, Translator};
