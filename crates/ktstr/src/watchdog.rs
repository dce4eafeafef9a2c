//! Shortening the sched_ext watchdog of a guest from the host (`watchdog_timeout_s`).
//!
//! The kernel's runnable-task watchdog waits `scx_sched.watchdog_timeout` jiffies (30 s
//! unless the scheduler asks otherwise) before it ejects a scheduler that left a task
//! runnable and unrun. A test wants a stall to fail fast, so once a scheduler is attached
//! the host writes, through guest memory (QEMU's RAM files or ktstr's own VMM's memory) and
//! the kernel's own page tables as the monitor's sampler checked them:
//!
//! - `scx_root->watchdog_timeout` = the test's timeout in jiffies (offset from BTF);
//! - `scx_watchdog_interval` = half of it, the period the watchdog work re-arms with;
//! - `scx_watchdog_timestamp` = the current `jiffies_64`, refreshed until the kernel's own
//!   watchdog work has run once, because the tick checks that the work checked in within
//!   the (now shorter) timeout, and the work queued at attach time still waits half of the
//!   old timeout (15 s by default) for its first run.
//!
//! From the watchdog work's first run on, the kernel checks every runnable task every half
//! timeout against the shorter bound: a stall is caught at the latest one half-timeout
//! after it passes the bound, and never before that first run (15 s after attach by
//! default). The host monitor's own stall check (`Assert::no_stall_over`) has no such delay.
//! Kernels without `scx_root` (before 6.16) are left alone, with a note.

use ktstr_btf_monitor::memory::RamWriter;
use ktstr_btf_monitor::MemError;
use ktstr_btf_monitor::{resolve, Btf, GuestMemory, SymbolTable, Translator};

/// Symbols the guest must send for the watchdog (beyond the monitor's own).
pub const SYMBOLS: [&str; 4] = [
    "scx_root",
    "scx_watchdog_interval",
    "scx_watchdog_timestamp",
    "jiffies_64",
];

/// Where things are, resolved once.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    root: u64,
    interval: u64,
    timestamp: u64,
    jiffies: u64,
    timeout_off: u64,
}

/// What the shortener is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No scheduler attached yet.
    Waiting,
    /// Timeout written for `sch`; refreshing the timestamp until the kernel's work runs.
    Forging { sch: u64, last: u64 },
    /// The kernel's watchdog runs with the short timeout for `sch`.
    Armed { sch: u64 },
}

/// Writes guest-physical memory: QEMU's RAM files or ktstr's own VMM's memory.
pub trait GuestWriter: Send {
    /// Writes `bytes` at `gpa`.
    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError>;

    /// Writes a little-endian `u64` at `gpa`.
    fn write_u64(&self, gpa: u64, value: u64) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

impl GuestWriter for RamWriter {
    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError> {
        RamWriter::write(self, gpa, bytes)
    }
}

/// Shortens the watchdog of every scheduler that attaches while a run goes on.
pub struct WatchdogShortener {
    timeout: u64,
    addrs: Addrs,
    translator: Translator,
    writer: Box<dyn GuestWriter>,
    state: State,
    /// What it did, for the run's notes.
    pub log: Vec<String>,
}

impl std::fmt::Debug for WatchdogShortener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchdogShortener")
            .field("timeout", &self.timeout)
            .field("state", &self.state)
            .finish()
    }
}

impl WatchdogShortener {
    /// Resolves the kernel's fields and symbols; `timeout_jiffies` is the new timeout.
    pub fn new(
        btf: &Btf,
        syms: &SymbolTable,
        translator: Translator,
        writer: Box<dyn GuestWriter>,
        timeout_jiffies: u64,
    ) -> Result<Self, String> {
        let field = resolve(btf, "scx_sched", "watchdog_timeout").map_err(|e| {
            format!("this kernel has no scx_sched.watchdog_timeout to shorten ({e})")
        })?;
        if field.size != 8 {
            return Err(format!(
                "scx_sched.watchdog_timeout is {} bytes, expected 8",
                field.size
            ));
        }
        let addr = |name: &str| {
            syms.addr(name)
                .map_err(|e| format!("watchdog symbol {name}: {e}"))
        };
        Ok(WatchdogShortener {
            timeout: timeout_jiffies.max(2),
            addrs: Addrs {
                root: addr("scx_root")?,
                interval: addr("scx_watchdog_interval")?,
                timestamp: addr("scx_watchdog_timestamp")?,
                jiffies: addr("jiffies_64")?,
                timeout_off: u64::from(field.offset_bytes),
            },
            translator,
            writer,
            state: State::Waiting,
            log: Vec::new(),
        })
    }

    fn read(&self, mem: &dyn GuestMemory, va: u64) -> Result<u64, String> {
        self.translator
            .read_virt_u64(mem, va)
            .map_err(|e| format!("reading {va:#x}: {e}"))
    }

    fn write(&self, mem: &dyn GuestMemory, va: u64, value: u64) -> Result<(), String> {
        let pa = self
            .translator
            .translate(mem, va)
            .map_err(|e| format!("translating {va:#x}: {e}"))?;
        self.writer
            .write_u64(pa, value)
            .map_err(|e| format!("writing {va:#x}: {e}"))
    }

    /// One step; call it every few milliseconds while the guest runs. Errors stop nothing:
    /// they are logged once per state and retried.
    pub fn tick(&mut self, mem: &dyn GuestMemory, t_ms: u64) {
        if let Err(e) = self.step(mem, t_ms) {
            let line = format!("watchdog: {e}");
            if self.log.last() != Some(&line) {
                self.log.push(line);
            }
        }
    }

    fn step(&mut self, mem: &dyn GuestMemory, t_ms: u64) -> Result<(), String> {
        let a = self.addrs;
        let sch = self.read(mem, a.root)?;
        match self.state {
            State::Waiting if sch == 0 => Ok(()),
            State::Waiting => {
                let old = self.read(mem, sch + a.timeout_off)?;
                self.write(mem, sch + a.timeout_off, self.timeout)?;
                self.write(mem, a.interval, (self.timeout / 2).max(1))?;
                let now = self.read(mem, a.jiffies)?;
                self.write(mem, a.timestamp, now)?;
                self.log.push(format!(
                    "watchdog: at {:.2} s set scx_sched.watchdog_timeout {old} -> {} jiffies; \
                     the kernel's first check comes when the work queued at attach runs",
                    t_ms as f64 / 1000.0,
                    self.timeout
                ));
                self.state = State::Forging { sch, last: now };
                Ok(())
            }
            State::Forging { sch: s, .. } | State::Armed { sch: s } if s != sch => {
                self.log.push(format!(
                    "watchdog: at {:.2} s the scheduler changed ({s:#x} -> {sch:#x})",
                    t_ms as f64 / 1000.0
                ));
                self.state = State::Waiting;
                Ok(())
            }
            State::Forging { sch, last } => {
                let stamp = self.read(mem, a.timestamp)?;
                if stamp != last {
                    self.log.push(format!(
                        "watchdog: at {:.2} s the kernel's watchdog checked in; it now runs every {} jiffies",
                        t_ms as f64 / 1000.0,
                        (self.timeout / 2).max(1)
                    ));
                    self.state = State::Armed { sch };
                    return Ok(());
                }
                let now = self.read(mem, a.jiffies)?;
                self.write(mem, a.timestamp, now)?;
                self.state = State::Forging { sch, last: now };
                Ok(())
            }
            State::Armed { .. } => Ok(()),
        }
    }
}

/// `CONFIG_HZ` from a kernel `.config`.
pub fn config_hz(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_comes_from_the_config() {
        assert_eq!(config_hz("CONFIG_HZ_250=y\nCONFIG_HZ=250\n"), Some(250));
        assert_eq!(config_hz("# CONFIG_HZ is not set\n"), None);
    }
}
