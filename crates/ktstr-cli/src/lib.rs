//! The ktstr command line: clap definitions, turned into library calls.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ktstr::kernel::{self, BuildOptions, ConfigBase, FetchOptions};
use ktstr::run::{self, Mode, Outcome, RunOptions, RunReport, Stream};
use ktstr::vmm::{TcgThreads, VmmKind, VmmRequest};
use ktstr::Topology;

mod test_cmd;
mod verifier_cmd;

/// Command-line interface of `ktstr`.
#[derive(Debug, Parser)]
#[command(
    name = "ktstr",
    version,
    about = "Test Linux CPU schedulers in VMs with a chosen topology"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch, build and list kernels.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Boot a kernel and run CMD in it as root; exits with CMD's status.
    Exec(ExecArgs),
    /// Boot a kernel and open an interactive shell (or run --exec CMD).
    Shell(ShellArgs),
    /// Run this crate's ktstr tests in VMs (once per --kernel) and summarise them.
    Test(test_cmd::TestArgs),
    /// Load a scheduler's (or object's) BPF programs in a VM and show their verifier stats and
    /// logs; `verifier collapse` folds a log file.
    #[command(args_conflicts_with_subcommands = true)]
    Verifier {
        #[command(subcommand)]
        command: Option<VerifierCommand>,
        #[command(flatten)]
        args: verifier_cmd::VerifierArgs,
    },
}

#[derive(Debug, Subcommand)]
enum VerifierCommand {
    /// Print a verifier log with its repeated loop iterations folded.
    Collapse {
        /// The log file, or - for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Print the folding summary on stderr.
        #[arg(long)]
        stats: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KernelCommand {
    /// Get Debian's newest sched_ext cloud kernel into the cache (instant when cached).
    Fetch {
        /// Version prefix, e.g. 7.3.
        #[arg(long)]
        version: Option<String>,
        /// Download again even if cached.
        #[arg(long)]
        force: bool,
    },
    /// Build a kernel from source with ktstr.kconfig merged in.
    Build {
        /// Kernel source tree.
        #[arg(long, conflicts_with = "linux_source")]
        source: Option<PathBuf>,
        /// Use Debian's linux-source package matching the fetched kernel.
        #[arg(long)]
        linux_source: bool,
        /// Base config: `tiny` (tinyconfig), `distro` (the fetched Debian kernel's), or a file.
        #[arg(long, default_value = "tiny")]
        base: String,
        /// Another fragment merged after ktstr.kconfig.
        #[arg(long)]
        extra_kconfig: Option<PathBuf>,
        /// Parallel jobs (default: all CPUs).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Rebuild even if cached.
        #[arg(long)]
        force: bool,
    },
    /// Print the path of Debian's linux-source tree matching the fetched kernel (downloaded if absent).
    Source,
    /// List cached kernels.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by `exec` and `shell`.
#[derive(Debug, Args)]
struct VmArgs {
    /// Kernel: cache name, version (7.3), image path or source tree (default $KTSTR_KERNEL, else newest cached).
    #[arg(long)]
    kernel: Option<String>,
    /// Topology as NUMA,LLCS,CORES,THREADS (LLCs per node, cores per LLC, threads per core).
    #[arg(long, conflicts_with_all = ["numa", "llcs", "cores", "threads"])]
    topology: Option<Topology>,
    /// NUMA nodes.
    #[arg(long)]
    numa: Option<u32>,
    /// LLCs per NUMA node.
    #[arg(long)]
    llcs: Option<u32>,
    /// Cores per LLC.
    #[arg(long)]
    cores: Option<u32>,
    /// SMT threads per core.
    #[arg(long)]
    threads: Option<u32>,
    /// Guest memory, e.g. 512M or 2G (plain numbers are MiB).
    #[arg(long, conflicts_with = "memory_mib")]
    memory: Option<String>,
    /// Guest memory in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Files or directories to put under /include-files (bare names are looked up in PATH).
    #[arg(short = 'i', long = "include-files")]
    include_files: Vec<PathBuf>,
    /// VMM: auto (ktstr's own KVM VMM where hardware KVM can boot Linux, else QEMU; QEMU
    /// -accel kvm if ours fails before guest init starts), kvm (ktstr's VMM on /dev/kvm), qemu
    /// [default: $KTSTR_VMM, else auto].
    #[arg(long)]
    vmm: Option<VmmKind>,
    /// Accelerator: auto (KVM only where it can boot Linux), kvm, tcg.
    #[arg(long, default_value = "auto")]
    accel: VmmRequest,
    /// TCG threading: single or multi (default single: no int3 races, faster past host CPUs).
    #[arg(long)]
    tcg_threads: Option<TcgThreads>,
    /// Attempts when the guest dies before the command runs (KVM internal errors, VM-entry
    /// failures and engine configuration errors are not retried).
    #[arg(long, default_value_t = run::DEFAULT_ATTEMPTS)]
    attempts: u32,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// QEMU's CPU model (`-cpu`, default host under KVM, max under TCG), e.g. max,-xsave;
    /// QEMU only, so --vmm auto picks QEMU.
    #[arg(long)]
    cpu: Option<String>,
    /// Keep the guest's frames (output, results) on COM2, the slow serial port, instead of
    /// the virtio bulk channel: for comparing the two and for debugging the channel.
    #[arg(long)]
    no_bulk_channel: bool,
    /// Seconds guest init may take to start before the boot counts as failed.
    #[arg(long)]
    boot_timeout: Option<u64>,
    /// Kernel module to load in the guest before the command (its dependencies come along).
    #[arg(short = 'm', long = "module")]
    modules: Vec<String>,
    /// A sched_ext scheduler binary to attach before the command (it must stay attached).
    #[arg(long)]
    scheduler: Option<PathBuf>,
    /// Arguments for the scheduler, split on whitespace.
    #[arg(long, requires = "scheduler", allow_hyphen_values = true)]
    scheduler_args: Option<String>,
    /// Seconds the scheduler may take to attach.
    #[arg(long, default_value_t = 60, requires = "scheduler")]
    attach_timeout: u64,
    /// Print the guest kernel console (COM1) after the run.
    #[arg(long)]
    dmesg: bool,
    /// Print timing and engine details.
    #[arg(short, long)]
    verbose: bool,
}

/// The host-side runqueue monitor's options (`exec`, `shell` and `shell --exec`).
#[derive(Debug, Args)]
struct MonitorArgs {
    /// Sample every CPU's runqueue from the host while the command runs and write one
    /// JSON object per sample and line to FILE.
    #[arg(long, value_name = "FILE")]
    monitor: Option<PathBuf>,
    /// Samples per second for --monitor.
    #[arg(long, value_name = "N", default_value_t = ktstr::monitor::DEFAULT_MONITOR_HZ,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(ktstr::monitor::MAX_MONITOR_HZ)),
          requires = "monitor")]
    monitor_hz: u32,
    /// Also write a Chrome/Perfetto trace JSON (one track per CPU: the running tasks
    /// and the runqueue depths) to FILE; open it in ui.perfetto.dev or chrome://tracing.
    #[arg(long, value_name = "FILE", requires = "monitor")]
    monitor_trace: Option<PathBuf>,
    /// Fail the run when a monitor check fails (max_imbalance_ratio 4.0,
    /// max_local_dsq_depth 50, rq clock stuck, sched_ext fallbacks 200 and keep-lasts 100
    /// per vCPU-second, each sustained 5 samples) or when the
    /// monitor took no sample: ktstr then exits with 123 if the run would have exited 0
    /// (a run that already failed keeps its own code). The checks are printed either way.
    #[arg(long, requires = "monitor")]
    monitor_enforce: bool,
    /// Freeze the guest every MS milliseconds after the command starts and take a snapshot
    /// (every task, runqueue, DSQ and cgroup; at most 256), written beside FILE as
    /// `.snapshots.json`.
    #[arg(long, value_name = "MS", requires = "monitor",
          value_parser = clap::value_parser!(u64).range(100..))]
    snapshot_every: Option<u64>,
}

impl MonitorArgs {
    /// The monitor a run should have, if asked.
    fn options(&self) -> Option<ktstr::monitor::MonitorOptions> {
        self.monitor
            .clone()
            .map(|output| ktstr::monitor::MonitorOptions {
                trace: self.monitor_trace.clone(),
                snapshot_at: self
                    .snapshot_every
                    .map(|ms| {
                        (1..=ktstr::monitor::MAX_SNAPSHOTS as u64)
                            .map(|i| Duration::from_millis(ms * i))
                            .collect()
                    })
                    .unwrap_or_default(),
                ..ktstr::monitor::MonitorOptions::new(output, self.monitor_hz)
            })
    }
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Seconds before the VM is killed (boot and command together).
    #[arg(long, default_value_t = run::DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    #[command(flatten)]
    monitor: MonitorArgs,
    /// Command and arguments to run in the guest.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Debug, Args)]
struct ShellArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Run this shell command instead of an interactive shell.
    #[arg(long)]
    exec: Option<String>,
    /// Seconds before an --exec command is killed.
    #[arg(long, default_value_t = 120)]
    exec_timeout: u64,
    #[command(flatten)]
    monitor: MonitorArgs,
}

/// Runs the CLI with `args` (program name first) and returns the process exit code.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ktstr: error: {}", error_text(&e));
            125
        }
    }
}

/// `error: cause: cause` in one line, each cause once: an error that prints its source
/// (`{path}: {source}`) does not get it repeated, as anyhow's `{:#}` would.
fn error_text(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if s.contains(&t) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&t);
    }
    s
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Kernel { command } => kernel_command(command),
        Command::Test(a) => test_cmd::run(&a, &progress),
        Command::Verifier {
            command: Some(VerifierCommand::Collapse { file, stats }),
            ..
        } => verifier_collapse(&file, stats),
        Command::Verifier {
            command: None,
            args,
        } => verifier_cmd::run(&args, &progress),
        Command::Exec(a) => {
            let timeout = Duration::from_secs(a.timeout);
            let code = run_vm_report(&a.vm, Mode::Exec(a.cmd), timeout, a.monitor.options())?;
            Ok(enforce_monitor(code, a.monitor.monitor_enforce))
        }
        Command::Shell(a) => match a.exec {
            Some(cmd) => {
                let code = run_vm_report(
                    &a.vm,
                    Mode::Exec(vec!["/bin/sh".into(), "-c".into(), cmd]),
                    Duration::from_secs(a.exec_timeout),
                    a.monitor.options(),
                )?;
                Ok(enforce_monitor(code, a.monitor.monitor_enforce))
            }
            None => {
                let code = run_vm_report(
                    &a.vm,
                    Mode::Shell,
                    Duration::from_secs(u64::MAX / 4),
                    a.monitor.options(),
                )?;
                Ok(enforce_monitor(code, a.monitor.monitor_enforce))
            }
        },
    }
}

fn verifier_collapse(file: &std::path::Path, stats: bool) -> Result<i32> {
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    let summary = if file == std::path::Path::new("-") {
        ktstr_verifier::collapse_to_writer(std::io::stdin().lock(), out)?
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        ktstr_verifier::collapse_to_writer(std::io::BufReader::new(f), out)?
    };
    if stats {
        progress(&format!(
            "{} lines in, {} out ({:.1}x), {} folds",
            summary.lines_in,
            summary.lines_out,
            summary.ratio(),
            summary.folds
        ));
    }
    Ok(0)
}

fn progress(msg: &str) {
    eprintln!("ktstr: {msg}");
}

fn kernel_command(cmd: KernelCommand) -> Result<i32> {
    match cmd {
        KernelCommand::Fetch { version, force } => {
            let k = kernel::fetch(
                &FetchOptions {
                    version,
                    force,
                    ..FetchOptions::default()
                },
                &mut progress,
            )?;
            println!("{}", k.boot_image.display());
        }
        KernelCommand::Build {
            source,
            linux_source,
            base,
            extra_kconfig,
            jobs,
            force,
        } => {
            let source = match (source, linux_source) {
                (Some(s), _) => s,
                (None, true) => kernel::linux_source(&mut progress)?,
                (None, false) => bail!("give --source DIR or --linux-source"),
            };
            let base = match base.as_str() {
                "tiny" => ConfigBase::Tiny,
                "distro" => {
                    let k = kernel::fetch(&FetchOptions::default(), &mut progress)?;
                    ConfigBase::File(k.config.context("the fetched kernel has no config")?)
                }
                file => ConfigBase::File(PathBuf::from(file)),
            };
            let k = kernel::build(
                &BuildOptions {
                    source,
                    base,
                    extra_kconfig,
                    jobs,
                    force,
                },
                &mut progress,
            )?;
            println!("{}", k.boot_image.display());
        }
        KernelCommand::Source => {
            println!("{}", kernel::linux_source(&mut progress)?.display());
        }
        KernelCommand::List { json } => {
            let kernels = kernel::list()?;
            if json {
                let metas: Vec<_> = kernels.iter().map(|k| &k.meta).collect();
                println!("{}", serde_json::to_string_pretty(&metas)?);
            } else if kernels.is_empty() {
                println!(
                    "no kernels cached in {} (run `ktstr kernel fetch`)",
                    kernel::kernels_dir().display()
                );
            } else {
                println!(
                    "{:<40} {:<28} {:>9} {:>4} {:>8}",
                    "NAME", "VERSION", "SCHED_EXT", "BTF", "SIZE"
                );
                for k in kernels {
                    println!(
                        "{:<40} {:<28} {:>9} {:>4} {:>6}MB",
                        k.meta.name,
                        k.meta.release,
                        yes_no(k.meta.sched_ext),
                        yes_no(k.meta.btf),
                        k.size() >> 20
                    );
                }
            }
        }
    }
    Ok(0)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Parses `512M`, `512MiB`, `2G`, `2GiB` or a plain number of MiB.
pub fn parse_memory_mib(s: &str) -> Result<u64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [("gib", 1024), ("g", 1024), ("mib", 1), ("m", 1)]
        .iter()
        .find_map(|(suffix, mult)| lower.strip_suffix(suffix).map(|n| (n.to_string(), *mult)))
        .unwrap_or((lower.clone(), 1));
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("bad memory size `{t}`: use e.g. 512M or 2G"))?;
    n.checked_mul(mult)
        .with_context(|| format!("memory size `{t}` is too large: over {} MiB", u64::MAX))
}

fn topology(a: &VmArgs) -> Result<Topology> {
    if let Some(t) = a.topology {
        return Ok(t);
    }
    let d = Topology::default();
    Ok(Topology::new(
        a.numa.unwrap_or(d.numa_nodes),
        a.llcs.unwrap_or(d.llcs),
        a.cores.unwrap_or(d.cores),
        a.threads.unwrap_or(d.threads),
    )?)
}

/// Exit status of `ktstr exec --monitor-enforce` when a monitor check failed.
pub const MONITOR_CHECK_FAILED: i32 = 123;

/// A run's exit code and whether its monitor checks failed.
struct RunCode {
    code: i32,
    monitor_failed: bool,
}

/// [`MONITOR_CHECK_FAILED`] instead of 0 when enforcing and a monitor check failed.
fn enforce_monitor(r: RunCode, enforce: bool) -> i32 {
    if enforce && r.monitor_failed && r.code == 0 {
        MONITOR_CHECK_FAILED
    } else {
        r.code
    }
}

fn run_vm_report(
    a: &VmArgs,
    mode: Mode,
    timeout: Duration,
    monitor: Option<ktstr::monitor::MonitorOptions>,
) -> Result<RunCode> {
    let topo = topology(a)?;
    let memory_mib = match (&a.memory, a.memory_mib) {
        (Some(m), _) => Some(parse_memory_mib(m)?),
        (None, m) => m,
    };
    let kernel = kernel::resolve(a.kernel.as_deref(), &mut progress)?;
    if kernel.config.is_none() {
        progress(&format!(
            "warning: no config found for {}: cannot check it before booting",
            kernel.name
        ));
    }
    let mut opts = RunOptions::new(kernel, topo)?;
    opts.memory_mib = memory_mib;
    opts.timeout = timeout;
    opts.vmm = a.vmm.unwrap_or(opts.vmm);
    opts.accel = a.accel;
    opts.tcg_threads = a.tcg_threads;
    opts.max_attempts = a.attempts;
    opts.include_files = a.include_files.clone();
    opts.extra_cmdline = a.cmdline.clone();
    opts.cpu_model = a.cpu.clone();
    opts.bulk_channel = !a.no_bulk_channel;
    if let Some(s) = a.boot_timeout {
        opts.boot_timeout = Duration::from_secs(s);
    }
    opts.modules = a.modules.clone();
    opts.monitor = monitor;
    opts.scheduler = a.scheduler.as_ref().map(|binary| run::SchedulerRun {
        binary: binary.clone(),
        args: a
            .scheduler_args
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        attach_timeout: Duration::from_secs(a.attach_timeout),
    });

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // A second handler registration (tests calling twice) is harmless to skip.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::SeqCst));
    }
    let mut out = |stream: Stream, data: &[u8]| {
        let _ = match stream {
            Stream::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(data).and_then(|()| o.flush())
            }
            Stream::Stderr => {
                let mut e = std::io::stderr().lock();
                e.write_all(data).and_then(|()| e.flush())
            }
        };
    };
    let report = run::run(&opts, &mode, &mut out, &cancel)?;
    print_report(&report, a, &topo);
    let monitor_failed = report
        .monitor
        .as_ref()
        .is_some_and(|m| !m.failed_checks().is_empty());
    Ok(RunCode {
        code: report.exit_code(),
        monitor_failed,
    })
}

fn print_report(r: &RunReport, a: &VmArgs, topo: &Topology) {
    let secs = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    if let Some(line) = &r.fallback {
        progress(line);
    }
    progress(&format!(
        "engine {} ({}), topology {} ({} CPUs)",
        r.engine.engine,
        r.engine.reason,
        topo,
        topo.total_cpus()
    ));
    for f in &r.retried {
        progress(&format!(
            "retried: guest died before the command ran on {}: {} (console: {})",
            f.engine,
            f.failure,
            f.console_log.display()
        ));
    }
    if a.verbose {
        let console = r
            .launch_to_console
            .map(|d| format!("launch to first console byte {}, ", secs(d)))
            .unwrap_or_default();
        progress(&format!(
            "launch to engine running {}, {console}launch to init {}, launch to end {}",
            secs(r.launch_to_started),
            r.launch_to_init.map(secs).unwrap_or_else(|| "-".into()),
            secs(r.launch_to_end)
        ));
        if let Some(why) = &r.com2_only {
            progress(&format!("frames on COM2, no bulk channel: {why}"));
        }
        for l in &r.guest_log {
            progress(&format!("guest: {l}"));
        }
    }
    if let Some(s) = &r.scheduler {
        print_scheduler(s);
    }
    if let Some(m) = &r.monitor {
        progress(&m.line());
        for l in m.check_lines() {
            progress(&format!("monitor: {l}"));
        }
        if a.verbose {
            for n in &m.notes {
                progress(&format!("monitor: {n}"));
            }
        }
        for s in &m.snapshots {
            progress(&format!("monitor: {}", s.line()));
        }
        for l in m.prog_lines() {
            progress(&format!("monitor: {l}"));
        }
        if let Some(f) = &m.snapshots_file {
            progress(&format!("monitor: snapshots -> {}", f.display()));
        }
    }
    match &r.failure_dump {
        Some(Ok(path)) => progress(&format!("failure dump -> {}", path.display())),
        Some(Err(why)) => progress(&format!("failure dump not written: {why}")),
        None => {}
    }
    for issue in &r.channel_issues {
        progress(&format!("warning: guest channel: {issue}"));
    }
    if let Some(f) = &r.guest_faults {
        // Linux probes a few absent legacy ports on every boot: those only with -v.
        if a.verbose {
            if let Some(l) = f.unclaimed_line() {
                progress(&format!("guest: {l}"));
            }
        }
        for l in f.device_lines() {
            progress(&format!("warning: guest: {l}"));
        }
    }
    match &r.outcome {
        Outcome::Command(_) | Outcome::ShellEnded => {}
        Outcome::CommandTimedOut { after } => progress(&format!(
            "command timed out after {}: VM killed, output above is partial",
            secs(*after)
        )),
        Outcome::GuestDied(f) => {
            progress(&format!("guest kernel died while the command ran: {}", f))
        }
        Outcome::Infrastructure(f) => progress(&format!(
            "infrastructure failure: the guest died before the command ran ({} attempt(s){}): {}",
            r.retried.len() + 1,
            match f.retry() {
                run::Retry::Deterministic => ", not retried: it fails the same way every time",
                run::Retry::Transient => "",
            },
            f
        )),
        Outcome::Interrupted => progress("interrupted: VM stopped and its files removed"),
        Outcome::SchedulerNotAttached => {
            progress("the scheduler did not attach: the command was not run")
        }
    }
    if !r.console_tail.is_empty() {
        progress(&format!(
            "last console lines ({}):",
            r.console_log.display()
        ));
        for l in &r.console_tail {
            eprintln!("  | {l}");
        }
    }
    if a.dmesg {
        if let Ok(c) = std::fs::read_to_string(&r.console_log) {
            eprint!("{c}");
        }
    }
}

fn print_scheduler(s: &ktstr::sched::SchedulerReport) {
    progress(&s.summary());
    if !s.healthy() {
        for l in &s.kernel_log {
            eprintln!("  kernel| {l}");
        }
        for l in s
            .output_tail
            .iter()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  {}| {l}", s.name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_os_error_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(ktstr::KtstrError::io(std::path::Path::new("/x/y"), io))
            .context("reading the kernel");
        let text = super::error_text(&e);
        assert_eq!(text, "reading the kernel: /x/y: entity not found");
    }

    use super::*;

    #[test]
    fn monitor_enforcement_exit_codes() {
        let r = |code, monitor_failed| RunCode {
            code,
            monitor_failed,
        };
        assert_eq!(enforce_monitor(r(0, true), true), MONITOR_CHECK_FAILED);
        assert_eq!(enforce_monitor(r(0, true), false), 0);
        assert_eq!(enforce_monitor(r(0, false), true), 0);
        assert_eq!(enforce_monitor(r(126, true), true), 126);
        assert_eq!(enforce_monitor(r(3, true), true), 3);
        for used in [124, 125, 126, 130] {
            assert_ne!(MONITOR_CHECK_FAILED, used);
        }
        let cli = Cli::try_parse_from([
            "ktstr",
            "exec",
            "--monitor",
            "m.jsonl",
            "--monitor-trace",
            "t.json",
            "--monitor-enforce",
            "--",
            "true",
        ])
        .expect("parses");
        let Command::Exec(a) = cli.command else {
            panic!("not exec")
        };
        assert!(a.monitor.monitor_enforce);
        assert_eq!(a.monitor.monitor_trace, Some(PathBuf::from("t.json")));
        let shell = Cli::try_parse_from([
            "ktstr",
            "shell",
            "--exec",
            "true",
            "--monitor",
            "m.jsonl",
            "--monitor-hz",
            "500",
        ])
        .expect("parses");
        let Command::Shell(s) = shell.command else {
            panic!("not shell")
        };
        assert_eq!(s.monitor.options().map(|m| m.hz), Some(500));
        assert!(Cli::try_parse_from(["ktstr", "exec", "--monitor-enforce", "--", "true"]).is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("512M").unwrap(), 512);
        assert_eq!(parse_memory_mib("2G").unwrap(), 2048);
        assert_eq!(parse_memory_mib("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory_mib("512mib").unwrap(), 512);
        assert_eq!(parse_memory_mib("1024").unwrap(), 1024);
        assert!(parse_memory_mib("lots").is_err());
        // Too large for the host, not for u64: run::check_memory refuses it before boot.
        assert_eq!(
            parse_memory_mib("99999999999G").unwrap(),
            99_999_999_999 * 1024
        );
        // Overflow is an error, not a wrap.
        assert!(parse_memory_mib(&format!("{}G", u64::MAX / 1024 + 1)).is_err());
        assert!(parse_memory_mib("99999999999999999999G").is_err());
    }

    #[test]
    fn topology_flags() {
        let cli =
            Cli::try_parse_from(["ktstr", "exec", "--numa", "2", "--llcs", "2", "--", "true"])
                .unwrap();
        let Command::Exec(a) = cli.command else {
            panic!()
        };
        assert_eq!(topology(&a.vm).unwrap(), Topology::new(2, 2, 2, 1).unwrap());
        let cli =
            Cli::try_parse_from(["ktstr", "exec", "--topology", "1,2,4,2", "--", "nproc"]).unwrap();
        let Command::Exec(a) = cli.command else {
            panic!()
        };
        assert_eq!(topology(&a.vm).unwrap().total_cpus(), 16);
        assert_eq!(a.cmd, ["nproc"]);
        assert!(Cli::try_parse_from(["ktstr", "exec", "--topology", "1,2", "--", "x"]).is_err());
        assert!(Cli::try_parse_from([
            "ktstr",
            "exec",
            "--topology",
            "1,1,1,1",
            "--numa",
            "2",
            "--",
            "x"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["ktstr", "exec"]).is_err(),
            "a command is required"
        );
    }

    #[test]
    fn shell_flags_match_upstream_names() {
        let cli = Cli::try_parse_from([
            "ktstr",
            "shell",
            "--topology",
            "1,1,2,1",
            "-i",
            "/etc/hostname",
            "--include-files",
            "/bin/true",
            "--exec",
            "ls /include-files",
            "--memory-mib",
            "512",
        ])
        .unwrap();
        let Command::Shell(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.vm.include_files.len(), 2);
        assert_eq!(a.vm.memory_mib, Some(512));
        assert_eq!(a.exec.as_deref(), Some("ls /include-files"));
    }
}
