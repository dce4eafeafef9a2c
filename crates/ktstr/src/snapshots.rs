//! The monitor's snapshots: taken at planned times (`num_snapshots`), when a test process
//! asks ([`RequestOp::Snapshot`]), and whenever a watched kernel symbol's value changes
//! ([`RequestOp::WatchSymbol`]), each with every vCPU frozen for the read.
//!
//! A request is answered in the asker's mailbox while the guest is still frozen, so the
//! test process goes on only after its snapshot was read.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::sampler::error_chain;
use ktstr_btf_monitor::{GuestMemory, KernelAddrs, Sampler, Snapshot, SymbolTable};
use ktstr_vmm::Freezer;

use crate::monitor::{MonitorSummary, MAX_SNAPSHOTS};
use crate::request::{Request, RequestOp, Status};
use crate::watchdog::GuestWriter;

/// How long a freeze may take to stop every vCPU.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most symbols watched at once.
const MAX_WATCHES: usize = 16;

/// A watched symbol: its address and the last value seen.
struct Watch {
    symbol: String,
    addr: u64,
    last: Option<u64>,
}

/// The snapshot side of one monitor thread.
pub(crate) struct Snapshots {
    /// Planned times after the symbols' arrival, ascending; `next` is the first not taken.
    at: Vec<Duration>,
    next: usize,
    requests: mpsc::Receiver<Request>,
    vmlinux: PathBuf,
    /// Launch to the symbols' arrival, once the monitor is set up.
    origin: Option<Duration>,
    freezer: Option<Freezer>,
    writer: Result<Box<dyn GuestWriter>, String>,
    /// vmlinux's symbols and the KASLR slide, loaded on the first watch.
    elf: Option<Result<(SymbolTable, u64), String>>,
    /// The runtime address of `init_top_pgt`, to compute that slide.
    anchor: Option<u64>,
    watches: Vec<Watch>,
    taken: Vec<Snapshot>,
    errors: Vec<String>,
    frozen: Duration,
}

impl Snapshots {
    /// Plans snapshots at `at` and serves the requests coming on `requests`.
    pub(crate) fn new(
        mut at: Vec<Duration>,
        requests: mpsc::Receiver<Request>,
        vmlinux: PathBuf,
    ) -> Self {
        at.sort();
        Snapshots {
            at,
            next: 0,
            requests,
            vmlinux,
            origin: None,
            freezer: None,
            writer: Err("the monitor is not set up".into()),
            elf: None,
            anchor: None,
            watches: Vec::new(),
            taken: Vec::new(),
            errors: Vec::new(),
            frozen: Duration::ZERO,
        }
    }

    /// The monitor is set up: the symbols arrived `at` after launch.
    pub(crate) fn ready(
        &mut self,
        at: Duration,
        freezer: Option<Freezer>,
        writer: Result<Box<dyn GuestWriter>, String>,
        addrs: &KernelAddrs,
    ) {
        self.origin = Some(at);
        self.freezer = freezer;
        self.writer = writer;
        self.anchor = Some(addrs.init_top_pgt);
    }

    /// Takes whatever is due: requested snapshots, planned ones, watched symbols that changed.
    pub(crate) fn serve<M: GuestMemory>(&mut self, sampler: &mut Sampler<M>, launch: Instant) {
        while let Ok(r) = self.requests.try_recv() {
            self.answer(r, sampler, launch);
        }
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

    fn answer<M: GuestMemory>(&mut self, r: Request, sampler: &mut Sampler<M>, launch: Instant) {
        let result = match &r.op {
            RequestOp::Snapshot { name } => self
                .take(name, sampler, launch, Some(r.mailbox))
                .map(|()| None),
            RequestOp::WatchSymbol { symbol } => self.watch(symbol, sampler).map(Some),
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
        let anchor = self.anchor.ok_or("the monitor is not set up")?;
        let vmlinux = self.vmlinux.clone();
        let elf = self.elf.get_or_insert_with(|| {
            let t = SymbolTable::from_elf_file(&vmlinux)
                .map_err(|e| format!("symbols of {}: {}", vmlinux.display(), error_chain(&e)))?;
            let link = t
                .lookup("init_top_pgt")
                .map(|s| s.addr)
                .ok_or_else(|| format!("{} has no init_top_pgt", vmlinux.display()))?;
            Ok((t, anchor.wrapping_sub(link)))
        });
        let (table, slide) = elf.as_ref().map_err(|e| format!("watch {symbol}: {e}"))?;
        let addr = table
            .lookup(symbol)
            .map(|s| s.addr.wrapping_add(*slide))
            .ok_or_else(|| format!("watch {symbol}: no such kernel symbol"))?;
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
        summary.snapshots = self.taken;
        summary.snapshot_errors = self.errors;
        summary.frozen_ms = self.frozen.as_secs_f64() * 1000.0;
    }
}
