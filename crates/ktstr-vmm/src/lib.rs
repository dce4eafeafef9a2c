//! Engines that boot a ktstr guest.
//!
//! A caller describes the machine once ([`VmConfig`]: topology, memory, kernel,
//! initramfs, command line, where the console goes) and picks an engine with
//! [`choose_engine`]; [`Vm::start`] boots it and returns a handle that gives the
//! guest's application channel (COM2) as a byte stream, the guest RAM files the
//! host can map, the vCPUs' registers over QMP ([`Qmp`]) when asked for, and a
//! bounded wait. The caller never needs to know which engine runs the guest:
//! today that is QEMU (TCG, or KVM where hardware virtualization exists);
//! ktstr's own KVM VMM ([`kvm`]) runs guests without QEMU where KVM can boot Linux.

mod config;
mod engine;
mod error;
pub mod kvm;
mod qemu;
mod qmp;
mod vm;

pub use config::{AppChannel, VmConfig};
pub use engine::{choose_engine, host_kvm, Engine, EngineChoice, HostKvm, TcgThreads, VmmRequest};
pub use error::VmmError;
pub use qemu::{qemu_args, QEMU_BINARY};
pub use qmp::{parse_info_registers, Qmp, QmpError, VcpuRegisters};
pub use vm::{GuestRamFile, Vm, VmExit};
