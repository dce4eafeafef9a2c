//! One vCPU thread: KVM_RUN in a loop, port I/O and MMIO to their buses, and every other exit turned
//! into a [`KvmExit`] for the whole VM (or a [`KvmError`] when KVM itself fails).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::bus::{DeviceAction, MmioBus, PioBus, RebootCause};
use super::KvmError;

/// Registers of a vCPU, for reports of how it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuRegs {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// RAX.
    pub rax: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (last page-fault address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS selector.
    pub cs: u16,
    /// CS base.
    pub cs_base: u64,
    /// DS base.
    pub ds_base: u64,
    /// SS base.
    pub ss_base: u64,
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// Current privilege level (CS's DPL).
    pub cpl: u8,
    /// The vCPU is halted, waiting for an interrupt (KVM_MP_STATE_HALTED).
    pub halted: bool,
}

impl VcpuRegs {
    /// Reads `vcpu`'s registers; a failed read leaves its fields zero.
    pub fn read(vcpu: &VcpuFd) -> Self {
        let mut r = VcpuRegs::default();
        if let Ok(g) = vcpu.get_regs() {
            (r.rip, r.rsp, r.rflags, r.rax, r.rsi, r.rdi) =
                (g.rip, g.rsp, g.rflags, g.rax, g.rsi, g.rdi);
        }
        if let Ok(s) = vcpu.get_sregs() {
            (r.cr0, r.cr2, r.cr3, r.cr4, r.efer) = (s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
            (r.cs, r.cs_base, r.ds_base, r.ss_base) =
                (s.cs.selector, s.cs.base, s.ds.base, s.ss.base);
            (r.fs_base, r.gs_base) = (s.fs.base, s.gs.base);
            r.cpl = s.cs.dpl;
        }
        if let Ok(m) = vcpu.get_mp_state() {
            r.halted = m.mp_state == kvm_bindings::KVM_MP_STATE_HALTED;
        }
        r
    }
}

impl fmt::Display for VcpuRegs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RIP={:#x} RSP={:#x} RFLAGS={:#x} RAX={:#x} RSI={:#x} RDI={:#x} CR0={:#x} CR2={:#x} \
             CR3={:#x} CR4={:#x} EFER={:#x} CS={:#x} base CS={:#x} DS={:#x} SS={:#x} FS={:#x} GS={:#x}",
            self.rip, self.rsp, self.rflags, self.rax, self.rsi, self.rdi, self.cr0, self.cr2,
            self.cr3, self.cr4, self.efer, self.cs, self.cs_base, self.ds_base, self.ss_base,
            self.fs_base, self.gs_base
        )
    }
}

/// A KVM_EXIT_INTERNAL_ERROR: KVM could not go on running the vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalError {
    /// The vCPU index.
    pub cpu: u32,
    /// KVM's suberror (1 = emulation failure).
    pub suberror: u32,
    /// KVM's extra data words.
    pub data: Vec<u64>,
    /// Registers when it happened.
    pub regs: VcpuRegs,
}

impl fmt::Display for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
            " (emulation failure)"
        } else {
            ""
        };
        write!(
            f,
            "KVM internal error on vCPU {}: suberror {}{what}, data {:x?}; {}",
            self.cpu, self.suberror, self.data, self.regs
        )
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmExit {
    /// The guest powered off (ACPI S5 gives status 0; the exit port gives its value).
    PowerOff {
        /// The guest's exit status.
        status: u32,
    },
    /// The guest rebooted.
    Reboot {
        /// How.
        cause: RebootCause,
        /// The vCPU that asked.
        cpu: u32,
        /// Its registers.
        regs: VcpuRegs,
    },
    /// KVM could not run a vCPU (on PVM: an instruction its emulator lacks).
    InternalError(Box<InternalError>),
    /// VM entry failed.
    FailEntry {
        /// The vCPU.
        cpu: u32,
        /// Hardware entry failure reason.
        reason: u64,
        /// Its registers.
        regs: VcpuRegs,
    },
    /// KVM reported a crash or another system event.
    SystemEvent {
        /// The vCPU.
        cpu: u32,
        /// KVM_SYSTEM_EVENT_* type.
        kind: u32,
    },
    /// An exit the VMM does not handle.
    Unhandled {
        /// The vCPU.
        cpu: u32,
        /// The exit, as kvm-ioctls prints it.
        exit: String,
        /// Its registers.
        regs: VcpuRegs,
    },
    /// Every vCPU executed HLT (only without an in-kernel irqchip, where HLT exits).
    AllHalted,
    /// The deadline passed first; each vCPU's registers when it was stopped, in vCPU order
    /// (zero for a vCPU that had already ended).
    TimedOut {
        /// Registers per vCPU.
        vcpus: Vec<VcpuRegs>,
    },
}

impl fmt::Display for KvmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmExit::PowerOff { status } => write!(f, "power-off with status {status}"),
            KvmExit::Reboot { cause, cpu, regs } => {
                write!(f, "reboot ({cause:?}) by vCPU {cpu}; {regs}")
            }
            KvmExit::InternalError(e) => e.fmt(f),
            KvmExit::FailEntry { cpu, reason, regs } => {
                write!(
                    f,
                    "VM entry failed on vCPU {cpu}: reason {reason:#x}; {regs}"
                )
            }
            KvmExit::SystemEvent { cpu, kind } => write!(f, "system event {kind} on vCPU {cpu}"),
            KvmExit::Unhandled { cpu, exit, regs } => {
                write!(f, "unhandled exit {exit} on vCPU {cpu}; {regs}")
            }
            KvmExit::AllHalted => f.write_str("every vCPU halted"),
            KvmExit::TimedOut { vcpus } => {
                f.write_str("timed out")?;
                for (cpu, r) in vcpus.iter().enumerate() {
                    write!(f, "; vCPU {cpu}: {r}")?;
                }
                Ok(())
            }
        }
    }
}

/// State every vCPU thread and the VM handle share.
#[derive(Debug, Default)]
pub struct Shared {
    stop: AtomicBool,
    outcome: Mutex<Option<Result<KvmExit, KvmError>>>,
    done: Condvar,
    halted: AtomicU32,
    io_exits: AtomicU64,
    stopped_regs: Mutex<Vec<(u32, VcpuRegs)>>,
    snapshot_gen: AtomicU64,
    snapshot: Mutex<Vec<(u64, u32, VcpuRegs)>>,
    snapshot_done: Condvar,
    /// Whether a pause is asked for, and how many vCPUs sit parked in it.
    pause: Mutex<(bool, u32)>,
    pause_changed: Condvar,
    /// `pause.0` without the lock: every exit checks it, so the common case takes no lock.
    pause_asked: AtomicBool,
}

impl Shared {
    /// Records the run's outcome (the first one wins) and asks every vCPU to stop.
    pub fn finish(&self, outcome: Result<KvmExit, KvmError>) {
        let mut o = crate::kvm::lock(&self.outcome);
        if o.is_none() {
            *o = Some(outcome);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.done.notify_all();
    }

    /// Asks every vCPU to stop without recording an outcome (a kill, or a wait that ended).
    pub fn stop(&self) {
        // Taken under the outcome lock so a waiter between its check and its wait sees it.
        let _o = crate::kvm::lock(&self.outcome);
        self.stop.store(true, Ordering::SeqCst);
        self.done.notify_all();
    }

    /// Whether the vCPUs were asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Registers of the vCPUs that were stopped from outside, in vCPU order.
    pub fn stopped_regs(&self, vcpus: u32) -> Vec<VcpuRegs> {
        let got = crate::kvm::lock(&self.stopped_regs);
        (0..vcpus)
            .map(|c| {
                got.iter()
                    .find(|(cpu, _)| *cpu == c)
                    .map(|r| r.1)
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Asks every vCPU for its registers; returns the request's generation.
    pub fn request_snapshot(&self) -> u64 {
        let mut answers = crate::kvm::lock(&self.snapshot);
        answers.clear();
        self.snapshot_gen.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits up to `timeout` for vCPU answers to request `gen`; returns those in so far.
    pub fn snapshot_answers(&self, gen: u64, timeout: std::time::Duration) -> Vec<(u32, VcpuRegs)> {
        let answers = crate::kvm::lock(&self.snapshot);
        let answers = match self.snapshot_done.wait_timeout(answers, timeout) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        answers
            .iter()
            .filter(|a| a.0 == gen)
            .map(|a| (a.1, a.2))
            .collect()
    }

    /// On a vCPU thread: answers a snapshot request newer than `answered`.
    fn answer_snapshot(&self, cpu: u32, fd: &VcpuFd, answered: &mut u64) {
        let gen = self.snapshot_gen.load(Ordering::SeqCst);
        if gen == *answered {
            return;
        }
        *answered = gen;
        let regs = VcpuRegs::read(fd);
        let mut answers = crate::kvm::lock(&self.snapshot);
        answers.push((gen, cpu, regs));
        self.snapshot_done.notify_all();
    }

    /// Asks every vCPU to park at its next exit from KVM_RUN (the caller kicks them).
    pub fn ask_pause(&self) {
        crate::kvm::lock(&self.pause).0 = true;
        self.pause_asked.store(true, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for `n` vCPUs to be parked; returns how many are.
    pub fn wait_parked(&self, n: u32, timeout: std::time::Duration) -> u32 {
        let p = crate::kvm::lock(&self.pause);
        let p = match self
            .pause_changed
            .wait_timeout_while(p, timeout, |p| p.1 < n)
        {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        p.1
    }

    /// Lets parked vCPUs run again.
    pub fn release(&self) {
        let mut p = crate::kvm::lock(&self.pause);
        p.0 = false;
        self.pause_asked.store(false, Ordering::SeqCst);
        drop(p);
        self.pause_changed.notify_all();
    }

    /// On a vCPU thread: while a pause is asked for and the VM is not stopping, stays out of
    /// KVM_RUN (still answering register requests).
    fn park(&self, cpu: u32, fd: &VcpuFd, answered: &mut u64) {
        if !self.pause_asked.load(Ordering::SeqCst) {
            return;
        }
        let mut p = crate::kvm::lock(&self.pause);
        if !p.0 {
            return;
        }
        p.1 += 1;
        self.pause_changed.notify_all();
        while p.0 && !self.stopping() {
            p = match self
                .pause_changed
                .wait_timeout(p, std::time::Duration::from_millis(2))
            {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            drop(p);
            self.answer_snapshot(cpu, fd, answered);
            p = crate::kvm::lock(&self.pause);
        }
        p.1 -= 1;
        self.pause_changed.notify_all();
    }

    /// Port-I/O exits handled so far.
    pub fn io_exits(&self) -> u64 {
        self.io_exits.load(Ordering::Relaxed)
    }

    /// Waits up to `deadline` for an outcome; takes it if there is one.
    pub fn wait(&self, deadline: std::time::Instant) -> Option<Result<KvmExit, KvmError>> {
        let mut o = crate::kvm::lock(&self.outcome);
        loop {
            if o.is_some() {
                return o.take();
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            o = match self.done.wait_timeout(o, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, so the signal interrupts KVM_RUN.
pub fn install_kick_handler() -> Result<(), KvmError> {
    static RESULT: OnceLock<i32> = OnceLock::new();
    let errno = *RESULT.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .err()
            .map_or(0, |e| e.errno())
    });
    if errno == 0 {
        Ok(())
    } else {
        Err(KvmError::Os {
            what: "installing the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(errno),
        })
    }
}

/// What one exit asks of the loop.
enum Step {
    Continue,
    Io,
    Halt,
    Finish(Result<KvmExit, KvmError>),
    Reboot(RebootCause),
    Internal,
}

/// Runs vCPU `cpu` until the VM stops; reports through `shared`.
pub fn run_vcpu(
    cpu: u32,
    mut fd: VcpuFd,
    bus: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    shared: Arc<Shared>,
    vcpus: u32,
) {
    let mut answered = 0;
    loop {
        shared.answer_snapshot(cpu, &fd, &mut answered);
        shared.park(cpu, &fd, &mut answered);
        if shared.stopping() {
            let regs = VcpuRegs::read(&fd);
            crate::kvm::lock(&shared.stopped_regs).push((cpu, regs));
            return;
        }
        let step = match fd.run() {
            Ok(VcpuExit::IoOut(..)) | Ok(VcpuExit::IoIn(..)) => Step::Io,
            // Unclaimed addresses read as all ones; writes to them vanish.
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio.read(addr, data);
                Step::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                mmio.write(addr, data);
                Step::Continue
            }
            Ok(VcpuExit::Intr) => Step::Continue,
            Ok(VcpuExit::Hlt) => Step::Halt,
            Ok(VcpuExit::Shutdown) => Step::Reboot(RebootCause::TripleFault),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Step::Finish(Ok(KvmExit::PowerOff { status: 0 })),
                KVM_SYSTEM_EVENT_RESET => Step::Reboot(RebootCause::SystemEvent),
                _ => Step::Finish(Ok(KvmExit::SystemEvent { cpu, kind })),
            },
            Ok(VcpuExit::InternalError) => Step::Internal,
            Ok(VcpuExit::FailEntry(reason, _)) => Step::Finish(Ok(KvmExit::FailEntry {
                cpu,
                reason,
                regs: VcpuRegs::default(),
            })),
            Ok(other) => Step::Finish(Ok(KvmExit::Unhandled {
                cpu,
                exit: format!("{other:?}"),
                regs: VcpuRegs::default(),
            })),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Continue,
            Err(source) => Step::Finish(Err(KvmError::Run {
                cpu,
                regs: Box::new(VcpuRegs::default()),
                source,
            })),
        };
        match step {
            Step::Continue => {}
            Step::Io => {
                shared.io_exits.fetch_add(1, Ordering::Relaxed);
                match port_io(&mut fd, &bus) {
                    DeviceAction::None => {}
                    DeviceAction::PowerOff { status } => {
                        shared.finish(Ok(KvmExit::PowerOff { status }));
                        return;
                    }
                    DeviceAction::Reboot { cause } => {
                        let regs = VcpuRegs::read(&fd);
                        shared.finish(Ok(KvmExit::Reboot { cause, cpu, regs }));
                        return;
                    }
                }
            }
            Step::Halt => {
                if shared.halted.fetch_add(1, Ordering::SeqCst) + 1 == vcpus {
                    shared.finish(Ok(KvmExit::AllHalted));
                }
                return;
            }
            Step::Reboot(cause) => {
                let regs = VcpuRegs::read(&fd);
                shared.finish(Ok(KvmExit::Reboot { cause, cpu, regs }));
                return;
            }
            Step::Internal => {
                // SAFETY: KVM set exit_reason to KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // union member it filled in.
                let internal = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                shared.finish(Ok(KvmExit::InternalError(Box::new(InternalError {
                    cpu,
                    suberror: internal.suberror,
                    data: internal.data[..n].to_vec(),
                    regs: VcpuRegs::read(&fd),
                }))));
                return;
            }
            Step::Finish(outcome) => {
                let regs = VcpuRegs::read(&fd);
                shared.finish(match outcome {
                    Ok(KvmExit::FailEntry { cpu, reason, .. }) => {
                        Ok(KvmExit::FailEntry { cpu, reason, regs })
                    }
                    Ok(KvmExit::Unhandled { cpu, exit, .. }) => {
                        Ok(KvmExit::Unhandled { cpu, exit, regs })
                    }
                    Err(KvmError::Run { cpu, source, .. }) => Err(KvmError::Run {
                        cpu,
                        regs: Box::new(regs),
                        source,
                    }),
                    other => other,
                });
                return;
            }
        }
    }
}

/// Handles the KVM_EXIT_IO in `fd`'s kvm_run: `count` accesses of `size` bytes each (string
/// I/O such as `rep outsb` arrives as one exit). The first power or reboot request wins.
fn port_io(fd: &mut VcpuFd, bus: &PioBus) -> DeviceAction {
    let run = fd.get_kvm_run();
    // SAFETY: called only after KVM_RUN returned KVM_EXIT_IO, so `io` is the union member
    // KVM filled in.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let len = size * io.count as usize;
    let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
    // SAFETY: KVM puts the data at `data_offset` inside the kvm_run mapping, which is at least
    // a page long and lives as long as `fd`; `len` bytes is what KVM says it holds there.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
    if size == 0 {
        return DeviceAction::None;
    }
    let mut action = DeviceAction::None;
    for chunk in data.chunks_mut(size) {
        if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
            bus.read(io.port, chunk);
        } else if action == DeviceAction::None {
            action = bus.write(io.port, chunk);
        }
    }
    action
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn first_outcome_wins_and_wait_times_out() {
        let s = Shared::default();
        assert!(s.wait(Instant::now() + Duration::from_millis(5)).is_none());
        s.finish(Ok(KvmExit::PowerOff { status: 3 }));
        s.finish(Ok(KvmExit::AllHalted));
        assert!(s.stopping());
        assert!(matches!(
            s.wait(Instant::now()),
            Some(Ok(KvmExit::PowerOff { status: 3 }))
        ));
    }

    #[test]
    fn reports_name_registers() {
        let e = InternalError {
            cpu: 1,
            suberror: 1,
            data: vec![0x10],
            regs: VcpuRegs {
                rip: 0xffff_ffff_8100_0000,
                efer: 0xd01,
                ..Default::default()
            },
        };
        let s = KvmExit::InternalError(Box::new(e)).to_string();
        assert!(s.contains("emulation failure"), "{s}");
        assert!(s.contains("RIP=0xffffffff81000000"), "{s}");
        assert!(s.contains("EFER=0xd01"), "{s}");
    }
}
