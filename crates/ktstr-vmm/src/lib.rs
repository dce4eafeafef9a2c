//! Engines that boot a ktstr guest.
//!
//! A caller describes the machine once ([`VmConfig`]: topology, memory, kernel,
//! initramfs, command line, where the console goes) and picks a VMM and engine with
//! [`choose_vmm`] (`--vmm auto|kvm|qemu`; [`choose_engine`] is QEMU's accelerator
//! choice); [`Vm::start`] boots it and returns a handle that gives the guest's
//! application channel (COM2) as a byte stream, the vCPUs' registers, a bounded wait
//! ending in a [`VmExit`], and on QEMU the guest RAM files the host can map. The same
//! handle runs ktstr's own KVM VMM ([`kvm`], where hardware KVM can boot Linux) or QEMU
//! (TCG, or KVM); another harness can use either through [`Vm`], or the KVM VMM
//! directly through [`kvm::KvmVm::builder`].

mod config;
mod engine;
mod error;
pub mod kvm;
mod qemu;
mod qmp;
mod vm;

pub use config::{AppChannel, VmConfig, BULK_CHANNEL_ARG, BULK_CHANNEL_KEY, BULK_PORT_NAME};
pub use engine::{
    choose_engine, choose_vmm, fallback_engine, host_kvm, Engine, EngineChoice, HostKvm,
    TcgThreads, VmmKind, VmmRequest, VMM_ENV,
};
pub use error::VmmError;
pub use qemu::{qemu_args, QEMU_BINARY};
pub use qmp::{parse_info_registers, Qmp, QmpError, VcpuRegisters};
pub use vm::{AppReader, Freezer, Frozen, GuestRamFile, Vm, VmExit, QEMU_ENV};
