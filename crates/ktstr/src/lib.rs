//! ktstr: test Linux CPU schedulers in VMs with a chosen CPU topology.
//!
//! - [`kernel`]: fetch, build, list and resolve kernels, and check their config.
//! - [`initramfs`] (over [`cpio`]): the guest's root filesystem, built on the fly.
//! - [`guest`]: ktstr as the guest's `/init`.
//! - [`proto`]: the framed guest-to-host channel on COM2.
//! - [`request`]: a test process's requests to the host (snapshots), answered in guest memory.
//! - [`monitor`]: sample every CPU's runqueue from the host while a command runs.
//! - [`bpf_watch`]: scheduler BPF map fields read from the host every monitor tick.
//! - [`failure_dump`]: what a monitored run that failed leaves behind, in one JSON file.
//! - [`kvm_memory`]: ktstr's own KVM VMM's guest memory as a monitor memory source.
//! - [`sched`]: attach a sched_ext scheduler in the guest and judge what became of it.
//! - [`run`]: boot a guest, run a command in it, and tell the command's result
//!   from an infrastructure failure.
//! - [`scenario`]: cgroups of workers and steps that change them ([`scenario::execute_defs`]).
//! - [`scenarios`]: canned scenarios, one call each.
//! - [`test_support`]: `#[ktstr_test]`'s registry, schedulers as data, the VM test runner.
//! - [`watchdog`]: shorten a guest's sched_ext watchdog from the host.
//! - [`prelude`]: what a test file imports.

pub mod bpf_watch;
pub mod cpio;
mod error;
pub mod failure_dump;
pub mod guest;
mod host_services;
pub mod initramfs;
pub mod kernel;
mod kernel_ops;
pub mod kvm_memory;
pub mod monitor;
pub mod proto;
pub mod request;
pub mod run;
pub mod scenario;
pub mod scenarios;
pub mod sched;
pub mod test_support;
#[cfg(test)]
mod testing;
pub mod watchdog;

pub use error::KtstrError;
pub use ktstr_assert as assert;
pub use ktstr_assert::{claim, claim_better, claim_present, claim_seq, claim_set};
pub use ktstr_macros::{declare_scheduler, ktstr_test, ktstr_test_entry};
pub use ktstr_topology::Topology;
pub use ktstr_vmm as vmm;
pub use ktstr_workload as workload;
pub use serde_json::json;

/// The gauntlet's topology presets (`ktstr::gauntlet::gauntlet_presets()`), as in the
/// existing ktstr.
pub mod gauntlet {
    pub use crate::test_support::gauntlet::*;

    /// Every preset, as the existing ktstr's `gauntlet_presets()` returns them.
    pub fn gauntlet_presets() -> Vec<TopoPreset> {
        GAUNTLET_PRESETS.to_vec()
    }
}

/// What a test file imports: `use ktstr::prelude::*;`.
pub mod prelude {
    pub use crate::bpf_watch::{BpfMapAgg, WatchBpfMap};
    pub use crate::scenario::{
        execute_defs, execute_scenario, execute_scenario_with, execute_steps, execute_steps_with,
        AffinityIntent, Backdrop, CgroupDef, CpuTopo, CpusetSpec, Ctx, HoldSpec, IrqSelector,
        KernelTarget, KernelValue, KernelValueWidth, Op, Phase, PhaseCgroupStats, Setup,
        SpawnPlacement, Step, WorkSpec,
    };
    pub use crate::scenarios;
    pub use crate::test_support::{
        BpfMapWrite, KtstrTestEntry, Payload, Scheduler, SchedulerSpec, Sysctl,
        TopologyConstraints, VmResult,
    };
    pub use crate::{
        claim, claim_better, claim_present, claim_seq, claim_set, declare_scheduler, json,
        ktstr_test, ktstr_test_entry,
    };
    pub use anyhow::{self, Result};
    pub use ktstr_assert::{
        Assert, AssertDetail, AssertResult, CgroupStats, DetailKind, Outcome, Polarity, Verdict,
    };
    pub use ktstr_workload::{
        AffinityMode, CgroupGroup, MemPolicy, MpolFlags, ReapMode, SchedPolicy, WakeMechanism,
        WorkType, WorkerReport, WorkloadConfig, WorkloadHandle,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use linkme;
}
