//! Boot a guest, run a command (or a shell) in it, and report what happened.
//!
//! A run ends in exactly one [`Outcome`]. Failures before guest init said
//! hello are infrastructure failures (the command never ran); those that may not
//! happen twice ([`Retry::Transient`]) are retried a bounded number of times, the
//! others are reported at once. Under `--vmm auto`, ktstr's KVM VMM failing before
//! init sends the next attempt to QEMU with `-accel kvm` ([`next_step`]). What
//! happens after hello belongs to the command.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::{
    choose_vmm, fallback_engine, host_kvm, AppChannel, Engine, EngineChoice, TcgThreads, Vm,
    VmConfig, VmExit, VmmError, VmmKind, VmmRequest,
};

use crate::guest::{CommandExit, Hello, Job, JobMode};
use crate::initramfs::{base_cache_key, build_base, write_run_initramfs, InitramfsSpec};
use crate::kernel::{cache_root, check_config, parse_config, ConfigValue, Kernel, EXEC_REQUIRED};
use crate::monitor::{GuestRam, Monitor, MonitorOptions, MonitorSummary};
use crate::proto::{Decoder, Event, FrameKind};
use crate::request::Status;
use crate::sched::{SchedulerJob, SchedulerReport, GUEST_SCHED_DIR};
use crate::KtstrError;

/// How long guest init may take to say hello, unless the overall timeout is shorter.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// Default limit for a whole run (boot and command).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts for a guest that dies before the command runs.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Kernel to boot.
    pub kernel: Kernel,
    /// Topology the guest must see.
    pub topology: Topology,
    /// Guest memory; `None` for max(64 MiB per vCPU, 256 MiB), raised to fit the initramfs.
    /// More than the host's MemTotal is refused before boot.
    pub memory_mib: Option<u64>,
    /// Limit for the whole run (boot and command).
    pub timeout: Duration,
    /// Limit for reaching guest init.
    pub boot_timeout: Duration,
    /// Which VMM runs the guest (`auto`: ktstr's KVM VMM where hardware KVM boots Linux).
    pub vmm: VmmKind,
    /// Accelerator request (QEMU's).
    pub accel: VmmRequest,
    /// TCG threading override.
    pub tcg_threads: Option<TcgThreads>,
    /// Attempts when the guest dies before the command runs of a failure that may not
    /// happen twice (at least 1; a fallback to another engine starts the count again).
    pub max_attempts: u32,
    /// Files or directories for /include-files.
    pub include_files: Vec<PathBuf>,
    /// Binary packed as /init (default: this executable).
    pub init_binary: PathBuf,
    /// Busybox for shells and commands (default: /bin/busybox if present).
    pub busybox: Option<PathBuf>,
    /// Extra kernel command line.
    pub extra_cmdline: String,
    /// Sysctls `(key, value)` written in the guest before the scheduler and the command.
    pub sysctls: Vec<(String, String)>,
    /// Kernel modules to load before the command (dependencies are added).
    pub modules: Vec<String>,
    /// A sched_ext scheduler to attach before the command.
    pub scheduler: Option<SchedulerRun>,
    /// More files at fixed guest paths (guest path, host path), e.g. staged schedulers.
    pub extra_files: Vec<(String, PathBuf)>,
    /// Sample every CPU's runqueue from the host while the command runs.
    pub monitor: Option<MonitorOptions>,
    /// QEMU's `-cpu` model (QEMU only: `--vmm auto` then picks QEMU, `--vmm kvm` refuses it).
    pub cpu_model: Option<String>,
    /// Carry frames on the virtio bulk channel where the engine and kernel allow it (the
    /// default); `false` keeps them on COM2.
    pub bulk_channel: bool,
    /// The most bytes of the command's report ([`RunReport::test_report`]) the host keeps
    /// (default [`MAX_TEST_REPORT`]).
    pub max_report: usize,
}

/// A scheduler binary to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerRun {
    /// The host binary (packed with its shared libraries).
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it may take to attach.
    pub attach_timeout: Duration,
}

impl SchedulerRun {
    fn guest_path(&self) -> String {
        let name = self
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scheduler".into());
        format!("{GUEST_SCHED_DIR}/{name}")
    }
}

impl RunOptions {
    /// Options with defaults for `kernel` and `topology`; the VMM is `$KTSTR_VMM`'s, else auto.
    pub fn new(kernel: Kernel, topology: Topology) -> Result<Self, KtstrError> {
        let exe =
            std::env::current_exe().map_err(|e| KtstrError::io(Path::new("/proc/self/exe"), e))?;
        Ok(RunOptions {
            kernel,
            topology,
            memory_mib: None,
            timeout: DEFAULT_TIMEOUT,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            vmm: VmmKind::from_env()?,
            accel: VmmRequest::Auto,
            tcg_threads: None,
            max_attempts: DEFAULT_ATTEMPTS,
            include_files: Vec::new(),
            init_binary: exe,
            busybox: ["/bin/busybox", "/usr/bin/busybox"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
            extra_cmdline: String::new(),
            sysctls: Vec::new(),
            modules: Vec::new(),
            scheduler: None,
            extra_files: Vec::new(),
            monitor: None,
            cpu_model: None,
            bulk_channel: true,
            max_report: MAX_TEST_REPORT,
        })
    }
}

/// What the guest should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Run a command and report its output and status.
    Exec(Vec<String>),
    /// Give the caller's terminal an interactive shell.
    Shell,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command's stdout.
    Stdout,
    /// The command's stderr.
    Stderr,
}

/// Why a guest did not deliver a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// The kernel panicked.
    KernelPanic {
        /// The panic line from the console.
        line: String,
    },
    /// The kernel oopsed (under multi-threaded TCG, `Oops: int3` is a known emulator race).
    KernelOops {
        /// The oops line from the console.
        line: String,
    },
    /// The engine reported a KVM internal error.
    KvmInternalError {
        /// The engine's report, with registers.
        detail: String,
    },
    /// The CPU refused to enter the guest (KVM's VM-entry failure).
    VmEntryFailed {
        /// The engine's report.
        detail: String,
    },
    /// Guest init did not report within the boot timeout.
    BootTimeout {
        /// How long was waited.
        after: Duration,
    },
    /// The engine exited with an error of its own.
    EngineError {
        /// Its stderr.
        detail: String,
    },
    /// The engine refused its configuration and exited at once (QEMU's argument errors).
    EngineConfig {
        /// Its stderr.
        detail: String,
    },
    /// Guest init failed.
    InitError {
        /// Its message.
        message: String,
    },
    /// The VM ended without reporting how the command ended.
    NoReport {
        /// What the engine said, if anything.
        detail: String,
    },
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let f = self;
        let text = {
            match f {
                GuestFailure::KernelPanic { line } => format!("kernel panic: {line}"),
                GuestFailure::KernelOops { line } => format!("kernel oops: {line}"),
                GuestFailure::KvmInternalError { detail } => {
                    format!("KVM internal error:\n{detail}")
                }
                GuestFailure::VmEntryFailed { detail } => format!("VM entry failed:\n{detail}"),
                GuestFailure::BootTimeout { after } => {
                    format!(
                        "guest init did not start within {:.0}s",
                        after.as_secs_f64()
                    )
                }
                GuestFailure::EngineError { detail } => format!("engine error: {detail}"),
                GuestFailure::EngineConfig { detail } => {
                    format!("the engine refused its configuration: {detail}")
                }
                GuestFailure::InitError { message } => format!("guest init failed: {message}"),
                GuestFailure::NoReport { detail } => {
                    format!(
                        "the VM ended without reporting the command's status{}",
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    )
                }
            }
        };
        out.write_str(&text)
    }
}

/// Whether a failure before the command ran may end otherwise on a second try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It may not happen twice (an emulator race, a slow boot, an early panic): retry.
    Transient,
    /// The same engine, kernel and configuration fail the same way again: report at once.
    Deterministic,
}

impl GuestFailure {
    /// Whether this failure is worth another attempt on the same engine.
    ///
    /// Deterministic: a KVM internal error or VM-entry failure (the host's KVM cannot run
    /// this guest), the engine refusing its configuration, and guest init failing before
    /// hello (same initramfs, same job). Everything else may be a race or a slow host.
    pub fn retry(&self) -> Retry {
        match self {
            GuestFailure::KvmInternalError { .. }
            | GuestFailure::VmEntryFailed { .. }
            | GuestFailure::EngineConfig { .. }
            | GuestFailure::InitError { .. } => Retry::Deterministic,
            GuestFailure::KernelPanic { .. }
            | GuestFailure::KernelOops { .. }
            | GuestFailure::BootTimeout { .. }
            | GuestFailure::EngineError { .. }
            | GuestFailure::NoReport { .. } => Retry::Transient,
        }
    }

    /// The failure in one short line (no registers), e.g. for the fallback message.
    pub fn summary(&self) -> String {
        // The engine's first line, without the register dump after `; ` or KVM's data words.
        let head = |detail: &str| {
            let line = detail.trim().lines().next().unwrap_or("").trim();
            let end = [line.find("; "), line.find(", data ")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(line.len());
            line[..end].to_string()
        };
        match self {
            GuestFailure::KvmInternalError { detail } => {
                let h = head(detail);
                if h.starts_with("KVM internal error") {
                    h
                } else {
                    format!("KVM internal error: {h}")
                }
            }
            GuestFailure::VmEntryFailed { detail } => {
                let h = head(detail);
                if h.contains("entry failed") {
                    h
                } else {
                    format!("VM entry failed: {h}")
                }
            }
            other => other
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and ended.
    Command(CommandExit),
    /// The command ran past the timeout; the VM was killed, output so far was kept.
    CommandTimedOut {
        /// The limit that passed.
        after: Duration,
    },
    /// The guest failed after the command started.
    GuestDied(GuestFailure),
    /// The guest failed before the command ran, on every attempt (one for a
    /// [`Retry::Deterministic`] failure).
    Infrastructure(GuestFailure),
    /// The scheduler did not attach, so the command was not run.
    SchedulerNotAttached,
    /// The interactive shell ended.
    ShellEnded,
    /// The user interrupted the run.
    Interrupted,
}

/// One attempt that failed before the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The engine it ran on.
    pub engine: Engine,
    /// What happened.
    pub failure: GuestFailure,
    /// Its console log.
    pub console_log: PathBuf,
}

/// The largest `#[ktstr_test]` report kept (a body's report is a few KiB).
pub const MAX_TEST_REPORT: usize = 16 << 20;

/// Everything known about a finished run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Engine used (by the last attempt) and why.
    pub engine: EngineChoice,
    /// Why `--vmm auto` left ktstr's KVM VMM for QEMU, in one line, when it did.
    pub fallback: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts before the last that died before the command ran.
    pub retried: Vec<FailedAttempt>,
    /// The last attempt's console log (COM1).
    pub console_log: PathBuf,
    /// Guest init's hello, if it came.
    pub hello: Option<Hello>,
    /// Launch of the engine until it was running (last attempt): for ktstr's VMM the guest
    /// built, its kernel and initramfs loaded and its vCPUs started; for QEMU the process
    /// spawned.
    pub launch_to_started: Duration,
    /// Launch of the engine to the kernel console's first byte (last attempt; ktstr's VMM
    /// only, which sees COM1 directly).
    pub launch_to_console: Option<Duration>,
    /// Launch of the engine to guest init's hello (last attempt).
    pub launch_to_init: Option<Duration>,
    /// Launch to the end of the VM (last attempt).
    pub launch_to_end: Duration,
    /// Messages from guest init (failed optional mounts and the like).
    pub guest_log: Vec<String>,
    /// Damage seen on the guest's frame channels (COM2, and the bulk channel where there is
    /// one): garbage (one line for all of it), CRC failures, gaps, truncation; at most 16
    /// lines and one counting the rest.
    pub channel_issues: Vec<String>,
    /// Bytes of garbage between frames, and in how many places.
    pub channel_garbage: (u64, u64),
    /// Damage reports beyond those in `channel_issues`.
    pub channel_issues_dropped: u64,
    /// The last lines of the console when the guest failed.
    pub console_tail: Vec<String>,
    /// What ktstr's VMM refused the guest (unclaimed ports and MMIO, virtqueue chains
    /// outside guest memory, output beyond the host's bound); `None` on QEMU.
    pub guest_faults: Option<crate::vmm::kvm::FaultLog>,
    /// The command's report: the file it wrote where `$KTSTR_REPORT_PATH` says (a
    /// `#[ktstr_test]` body's verdict, ktstr-veristat's JSON), as the guest sent it in
    /// [`FrameKind::Report`] frames (never parsed out of its output); `None` when none came.
    pub test_report: Option<Vec<u8>>,
    /// What became of the sched_ext scheduler, when one was asked for.
    pub scheduler: Option<SchedulerReport>,
    /// What the runqueue monitor did, when one was asked for.
    pub monitor: Option<MonitorSummary>,
    /// Why the engine offered no bulk channel and frames stayed on COM2, when it did not.
    pub com2_only: Option<String>,
    /// The failure dump written for a monitored run that failed ([`crate::failure_dump`]),
    /// or why it could not be written.
    pub failure_dump: Option<Result<PathBuf, String>>,
}

impl RunReport {
    /// The exit status `ktstr exec` returns: the command's, 128+signal, 124 on timeout,
    /// 125 when the guest failed, 126 when the scheduler failed, 130 when interrupted.
    pub fn exit_code(&self) -> i32 {
        let sched_failed = self.scheduler.as_ref().is_some_and(|s| !s.healthy());
        match &self.outcome {
            Outcome::Command(_) | Outcome::SchedulerNotAttached if sched_failed => 126,
            Outcome::Command(e) => match (e.code, e.signal) {
                (Some(c), _) => c,
                // The signal number comes from the guest: only a real one makes 128+signal.
                (None, Some(s)) if (1..=127).contains(&s) => 128 + s,
                (None, _) => 125,
            },
            Outcome::CommandTimedOut { .. } => 124,
            Outcome::GuestDied(_) | Outcome::Infrastructure(_) => 125,
            Outcome::ShellEnded => 0,
            Outcome::SchedulerNotAttached => 126,
            Outcome::Interrupted => 130,
        }
    }
}

/// Checks the kernel's config for what a run needs; unknown configs pass with a warning from the caller.
pub fn check_kernel(
    kernel: &Kernel,
    topology: &Topology,
    sched_ext: bool,
) -> Result<(), KtstrError> {
    let Some(config) = kernel.config_text() else {
        return Ok(());
    };
    let mut required: Vec<&str> = EXEC_REQUIRED.to_vec();
    if topology.numa_nodes > 1 {
        required.extend(["NUMA", "ACPI_NUMA"]);
    }
    if sched_ext {
        required.push("SCHED_CLASS_EXT");
    }
    let missing = check_config(&config, &required);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KtstrError::KernelConfig {
            kernel: kernel.name.clone(),
            missing,
        })
    }
}

/// Which engines can give `kernel` the bulk channel, and the modules that takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ChannelSupport {
    /// ktstr's VMM: a virtio-console on virtio-mmio.
    mmio: bool,
    /// QEMU: a virtio-serial port on virtio-pci.
    pci: bool,
    /// The transports' and virtio-console's module files, where they are modules.
    modules: Vec<PathBuf>,
}

impl ChannelSupport {
    /// Why `engine` cannot offer this kernel the channel, if it cannot.
    fn missing_on(&self, engine: Engine) -> Option<String> {
        match engine {
            Engine::KtstrKvm if !self.mmio => Some("the kernel has no virtio-mmio".into()),
            Engine::QemuKvm | Engine::QemuTcg(_) if !self.pci => {
                Some("the kernel has no virtio-pci".into())
            }
            _ => None,
        }
    }
}

/// Where frames go for `mode` on `kernel`: what the bulk channel takes, or why there is none
/// (frames then stay on COM2).
fn channel_plan(opts: &RunOptions, mode: &Mode) -> Result<ChannelSupport, String> {
    match mode {
        Mode::Shell => Err("an interactive shell".into()),
        Mode::Exec(_) if !opts.bulk_channel => Err("asked for COM2 only".into()),
        Mode::Exec(_) => bulk_channel_support(&opts.kernel),
    }
}

/// What the bulk channel takes on `kernel`, or why it cannot have one: its config lacks
/// virtio-console or both transports, is unknown, or the modules cannot be found.
fn bulk_channel_support(kernel: &Kernel) -> Result<ChannelSupport, String> {
    let config = parse_config(
        &kernel
            .config_text()
            .ok_or("the kernel's config is unknown")?,
    );
    let mut wanted = Vec::new();
    let mut has = |option: &str, module: &str| match config.get(option) {
        Some(ConfigValue::Yes) => true,
        Some(ConfigValue::Module) => {
            wanted.push(module.to_string());
            true
        }
        _ => false,
    };
    if !has("VIRTIO_CONSOLE", "virtio_console") {
        return Err("the kernel has no virtio-console".into());
    }
    let mmio = has("VIRTIO_MMIO", "virtio_mmio");
    let pci = has("VIRTIO_PCI", "virtio_pci");
    if !mmio && !pci {
        return Err("the kernel has neither virtio-mmio nor virtio-pci".into());
    }
    let modules = crate::kernel::resolve_modules(kernel, &wanted)
        .map_err(|e| format!("the channel's modules: {e}"))?;
    Ok(ChannelSupport { mmio, pci, modules })
}

/// The cached base initramfs for `opts`, built if needed.
pub fn base_initramfs(opts: &RunOptions, modules: Vec<PathBuf>) -> Result<PathBuf, KtstrError> {
    let spec = InitramfsSpec {
        init: opts.init_binary.clone(),
        busybox: opts.busybox.clone(),
        include_files: opts.include_files.clone(),
        modules,
        extra_files: opts
            .scheduler
            .iter()
            .map(|s| (s.guest_path(), s.binary.clone()))
            .chain(opts.extra_files.iter().cloned())
            .collect(),
    };
    let dir = cache_root().join("initramfs");
    std::fs::create_dir_all(&dir).map_err(|e| KtstrError::io(&dir, e))?;
    let path = dir.join(format!("{}.cpio", base_cache_key(&spec)));
    if !path.is_file() {
        prune_oldest(&dir, INITRAMFS_CACHE_KEEP);
        let tmp = dir.join(format!(
            "{}.{}.cpio",
            base_cache_key(&spec),
            std::process::id()
        ));
        build_base(&spec, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(|e| KtstrError::io(&path, e))?;
    }
    Ok(path)
}

/// Cached base initramfs archives kept (each is a few MB).
const INITRAMFS_CACHE_KEEP: usize = 16;
/// Console logs kept under the cache's `runs/`.
const CONSOLE_LOGS_KEEP: usize = 50;

/// Removes all but the `keep` most recently modified files in `dir`.
pub(crate) fn prune_oldest(dir: &Path, keep: usize) {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() > keep {
        files.sort();
        for (_, p) in &files[..files.len() - keep] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Boots, runs `mode`, retries transient infrastructure failures, and reports.
///
/// Before boot, guest memory asked for beyond the host's MemTotal is refused
/// ([`KtstrError::MemoryTooLarge`]). After each attempt [`next_step`] decides: report,
/// boot again on the same engine, or (`--vmm auto`) fall back from ktstr's KVM VMM to QEMU.
pub fn run(
    opts: &RunOptions,
    mode: &Mode,
    output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<RunReport, KtstrError> {
    check_kernel(&opts.kernel, &opts.topology, opts.scheduler.is_some())?;
    if let Some(mib) = opts.memory_mib {
        check_memory(mib, host_memory_mib())?;
    }
    if let Some(s) = &opts.scheduler {
        if !s.binary.is_file() {
            return Err(KtstrError::SchedulerNotFound {
                path: s.binary.clone(),
            });
        }
    }
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let engine = choose_vmm(
        opts.vmm,
        opts.accel,
        opts.tcg_threads,
        &opts.topology,
        &host_kvm(),
        host_cpus,
        opts.cpu_model.as_ref().map(|_| "--cpu"),
    )?;
    let modules = crate::kernel::resolve_modules(&opts.kernel, &opts.modules)?;
    let file_names = |paths: &[PathBuf]| -> Vec<String> {
        paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    let module_names = file_names(&modules);
    // The bulk channel's modules, beside the asked-for ones; `None`: this kernel cannot
    // have the channel, and frames stay on COM2.
    let channel = channel_plan(opts, mode);
    let channel_modules = channel.as_ref().map_or(&[][..], |c| c.modules.as_slice());
    let channel_names = file_names(channel_modules);
    let mut all_modules = modules;
    for m in channel_modules {
        if !all_modules.contains(m) {
            all_modules.push(m.clone());
        }
    }
    let base = base_initramfs(opts, all_modules)?;
    let job = Job {
        mode: match mode {
            Mode::Exec(argv) => JobMode::Exec { argv: argv.clone() },
            Mode::Shell => JobMode::Shell,
        },
        modules: module_names,
        sysctls: {
            let mut s = opts.sysctls.clone();
            // The monitor reports each BPF program's runs and run time, which the kernel
            // counts only when asked.
            if opts.monitor.is_some() && !s.iter().any(|(k, _)| k == BPF_STATS) {
                s.push((BPF_STATS.into(), "1".into()));
            }
            s
        },
        scheduler: opts.scheduler.as_ref().map(|s| SchedulerJob {
            path: s.guest_path(),
            args: s.args.clone(),
            attach_timeout_ms: s.attach_timeout.as_millis() as u64,
        }),
        // Guest init answers with the kernel's own addresses of these symbols.
        kallsyms: match &opts.monitor {
            Some(_) => crate::monitor::kallsyms_request(opts.kernel.vmlinux.as_deref()),
            None => Vec::new(),
        },
        channel_modules: channel_names,
    };
    let run_dir = RunDir::new()?;
    let initramfs = run_dir.path.join("initramfs.cpio");
    write_run_initramfs(&base, &job, &initramfs)?;
    let initramfs_mib = std::fs::metadata(&initramfs)
        .map(|m| m.len() >> 20)
        .unwrap_or(0);
    let memory_mib = opts.memory_mib.unwrap_or_else(|| {
        (u64::from(opts.topology.total_cpus()) * 64)
            .max(256)
            .max(128 + 3 * initramfs_mib)
    });
    let mut engine = engine;
    let mut fallback: Option<String> = None;
    // Whether the engine was just switched, and ktstr's VMM's report if it ran: what to
    // show when QEMU cannot start either.
    let mut just_fell_back = false;
    let mut left_behind: Option<RunReport> = None;
    let mut retried = Vec::new();
    let attempts = opts.max_attempts.max(1);
    // Attempts on the current engine; boots over all engines (names QMP sockets apart).
    let mut attempt = 1;
    let mut boot = 0u32;
    loop {
        boot += 1;
        let console_log = console_log_path()?;
        let cmdline = format!("rdinit=/init quiet {}", opts.extra_cmdline);
        let mut cfg = VmConfig::new(
            opts.kernel.boot_image.clone(),
            initramfs.clone(),
            opts.topology,
        )
        .memory_mib(memory_mib)
        .cmdline(cmdline)
        .console_log(console_log.clone())
        .app_channel(match mode {
            Mode::Exec(_) => AppChannel::Pipe,
            Mode::Shell => AppChannel::Terminal,
        });
        if let Some(model) = &opts.cpu_model {
            cfg = cfg.cpu_model(model.clone());
        }
        let com2_only = match &channel {
            Ok(c) => c.missing_on(engine.engine),
            Err(why) => Some(why.clone()),
        };
        cfg = cfg.bulk_channel(com2_only.is_none());
        if opts.monitor.is_some() {
            cfg = cfg.qmp_socket(run_dir.path.join(format!("qmp{boot}.sock")));
        }
        let mut report = match attempt_once(&cfg, &engine, opts, mode, output, cancel)? {
            Attempt::Ran(report) => *report,
            Attempt::StartFailed(e) => {
                if let (true, Some(line)) = (just_fell_back, &fallback) {
                    // QEMU, the fallback, could not start: say so beside what ktstr's VMM did.
                    let line = format!("{line}, but QEMU could not start: {}", one_line_error(&e));
                    return match left_behind.take() {
                        Some(mut ours) => {
                            ours.fallback = Some(line);
                            Ok(ours)
                        }
                        None => Err(KtstrError::FallbackFailed {
                            fallback: line,
                            source: e,
                        }),
                    };
                }
                match start_fallback(opts.vmm, engine.engine, &e) {
                    NextStep::FallBack { engine: next, line } => {
                        fallback = Some(line);
                        engine = next;
                        attempt = 1;
                        just_fell_back = true;
                        continue;
                    }
                    NextStep::Report | NextStep::Retry => return Err(e.into()),
                }
            }
        };
        just_fell_back = false;
        report.retried = std::mem::take(&mut retried);
        report.com2_only = com2_only;
        report.fallback = fallback.clone();
        if cancel.load(Ordering::SeqCst) {
            return Ok(report);
        }
        let step = next_step(
            opts.vmm,
            engine.engine,
            &report.outcome,
            report.launch_to_init.is_some(),
            attempt,
            attempts,
        );
        let Outcome::Infrastructure(failure) = &report.outcome else {
            return Ok(report);
        };
        let failed = FailedAttempt {
            engine: engine.engine,
            failure: failure.clone(),
            console_log,
        };
        match step {
            NextStep::Report => return Ok(report),
            NextStep::Retry => attempt += 1,
            NextStep::FallBack { engine: next, line } => {
                fallback = Some(line);
                engine = next;
                attempt = 1;
                just_fell_back = true;
                left_behind = Some(report.clone());
            }
        }
        retried = report.retried;
        retried.push(failed);
    }
}

/// What [`attempt_once`] came to: a report, or the engine could not start the VM.
enum Attempt {
    /// The VM started; how it went.
    Ran(Box<RunReport>),
    /// [`Vm::start`] failed; nothing ran.
    StartFailed(VmmError),
}

/// What the run does after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Report this attempt.
    Report,
    /// Boot again on the same engine: the failure may not happen twice.
    Retry,
    /// Boot again on another engine (`--vmm auto` leaving ktstr's KVM VMM).
    FallBack {
        /// The engine to boot next, and why.
        engine: EngineChoice,
        /// What happened, in one line for the user.
        line: String,
    },
}

/// Decides what follows attempt `attempt` of `attempts` on `engine` under `--vmm vmm`
/// that ended in `outcome`; `init_said_hello` is whether guest init reported.
///
/// Only an infrastructure failure is followed by another boot. Under `--vmm auto`, ktstr's
/// KVM VMM failing before init's hello falls back to QEMU `-accel kvm`, deterministic
/// failure or not and whatever attempts remain (QEMU is another engine; it then gets
/// `attempts` of its own). Otherwise a [`Retry::Transient`] failure is tried again while
/// attempts remain, and a [`Retry::Deterministic`] one is reported at once.
pub fn next_step(
    vmm: VmmKind,
    engine: Engine,
    outcome: &Outcome,
    init_said_hello: bool,
    attempt: u32,
    attempts: u32,
) -> NextStep {
    let Outcome::Infrastructure(failure) = outcome else {
        return NextStep::Report;
    };
    if !init_said_hello {
        if let Some(next) = fallback_engine(vmm, engine) {
            return NextStep::FallBack {
                engine: next,
                line: fallback_line(&format!("died before init ({})", failure.summary())),
            };
        }
    }
    match failure.retry() {
        Retry::Transient if attempt < attempts => NextStep::Retry,
        Retry::Transient | Retry::Deterministic => NextStep::Report,
    }
}

/// Decides what follows `engine` failing to start the VM at all: under `--vmm auto`, an
/// error of ktstr's KVM VMM itself ([`VmmError::Kvm`]) falls back to QEMU `-accel kvm`;
/// anything else (a missing kernel, a bad configuration) would fail QEMU too and is reported.
pub fn start_fallback(vmm: VmmKind, engine: Engine, error: &VmmError) -> NextStep {
    match (error, fallback_engine(vmm, engine)) {
        (VmmError::Kvm(why), Some(next)) => NextStep::FallBack {
            engine: next,
            line: fallback_line(&format!(
                "could not start the guest ({})",
                one_line_error(why)
            )),
        },
        _ => NextStep::Report,
    }
}

/// The one line that says why `--vmm auto` left ktstr's KVM VMM: it `what`.
fn fallback_line(what: &str) -> String {
    format!("ktstr's KVM VMM {what}; falling back to QEMU -accel kvm")
}

/// An error and its sources on one line, `outer: inner: ...` (multi-line messages joined).
pub(crate) fn one_line_error(e: &dyn std::error::Error) -> String {
    ktstr_btf_monitor::sampler::error_chain(e).replace('\n', " ")
}

/// Refuses guest memory of `requested_mib` MiB beyond what the host has (`host_mib`, its
/// MemTotal, when known) or beyond what a 64-bit byte count holds.
pub fn check_memory(requested_mib: u64, host_mib: Option<u64>) -> Result<(), KtstrError> {
    const MAX_MIB: u64 = u64::MAX >> 20;
    let too_large = |limit: String| KtstrError::MemoryTooLarge {
        requested: mib_text(requested_mib),
        limit,
    };
    match host_mib {
        Some(host) if requested_mib > host => Err(too_large(format!(
            "this host has ({host} MiB, MemTotal in /proc/meminfo)"
        ))),
        _ if requested_mib > MAX_MIB => Err(too_large(format!(
            "a 64-bit byte count holds ({MAX_MIB} MiB)"
        ))),
        _ => Ok(()),
    }
}

/// `N GiB` for whole GiB, `N MiB` otherwise.
fn mib_text(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// The host's MemTotal in MiB, from `/proc/meminfo` (`None` if unreadable).
pub fn host_memory_mib() -> Option<u64> {
    meminfo_total_mib(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// MemTotal in MiB from `/proc/meminfo`'s text (`MemTotal:  16314436 kB`).
fn meminfo_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(n / 1024),
        Some(_) => None,
    }
}

fn attempt_once(
    cfg: &VmConfig,
    engine: &EngineChoice,
    opts: &RunOptions,
    mode: &Mode,
    output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &AtomicBool,
) -> Result<Attempt, KtstrError> {
    let launch = Instant::now();
    let mut monitor = match &opts.monitor {
        Some(m) => Some(Monitor::spawn(
            m,
            opts.kernel
                .vmlinux
                .clone()
                .unwrap_or_else(|| opts.kernel.boot_image.clone()),
            opts.topology.total_cpus() as usize,
            launch,
        )?),
        None => None,
    };
    let mut vm = match Vm::start(cfg, engine.engine) {
        Ok(vm) => vm,
        Err(e) => return Ok(Attempt::StartFailed(e)),
    };
    let launch_to_started = launch.elapsed();
    let mut report = RunReport {
        engine: engine.clone(),
        fallback: None,
        outcome: Outcome::Interrupted,
        retried: Vec::new(),
        console_log: cfg.console_log.clone(),
        hello: None,
        launch_to_started,
        launch_to_console: None,
        launch_to_init: None,
        launch_to_end: Duration::ZERO,
        guest_log: Vec::new(),
        channel_issues: Vec::new(),
        channel_garbage: (0, 0),
        channel_issues_dropped: 0,
        console_tail: Vec::new(),
        guest_faults: None,
        test_report: None,
        scheduler: None,
        monitor: None,
        // Said by the caller, who knows why the channel was not offered.
        com2_only: None,
        failure_dump: None,
    };
    let (tx, rx) = mpsc::channel::<Event>();
    // COM2 and, where the engine has one, the bulk channel: each its own frame sequence,
    // decoded on its own thread into one event stream.
    let readers: Vec<_> = [vm.take_app_channel(), vm.take_bulk_channel()]
        .into_iter()
        .flatten()
        .map(|pipe| spawn_decoder(pipe, tx.clone()))
        .collect();
    drop(tx);
    let boot_deadline = launch + opts.boot_timeout.min(opts.timeout);
    let run_deadline = launch + opts.timeout;
    let mut exit: Option<CommandExit> = None;
    let mut init_error: Option<String> = None;
    let vm_exit: Option<VmExit>;
    let mut timed_out = false;
    let mut symbols = Vec::new();
    loop {
        if cancel.load(Ordering::SeqCst) {
            vm.kill();
            report.outcome = Outcome::Interrupted;
            report.launch_to_end = launch.elapsed();
            return Ok(Attempt::Ran(Box::new(report)));
        }
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(ev) => {
                if let Event::Frame(f) = &ev {
                    match (f.kind, monitor.as_mut()) {
                        // A long answer spans several frames; an empty one ends it.
                        (FrameKind::Symbols, Some(m)) if f.payload.is_empty() => {
                            m.start(String::from_utf8_lossy(&symbols).into_owned(), &vm)
                        }
                        (FrameKind::Symbols, Some(_))
                            if symbols.len() + f.payload.len() <= MAX_SYMBOLS =>
                        {
                            symbols.extend_from_slice(&f.payload)
                        }
                        (FrameKind::Exit, Some(m)) => m.stop(),
                        (FrameKind::Request, m) => {
                            serve_request(&f.payload, m.as_deref(), &vm, &mut report)
                        }
                        _ => {}
                    }
                }
                handle_event(
                    ev,
                    &mut report,
                    &mut exit,
                    &mut init_error,
                    output,
                    launch,
                    opts.max_report,
                );
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(e) = vm.try_wait()? {
            vm_exit = Some(e);
            break;
        }
        let deadline = match mode {
            Mode::Shell => None,
            Mode::Exec(_) if report.hello.is_none() => Some(boot_deadline),
            Mode::Exec(_) => Some(run_deadline),
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            vm.kill();
            timed_out = true;
            // What the engine said before it was killed: QEMU stays up, paused, after a
            // KVM internal error or a failed VM entry, and says so only on stderr.
            vm_exit = vm.try_wait().ok().flatten();
            break;
        }
    }
    report.monitor = monitor.map(Monitor::finish);
    // The engine is gone: collect what the reader still had.
    for r in readers {
        let _ = r.join();
    }
    while let Ok(ev) = rx.try_recv() {
        handle_event(
            ev,
            &mut report,
            &mut exit,
            &mut init_error,
            output,
            launch,
            opts.max_report,
        );
    }
    summarise_issues(&mut report);
    report.launch_to_end = launch.elapsed();
    report.launch_to_console = vm
        .kvm_io()
        .and_then(|io| io.console.first_byte_at())
        .map(|at| at.saturating_duration_since(launch));
    report.guest_faults = vm.kvm_io().map(|io| io.fault_log());
    let console = std::fs::read_to_string(&cfg.console_log).unwrap_or_default();
    let engine_stderr = match &vm_exit {
        Some(VmExit::Exited { engine_stderr, .. }) => engine_stderr.clone(),
        _ => String::new(),
    };
    let started = report.hello.is_some();
    // ktstr's KVM VMM reports an internal error itself, with the registers.
    let kvm_failure = match &vm_exit {
        Some(VmExit::KvmInternalError(e)) => Some(GuestFailure::KvmInternalError {
            detail: e.to_string(),
        }),
        _ => None,
    };
    report.outcome = if let Some(e) = exit {
        Outcome::Command(e)
    } else if report
        .scheduler
        .as_ref()
        .is_some_and(|s| s.attach_ms.is_none())
    {
        Outcome::SchedulerNotAttached
    } else if matches!(mode, Mode::Shell)
        && !timed_out
        && kvm_failure.is_none()
        && classify_console(&console, &engine_stderr).is_none()
    {
        Outcome::ShellEnded
    } else {
        let failure = if let Some(message) = init_error {
            GuestFailure::InitError { message }
        } else if let Some(f) = kvm_failure {
            f
        } else if let Some(f) = classify_console(&console, &engine_stderr) {
            f
        } else if timed_out && !started {
            GuestFailure::BootTimeout {
                after: opts.boot_timeout.min(opts.timeout),
            }
        } else if matches!(&vm_exit, Some(VmExit::Exited { code: Some(c), .. }) if *c != 0) {
            engine_failure(&console, &engine_stderr)
        } else {
            GuestFailure::NoReport {
                detail: engine_stderr.trim().to_string(),
            }
        };
        if timed_out && started {
            Outcome::CommandTimedOut {
                after: opts.timeout,
            }
        } else if started {
            // An int3 oops under multi-threaded TCG is the emulator's fault, not the command's.
            let tcg_race = matches!(&failure, GuestFailure::KernelOops { line } if line.contains("int3"))
                && matches!(engine.engine, ktstr_vmm::Engine::QemuTcg(TcgThreads::Multi));
            if tcg_race {
                Outcome::Infrastructure(failure)
            } else {
                Outcome::GuestDied(failure)
            }
        } else {
            Outcome::Infrastructure(failure)
        }
    };
    if !matches!(
        report.outcome,
        Outcome::Command(_) | Outcome::ShellEnded | Outcome::SchedulerNotAttached
    ) {
        report.console_tail = console
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(str::to_string)
            .collect();
    }
    report.failure_dump = failure_dump(&report, &console);
    Ok(Attempt::Ran(Box::new(report)))
}

/// Writes the failure dump of a monitored run whose guest died, whose scheduler failed, or
/// whose monitor saw a scheduler exit with an error (one a test attached, too).
fn failure_dump(report: &RunReport, console: &str) -> Option<Result<PathBuf, String>> {
    let m = report.monitor.as_ref()?;
    let scheduler_failed = report.scheduler.as_ref().is_some_and(|s| !s.healthy());
    let seen_failing = m
        .snapshots
        .iter()
        .any(|s| s.name == crate::failure_dump::SNAPSHOT_NAME);
    let what = match &report.outcome {
        Outcome::GuestDied(f) => format!("the guest died: {f}"),
        _ if scheduler_failed => report
            .scheduler
            .as_ref()
            .map(|s| format!("the scheduler failed: {}", s.summary()))
            .unwrap_or_default(),
        _ if seen_failing => "a scheduler exited with an error".to_string(),
        _ => return None,
    };
    let schedulers: Vec<SchedulerReport> = report.scheduler.iter().cloned().collect();
    Some(crate::failure_dump::write(&what, m, &schedulers, console))
}

/// The sysctl that makes the kernel count BPF programs' runs and run time.
const BPF_STATS: &str = "kernel.bpf_stats_enabled";

/// Most bytes of kernel symbols a guest may send (a whole `/proc/kallsyms` is ~10 MB).
const MAX_SYMBOLS: usize = 64 << 20;

/// Hands a test process's request to the monitor, or refuses it in the asker's mailbox
/// when there is no monitor to serve it.
fn serve_request(payload: &[u8], monitor: Option<&Monitor>, vm: &Vm, report: &mut RunReport) {
    let r = match crate::request::parse_request(payload) {
        Ok(r) => r,
        Err(e) => return push_issue(report, e),
    };
    let refused = match monitor {
        Some(m) => match m.request(r) {
            Ok(()) => return,
            Err(r) => (
                r,
                "the host monitor is not running (its setup failed; see the monitor's summary)",
            ),
        },
        None => (
            r,
            "host requests (snapshots, kernel memory ops) need the host monitor, which a \
             test gets when its body names such an op; for ops built elsewhere set \
             num_snapshots on the test, or KTSTR_MONITOR=1 (`ktstr exec`: --monitor)",
        ),
    };
    if let Err(e) = GuestRam::of(vm).reply(refused.0.mailbox, Status::Refused, refused.1) {
        push_issue(report, format!("refusing a guest request: {e}"));
    }
}

/// Decodes the frames of one guest stream on a thread of its own and sends what it finds.
fn spawn_decoder(
    mut pipe: ktstr_vmm::AppReader,
    tx: mpsc::Sender<Event>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut dec = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for ev in dec.push(&buf[..n]) {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if let Some(ev) = dec.finish() {
            let _ = tx.send(ev);
        }
    })
}

fn handle_event(
    ev: Event,
    report: &mut RunReport,
    exit: &mut Option<CommandExit>,
    init_error: &mut Option<String>,
    output: &mut dyn FnMut(Stream, &[u8]),
    launch: Instant,
    max_report: usize,
) {
    match ev {
        Event::Frame(f) => match f.kind {
            FrameKind::Hello => {
                report.launch_to_init = Some(launch.elapsed());
                match serde_json::from_slice::<Hello>(&f.payload) {
                    Ok(h) => report.hello = Some(h),
                    Err(e) => report.channel_issues.push(format!("unreadable hello: {e}")),
                }
            }
            FrameKind::Stdout => output(Stream::Stdout, &f.payload),
            FrameKind::Stderr => output(Stream::Stderr, &f.payload),
            FrameKind::Exit => match serde_json::from_slice::<CommandExit>(&f.payload) {
                Ok(e) => *exit = Some(e),
                Err(e) => report
                    .channel_issues
                    .push(format!("unreadable exit report: {e}")),
            },
            FrameKind::Log => report
                .guest_log
                .push(String::from_utf8_lossy(&f.payload).into_owned()),
            FrameKind::Scheduler => match serde_json::from_slice::<SchedulerReport>(&f.payload) {
                Ok(s) => report.scheduler = Some(s),
                Err(e) => report
                    .channel_issues
                    .push(format!("unreadable scheduler report: {e}")),
            },
            FrameKind::InitError => {
                *init_error = Some(String::from_utf8_lossy(&f.payload).into_owned())
            }
            FrameKind::Report => {
                let r = report.test_report.get_or_insert_with(Vec::new);
                if r.len() + f.payload.len() <= max_report {
                    r.extend_from_slice(&f.payload);
                } else {
                    let issue = format!("report beyond {max_report} bytes: the rest dropped");
                    if !report.channel_issues.contains(&issue) {
                        report.channel_issues.push(issue);
                    }
                }
            }
            // Handled by the run loop, which owns the monitor.
            FrameKind::Symbols | FrameKind::Request => {}
        },
        Event::Garbage { bytes } => {
            report.channel_garbage.0 += bytes as u64;
            report.channel_garbage.1 += 1;
        }
        Event::Corrupt { reason } => push_issue(report, format!("corrupt frame: {reason}")),
        Event::Gap { expected, got } => push_issue(
            report,
            format!("frames lost: expected #{expected}, got #{got}"),
        ),
        Event::Truncated { have, need } => push_issue(
            report,
            format!("truncated frame: {have} of {need} bytes arrived"),
        ),
    }
}

/// Damage reports kept per run; beyond them only a count, so a guest that floods its
/// channel with garbage cannot flood the user's terminal.
const MAX_CHANNEL_ISSUES: usize = 16;

fn push_issue(report: &mut RunReport, issue: String) {
    if report.channel_issues.len() < MAX_CHANNEL_ISSUES {
        report.channel_issues.push(issue);
    } else {
        report.channel_issues_dropped += 1;
    }
}

/// The garbage total and the count of issues beyond [`MAX_CHANNEL_ISSUES`], as issue lines
/// at the end of the run.
fn summarise_issues(report: &mut RunReport) {
    let (bytes, runs) = report.channel_garbage;
    if runs > 0 {
        let line = format!("{bytes} bytes of garbage between frames, in {runs} place(s)");
        report.channel_issues.insert(0, line);
    }
    if report.channel_issues_dropped > 0 {
        let n = report.channel_issues_dropped;
        report
            .channel_issues
            .push(format!("{n} more damaged or lost frame(s)"));
    }
}

/// Finds why a guest died in its console and the engine's stderr.
pub fn classify_console(console: &str, engine_stderr: &str) -> Option<GuestFailure> {
    if engine_stderr.contains("KVM internal error") || engine_stderr.contains("emulation failure") {
        return Some(GuestFailure::KvmInternalError {
            detail: engine_stderr.trim().to_string(),
        });
    }
    // ktstr's VMM: `VM entry failed on vCPU N: reason ..`; QEMU: `KVM: entry failed, hardware error ..`.
    if engine_stderr.contains("VM entry failed") || engine_stderr.contains("KVM: entry failed") {
        return Some(GuestFailure::VmEntryFailed {
            detail: engine_stderr.trim().to_string(),
        });
    }
    let find = |pat: &str| {
        console
            .lines()
            .find(|l| l.contains(pat))
            .map(|l| l.trim().to_string())
    };
    if let Some(line) = find("Kernel panic - not syncing") {
        return Some(GuestFailure::KernelPanic { line });
    }
    if let Some(line) = find("Oops:").or_else(|| find("BUG: unable to handle")) {
        return Some(GuestFailure::KernelOops { line });
    }
    None
}

/// Why an engine exited with an error status before the command ran: its configuration
/// refused ([`GuestFailure::EngineConfig`]) when it exited at once (nothing on the console)
/// saying so, some other error of its own otherwise.
pub fn engine_failure(console: &str, engine_stderr: &str) -> GuestFailure {
    let detail = engine_stderr.trim().to_string();
    if console.trim().is_empty() && engine_config_error(engine_stderr).is_some() {
        GuestFailure::EngineConfig { detail }
    } else {
        GuestFailure::EngineError { detail }
    }
}

/// The line of an engine's stderr that refuses its arguments or configuration, if any
/// (QEMU: `cannot set up guest memory`, `Value '..' is out of range for parameter 'size'`,
/// `Parameter 'size' expects ...`, `Invalid SMP CPUs`,
/// `failed to initialize kvm`, ...); warnings do not count.
pub fn engine_config_error(engine_stderr: &str) -> Option<&str> {
    const REFUSALS: &[&str] = &[
        "cannot set up guest memory",
        "parameter '",
        "out of range",
        "expects",
        "invalid",
        "unsupported",
        "not supported",
        "unknown",
        "could not load",
        "failed to initialize kvm",
        "could not access kvm",
    ];
    engine_stderr.lines().map(str::trim).find(|line| {
        let l = line.to_ascii_lowercase();
        !l.contains("warning:") && REFUSALS.iter().any(|r| l.contains(r))
    })
}

/// A temporary directory removed when dropped (also on error paths).
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn new() -> Result<RunDir, KtstrError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ktstr-run-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| KtstrError::io(&path, e))?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A fresh console log path under the cache's `runs/`, keeping the newest [`CONSOLE_LOGS_KEEP`] logs.
fn console_log_path() -> Result<PathBuf, KtstrError> {
    let dir = cache_root().join("runs");
    std::fs::create_dir_all(&dir).map_err(|e| KtstrError::io(&dir, e))?;
    prune_oldest(&dir, CONSOLE_LOGS_KEEP);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(dir.join(format!(
        "console-{now}-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_classification() {
        let panic = "[ 1.0] foo\n[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert!(
            matches!(classify_console(panic, ""), Some(GuestFailure::KernelPanic { line }) if line.contains("VFS"))
        );
        let oops = "[ 0.5] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n";
        assert!(
            matches!(classify_console(oops, ""), Some(GuestFailure::KernelOops { line }) if line.contains("int3"))
        );
        assert!(matches!(
            classify_console("", "KVM internal error. Suberror: 1\nRAX=0"),
            Some(GuestFailure::KvmInternalError { .. })
        ));
        assert_eq!(classify_console("[ 1.0] all fine\n", ""), None);
    }

    fn report(outcome: Outcome) -> RunReport {
        RunReport {
            engine: EngineChoice {
                engine: ktstr_vmm::Engine::QemuTcg(TcgThreads::Single),
                reason: String::new(),
            },
            fallback: None,
            outcome,
            retried: vec![],
            console_log: PathBuf::new(),
            hello: None,
            launch_to_started: Duration::ZERO,
            launch_to_console: None,
            launch_to_init: None,
            launch_to_end: Duration::ZERO,
            guest_log: vec![],
            channel_issues: vec![],
            channel_garbage: (0, 0),
            channel_issues_dropped: 0,
            console_tail: vec![],
            guest_faults: None,
            test_report: None,
            scheduler: None,
            monitor: None,
            com2_only: None,
            failure_dump: None,
        }
    }

    #[test]
    fn a_flood_of_channel_damage_is_summarised() {
        let mut r = report(Outcome::Interrupted);
        let (mut exit, mut init_error) = (None, None);
        let mut out = |_: Stream, _: &[u8]| {};
        for i in 0..1000 {
            let ev = if i % 10 == 0 {
                Event::Corrupt {
                    reason: format!("bad crc {i}"),
                }
            } else {
                Event::Garbage { bytes: 3 }
            };
            handle_event(
                ev,
                &mut r,
                &mut exit,
                &mut init_error,
                &mut out,
                Instant::now(),
                MAX_TEST_REPORT,
            );
        }
        summarise_issues(&mut r);
        assert_eq!(r.channel_issues.len(), MAX_CHANNEL_ISSUES + 2);
        assert_eq!(
            r.channel_issues[0],
            "2700 bytes of garbage between frames, in 900 place(s)"
        );
        assert_eq!(r.channel_issues[1], "corrupt frame: bad crc 0");
        assert_eq!(
            r.channel_issues.last().map(String::as_str),
            Some("84 more damaged or lost frame(s)")
        );
    }

    #[test]
    fn exit_codes() {
        let cmd = |code, signal| {
            report(Outcome::Command(CommandExit {
                code,
                signal,
                runtime_ms: 1,
            }))
            .exit_code()
        };
        assert_eq!(cmd(Some(3), None), 3);
        assert_eq!(cmd(None, Some(9)), 137);
        // A signal number the guest made up cannot overflow or pass for a status.
        assert_eq!(cmd(None, Some(i32::MAX)), 125);
        assert_eq!(cmd(None, Some(-5)), 125);
        assert_eq!(cmd(None, Some(0)), 125);
        assert_eq!(
            report(Outcome::CommandTimedOut {
                after: Duration::ZERO
            })
            .exit_code(),
            124
        );
        assert_eq!(
            report(Outcome::Infrastructure(GuestFailure::BootTimeout {
                after: Duration::ZERO
            }))
            .exit_code(),
            125
        );
        assert_eq!(report(Outcome::Interrupted).exit_code(), 130);
    }

    /// ktstr's VMM's KVM internal error as `VmExit::KvmInternalError`'s Display gives it.
    const OUR_INTERNAL_ERROR: &str = "KVM internal error on vCPU 0: suberror 1 (emulation failure), data [0x0, 0x1]; RIP=0xffffffff81000000 CR3=0x1000";

    fn internal() -> GuestFailure {
        GuestFailure::KvmInternalError {
            detail: OUR_INTERNAL_ERROR.into(),
        }
    }

    #[test]
    fn deterministic_failures_are_not_retried_and_races_are() {
        let d = |detail: &str| detail.to_string();
        for f in [
            internal(),
            GuestFailure::VmEntryFailed {
                detail: d("VM entry failed on vCPU 0: reason 0x80000021; RIP=0x0"),
            },
            GuestFailure::EngineConfig {
                detail: d("qemu-system-x86_64: cannot set up guest memory 'pc.ram'"),
            },
            GuestFailure::InitError {
                message: d("guest init panicked: no job"),
            },
        ] {
            assert_eq!(f.retry(), Retry::Deterministic, "{f}");
        }
        for f in [
            GuestFailure::KernelOops {
                line: d("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"),
            },
            GuestFailure::KernelPanic {
                line: d("Kernel panic - not syncing: Attempted to kill init!"),
            },
            GuestFailure::BootTimeout {
                after: Duration::from_secs(90),
            },
            GuestFailure::EngineError {
                detail: d("qemu-system-x86_64: terminating on signal 15"),
            },
            GuestFailure::NoReport { detail: d("") },
        ] {
            assert_eq!(f.retry(), Retry::Transient, "{f}");
        }
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(
            internal().summary(),
            "KVM internal error on vCPU 0: suberror 1 (emulation failure)"
        );
        let qemu = GuestFailure::KvmInternalError {
            detail: "KVM internal error. Suberror: 1\nemulation failure\nRAX=0".into(),
        };
        assert_eq!(qemu.summary(), "KVM internal error. Suberror: 1");
        let entry = GuestFailure::VmEntryFailed {
            detail: "VM entry failed on vCPU 1: reason 0x80000021; RIP=0x0".into(),
        };
        assert_eq!(
            entry.summary(),
            "VM entry failed on vCPU 1: reason 0x80000021"
        );
        let init = GuestFailure::BootTimeout {
            after: Duration::from_secs(90),
        };
        assert_eq!(init.summary(), "guest init did not start within 90s");
    }

    #[test]
    fn vm_entry_failures_are_recognised_on_both_engines() {
        for stderr in [
            "VM entry failed on vCPU 0: reason 0x80000021; RIP=0x0",
            "KVM: entry failed, hardware error 0x80000021\n\nIf you're running a guest on an Intel machine without unrestricted mode support, ...",
        ] {
            assert!(
                matches!(
                    classify_console("", stderr),
                    Some(GuestFailure::VmEntryFailed { .. })
                ),
                "{stderr}"
            );
        }
    }

    #[test]
    fn engine_configuration_errors_are_told_from_other_engine_errors() {
        for stderr in [
            "qemu-system-x86_64: cannot set up guest memory 'ram-node0': Cannot allocate memory",
            "qemu-system-x86_64: -m 102399999998976M: Parameter 'size' expects a non-negative number below 2^64",
            "qemu-system-x86_64: -m 102399999998976M: Value '102399999998976M' is out of range for parameter 'size'",
            "qemu-system-x86_64: Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-q35-8.2' is 288",
            "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied",
        ] {
            assert_eq!(
                engine_config_error(stderr),
                stderr.lines().next(),
                "{stderr}"
            );
            assert!(
                matches!(engine_failure("", stderr), GuestFailure::EngineConfig { .. }),
                "{stderr}"
            );
        }
        // A warning is not a refusal; an engine that got as far as the guest's console did not
        // refuse its arguments.
        let warned =
            "qemu-system-x86_64: warning: host doesn't support requested feature: invalid bit";
        assert_eq!(engine_config_error(warned), None);
        assert!(matches!(
            engine_failure("", warned),
            GuestFailure::EngineError { .. }
        ));
        assert!(matches!(
            engine_failure(
                "[ 0.0] Linux version 7.3\n",
                "qemu-system-x86_64: invalid something"
            ),
            GuestFailure::EngineError { .. }
        ));
    }

    #[test]
    fn memory_beyond_the_host_is_refused_before_boot() {
        let host = Some(7982);
        let huge = 99_999_999_999u64 * 1024;
        let e = check_memory(huge, host).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "guest memory of 99999999999 GiB is more than this host has (7982 MiB, MemTotal in /proc/meminfo)"
        );
        assert!(check_memory(7983, host).is_err());
        assert!(check_memory(7982, host).is_ok());
        assert!(check_memory(512, host).is_ok());
        // Without /proc/meminfo only the byte count's overflow is refused.
        assert!(check_memory(1 << 40, None).is_ok());
        let e = check_memory(huge, None).expect_err("overflows");
        assert_eq!(
            e.to_string(),
            "guest memory of 99999999999 GiB is more than a 64-bit byte count holds (17592186044415 MiB)"
        );
        let e = check_memory(1 << 44, None).expect_err("overflows");
        assert!(e.to_string().contains("64-bit byte count"), "{e}");
        assert!(check_memory((1 << 44) - 1, None).is_ok());
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:        8174400 kB\nMemFree:          123456 kB\n";
        assert_eq!(meminfo_total_mib(text), Some(7982));
        assert_eq!(meminfo_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total_mib("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn auto_falls_back_from_our_vmm_dying_before_init() {
        let died = Outcome::Infrastructure(internal());
        let step = next_step(VmmKind::Auto, Engine::KtstrKvm, &died, false, 1, 3);
        let NextStep::FallBack { engine, line } = step else {
            panic!("{step:?}")
        };
        assert_eq!(engine.engine, Engine::QemuKvm);
        assert_eq!(
            line,
            "ktstr's KVM VMM died before init (KVM internal error on vCPU 0: suberror 1 \
             (emulation failure)); falling back to QEMU -accel kvm"
        );
        // A transient failure on ours falls back too, even with no attempts left.
        let slow = Outcome::Infrastructure(GuestFailure::BootTimeout {
            after: Duration::from_secs(90),
        });
        assert!(matches!(
            next_step(VmmKind::Auto, Engine::KtstrKvm, &slow, false, 1, 1),
            NextStep::FallBack { .. }
        ));
        // QEMU, the fallback, does not fall back again: its deterministic failure is reported.
        assert_eq!(
            next_step(VmmKind::Auto, Engine::QemuKvm, &died, false, 1, 3),
            NextStep::Report
        );
        // Nothing to do once the command ran.
        let ran = Outcome::Command(CommandExit {
            code: Some(1),
            signal: None,
            runtime_ms: 1,
        });
        assert_eq!(
            next_step(VmmKind::Auto, Engine::KtstrKvm, &ran, true, 1, 3),
            NextStep::Report
        );
    }

    #[test]
    fn forced_vmm_reports_deterministic_failures_at_once_and_retries_the_rest() {
        let died = Outcome::Infrastructure(internal());
        assert_eq!(
            next_step(VmmKind::Ktstr, Engine::KtstrKvm, &died, false, 1, 3),
            NextStep::Report
        );
        let config = Outcome::Infrastructure(GuestFailure::EngineConfig {
            detail: "qemu-system-x86_64: cannot set up guest memory 'pc.ram'".into(),
        });
        assert_eq!(
            next_step(VmmKind::Qemu, Engine::QemuKvm, &config, false, 1, 3),
            NextStep::Report
        );
        let panic = Outcome::Infrastructure(GuestFailure::KernelPanic {
            line: "Kernel panic - not syncing: Attempted to kill init!".into(),
        });
        assert_eq!(
            next_step(VmmKind::Ktstr, Engine::KtstrKvm, &panic, false, 1, 3),
            NextStep::Retry
        );
        assert_eq!(
            next_step(VmmKind::Ktstr, Engine::KtstrKvm, &panic, false, 3, 3),
            NextStep::Report
        );
        // The int3 race under multi-threaded TCG comes after hello and is retried.
        let race = Outcome::Infrastructure(GuestFailure::KernelOops {
            line: "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI".into(),
        });
        let tcg = Engine::QemuTcg(TcgThreads::Multi);
        assert_eq!(
            next_step(VmmKind::Auto, tcg, &race, true, 1, 3),
            NextStep::Retry
        );
    }

    #[test]
    fn start_failures_of_our_vmm_fall_back_only_under_auto() {
        let ours = || {
            VmmError::Kvm(ktstr_vmm::kvm::KvmError::BadConfig {
                reason: "no room".into(),
            })
        };
        let NextStep::FallBack { engine, line } =
            start_fallback(VmmKind::Auto, Engine::KtstrKvm, &ours())
        else {
            panic!("auto falls back")
        };
        assert_eq!(engine.engine, Engine::QemuKvm);
        assert_eq!(
            line,
            "ktstr's KVM VMM could not start the guest (bad KVM VM configuration: no room); \
             falling back to QEMU -accel kvm"
        );
        assert_eq!(
            start_fallback(VmmKind::Ktstr, Engine::KtstrKvm, &ours()),
            NextStep::Report
        );
        let missing = VmmError::MissingFile {
            what: "kernel",
            path: "/nonexistent".into(),
        };
        assert_eq!(
            start_fallback(VmmKind::Auto, Engine::KtstrKvm, &missing),
            NextStep::Report
        );
    }
}
