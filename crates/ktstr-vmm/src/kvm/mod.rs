//! ktstr's own KVM VMM: no PCI, no firmware, just what a ktstr guest needs.
//!
//! [`KvmVm::builder`] takes a [`ktstr_topology::Topology`], memory, and either a Linux kernel
//! (ELF vmlinux or bzImage, initramfs, command line) or a small 64-bit test program, and
//! builds: guest RAM one region per NUMA node ([`memory`], [`layout`]), the e820 map with a
//! reserved shared-memory [`ring`], the kernel and zero page ([`loader`]), ACPI tables from
//! [`ktstr_topology::build_tables`] (RSDP at 0xE0000 *and* in `boot_params.acpi_rsdp_addr`),
//! long-mode entry state ([`regs`]), per-vCPU CPUID ([`cpuid`]), an in-kernel irqchip and PIT,
//! and the port devices ([`devices`]: COM1, COM2, ACPI power/reset and exit-status ports,
//! i8042 reset, CMOS RTC) on a [`bus`], a [`reset_vector`] for Linux's last-resort BIOS
//! reboot, and optional virtio-MMIO devices (console, file-backed disks, a loopback network
//! card) on the MMIO bus at the windows the DSDT describes. What the guest asks that nothing
//! accepts (unclaimed ports and MMIO, virtqueue chains outside its memory, output beyond the
//! host's bound) is refused and counted in [`faults`].
//! [`KvmVm::start`] runs one thread per vCPU ([`vcpu`]) and an I/O thread ([`event_loop`])
//! serving virtqueue notifications through ioeventfds; [`KvmVmHandle::wait`] returns how the
//! guest ended as a [`KvmExit`].

pub mod bus;
pub mod cpuid;
pub mod devices;
mod error;
pub mod event_loop;
pub mod faults;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod regs;
pub mod reset_vector;
pub mod ring;
pub mod vcpu;
mod vm;

/// Locks `m`, taking the data even if a panicking thread poisoned it (devices keep serving).
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use bus::{DeviceAction, MmioBus, MmioDevice, PioBus, PioDevice, RebootCause};
pub use devices::virtio::{ConsoleInput, NetPort, NetStats};
pub use devices::{SerialInput, SerialOutput, SerialReader, EXIT_PORT};
pub use error::KvmError;
pub use faults::{FaultLog, GuestFaults};
pub use layout::{E820Entry, MemoryLayout, RING_GPA, RING_SIZE};
pub use memory::GuestMemory;
pub use ring::{RingError, RingReader, RingRecord};
pub use vcpu::{InternalError, KvmExit, VcpuRegs};
pub use vm::{DiskConfig, GuestIo, KvmFreezer, KvmVm, KvmVmBuilder, KvmVmHandle, Payload};
