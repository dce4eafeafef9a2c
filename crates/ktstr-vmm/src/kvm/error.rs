//! Errors of ktstr's own KVM VMM.

use std::path::PathBuf;

use super::vcpu::VcpuRegs;

/// Why the KVM VMM could not build, boot or run a guest.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM ioctl {ioctl} failed")]
    Ioctl {
        /// Which ioctl (KVM_CREATE_VM, KVM_SET_SREGS, ...).
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The builder was given something the VMM cannot run.
    #[error("bad KVM VM configuration: {reason}")]
    BadConfig {
        /// What is wrong.
        reason: String,
    },
    /// The topology does not produce ACPI tables.
    #[error("cannot build the ACPI tables")]
    Acpi(#[source] ktstr_topology::AcpiError),
    /// The topology does not produce CPUID entries.
    #[error("cannot build the CPUID entries of vCPU {cpu}")]
    Cpuid {
        /// The vCPU.
        cpu: u32,
        /// Why.
        #[source]
        source: ktstr_topology::CpuidError,
    },
    /// Allocating guest RAM failed.
    #[error("cannot allocate guest memory")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    /// Reading or writing guest memory at an address failed.
    #[error("guest memory access at {gpa:#x} ({what}) failed")]
    GuestMemory {
        /// What was being accessed.
        what: &'static str,
        /// Guest-physical address.
        gpa: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A kernel, initramfs or program file could not be read.
    #[error("cannot read {what} {path}")]
    ReadFile {
        /// Which input.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// linux-loader rejected the kernel image.
    #[error("cannot load kernel {path}")]
    LoadKernel {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The kernel command line is invalid or too long.
    #[error("bad kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// Something does not fit where the memory layout puts it.
    #[error("{what} of {size:#x} bytes does not fit in guest memory at {gpa:#x}")]
    DoesNotFit {
        /// What was placed.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// How big it is.
        size: u64,
    },
    /// Creating an eventfd or thread failed.
    #[error("{what} failed")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A vCPU's KVM_RUN failed.
    #[error("vCPU {cpu}: KVM_RUN failed at {regs}")]
    Run {
        /// The vCPU index.
        cpu: u32,
        /// Its registers when it failed (zero if unreadable).
        regs: Box<VcpuRegs>,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The VM is not running (it ended or was stopped).
    #[error("the VM is not running")]
    NotRunning,
    /// Not every vCPU parked in time for a freeze.
    #[error("only {parked} of {vcpus} vCPUs stopped in time for a freeze")]
    FreezeTimedOut {
        /// vCPUs that parked.
        parked: u32,
        /// vCPUs of the VM.
        vcpus: u32,
    },
    /// Some vCPUs did not give their registers in time.
    #[error("vCPUs {missing:?} did not give their registers in time")]
    RegistersTimedOut {
        /// The vCPUs that did not answer.
        missing: Vec<u32>,
    },
    /// A disk image could not be opened.
    #[error("cannot attach a disk")]
    Disk(#[source] super::devices::virtio::BlockError),
    /// A virtio device could not be set up.
    #[error("cannot set up a virtio device")]
    Virtio(#[source] super::devices::virtio::VirtioError),
    /// A vCPU thread panicked or vanished without reporting.
    #[error("vCPU {cpu} thread ended without a report")]
    VcpuLost {
        /// The vCPU index.
        cpu: u32,
    },
}

/// Maps a kvm-ioctls error into [`KvmError::Ioctl`] naming `ioctl`.
pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { ioctl, source }
}
