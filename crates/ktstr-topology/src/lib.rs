//! CPU topology of a ktstr guest.
//!
//! A [`Topology`] is `numa_nodes` NUMA nodes, each holding `llcs` last-level
//! caches, each shared by `cores` cores of `threads` SMT threads. CPUs are
//! numbered node-major, then LLC, then core, then thread, which is also the
//! order in which engines hand them to the guest. Everything here is pure data:
//! engines turn it into their own arguments (QEMU `-smp`/`-numa`) or tables
//! (ACPI, CPUID), and tests compare what the guest reports against
//! [`Topology::expected`].

pub mod acpi;
pub mod cpuid;
mod cpulist;
mod error;
mod topology;

pub use acpi::{build_tables, AcpiError, AcpiLayout, AcpiTables};
pub use cpuid::{apic_id, patch_cpuid, ApicLayout, CpuidEntry, CpuidError};
pub use cpulist::{format_cpu_list, parse_cpu_list};
pub use error::TopologyError;
pub use topology::{CpuPlace, ExpectedLayout, Topology, MAX_CPUS};
