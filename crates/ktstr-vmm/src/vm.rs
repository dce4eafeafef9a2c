//! A running guest on either engine: start it, read its application channel, wait for it
//! with a deadline, kill it.
//!
//! [`Vm`] is the same handle over the QEMU process ([`qemu_process`]) and ktstr's own KVM
//! VMM ([`kvm_backend`]): both start from one [`VmConfig`], write COM1 to its console log
//! file, give COM2 as a byte stream, and end in a [`VmExit`].

mod freezer;
mod kvm_backend;
mod qemu_process;
mod terminal;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use freezer::{Freezer, Frozen};
use kvm_backend::KvmBackend;
use qemu_process::QemuProcess;
pub use qemu_process::QEMU_ENV;

use crate::kvm::{GuestIo, InternalError};
use crate::{Engine, VcpuRegisters, VmConfig, VmmError};

/// One guest RAM file the host can map: node `node`'s memory, `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRamFile {
    /// NUMA node whose memory this is.
    pub node: u32,
    /// The file (on tmpfs) backing that memory.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
}

/// How the guest (and its engine) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The engine exited by itself (guest power-off, reboot or engine error). On the KVM
    /// backend: power-off gives the guest's status as `code`; a reboot code 0 and other
    /// failures code 1, with what happened in `engine_stderr`.
    Exited {
        /// Exit code, `None` if killed by a signal (or by [`Vm::kill`]).
        code: Option<i32>,
        /// What the engine printed on stderr.
        engine_stderr: String,
    },
    /// KVM could not go on running a vCPU (ktstr's KVM VMM; on PVM an instruction its
    /// emulator lacks); carries the vCPU's registers.
    KvmInternalError(Box<InternalError>),
    /// The deadline passed; the VM was killed.
    TimedOut,
}

/// The guest's application channel (COM2 output) as a byte stream; it ends with the VM.
pub type AppReader = Box<dyn Read + Send>;

enum Backend {
    Qemu(QemuProcess),
    Kvm(Box<KvmBackend>),
}

/// A booted guest. Dropping it stops the guest (and removes QEMU's RAM files).
pub struct Vm {
    engine: Engine,
    backend: Backend,
}

impl Vm {
    /// Boots `cfg` on `engine` ([`Engine::KtstrKvm`] is ktstr's own VMM, the rest QEMU).
    pub fn start(cfg: &VmConfig, engine: Engine) -> Result<Vm, VmmError> {
        validate(cfg)?;
        let backend = match engine {
            Engine::KtstrKvm => Backend::Kvm(Box::new(KvmBackend::start(cfg)?)),
            Engine::QemuKvm | Engine::QemuTcg(_) => Backend::Qemu(QemuProcess::start(cfg, engine)?),
        };
        Ok(Vm { engine, backend })
    }

    /// The engine running this guest.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// COM2's byte stream from the guest (once; `None` in terminal mode).
    pub fn take_app_channel(&mut self) -> Option<AppReader> {
        match &mut self.backend {
            Backend::Qemu(q) => q.take_app_channel().map(|r| Box::new(r) as AppReader),
            Backend::Kvm(k) => k.take_app_channel().map(|r| Box::new(r) as AppReader),
        }
    }

    /// The bulk channel's byte stream from the guest (once; `None` when the config asked for
    /// none, or QEMU never connected to it).
    pub fn take_bulk_channel(&mut self) -> Option<AppReader> {
        match &mut self.backend {
            Backend::Qemu(q) => q.take_bulk_channel().map(|r| Box::new(r) as AppReader),
            Backend::Kvm(k) => k.take_bulk_channel().map(|r| Box::new(r) as AppReader),
        }
    }

    /// The guest RAM files, one per NUMA node; empty on the KVM backend, whose memory is
    /// [`Vm::kvm_io`]'s `memory`.
    pub fn ram_files(&self) -> &[GuestRamFile] {
        match &self.backend {
            Backend::Qemu(q) => q.ram_files(),
            Backend::Kvm(_) => &[],
        }
    }

    /// The QMP monitor socket, when the config asked for one (never on the KVM backend).
    pub fn qmp_socket(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Qemu(q) => q.qmp_socket(),
            Backend::Kvm(_) => None,
        }
    }

    /// The KVM backend's ends of the guest's devices and memory (`None` on QEMU): the
    /// console log, COM2 input, guest memory and the shared-memory ring.
    pub fn kvm_io(&self) -> Option<&GuestIo> {
        match &self.backend {
            Backend::Qemu(_) => None,
            Backend::Kvm(k) => Some(k.io()),
        }
    }

    /// Every vCPU's control registers: over a fresh QMP connection on QEMU, from the
    /// vCPU threads on the KVM backend.
    pub fn registers(&self, timeout: Duration) -> Result<Vec<VcpuRegisters>, VmmError> {
        match &self.backend {
            Backend::Qemu(q) => Ok(q.registers(timeout)?),
            Backend::Kvm(k) => k.registers(timeout),
        }
    }

    /// A handle that freezes and thaws the guest's vCPUs from another thread: over QMP
    /// (`None` when the VM has no QMP socket), or by parking ktstr's own vCPU threads.
    pub fn freezer(&self) -> Option<Freezer> {
        match &self.backend {
            Backend::Qemu(q) => q.qmp_socket().map(|p| Freezer::Qmp(p.to_path_buf())),
            Backend::Kvm(k) => Some(Freezer::Kvm(k.freezer())),
        }
    }

    /// How the guest ended if it has, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<VmExit>, VmmError> {
        match &mut self.backend {
            Backend::Qemu(q) => q.try_wait(),
            Backend::Kvm(k) => k.try_wait(),
        }
    }

    /// Waits until the guest ends or `deadline` passes (then kills it).
    pub fn wait_until(&mut self, deadline: Instant) -> Result<VmExit, VmmError> {
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ok(VmExit::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the guest: kills and reaps QEMU, or stops every vCPU thread.
    pub fn kill(&mut self) {
        match &mut self.backend {
            Backend::Qemu(q) => q.kill(),
            Backend::Kvm(k) => k.kill(),
        }
    }
}

/// Checks what every engine needs: a valid topology, enough memory, the input files.
fn validate(cfg: &VmConfig) -> Result<(), VmmError> {
    cfg.topology.validate().map_err(|e| VmmError::BadConfig {
        reason: e.to_string(),
    })?;
    if cfg.memory_mib > u64::MAX >> 20 {
        return Err(VmmError::BadConfig {
            reason: format!(
                "{} MiB of memory is more bytes than 64 bits hold",
                cfg.memory_mib
            ),
        });
    }
    let min_mib = u64::from(cfg.topology.numa_nodes) * 64;
    if cfg.memory_mib < min_mib {
        return Err(VmmError::BadConfig {
            reason: format!(
                "{} MiB of memory is too little: at least {min_mib} MiB ({} NUMA nodes)",
                cfg.memory_mib, cfg.topology.numa_nodes
            ),
        });
    }
    for (what, path) in [("kernel", &cfg.kernel), ("initramfs", &cfg.initramfs)] {
        if !path.is_file() {
            return Err(VmmError::MissingFile {
                what,
                path: path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_topology::Topology;

    #[test]
    fn missing_kernel_is_named() {
        let cfg = VmConfig::new(
            "/nonexistent/vmlinux".into(),
            "/nonexistent/i.cpio".into(),
            Topology::default(),
        );
        for engine in [Engine::QemuTcg(crate::TcgThreads::Single), Engine::KtstrKvm] {
            let err = Vm::start(&cfg, engine).err().expect("must fail");
            assert!(
                matches!(err, VmmError::MissingFile { what: "kernel", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn too_little_memory_is_refused() {
        let cfg = VmConfig::new("/k".into(), "/i".into(), Topology::new(4, 1, 1, 1).unwrap())
            .memory_mib(128);
        let err = Vm::start(&cfg, Engine::QemuKvm).err().expect("must fail");
        assert!(err.to_string().contains("at least 256 MiB"), "{err}");
    }

    #[test]
    fn memory_beyond_64_bits_of_bytes_is_refused() {
        let cfg = VmConfig::new("/k".into(), "/i".into(), Topology::default()).memory_mib(u64::MAX);
        for engine in [Engine::QemuKvm, Engine::KtstrKvm] {
            let err = Vm::start(&cfg, engine).err().expect("must fail");
            assert!(err.to_string().contains("more bytes than 64 bits"), "{err}");
        }
    }
}
