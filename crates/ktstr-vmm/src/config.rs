//! What a caller asks of a VM, as plain data.

use std::path::PathBuf;

use ktstr_topology::Topology;

/// Where the guest's application serial port (COM2, `/dev/ttyS1`) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppChannel {
    /// A pipe the caller reads through [`crate::Vm::take_app_channel`].
    Pipe,
    /// The caller's own terminal, for interactive shells.
    Terminal,
}

/// The kernel command-line key naming the guest's bulk channel: `hvc0` (a console) or
/// the name of a virtio-serial port.
pub const BULK_CHANNEL_KEY: &str = "ktstr.channel";

/// The kernel command-line word by which ktstr's VMM offers the guest its bulk channel (a
/// virtio-console, `/dev/hvc0`).
pub const BULK_CHANNEL_ARG: &str = "ktstr.channel=hvc0";

/// The name of the virtio-serial port that is QEMU's bulk channel (`/dev/vportNpM` in the
/// guest, found by this name under `/sys/class/virtio-ports`); QEMU names it to the guest
/// with `ktstr.channel=ktstr.frames`.
pub const BULK_PORT_NAME: &str = "ktstr.frames";

/// One guest: its topology, memory, kernel, initramfs and I/O.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// CPU topology the guest must see.
    pub topology: Topology,
    /// Guest RAM in MiB, split evenly over the NUMA nodes.
    pub memory_mib: u64,
    /// Kernel image: an ELF vmlinux (preferred, no decompression) or a bzImage.
    pub kernel: PathBuf,
    /// Initramfs (newc cpio, possibly several concatenated).
    pub initramfs: PathBuf,
    /// Kernel command line from the caller; the engine appends its console settings.
    pub cmdline: String,
    /// File that receives COM1, the kernel console.
    pub console_log: PathBuf,
    /// Where COM2 goes.
    pub app_channel: AppChannel,
    /// Directory for the guest RAM files the host can map (tmpfs such as /dev/shm is best).
    pub ram_dir: PathBuf,
    /// A UNIX socket for QEMU's QMP monitor (`-qmp unix:..,server=on,wait=off`), if wanted.
    pub qmp_socket: Option<PathBuf>,
    /// QEMU's `-cpu` model (default `host` under KVM, `max` under TCG); ktstr's own VMM
    /// always gives the guest the host's CPUID and has no such choice.
    pub cpu_model: Option<String>,
    /// A bulk channel for the guest's frames beside COM2, with virtio's backpressure: on
    /// ktstr's own VMM a virtio-console (`/dev/hvc0`, `ktstr.channel=hvc0` on the command
    /// line), on QEMU a virtio-serial port on PCI ([`BULK_PORT_NAME`]; a console port would
    /// drop bytes when the host reads slowly) whose host end is a UNIX socket.
    pub bulk_channel: bool,
}

impl VmConfig {
    /// A config with the default memory (256 MiB, at least 64 MiB per vCPU), COM2 on a pipe.
    pub fn new(kernel: PathBuf, initramfs: PathBuf, topology: Topology) -> Self {
        VmConfig {
            topology,
            memory_mib: default_memory_mib(&topology),
            kernel,
            initramfs,
            cmdline: String::new(),
            console_log: std::env::temp_dir().join("ktstr-console.log"),
            app_channel: AppChannel::Pipe,
            ram_dir: PathBuf::from("/dev/shm"),
            qmp_socket: None,
            cpu_model: None,
            bulk_channel: false,
        }
    }

    /// Asks for the bulk channel (see [`VmConfig::bulk_channel`]).
    pub fn bulk_channel(mut self, on: bool) -> Self {
        self.bulk_channel = on;
        self
    }

    /// Sets guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the caller's part of the kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Sets the file COM1 is written to.
    pub fn console_log(mut self, path: PathBuf) -> Self {
        self.console_log = path;
        self
    }

    /// Sets where COM2 goes.
    pub fn app_channel(mut self, channel: AppChannel) -> Self {
        self.app_channel = channel;
        self
    }

    /// Asks for a QMP monitor socket at `path` (read registers with [`crate::Qmp`]).
    pub fn qmp_socket(mut self, path: PathBuf) -> Self {
        self.qmp_socket = Some(path);
        self
    }

    /// Sets QEMU's CPU model (`-cpu`), e.g. `max,-xsave`.
    pub fn cpu_model(mut self, model: impl Into<String>) -> Self {
        self.cpu_model = Some(model.into());
        self
    }

    /// Sets the directory for guest RAM files.
    pub fn ram_dir(mut self, dir: PathBuf) -> Self {
        self.ram_dir = dir;
        self
    }
}

/// The existing ktstr's memory rule: max(vCPUs x 64, 256) MiB.
pub fn default_memory_mib(topology: &Topology) -> u64 {
    (u64::from(topology.total_cpus()) * 64).max(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_default_scales_with_cpus() {
        assert_eq!(default_memory_mib(&Topology::default()), 256);
        let big = Topology::new(2, 2, 2, 2).unwrap();
        assert_eq!(default_memory_mib(&big), 1024);
    }
}
