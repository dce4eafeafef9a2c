//! Writing scheduler tests: the registry `#[ktstr_test]` fills, schedulers as data, the
//! host-side runner, and the test binary's guest-side entry points.
//!
//! - [`entry`]: [`KtstrTestEntry`] and the [`KTSTR_TESTS`] registry.
//! - [`scheduler`]: [`Scheduler`], [`SchedulerSpec`], the [`KTSTR_SCHEDULERS`] registry.
//! - [`gauntlet`]: [`TopologyConstraints`] and the gauntlet's topology presets.
//! - [`payload`]: [`Payload`]: outside programs run beside the workers.
//! - [`runner`]: [`run_ktstr_test`], [`VmResult`], per-test records for `cargo ktstr test`.
//! - [`dispatch`]: [`early_dispatch`]: guest init or one test body, chosen before `main`.
//! - [`slots`]: how many VMs run at once.
//! - [`tail`]: [`StreamTail`]: a test's guest output, bounded in memory, whole on disk.

pub mod dispatch;
pub mod entry;
pub mod gauntlet;
pub mod payload;
pub mod runner;
pub mod scheduler;
pub mod slots;
pub mod tail;

pub use dispatch::{early_dispatch, GuestReport};
pub use entry::{BpfMapWrite, KtstrTestEntry, PostVmFn, TestFn, DEFAULT_DURATION_S, KTSTR_TESTS};
pub use gauntlet::{TopoPreset, TopologyConstraints, GAUNTLET_PRESETS};
pub use ktstr_assert::Polarity;
pub use payload::Payload;
pub use runner::{run_ktstr_test, TestRecord, Verdict, VmResult, OUTPUT_DIR_ENV, RESULTS_DIR_ENV};
pub use scheduler::{declared_scheduler, Scheduler, SchedulerSpec, Sysctl, KTSTR_SCHEDULERS};
pub use slots::{vm_slot, VmSlot};
pub use tail::{StreamTail, TAIL_LIMIT};
