//! What the monitor thread does for a run besides sampling, with the guest's memory, BTF and
//! symbols at hand:
//!
//! - snapshots, taken at planned times (`num_snapshots`), when a test process asks
//!   ([`RequestOp::Snapshot`]), whenever a watched kernel symbol's value changes
//!   ([`RequestOp::WatchSymbol`]), and at a scheduler's error exit (`failure`), each with
//!   every vCPU frozen for the read;
//! - kernel memory reads and writes ([`RequestOp::KernelRead`], [`RequestOp::KernelWrite`]);
//! - BPF map writes (`bpf_map_write`, answered to [`RequestOp::AwaitMapWrites`]), watched BPF
//!   map fields (`watch_bpf_maps`) and the BPF programs' statistics.
//!
//! A request is answered in the asker's mailbox while the guest is still frozen, so the
//! test process goes on only after its snapshot was read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::bpf::{BpfLayout, BpfProgInfo};
use ktstr_btf_monitor::sampler::error_chain;
use ktstr_btf_monitor::{Btf, GuestMemory, Sample, Sampler, Snapshot, SymbolTable};
use ktstr_vmm::Freezer;

use crate::bpf_watch::{BpfWatches, WatchBpfMap};
use crate::kernel_ops::KernelOps;
use crate::monitor::{FullSymbols, MonitorSummary, MAX_SNAPSHOTS, RECENT_SAMPLES};
use crate::request::{Request, RequestOp, Status};
use crate::watchdog::GuestWriter;

/// How long a freeze may take to stop every vCPU.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the BPF programs' statistics are read.
const PROGS_EVERY: Duration = Duration::from_millis(500);
/// Most symbols watched at once.
const MAX_WATCHES: usize = 16;

/// A watched symbol: its address and the last value seen.
struct Watch {
    symbol: String,
    addr: u64,
    last: Option<u64>,
}

/// The snapshot side of one monitor thread.
pub(crate) struct HostServices {
    /// Planned times after the symbols' arrival, ascending; `next` is the first not taken.
    at: Vec<Duration>,
    next: usize,
    requests: mpsc::Receiver<Request>,
    /// Launch to the symbols' arrival, once the monitor is set up.
    origin: Option<Duration>,
    freezer: Option<Freezer>,
    writer: Result<Box<dyn GuestWriter>, String>,
    /// Kernel memory ops (and symbol lookups for watches), once the monitor is set up.
    kops: Option<KernelOps>,
    watches: Vec<Watch>,
    taken: Vec<Snapshot>,
    errors: Vec<String>,
    frozen: Duration,
    /// The last samples, for a failure dump.
    recent: VecDeque<serde_json::Value>,
    /// BPF map fields read at every tick.
    map_watches: Vec<WatchBpfMap>,
    bpf_watches: Option<BpfWatches>,
    /// The BPF programs seen, by id (the latest reading of each), and when last read.
    progs: BTreeMap<u32, BpfProgInfo>,
    progs_read: Option<Instant>,
    /// BPF globals still to write: `(suffix, field, value)`.
    map_writes: Vec<(String, String, u32)>,
    /// What the writes did, one line each.
    map_written: Vec<String>,
    /// Mailboxes waiting for every map write.
    map_waiters: Vec<u64>,
    /// When the maps were last looked for.
    maps_checked: Option<Instant>,
    /// The scheduler whose error exit was already snapshotted (`scx_root`'s ops name and
    /// exit kind), so one failure takes one snapshot.
    failed: Option<String>,
}

impl HostServices {
    /// Plans snapshots at `at` and serves the requests coming on `requests`.
    pub(crate) fn new(mut at: Vec<Duration>, requests: mpsc::Receiver<Request>) -> Self {
        at.sort();
        HostServices {
            at,
            next: 0,
            requests,
            origin: None,
            freezer: None,
            writer: Err("the monitor is not set up".into()),
            kops: None,
            watches: Vec::new(),
            taken: Vec::new(),
            errors: Vec::new(),
            frozen: Duration::ZERO,
            recent: VecDeque::new(),
            failed: None,
            map_watches: Vec::new(),
            bpf_watches: None,
            progs: BTreeMap::new(),
            progs_read: None,
            map_writes: Vec::new(),
            map_written: Vec::new(),
            map_waiters: Vec::new(),
            maps_checked: None,
        }
    }

    /// The monitor is set up: the symbols arrived `at` after launch; `btf` and `syms` are
    /// the guest kernel's (runtime addresses).
    pub(crate) fn ready(
        &mut self,
        at: Duration,
        freezer: Option<Freezer>,
        writer: Result<Box<dyn GuestWriter>, String>,
        btf: Btf,
        syms: SymbolTable,
        full: FullSymbols,
    ) {
        self.origin = Some(at);
        self.freezer = freezer;
        self.writer = writer;
        if !self.map_watches.is_empty() {
            self.bpf_watches = Some(BpfWatches::new(
                &self.map_watches,
                BpfLayout::from_btf(&btf),
            ));
        }
        self.kops = Some(KernelOps::new(btf, syms, full));
    }

    /// BPF map fields to read at every tick.
    pub(crate) fn watch_maps(&mut self, watches: Vec<WatchBpfMap>) {
        self.map_watches = watches;
    }

    /// Reads the BPF programs' statistics, at most every [`PROGS_EVERY`]: each program keeps
    /// its latest reading, so one that unloaded before the end is still reported.
    pub(crate) fn read_progs<M: GuestMemory>(&mut self, sampler: &Sampler<M>) {
        if self.progs_read.is_some_and(|t| t.elapsed() < PROGS_EVERY) {
            return;
        }
        self.progs_read = Some(Instant::now());
        let Some(kops) = self.kops.as_mut() else {
            return;
        };
        if let Ok(progs) = kops.bpf_progs(sampler) {
            for p in progs {
                self.progs.insert(p.id, p);
            }
        }
    }

    /// Reads the watched BPF map fields once (see [`BpfWatches::sample`]).
    pub(crate) fn sample_bpf<M: GuestMemory>(
        &mut self,
        sampler: &Sampler<M>,
    ) -> BTreeMap<String, Vec<u64>> {
        let Some(w) = self.bpf_watches.as_mut() else {
            return BTreeMap::new();
        };
        let idr = self
            .kops
            .as_mut()
            .and_then(|k| k.symbol_addr("map_idr").ok());
        w.sample(sampler, idr)
    }

    /// BPF globals to write once their maps exist.
    pub(crate) fn map_writes(&mut self, writes: Vec<(String, String, u32)>) {
        self.map_writes = writes;
    }

    /// Makes the map writes whose maps exist now (looking at most every 50 ms), and answers
    /// those waiting once none is left.
    fn serve_map_writes<M: GuestMemory>(&mut self, sampler: &Sampler<M>) {
        if !self.map_writes.is_empty()
            && self
                .maps_checked
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(50))
        {
            self.maps_checked = Some(Instant::now());
            let (Some(kops), Ok(writer)) = (self.kops.as_mut(), self.writer.as_ref()) else {
                return;
            };
            let mut left = Vec::new();
            for (suffix, field, value) in std::mem::take(&mut self.map_writes) {
                match kops.write_map_global(&suffix, &field, value, sampler, writer.as_ref()) {
                    Ok(Some(said)) => self.map_written.push(said),
                    Ok(None) => left.push((suffix, field, value)),
                    Err(e) => self
                        .map_written
                        .push(format!("{suffix} {field}: FAILED: {e}")),
                }
            }
            self.map_writes = left;
        }
        if self.map_writes.is_empty() && !self.map_waiters.is_empty() {
            let failed = self.map_written.iter().any(|w| w.contains("FAILED"));
            let status = if failed {
                Status::Refused
            } else {
                Status::Done
            };
            let text = self.map_written.join("\n");
            for m in std::mem::take(&mut self.map_waiters) {
                if let Err(e) = self.reply(m, status, &text) {
                    self.errors.push(format!("answering a map-write wait: {e}"));
                }
            }
        }
    }

    /// Takes whatever is due: requested snapshots, planned ones, watched symbols that changed.
    pub(crate) fn serve<M: GuestMemory>(&mut self, sampler: &mut Sampler<M>, launch: Instant) {
        while let Ok(r) = self.requests.try_recv() {
            self.answer(r, sampler, launch);
        }
        self.serve_map_writes(sampler);
        let Some(origin) = self.origin else { return };
        while self.next < self.at.len() && launch.elapsed() >= origin + self.at[self.next] {
            let name = format!("periodic_{}", self.next);
            self.next += 1;
            if let Err(e) = self.take(&name, sampler, launch, None) {
                self.errors.push(format!("{name}: {e}"));
            }
        }
        for i in 0..self.watches.len() {
            let w = &self.watches[i];
            let now = sampler
                .translator()
                .read_virt_u64(sampler.memory(), w.addr)
                .ok();
            if now.is_some() && now != w.last {
                let seen_before = w.last.is_some();
                let name = w.symbol.clone();
                self.watches[i].last = now;
                if seen_before {
                    if let Err(e) = self.take(&name, sampler, launch, None) {
                        self.errors.push(format!("watch {name}: {e}"));
                    }
                }
            }
        }
    }

    /// Keeps `sample` for a failure dump, and takes a `failure` snapshot the first time a
    /// sample shows the attached scheduler exiting with an error (`exit_kind` `error*`):
    /// sched_ext has marked it failed and the guest is still alive.
    pub(crate) fn after_sample<M: GuestMemory>(
        &mut self,
        t_ns: u64,
        sample: &Sample,
        sampler: &mut Sampler<M>,
        launch: Instant,
    ) {
        if self.recent.len() >= RECENT_SAMPLES {
            self.recent.pop_front();
        }
        let mut v = serde_json::to_value(sample).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("t_ns".into(), t_ns.into());
        }
        self.recent.push_back(v);
        let exiting = sample.scx.as_ref().and_then(|s| {
            let kind = s.exit_kind.as_deref()?;
            kind.starts_with("error")
                .then(|| format!("{} {kind}", s.ops.as_deref().unwrap_or("?")))
        });
        match exiting {
            Some(which) if self.failed.as_ref() != Some(&which) => {
                self.failed = Some(which.clone());
                if let Err(e) = self.take(crate::failure_dump::SNAPSHOT_NAME, sampler, launch, None)
                {
                    self.errors.push(format!("failure snapshot ({which}): {e}"));
                }
            }
            Some(_) => {}
            None => self.failed = None,
        }
    }

    fn answer<M: GuestMemory>(&mut self, r: Request, sampler: &mut Sampler<M>, launch: Instant) {
        let result = match &r.op {
            RequestOp::Snapshot { name } => self
                .take(name, sampler, launch, Some(r.mailbox))
                .map(|()| None),
            RequestOp::WatchSymbol { symbol } => self.watch(symbol, sampler).map(Some),
            RequestOp::AwaitMapWrites => {
                // Answered by serve_map_writes once every write is made.
                self.map_waiters.push(r.mailbox);
                return;
            }
            RequestOp::KernelWrite { writes, cold } => self
                .kernel_op(*cold, r.mailbox, sampler, |k, s, w| k.write(writes, s, w))
                .map(|()| None),
            RequestOp::KernelRead {
                target,
                width,
                cold,
            } => self
                .kernel_op(*cold, r.mailbox, sampler, |k, s, _| {
                    let v = k.read(target, *width, *cold, s)?;
                    serde_json::to_string(&v).map_err(|e| e.to_string())
                })
                .map(|()| None),
        };
        let (status, message) = match result {
            // Already answered while frozen.
            Ok(None) => return,
            Ok(Some(msg)) => (Status::Done, msg),
            Err(e) => {
                self.errors.push(e.clone());
                (Status::Refused, e)
            }
        };
        if let Err(e) = self.reply(r.mailbox, status, &message) {
            self.errors.push(format!("answering a request: {e}"));
        }
    }

    /// Runs a kernel memory op, the guest frozen around it when `cold`, and answers
    /// `mailbox` with its result (before thawing).
    fn kernel_op<M: GuestMemory>(
        &mut self,
        cold: bool,
        mailbox: u64,
        sampler: &mut Sampler<M>,
        op: impl FnOnce(&mut KernelOps, &Sampler<M>, &dyn GuestWriter) -> Result<String, String>,
    ) -> Result<(), String> {
        let frozen = match (cold, &self.freezer) {
            (false, _) => None,
            (true, Some(f)) => Some(
                f.freeze(FREEZE_TIMEOUT)
                    .map_err(|e| format!("freezing the guest: {}", error_chain(&e)))?,
            ),
            (true, None) => return Err("the guest cannot be frozen for a cold op".into()),
        };
        let writer = self.writer.as_ref().map_err(|e| e.clone())?;
        let kops = self.kops.as_mut().ok_or("the monitor is not set up")?;
        let (status, message) = match op(kops, sampler, writer.as_ref()) {
            Ok(m) => (Status::Done, m),
            Err(e) => (Status::Refused, e),
        };
        if status == Status::Refused {
            self.errors.push(message.clone());
        }
        let answered = self.reply(mailbox, status, &message);
        if let Some(f) = frozen {
            let held = f
                .thaw()
                .map_err(|e| format!("thawing the guest: {}", error_chain(&e)))?;
            self.frozen += held;
        }
        answered
    }

    fn reply(&self, mailbox: u64, status: Status, message: &str) -> Result<(), String> {
        let w = self.writer.as_ref().map_err(|e| e.clone())?;
        crate::monitor::reply_with(w.as_ref(), mailbox, status, message)
    }

    /// Starts watching `symbol`: resolved in vmlinux's symbol table, moved by the KASLR slide.
    fn watch<M: GuestMemory>(
        &mut self,
        symbol: &str,
        sampler: &Sampler<M>,
    ) -> Result<String, String> {
        if self.watches.len() >= MAX_WATCHES {
            return Err(format!(
                "watch {symbol}: already watching {MAX_WATCHES} symbols"
            ));
        }
        let addr = self
            .kops
            .as_mut()
            .ok_or("the monitor is not set up")?
            .symbol_addr(symbol)
            .map_err(|e| format!("watch {symbol}: {e}"))?;
        let last = sampler
            .translator()
            .read_virt_u64(sampler.memory(), addr)
            .map_err(|e| format!("watch {symbol}: reading {addr:#x}: {}", error_chain(&e)))?;
        self.watches.push(Watch {
            symbol: symbol.to_string(),
            addr,
            last: Some(last),
        });
        Ok(format!("watching {symbol} at {addr:#x} (now {last:#x})"))
    }

    /// Freezes the guest, reads a snapshot named `name`, answers `mailbox` if given, thaws.
    fn take<M: GuestMemory>(
        &mut self,
        name: &str,
        sampler: &mut Sampler<M>,
        launch: Instant,
        mailbox: Option<u64>,
    ) -> Result<(), String> {
        if self.taken.len() >= MAX_SNAPSHOTS {
            return Err(format!("more than {MAX_SNAPSHOTS} snapshots: not taken"));
        }
        let freezer = self
            .freezer
            .as_ref()
            .ok_or("the guest cannot be frozen (QEMU without a QMP socket): no snapshot")?;
        let frozen = freezer
            .freeze(FREEZE_TIMEOUT)
            .map_err(|e| format!("freezing the guest: {}", error_chain(&e)))?;
        let mut snap = sampler.snapshot();
        snap.name = name.to_string();
        snap.at_ms = frozen.since().saturating_duration_since(launch).as_millis() as u64;
        let answered = mailbox.map(|m| {
            self.reply(
                m,
                Status::Done,
                &format!("snapshot {name}: {} tasks", snap.tasks.len()),
            )
        });
        let held = frozen
            .thaw()
            .map_err(|e| format!("thawing the guest: {}", error_chain(&e)))?;
        snap.frozen_us = held.as_micros() as u64;
        self.frozen += held;
        self.taken.push(snap);
        if let Some(Err(e)) = answered {
            self.errors.push(format!("answering snapshot {name}: {e}"));
        }
        Ok(())
    }

    /// Hands what was taken to the summary; planned snapshots never reached are said so.
    pub(crate) fn finish(mut self, summary: &mut MonitorSummary) {
        let missed = self.at.len() - self.next;
        if missed > 0 {
            self.errors.push(format!(
                "{missed} of {} planned snapshots not taken: the command ended first{}",
                self.at.len(),
                if self.origin.is_none() {
                    " (the monitor never started)"
                } else {
                    ""
                }
            ));
        }
        while let Ok(r) = self.requests.try_recv() {
            let why = "the monitor ended before it could answer";
            let _ = self.reply(r.mailbox, Status::Refused, why);
            self.errors.push(format!("a request: {why}"));
        }
        for (suffix, field, _) in &self.map_writes {
            self.map_written.push(format!(
                "{suffix} {field}: FAILED: no map named *{suffix} with {field} appeared"
            ));
        }
        for m in std::mem::take(&mut self.map_waiters) {
            let _ = self.reply(m, Status::Refused, &self.map_written.join("\n"));
        }
        summary.map_writes = std::mem::take(&mut self.map_written);
        summary.bpf_progs = std::mem::take(&mut self.progs).into_values().collect();
        if let Some(w) = &self.bpf_watches {
            summary.run_metrics = w.metrics();
            summary.bpf_watch_errors = w.errors.clone();
            summary.bpf_watch_errors.extend(w.unresolved());
        } else if !self.map_watches.is_empty() {
            summary.bpf_watch_errors =
                vec!["the monitor never started: no BPF map was watched".into()];
        }
        if !self.taken.is_empty() {
            let path = summary.output.with_extension("snapshots.json");
            match serde_json::to_vec(&self.taken)
                .map_err(|e| e.to_string())
                .and_then(|j| std::fs::write(&path, j).map_err(|e| e.to_string()))
            {
                Ok(()) => summary.snapshots_file = Some(path),
                Err(e) => self.errors.push(format!("writing {}: {e}", path.display())),
            }
        }
        summary.recent = self.recent.into_iter().collect();
        summary.snapshots = self.taken;
        summary.snapshot_errors = self.errors;
        summary.frozen_ms = self.frozen.as_secs_f64() * 1000.0;
    }
}
