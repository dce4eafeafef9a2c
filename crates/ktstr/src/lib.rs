//! ktstr: test Linux CPU schedulers in VMs with a chosen CPU topology.
//!
//! - [`kernel`]: fetch, build, list and resolve kernels, and check their config.
//! - [`initramfs`] (over [`cpio`]): the guest's root filesystem, built on the fly.
//! - [`guest`]: ktstr as the guest's `/init`.
//! - [`proto`]: the framed guest-to-host channel on COM2.
//! - [`monitor`]: sample every CPU's runqueue from the host while a command runs.
//! - [`sched`]: attach a sched_ext scheduler in the guest and judge what became of it.
//! - [`run`]: boot a guest, run a command in it, and tell the command's result
//!   from an infrastructure failure.

pub mod cpio;
mod error;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod monitor;
pub mod proto;
pub mod run;
pub mod sched;
#[cfg(test)]
mod test_support;

pub use error::KtstrError;
pub use ktstr_topology::Topology;
pub use ktstr_vmm as vmm;
