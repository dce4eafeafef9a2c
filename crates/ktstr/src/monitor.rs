//! The host-side runqueue monitor of a run (`ktstr exec --monitor FILE`).
//!
//! Nothing runs in the guest for it except one read of `/proc/kallsyms` before the
//! command (the kernel's own symbol addresses, KASLR included; see
//! [`crate::guest::Job::kallsyms`]). On the host a thread loads the kernel's BTF while the
//! guest boots, then, once the symbols arrive, takes the vCPUs' registers (the run loop reads
//! them from the VMM: QMP on QEMU, the vCPU threads on ktstr's own VMM), maps the guest RAM
//! (QEMU's RAM files, or ktstr's own VMM's memory as it is) and samples every CPU's
//! runqueue at the asked rate, writing one JSON object per line:
//!
//! ```text
//! {"t_ns":..,"seq":..,"cpus":[{"cpu":0,"nr_running":2,"curr_pid":77,"curr_comm":"spin",..},..],"scx":{..}}
//! ```
//!
//! `t_ns` is host monotonic time since the VM was launched; `rq_clock_ns` per CPU is the
//! guest's. The monitor never fails a run: whatever goes wrong ends up in
//! [`MonitorSummary`].
//!
//! While sampling, the thread also feeds every sample to the monitor checks
//! ([`ktstr_btf_monitor::checks`]: imbalance, local DSQ depth, stuck rq clock, longest
//! wait; memory bounded by the number of CPUs), whose [`MonitorReport`] ends up in the
//! summary, and, when asked, to a Chrome/Perfetto trace ([`MonitorOptions::trace`]).
//! Whether a failed check fails the run is the caller's choice.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::sampler::error_chain;
use ktstr_btf_monitor::Snapshot;
use ktstr_btf_monitor::{
    Btf, Checker, CpuRegs, GuestMemory, KernelAddrs, MonitorReport, MonitorThresholds, RamFiles,
    Sample, Sampler, SymbolTable, TraceWriter,
};
use ktstr_vmm::{Freezer, VcpuRegisters, Vm};
use serde::Serialize;

use crate::bpf_watch::WatchBpfMap;
use crate::host_services::HostServices;
use crate::kvm_memory::KvmGuestMemory;
use crate::request::{Request, Status};
use crate::watchdog::{GuestWriter, WatchdogShortener};
use crate::KtstrError;

/// Samples per second unless asked otherwise.
pub const DEFAULT_MONITOR_HZ: u32 = 100;
/// The highest rate accepted.
pub const MAX_MONITOR_HZ: u32 = 10_000;
/// How long reading the vCPUs' registers may take (QMP on QEMU, kicked vCPUs on ktstr's VMM).
const REGS_TIMEOUT: Duration = Duration::from_secs(5);
/// Output is flushed at least this often, so the file can be followed while a run goes on.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// What the monitor of a run should do.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorOptions {
    /// The JSON-lines file to write (truncated).
    pub output: PathBuf,
    /// Samples per second (1..=[`MAX_MONITOR_HZ`]).
    pub hz: u32,
    /// Thresholds of the monitor checks.
    pub thresholds: MonitorThresholds,
    /// A Chrome/Perfetto trace JSON to write as well (truncated).
    pub trace: Option<PathBuf>,
    /// Shorten the sched_ext watchdog of attached schedulers to this many jiffies
    /// (see [`crate::watchdog`]).
    pub watchdog_jiffies: Option<u64>,
    /// HostServices to take at these times after the guest's symbols arrive (just before the
    /// command starts), named `periodic_<i>`.
    pub snapshot_at: Vec<Duration>,
    /// BPF globals to set once their maps exist: `(map name suffix, variable, value)`.
    pub map_writes: Vec<(String, String, u32)>,
    /// BPF map fields to read at every tick ([`crate::bpf_watch`]).
    pub watch_maps: Vec<WatchBpfMap>,
}

impl MonitorOptions {
    /// Writes `output` at `hz` with the default thresholds and no trace.
    pub fn new(output: PathBuf, hz: u32) -> Self {
        MonitorOptions {
            output,
            hz,
            thresholds: MonitorThresholds::default(),
            trace: None,
            watchdog_jiffies: None,
            snapshot_at: Vec::new(),
            map_writes: Vec::new(),
            watch_maps: Vec::new(),
        }
    }
}

/// `n` snapshot times spread over 10-90 % of a run of `duration`, at least
/// [`MIN_SNAPSHOT_GAP`] apart (so a short run gets them later than 90 %, not closer).
pub fn snapshot_times(n: u32, duration: Duration) -> Vec<Duration> {
    let first = duration.mul_f64(0.1);
    let step = match n {
        0 | 1 => Duration::ZERO,
        n => duration
            .mul_f64(0.8 / f64::from(n - 1))
            .max(MIN_SNAPSHOT_GAP),
    };
    let first = if n == 1 { duration / 2 } else { first };
    (0..n).map(|i| first + step * i).collect()
}

/// The closest two periodic snapshots come.
pub const MIN_SNAPSHOT_GAP: Duration = Duration::from_millis(100);
/// Samples kept for a failure dump.
pub const RECENT_SAMPLES: usize = 200;
/// Most snapshots kept per run; later ones are counted, not kept.
pub const MAX_SNAPSHOTS: usize = 256;

/// What the monitor did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonitorSummary {
    /// The file written.
    pub output: PathBuf,
    /// Samples written.
    pub samples: u64,
    /// The rate asked for.
    pub target_hz: u32,
    /// Samples per second achieved, first to last sample.
    pub rate_hz: f64,
    /// Seconds from the first to the last sample.
    pub sampling_s: f64,
    /// Mean time to take and write one sample, microseconds.
    pub mean_sample_us: f64,
    /// Launch of the VM to the guest's kernel symbols arriving, milliseconds.
    pub symbols_ms: Option<u64>,
    /// Launch of the VM to the first sample, milliseconds.
    pub first_sample_ms: Option<u64>,
    /// CPU entries that carried an error instead of values.
    pub cpu_errors: u64,
    /// The first such error.
    pub first_error: Option<String>,
    /// Why sampling never started, if it did not.
    pub setup_error: Option<String>,
    /// What the setup checked (GS base against `__per_cpu_offset`, `rq.cpu`, ...).
    pub notes: Vec<String>,
    /// What the monitor checks found (absent when sampling never started).
    pub report: Option<MonitorReport>,
    /// The trace file written, when one was asked for.
    pub trace: Option<PathBuf>,
    /// Why the trace could not be written, if it could not.
    pub trace_error: Option<String>,
    /// The snapshots taken, in order (not in the summary's JSON: see `VmResult::snapshots`).
    #[serde(skip)]
    pub snapshots: Vec<Snapshot>,
    /// HostServices asked for and not taken, with why.
    pub snapshot_errors: Vec<String>,
    /// What became of each BPF map write (`bpf_map_write`), one line each.
    pub map_writes: Vec<String>,
    /// Run metrics of the watched BPF map fields (`watch_bpf_maps`), by `<object>_<label>`.
    pub run_metrics: BTreeMap<String, f64>,
    /// Watched BPF map fields that could not be read, with why.
    pub bpf_watch_errors: Vec<String>,
    /// Every BPF program seen, with the kernel's counts (runs and run time need
    /// `kernel.bpf_stats_enabled`, which monitored runs set).
    pub bpf_progs: Vec<ktstr_btf_monitor::bpf::BpfProgInfo>,
    /// The JSON file the snapshots were written to (beside `output`), when any were taken.
    pub snapshots_file: Option<PathBuf>,
    /// Milliseconds the guest spent frozen for snapshots, all told.
    pub frozen_ms: f64,
    /// The last samples taken (at most [`RECENT_SAMPLES`]), oldest first, as written to the
    /// output: for a failure dump.
    #[serde(skip)]
    pub recent: Vec<serde_json::Value>,
}

impl MonitorSummary {
    /// One line for a person.
    pub fn line(&self) -> String {
        if let Some(e) = &self.setup_error {
            return format!(
                "monitor did not sample: {e} ({} written)",
                self.output.display()
            );
        }
        let mut s = format!(
            "monitor: {} samples in {:.2} s, {:.1}/s (asked {} Hz), {:.0} us per sample, \
             first at {:.2} s -> {}",
            self.samples,
            self.sampling_s,
            self.rate_hz,
            self.target_hz,
            self.mean_sample_us,
            self.first_sample_ms.unwrap_or(0) as f64 / 1000.0,
            self.output.display()
        );
        if self.cpu_errors > 0 {
            s += &format!(
                "; {} CPU reads failed, first: {}",
                self.cpu_errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        s
    }

    /// One line per BPF program seen: name, id, runs, mean run time, verified instructions.
    pub fn prog_lines(&self) -> Vec<String> {
        self.bpf_progs
            .iter()
            .map(|p| {
                let runs = match (p.run_cnt, p.run_time_ns) {
                    (Some(1), Some(ns)) => format!("1 run, {ns} ns"),
                    (Some(c), Some(ns)) if c > 0 => {
                        format!("{c} runs, {:.0} ns each", ns as f64 / c as f64)
                    }
                    (Some(c), _) => format!("{c} runs"),
                    _ => "runs not counted".into(),
                };
                let insns = p
                    .verified_insns
                    .map(|v| format!(", {v} instructions verified"))
                    .unwrap_or_default();
                format!("bpf prog {} (id {}): {runs}{insns}", p.name, p.id)
            })
            .collect()
    }

    /// One line per monitor check (value, threshold, pass or fail), and the trace.
    pub fn check_lines(&self) -> Vec<String> {
        let mut out = match &self.report {
            Some(r) => r.lines(),
            None => vec!["checks: not evaluated, no samples".into()],
        };
        match (&self.trace, &self.trace_error) {
            (_, Some(e)) => out.push(format!("trace not written: {e}")),
            (Some(t), None) => out.push(format!("trace -> {}", t.display())),
            (None, None) => {}
        }
        out
    }

    /// Names of the failed checks; `["no samples"]` when there is nothing to check, so
    /// that enforcing checks over an unmonitored run does not pass silently.
    pub fn failed_checks(&self) -> Vec<&'static str> {
        match &self.report {
            Some(r) if r.samples > 0 => r.failed(),
            _ => vec!["no samples"],
        }
    }
}

/// The guest RAM the monitor reads and the watchdog shortener writes.
#[derive(Debug, Clone)]
pub(crate) enum GuestRam {
    /// QEMU's RAM files, in NUMA node order.
    Files(Vec<PathBuf>),
    /// ktstr's own KVM VMM's memory.
    Kvm(ktstr_vmm::kvm::GuestMemory),
}

impl GuestRam {
    /// A reader of it, and one past its highest backed guest-physical address.
    fn open(&self) -> Result<(Box<dyn GuestMemory + Send>, u64), String> {
        match self {
            GuestRam::Files(files) => {
                let mem = RamFiles::open_pc(files)
                    .map_err(|e| format!("mapping guest RAM: {}", error_chain(&e)))?;
                let end = mem.regions().map(|(gpa, len)| gpa + len).max().unwrap_or(0);
                Ok((Box::new(mem), end))
            }
            GuestRam::Kvm(m) => {
                let mem = KvmGuestMemory(m.clone());
                let end = mem.phys_end();
                Ok((Box::new(mem), end))
            }
        }
    }

    /// A writer of it.
    fn writer(&self) -> Result<Box<dyn GuestWriter>, String> {
        match self {
            GuestRam::Files(files) => ktstr_btf_monitor::memory::RamWriter::open_pc(files)
                .map(|w| Box::new(w) as Box<dyn GuestWriter>)
                .map_err(|e| format!("opening guest RAM for writing: {}", error_chain(&e))),
            GuestRam::Kvm(m) => Ok(Box::new(KvmGuestMemory(m.clone()))),
        }
    }
}

impl GuestRam {
    /// The RAM of `vm`.
    pub(crate) fn of(vm: &Vm) -> GuestRam {
        match vm.kvm_io() {
            Some(io) => GuestRam::Kvm(io.memory.clone()),
            None => GuestRam::Files(vm.ram_files().iter().map(|r| r.path.clone()).collect()),
        }
    }

    /// Answers a guest request by writing its mailbox ([`crate::request::write_reply`]).
    pub(crate) fn reply(&self, mailbox: u64, status: Status, message: &str) -> Result<(), String> {
        let w = self.writer()?;
        reply_with(w.as_ref(), mailbox, status, message)
    }
}

pub(crate) fn reply_with(
    w: &dyn GuestWriter,
    mailbox: u64,
    status: Status,
    message: &str,
) -> Result<(), String> {
    crate::request::write_reply(
        &mut |gpa, v| {
            w.write_u64(gpa, v)
                .map_err(|e| format!("writing the mailbox at {gpa:#x}: {e}"))
        },
        mailbox,
        status,
        message,
    )
}

/// What the run loop hands the monitor once the guest's symbols arrive.
struct Start {
    /// Launch to the symbols' arrival.
    at: Duration,
    symbols: String,
    /// The vCPUs' registers, or why they could not be read.
    regs: Result<Vec<VcpuRegisters>, String>,
    ram: GuestRam,
    /// Freezes the guest for snapshots (`None`: QEMU without a QMP socket).
    freezer: Option<Freezer>,
}

/// A running monitor thread.
pub(crate) struct Monitor {
    tx: Option<mpsc::Sender<Start>>,
    requests: mpsc::Sender<Request>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<MonitorSummary>>,
    launch: Instant,
}

/// The line written per sample.
#[derive(Serialize)]
struct Line<'a> {
    t_ns: u64,
    seq: u64,
    #[serde(flatten)]
    sample: &'a Sample,
    /// Watched BPF map fields by metric key (one value, or one per CPU).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    bpf: &'a BTreeMap<String, Vec<u64>>,
}

impl Monitor {
    /// Creates the output file and starts loading `vmlinux`'s BTF; sampling starts with
    /// [`Monitor::start`].
    pub(crate) fn spawn(
        opts: &MonitorOptions,
        vmlinux: PathBuf,
        nr_cpus: usize,
        launch: Instant,
    ) -> Result<Monitor, KtstrError> {
        let file = File::create(&opts.output).map_err(|e| KtstrError::io(&opts.output, e))?;
        let trace =
            match &opts.trace {
                Some(p) => Some(File::create(p).map_err(|e| KtstrError::io(p, e)).and_then(
                    |f| TraceWriter::new(BufWriter::new(f)).map_err(|e| KtstrError::io(p, e)),
                )?),
                None => None,
            };
        let thresholds = opts.thresholds;
        let watchdog_jiffies = opts.watchdog_jiffies;
        let snapshot_at = opts.snapshot_at.clone();
        let map_writes = opts.map_writes.clone();
        let watch_maps = opts.watch_maps.clone();
        let (tx, rx) = mpsc::channel::<Start>();
        let (requests, req_rx) = mpsc::channel::<Request>();
        let stop = Arc::new(AtomicBool::new(false));
        let summary = MonitorSummary {
            output: opts.output.clone(),
            target_hz: opts.hz.clamp(1, MAX_MONITOR_HZ),
            trace: opts.trace.clone(),
            ..MonitorSummary::default()
        };
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ktstr-monitor".into())
            .spawn(move || {
                let mut summary = summary;
                let out = BufWriter::new(file);
                let mut sinks = Sinks {
                    checker: Checker::new(thresholds),
                    trace,
                };
                let mut services = HostServices::new(snapshot_at, req_rx);
                services.map_writes(map_writes);
                services.watch_maps(watch_maps);
                let r = monitor_thread(
                    &vmlinux,
                    watchdog_jiffies,
                    nr_cpus,
                    launch,
                    &rx,
                    &stop2,
                    out,
                    &mut sinks,
                    &mut services,
                    &mut summary,
                );
                services.finish(&mut summary);
                if let Err(e) = r {
                    summary.setup_error = Some(e);
                }
                if summary.samples > 0 {
                    summary.report = Some(sinks.checker.report());
                }
                if let Some(t) = sinks.trace.take() {
                    if let Err(e) = t.finish() {
                        summary.trace_error.get_or_insert_with(|| e.to_string());
                    }
                }
                summary
            })
            .map_err(|source| KtstrError::Thread {
                name: "monitor",
                source,
            })?;
        Ok(Monitor {
            tx: Some(tx),
            requests,
            stop,
            thread: Some(thread),
            launch,
        })
    }

    /// Starts sampling `vm` with the guest's kallsyms lines: reads its vCPUs' registers
    /// (blocking up to a few seconds) and hands them and its RAM to the thread.
    pub(crate) fn start(&mut self, symbols: String, vm: &Vm) {
        if self.tx.is_none() {
            // Already started: a second symbols frame reads no registers again.
            return;
        }
        let regs = vm
            .registers(REGS_TIMEOUT)
            .map_err(|e| format!("reading vCPU registers: {}", error_chain(&e)));
        self.start_with(symbols, regs, GuestRam::of(vm), vm.freezer());
    }

    /// Starts sampling with the guest's kallsyms lines, its vCPUs' registers, its RAM and
    /// the means to freeze it.
    fn start_with(
        &mut self,
        symbols: String,
        regs: Result<Vec<VcpuRegisters>, String>,
        ram: GuestRam,
        freezer: Option<Freezer>,
    ) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Start {
                at: self.launch.elapsed(),
                symbols,
                regs,
                ram,
                freezer,
            });
        }
    }

    /// Hands a guest's request to the thread; `Err` (with the request back) when the thread
    /// has ended (its setup failed, or the command ended).
    pub(crate) fn request(&self, r: Request) -> Result<(), Request> {
        self.requests.send(r).map_err(|e| e.0)
    }

    /// Asks the thread to stop sampling (the command ended).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the thread and returns its summary.
    pub(crate) fn finish(mut self) -> MonitorSummary {
        self.stop();
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(s)) => s,
            _ => MonitorSummary {
                setup_error: Some("the monitor thread panicked".into()),
                ..MonitorSummary::default()
            },
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where each sample goes besides the JSON lines.
struct Sinks {
    checker: Checker,
    /// Dropped on its first write error (kept in [`MonitorSummary::trace_error`]).
    trace: Option<TraceWriter<BufWriter<File>>>,
}

/// What the guest asks `/proc/kallsyms` for: where the kernel's link-time symbols are at
/// hand ([`link_symbols`]), the monitor's own symbols (with `_text`, whose slide moves the
/// link-time ones when a kernel memory op needs another); otherwise (`*`) every vmlinux
/// symbol, since kernel memory ops may name any.
pub fn kallsyms_request(vmlinux: Option<&Path>) -> Vec<String> {
    match vmlinux.filter(|v| has_link_symbols(v)) {
        // The monitor's own symbols come from the guest (cheap to parse on a slow host); the
        // rest, when an op needs them, from the link-time table moved by `_text`'s slide.
        Some(_) => monitor_symbols().iter().map(|s| s.to_string()).collect(),
        None => vec!["*".to_string()],
    }
}

/// The symbol whose runtime address gives the KASLR slide.
pub(crate) const SLIDE_SYMBOL: &str = "_text";

/// Whether [`link_symbols`] can find the symbols of the kernel whose vmlinux is `vmlinux`.
fn has_link_symbols(vmlinux: &Path) -> bool {
    SymbolTable::elf_has_symtab(vmlinux) || vmlinux.with_file_name("System.map").is_file()
}

/// The link-time symbols of the kernel whose vmlinux is `vmlinux`: its ELF symbol table, or
/// the `System.map` beside it (a vmlinux unpacked from a bzImage has no symbol table).
pub(crate) fn link_symbols(vmlinux: &Path) -> Result<SymbolTable, String> {
    if SymbolTable::elf_has_symtab(vmlinux) {
        return SymbolTable::from_elf_file(vmlinux)
            .map_err(|e| format!("symbols of {}: {}", vmlinux.display(), error_chain(&e)));
    }
    let map = vmlinux.with_file_name("System.map");
    let text = std::fs::read_to_string(&map).map_err(|e| {
        format!(
            "{} has no symbol table and {} is unreadable ({e})",
            vmlinux.display(),
            map.display()
        )
    })?;
    SymbolTable::from_text(&text).map_err(|e| format!("{}: {}", map.display(), error_chain(&e)))
}

/// The symbols the monitor reads on its own: the sampler's, the watchdog's, the BPF IDRs.
/// Others (a kernel memory op's) are looked up in the whole table, parsed on first need.
fn monitor_symbols() -> Vec<&'static str> {
    KernelAddrs::WANTED
        .iter()
        .chain(&crate::watchdog::SYMBOLS)
        .chain(&["map_idr", "prog_idr", SLIDE_SYMBOL])
        .copied()
        .collect()
}

/// Where the guest kernel's whole symbol table comes from, once it is needed.
pub(crate) enum FullSymbols {
    /// The guest's own `/proc/kallsyms` lines (runtime addresses).
    Text(String),
    /// vmlinux's (or System.map's) link-time symbols, moved by the slide `_text` shows.
    Link {
        /// The kernel's vmlinux.
        vmlinux: PathBuf,
        /// `_text`'s runtime address.
        text: u64,
    },
}

impl FullSymbols {
    /// Parses the whole table.
    pub(crate) fn load(&self) -> Result<SymbolTable, String> {
        match self {
            FullSymbols::Text(t) => SymbolTable::from_text(t)
                .map_err(|e| format!("guest kallsyms: {}", error_chain(&e))),
            FullSymbols::Link { vmlinux, text } => {
                let link = link_symbols(vmlinux)?;
                let slide = link
                    .slide_to(SLIDE_SYMBOL, *text)
                    .map_err(|e| format!("{}: {}", vmlinux.display(), error_chain(&e)))?;
                Ok(link.slid(slide))
            }
        }
    }
}

/// The lines of kallsyms `text` that name one of `names`.
fn pick_lines(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    for l in text.lines() {
        if l.rsplit(' ').next().is_some_and(|n| names.contains(&n)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The guest kernel's symbols the monitor reads itself (runtime addresses, from the guest's
/// kallsyms lines), and where the whole table comes from: the link-time symbols moved by the
/// slide `_text` shows where the host has them, else those same lines (all of them, `*`).
fn guest_symbols(vmlinux: &Path, kallsyms: &str) -> Result<(SymbolTable, FullSymbols), String> {
    let names = monitor_symbols();
    let small = SymbolTable::from_text(&pick_lines(kallsyms, &names))
        .map_err(|e| format!("guest kallsyms: {}", error_chain(&e)))?;
    if small.lookup("runqueues").is_none() {
        return Err("the guest's kernel symbols lack `runqueues`".into());
    }
    // The whole table is parsed only if a kernel memory op names another symbol.
    let full = match small.lookup(SLIDE_SYMBOL) {
        Some(t) if has_link_symbols(vmlinux) => FullSymbols::Link {
            vmlinux: vmlinux.to_path_buf(),
            text: t.addr,
        },
        _ => FullSymbols::Text(kallsyms.to_string()),
    };
    Ok((small, full))
}

#[allow(clippy::too_many_arguments)]
fn monitor_thread(
    vmlinux: &Path,
    watchdog_jiffies: Option<u64>,
    nr_cpus: usize,
    launch: Instant,
    rx: &mpsc::Receiver<Start>,
    stop: &AtomicBool,
    mut out: BufWriter<File>,
    sinks: &mut Sinks,
    services: &mut HostServices,
    summary: &mut MonitorSummary,
) -> Result<(), String> {
    let btf = Btf::from_file(vmlinux).map_err(|e| {
        format!(
            "loading BTF from {}: {}",
            vmlinux.display(),
            error_chain(&e)
        )
    })?;
    let start = loop {
        if stop.load(Ordering::SeqCst) {
            return Err("the command ended before the guest sent its kernel symbols".into());
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(s) => break s,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the guest never sent its kernel symbols".into())
            }
        }
    };
    summary.symbols_ms = Some(start.at.as_millis() as u64);
    let (syms, full_syms) = guest_symbols(vmlinux, &start.symbols)?;
    let addrs = KernelAddrs::from_symbols(&syms).map_err(|e| error_chain(&e))?;
    let regs: Vec<CpuRegs> = start
        .regs?
        .iter()
        .map(|r| CpuRegs {
            cpu: r.cpu,
            cr3: r.cr3,
            la57: r.la57(),
            long_mode: r.long_mode(),
            gs_base: r.gs_base,
        })
        .collect();
    let (mem, phys_end) = start.ram.open()?;
    let mut sampler = Sampler::new(mem, &btf, &regs, addrs, nr_cpus, phys_end)
        .map_err(|e| format!("setting up the sampler: {}", error_chain(&e)))?;
    summary.notes = sampler.info().notes.clone();
    let mut watchdog = match watchdog_jiffies {
        None => None,
        Some(jiffies) => {
            match start.ram.writer().and_then(|writer| {
                WatchdogShortener::new(&btf, &syms, sampler.translator(), writer, jiffies)
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    summary.notes.push(format!("watchdog: not shortened: {e}"));
                    None
                }
            }
        }
    };
    // The BTF stays for kernel memory ops, which resolve fields as tests ask.
    services.ready(
        start.at,
        start.freezer.clone(),
        start.ram.writer(),
        btf,
        syms,
        full_syms,
    );
    let period = Duration::from_nanos(1_000_000_000 / u64::from(summary.target_hz.max(1)));
    let mut next = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut last_flush = Instant::now();
    let mut busy = Duration::ZERO;
    let mut line = Vec::with_capacity(4096);
    while !stop.load(Ordering::SeqCst) {
        services.serve(&mut sampler, launch);
        let t0 = Instant::now();
        let t_ns = launch.elapsed().as_nanos() as u64;
        let sample = sampler.sample();
        if let Some(w) = watchdog.as_mut() {
            w.tick(sampler.memory(), t_ns / 1_000_000);
        }
        for c in &sample.cpus {
            if let Some(e) = &c.error {
                summary.cpu_errors += 1;
                summary.first_error.get_or_insert_with(|| e.clone());
            }
        }
        let bpf = services.sample_bpf(&sampler);
        services.read_progs(&sampler);
        line.clear();
        let rec = Line {
            t_ns,
            seq: summary.samples,
            sample: &sample,
            bpf: &bpf,
        };
        if serde_json::to_writer(&mut line, &rec).is_ok() {
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| format!("writing {}: {e}", summary.output.display()))?;
        }
        sinks.checker.observe(t_ns, &sample);
        services.after_sample(t_ns, &sample, &mut sampler, launch);
        if let Some(t) = sinks.trace.as_mut() {
            let counters: BTreeMap<String, f64> = bpf
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter().map(|x| *x as f64).sum::<f64>() / v.len().max(1) as f64,
                    )
                })
                .collect();
            let r = t.sample(t_ns, &sample).and_then(|()| {
                if counters.is_empty() {
                    Ok(())
                } else {
                    t.counters("BPF maps", t_ns, &counters)
                }
            });
            if let Err(e) = r {
                summary.trace_error = Some(e.to_string());
                sinks.trace = None;
            }
        }
        summary.samples += 1;
        if first.is_none() {
            first = Some(t0);
            summary.first_sample_ms = Some(launch.elapsed().as_millis() as u64);
        }
        last = t0;
        if last_flush.elapsed() >= FLUSH_EVERY {
            let _ = out.flush();
            last_flush = Instant::now();
        }
        busy += t0.elapsed();
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 4 {
            // Far behind (host was busy): do not burst to catch up.
            next = now;
        }
    }
    let _ = out.flush();
    if let Some(w) = watchdog {
        summary.notes.extend(w.log);
    }
    if let Some(f) = first {
        summary.sampling_s = (last - f).as_secs_f64();
        if summary.samples > 1 && summary.sampling_s > 0.0 {
            summary.rate_hz = (summary.samples - 1) as f64 / summary.sampling_s;
        }
        summary.mean_sample_us = busy.as_secs_f64() * 1e6 / summary.samples as f64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines() {
        let s = MonitorSummary {
            output: "/tmp/m.jsonl".into(),
            samples: 500,
            target_hz: 100,
            rate_hz: 99.8,
            sampling_s: 5.0,
            mean_sample_us: 12.0,
            first_sample_ms: Some(7250),
            ..MonitorSummary::default()
        };
        assert_eq!(
            s.line(),
            "monitor: 500 samples in 5.00 s, 99.8/s (asked 100 Hz), 12 us per sample, first at 7.25 s -> /tmp/m.jsonl"
        );
        let failed = MonitorSummary {
            setup_error: Some("no symbols".into()),
            ..s
        };
        assert!(failed
            .line()
            .starts_with("monitor did not sample: no symbols"));
    }

    #[test]
    fn check_lines_and_failures() {
        use ktstr_btf_monitor::sampler::{CpuSample, RqSample};
        let rq = |nr: u32, pid: i32, clock: u64| RqSample {
            nr_running: nr,
            fair_nr_running: Some(nr),
            scx_nr_running: None,
            scx_local_dsq_nr: None,
            curr_pid: pid,
            curr_comm: "spin".into(),
            curr_is_idle: pid == 0,
            rq_clock_ns: clock,
            nr_switches: 0,
        };
        let mut c = Checker::new(MonitorThresholds::default());
        for i in 0..10u64 {
            let sample = Sample {
                cpus: [rq(0, 0, i), rq(6, 9, i)]
                    .into_iter()
                    .enumerate()
                    .map(|(cpu, rq)| CpuSample {
                        cpu: cpu as u32,
                        rq: Some(rq),
                        error: None,
                    })
                    .collect(),
                scx: None,
            };
            c.observe(i * 10_000_000, &sample);
        }
        let s = MonitorSummary {
            samples: 10,
            report: Some(c.report()),
            trace: Some("/tmp/t.json".into()),
            ..MonitorSummary::default()
        };
        let lines = s.check_lines();
        assert!(
            lines[0].starts_with("check max_imbalance_ratio: worst 6.00 (cpu 1) threshold 4.00")
                && lines[0].ends_with(": FAIL"),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("trace -> /tmp/t.json")
        );
        assert_eq!(s.failed_checks(), vec!["max_imbalance_ratio"]);
    }

    #[test]
    fn a_missing_vmlinux_still_closes_the_trace() {
        let dir = std::env::temp_dir();
        let out = dir.join(format!("ktstr-mon-trace-{}.jsonl", std::process::id()));
        let trace = dir.join(format!("ktstr-mon-trace-{}.json", std::process::id()));
        let opts = MonitorOptions {
            trace: Some(trace.clone()),
            ..MonitorOptions::new(out.clone(), 100)
        };
        let s = Monitor::spawn(&opts, "/nonexistent/vmlinux".into(), 2, Instant::now())
            .expect("spawn")
            .finish();
        assert!(s.setup_error.is_some() && s.trace_error.is_none(), "{s:?}");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&trace).expect("trace")).expect("valid JSON");
        assert!(v["traceEvents"].is_array());
        assert!(s.check_lines()[0].contains("not evaluated"));
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(trace);
    }

    #[test]
    fn a_missing_vmlinux_is_reported_not_panicked() {
        let out = std::env::temp_dir().join(format!("ktstr-mon-test-{}.jsonl", std::process::id()));
        let opts = MonitorOptions::new(out.clone(), 100);
        let m =
            Monitor::spawn(&opts, "/nonexistent/vmlinux".into(), 2, Instant::now()).expect("spawn");
        let s = m.finish();
        assert!(
            s.setup_error.as_deref().is_some_and(|e| e.contains("BTF")),
            "{s:?}"
        );
        assert_eq!(s.samples, 0);
        assert_eq!(s.report, None);
        assert_eq!(s.failed_checks(), vec!["no samples"]);
        let _ = std::fs::remove_file(&out);
        let bad = MonitorOptions::new("/nonexistent/dir/m.jsonl".into(), 1);
        assert!(Monitor::spawn(&bad, "/x".into(), 1, Instant::now()).is_err());
        let bad_trace = MonitorOptions {
            trace: Some("/nonexistent/dir/t.json".into()),
            ..MonitorOptions::new(out.clone(), 1)
        };
        assert!(Monitor::spawn(&bad_trace, "/x".into(), 1, Instant::now()).is_err());
        let _ = std::fs::remove_file(&out);
    }

    /// The committed capture of a real 7.3 guest under scx_simple (ktstr-btf-monitor's
    /// tests/fixtures/README.md), its pages written into ktstr's own VMM's memory type.
    fn fixture_in_kvm_memory() -> (
        ktstr_vmm::kvm::GuestMemory,
        ktstr_btf_monitor::capture::CaptureMeta,
    ) {
        use std::io::Read;
        use vm_memory::{Bytes, GuestAddress};
        let stem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ktstr-btf-monitor/tests/fixtures/guest-7.3-scx-simple"
        );
        let meta: ktstr_btf_monitor::capture::CaptureMeta =
            serde_json::from_slice(&std::fs::read(format!("{stem}.json")).expect("fixture JSON"))
                .expect("fixture JSON parses");
        let zst = std::fs::read(format!("{stem}.core.zst")).expect("fixture core");
        let mut core = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(zst.as_slice())
            .expect("zstd frame")
            .read_to_end(&mut core)
            .expect("zstd data");
        let path = std::env::temp_dir().join(format!("ktstr-mon-kvm-{}.core", std::process::id()));
        std::fs::write(&path, &core).expect("write core");
        let elf = ktstr_btf_monitor::memory::ElfCore::open(&path).expect("core opens");
        let _ = std::fs::remove_file(&path);
        // The guest had 256 MiB below the PCI hole: one region, as ktstr's VMM lays it out.
        assert!(meta.phys_end <= 0xc000_0000, "{:#x}", meta.phys_end);
        let mem =
            ktstr_vmm::kvm::GuestMemory::from_ranges(&[(GuestAddress(0), meta.phys_end as usize)])
                .expect("guest memory");
        for (gpa, len) in elf.segments().collect::<Vec<_>>() {
            let mut buf = vec![0u8; len as usize];
            elf.read(gpa, &mut buf).expect("segment");
            mem.write_slice(&buf, GuestAddress(gpa)).expect("copy");
        }
        (mem, meta)
    }

    #[test]
    fn the_monitor_samples_a_real_guest_in_ktstr_vmm_memory() {
        let vmlinux = crate::kernel::cache_root().join("kernels/7.3.4+deb13-cloud-amd64/vmlinux");
        if !vmlinux.exists() {
            crate::testing::skip(&format!("{} is absent", vmlinux.display()));
            return;
        }
        let (mem, meta) = fixture_in_kvm_memory();
        let regs = meta
            .regs
            .iter()
            .map(|r| VcpuRegisters {
                cpu: r.cpu,
                cr0: 0x8000_0001,
                cr3: r.cr3,
                cr4: if r.la57 { 1 << 12 } else { 0 },
                efer: if r.long_mode { 1 << 10 | 1 << 8 } else { 0 },
                gs_base: r.gs_base,
                ..VcpuRegisters::default()
            })
            .collect();
        let out = std::env::temp_dir().join(format!("ktstr-mon-kvm-{}.jsonl", std::process::id()));
        let opts = MonitorOptions::new(out.clone(), 200);
        let mut m = Monitor::spawn(&opts, vmlinux, meta.nr_cpus, Instant::now()).expect("spawn");
        m.start_with(meta.kallsyms.clone(), Ok(regs), GuestRam::Kvm(mem), None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&out).map_or(0, |md| md.len()) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = m.finish();
        assert_eq!(s.setup_error, None, "{s:?}");
        assert!(s.samples >= 2, "{s:?}");
        assert_eq!((s.cpu_errors, s.first_error.as_deref()), (0, None));
        // Memory that does not change samples the same every time: each line's CPUs are
        // the ones taken from the real guest when it was captured.
        let text = std::fs::read_to_string(&out).expect("monitor output");
        let _ = std::fs::remove_file(&out);
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("JSON line");
        assert_eq!(first["cpus"], meta.sample["cpus"]);
        assert_eq!(first["scx"]["ops"], "simple");
    }
}
