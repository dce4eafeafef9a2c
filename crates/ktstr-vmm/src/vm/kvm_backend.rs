//! The KVM backend: ktstr's own VMM ([`crate::kvm`]) behind the engine-neutral [`super::Vm`].
//!
//! COM1 goes to the config's console log file, COM2 to a [`SerialReader`] (or, in terminal
//! mode, to and from the caller's stdout and stdin, the terminal in raw mode until the guest
//! ends, as QEMU's `-chardev stdio,signal=off`).

use std::io::{Read, Write};
use std::time::Duration;

use super::terminal::RawMode;
use super::VmExit;
use crate::kvm::{GuestIo, KvmExit, KvmVm, KvmVmBuilder, KvmVmHandle, SerialReader};
use crate::{AppChannel, VcpuRegisters, VmConfig, VmmError};

/// A running guest on ktstr's KVM VMM.
pub(super) struct KvmBackend {
    handle: KvmVmHandle,
    app: Option<SerialReader>,
    bulk: Option<SerialReader>,
    exit: Option<VmExit>,
    /// The caller's terminal settings while a terminal-mode guest runs.
    raw: Option<RawMode>,
}

impl KvmBackend {
    /// Builds and starts `cfg` (already validated by [`super::Vm::start`]).
    pub(super) fn start(cfg: &VmConfig) -> Result<KvmBackend, VmmError> {
        let vm: KvmVm = KvmVmBuilder::from(cfg).build()?;
        let io = vm.io().clone();
        // Before the guest runs, so the device holds the guest back from the first byte.
        let bulk = io.virtio_console.as_ref().map(|o| o.reader());
        let handle = vm.start()?;
        let (app, raw) = match cfg.app_channel {
            AppChannel::Pipe => (Some(io.app_output.reader()), None),
            AppChannel::Terminal => {
                connect_terminal(&io);
                (None, RawMode::enable(libc::STDIN_FILENO))
            }
        };
        Ok(KvmBackend {
            handle,
            app,
            bulk,
            exit: None,
            raw,
        })
    }

    /// COM2's output stream (once; `None` in terminal mode).
    pub(super) fn take_app_channel(&mut self) -> Option<SerialReader> {
        self.app.take()
    }

    /// The bulk channel's stream (once; `None` without one).
    pub(super) fn take_bulk_channel(&mut self) -> Option<SerialReader> {
        self.bulk.take()
    }

    /// The host's ends of the guest's devices and memory.
    pub(super) fn io(&self) -> &GuestIo {
        self.handle.io()
    }

    /// Every vCPU's control registers, read by the vCPU threads themselves.
    pub(super) fn freezer(&self) -> crate::kvm::KvmFreezer {
        self.handle.freezer()
    }

    pub(super) fn registers(&self, timeout: Duration) -> Result<Vec<VcpuRegisters>, VmmError> {
        let regs = self.handle.registers(timeout)?;
        Ok(regs
            .into_iter()
            .zip(0u32..)
            .map(|(r, cpu)| VcpuRegisters {
                cpu,
                cr0: r.cr0,
                cr3: r.cr3,
                cr4: r.cr4,
                efer: r.efer,
                gs_base: r.gs_base,
                cpl: r.cpl,
                halted: r.halted,
            })
            .collect())
    }

    /// How the guest ended if it has, without blocking.
    pub(super) fn try_wait(&mut self) -> Result<Option<VmExit>, VmmError> {
        if self.exit.is_none() {
            self.exit = self.handle.try_wait()?.map(vm_exit);
        }
        if self.exit.is_some() {
            // The terminal is the caller's again before it reports.
            self.raw = None;
        }
        Ok(self.exit.clone())
    }

    /// Stops the guest; a guest that had not ended counts as killed.
    pub(super) fn kill(&mut self) {
        self.handle.kill();
        self.raw = None;
        self.exit.get_or_insert(VmExit::Exited {
            code: None,
            engine_stderr: String::new(),
        });
    }
}

/// The engine-neutral [`VmExit`] for how a KVM guest ended, shaped like QEMU's `-no-reboot`
/// exits: power-off is a clean exit with the guest's status, a reboot (a panic with
/// `panic=-1` included) a clean exit that says so, a KVM internal error its own variant with
/// the registers, and anything else an engine failure (code 1) that says what happened.
pub(super) fn vm_exit(exit: KvmExit) -> VmExit {
    match exit {
        KvmExit::PowerOff { status } => VmExit::Exited {
            code: Some(i32::try_from(status).unwrap_or(i32::MAX)),
            engine_stderr: String::new(),
        },
        KvmExit::InternalError(e) => VmExit::KvmInternalError(e),
        KvmExit::TimedOut { .. } => VmExit::TimedOut,
        e @ (KvmExit::Reboot { .. } | KvmExit::AllHalted) => VmExit::Exited {
            code: Some(0),
            engine_stderr: e.to_string(),
        },
        e @ (KvmExit::FailEntry { .. }
        | KvmExit::SystemEvent { .. }
        | KvmExit::Unhandled { .. }) => VmExit::Exited {
            code: Some(1),
            engine_stderr: e.to_string(),
        },
    }
}

/// Copies COM2 to stdout and stdin to COM2 on detached threads (they end with the process;
/// the output one also when the VM stops).
fn connect_terminal(io: &GuestIo) {
    let mut out = io.app_output.reader();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                break;
            }
        }
    });
    let input = io.app_input.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            input.send(&buf[..n]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::{InternalError, RebootCause, VcpuRegs};

    #[test]
    fn kvm_exits_map_to_engine_neutral_exits() {
        assert_eq!(
            vm_exit(KvmExit::PowerOff { status: 0 }),
            VmExit::Exited {
                code: Some(0),
                engine_stderr: String::new()
            }
        );
        let regs = VcpuRegs {
            rip: 0xffff_ffff_8100_0000,
            ..Default::default()
        };
        let ie = InternalError {
            cpu: 0,
            suberror: 1,
            data: vec![],
            regs,
        };
        match vm_exit(KvmExit::InternalError(Box::new(ie))) {
            VmExit::KvmInternalError(e) => assert_eq!(e.regs.rip, 0xffff_ffff_8100_0000),
            other => panic!("{other:?}"),
        }
        let reboot = KvmExit::Reboot {
            cause: RebootCause::TripleFault,
            cpu: 1,
            regs,
        };
        assert!(matches!(
            vm_exit(reboot),
            VmExit::Exited { code: Some(0), engine_stderr } if engine_stderr.contains("TripleFault")
        ));
        let unhandled = KvmExit::Unhandled {
            cpu: 0,
            exit: "Debug".into(),
            regs,
        };
        assert!(matches!(
            vm_exit(unhandled),
            VmExit::Exited { code: Some(1), .. }
        ));
        assert_eq!(
            vm_exit(KvmExit::TimedOut { vcpus: vec![] }),
            VmExit::TimedOut
        );
    }
}
