//! A 16550 UART (vm-superio) on the port bus, its interrupt, and the host's ends of it.
//!
//! The guest's output goes to a [`SerialOutput`]: an in-memory log the host can snapshot,
//! wait on, or read as a blocking stream, optionally copied to a file. Host input goes in
//! through a [`SerialInput`]; bytes that do not fit the UART's 64-byte FIFO wait in a queue
//! and move in as the guest reads.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::bus::{DeviceAction, PioDevice};

/// Ports a 16550 decodes.
pub const SERIAL_LEN: u16 = 8;
/// Receive buffer register offset.
const RBR: u16 = 0;

/// Raises a UART's interrupt through an irqfd; without an in-kernel irqchip there is none.
#[derive(Debug)]
pub struct IrqTrigger(Option<EventFd>);

impl IrqTrigger {
    /// A trigger writing to `evt` (registered as an irqfd), or none.
    pub fn new(evt: Option<EventFd>) -> Self {
        IrqTrigger(evt)
    }
}

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(e) => e.write(1),
            None => Ok(()),
        }
    }
}

/// The most of one output the host keeps in memory by default: 16 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;

#[derive(Debug)]
struct OutputState {
    /// The kept tail of the output.
    bytes: Vec<u8>,
    /// The offset in the whole output of `bytes[0]`: how much was dropped from the front.
    start: u64,
    /// The most bytes kept.
    limit: usize,
    /// Bytes readers had to skip because they fell behind the kept tail.
    skipped: u64,
    /// Whether anyone ever streamed this output (else only the kept tail is looked at).
    has_reader: bool,
    /// Readers alive now: only they hold a throttling writer back.
    live_readers: usize,
    /// How far the furthest reader has read: the backlog a writer that honours
    /// [`SerialOutput::throttle`] is held to is measured from here.
    consumed: u64,
    /// Whether a writer was throttled and waits for [`OutputState::waker`].
    throttled: bool,
    /// Called (outside the lock) when a reader drains a throttled backlog.
    waker: WakerSlot,
    first_byte_at: Option<Instant>,
    closed: bool,
}

/// What a reader calls when it drained a throttled output: the writer's "go on".
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct WakerSlot(Option<Waker>);

impl std::fmt::Debug for WakerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(waker)"
        } else {
            "None"
        })
    }
}

impl OutputState {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Bytes written that no reader has read yet (0 when nobody streams the output).
    fn backlog(&self) -> u64 {
        if self.live_readers > 0 {
            self.end().saturating_sub(self.consumed)
        } else {
            0
        }
    }
}

/// The guest's output on one UART or console: a log shared by the device and the host that
/// keeps the last [`SerialOutput::limit`] bytes (and what its reader has yet to read, up to
/// twice that), so a guest that floods it cannot grow the host's memory. A reader that keeps
/// up sees every byte.
#[derive(Debug, Clone)]
pub struct SerialOutput {
    inner: Arc<(Mutex<OutputState>, Condvar)>,
}

impl Default for SerialOutput {
    fn default() -> Self {
        Self::with_limit(DEFAULT_OUTPUT_LIMIT)
    }
}

impl SerialOutput {
    /// An empty log keeping [`DEFAULT_OUTPUT_LIMIT`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log keeping at most `limit` bytes (at least 1).
    pub fn with_limit(limit: usize) -> Self {
        let state = OutputState {
            bytes: Vec::new(),
            start: 0,
            limit: limit.max(1),
            skipped: 0,
            has_reader: false,
            live_readers: 0,
            consumed: 0,
            throttled: false,
            waker: WakerSlot::default(),
            first_byte_at: None,
            closed: false,
        };
        SerialOutput {
            inner: Arc::new((Mutex::new(state), Condvar::new())),
        }
    }

    fn state(&self) -> MutexGuard<'_, OutputState> {
        // A panic while holding the lock leaves plain bytes behind; keep using them.
        crate::kvm::lock(&self.inner.0)
    }

    pub(crate) fn push(&self, data: &[u8]) {
        let mut s = self.state();
        if s.first_byte_at.is_none() && !data.is_empty() {
            s.first_byte_at = Some(Instant::now());
        }
        s.bytes.extend_from_slice(data);
        if s.bytes.len() > s.limit {
            // Drop down to three quarters of the limit, so trimming is rare and cheap; bytes
            // the reader has yet to read stay, up to twice the limit.
            let mut excess = s.bytes.len() - s.limit * 3 / 4;
            if s.live_readers > 0 && s.bytes.len() <= 2 * s.limit {
                excess = excess.min(s.consumed.saturating_sub(s.start) as usize);
                // Not byte by byte behind a slow reader: only in quarters of the limit.
                if excess < s.limit / 4 {
                    excess = 0;
                }
            }
            s.bytes.drain(..excess);
            s.start += excess as u64;
        }
        self.inner.1.notify_all();
    }

    /// Marks the end of output (the VM stopped); blocked readers see end of file.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Every byte still kept: the whole output unless more than [`Self::limit`] came.
    pub fn contents(&self) -> Vec<u8> {
        self.state().bytes.clone()
    }

    /// [`Self::contents`] as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.state().bytes).into_owned()
    }

    /// The most bytes kept.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// Bytes of the output lost to whoever looks at it: those readers skipped, or, when
    /// nobody streams it, those dropped from the front of the kept tail.
    pub fn dropped(&self) -> u64 {
        let s = self.state();
        if s.has_reader {
            s.skipped
        } else {
            s.start
        }
    }

    /// Bytes written that the reader has not read yet (0 when nobody streams the output).
    pub fn backlog(&self) -> u64 {
        self.state().backlog()
    }

    /// Sets what a reader calls once it has drained a throttled backlog (see
    /// [`Self::throttle`]).
    pub fn set_waker(&self, waker: Waker) {
        self.state().waker = WakerSlot(Some(waker));
    }

    /// For a writer that can hold its producer back (a virtqueue leaves buffers unused):
    /// whether it should stop now because the reader is half the limit behind. When it
    /// says so, the reader calls the waker once it has caught up to a quarter.
    pub fn throttle(&self) -> bool {
        let mut s = self.state();
        let stop = s.backlog() >= (s.limit / 2).max(1) as u64;
        s.throttled |= stop;
        stop
    }

    /// When the first byte arrived.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.state().first_byte_at
    }

    /// Waits until the output contains `needle`, the output ends, or `timeout` passes.
    pub fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        // Only bytes that arrived since the last look (plus an overlap) are searched again.
        let mut from = s.start;
        loop {
            let i = usize::try_from(from.saturating_sub(s.start)).unwrap_or(usize::MAX);
            let new = s.bytes.get(i..).unwrap_or_default();
            if needle.is_empty() || new.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            from = s.end().saturating_sub(needle.len() as u64 - 1);
            let now = Instant::now();
            if s.closed || now >= deadline {
                return false;
            }
            s = match self.inner.1.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// A blocking reader from the first byte still kept; it ends when the output is closed.
    pub fn reader(&self) -> SerialReader {
        let mut s = self.state();
        s.has_reader = true;
        s.live_readers += 1;
        SerialReader {
            out: self.clone(),
            pos: s.start,
        }
    }
}

/// Reads a [`SerialOutput`] as a stream; if it falls more than the output's limit behind,
/// it skips to the oldest byte kept (counted in [`SerialOutput::dropped`]).
#[derive(Debug)]
pub struct SerialReader {
    out: SerialOutput,
    pos: u64,
}

impl Read for SerialReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.out.state();
        loop {
            if self.pos < s.start {
                s.skipped += s.start - self.pos;
                self.pos = s.start;
            }
            if s.end() > self.pos {
                let i = (self.pos - s.start) as usize;
                let n = buf.len().min(s.bytes.len() - i);
                buf[..n].copy_from_slice(&s.bytes[i..i + n]);
                self.pos += n as u64;
                s.consumed = s.consumed.max(self.pos);
                let wake = if s.throttled && s.backlog() <= (s.limit / 4) as u64 {
                    s.throttled = false;
                    s.waker.0.clone()
                } else {
                    None
                };
                drop(s);
                // Outside the lock: the waker serves the writer, which pushes here.
                if let Some(w) = wake {
                    w();
                }
                return Ok(n);
            }
            if s.closed || buf.is_empty() {
                return Ok(0);
            }
            s = match self.out.inner.1.wait(s) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
    }
}

impl Drop for SerialReader {
    /// A reader that is gone holds no writer back: a throttled one is woken.
    fn drop(&mut self) {
        let mut s = self.out.state();
        s.live_readers = s.live_readers.saturating_sub(1);
        let wake = (s.live_readers == 0 && s.throttled).then(|| s.waker.0.clone());
        s.throttled &= s.live_readers > 0;
        drop(s);
        if let Some(Some(w)) = wake {
            w();
        }
    }
}

/// Where a UART's output goes: the shared log and, optionally, a file.
#[derive(Debug)]
pub struct SerialSink {
    out: SerialOutput,
    file: Option<File>,
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(buf);
        if let Some(f) = &mut self.file {
            // The log in memory is authoritative; a full disk must not stop the guest.
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A 16550 UART on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialSink>,
    pending: VecDeque<u8>,
}

impl SerialDevice {
    /// A UART raising `irq`, writing to `out` and, when given, to `file`.
    pub fn new(irq: IrqTrigger, out: SerialOutput, file: Option<File>) -> Self {
        SerialDevice {
            uart: Serial::new(irq, SerialSink { out, file }),
            pending: VecDeque::new(),
        }
    }

    /// Queues host input and moves what fits into the FIFO.
    pub fn enqueue(&mut self, data: &[u8]) {
        self.pending.extend(data);
        self.fill_fifo();
    }

    /// Bytes of host input still waiting for FIFO room.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn fill_fifo(&mut self) {
        while !self.pending.is_empty() {
            let room = self.uart.fifo_capacity();
            if room == 0 {
                break;
            }
            let chunk: Vec<u8> = self.pending.iter().take(room).copied().collect();
            match self.uart.enqueue_raw_bytes(&chunk) {
                Ok(n) if n > 0 => {
                    self.pending.drain(..n);
                }
                // Loopback mode or a trigger error: keep the bytes for later.
                _ => break,
            }
        }
    }
}

impl PioDevice for SerialDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
        if offset == RBR {
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        if let (&[v], Ok(off)) = (data, u8::try_from(offset)) {
            // Errors are the sink's (ignored there) or the irqfd's, which has no one to tell.
            let _ = self.uart.write(off, v);
        }
        DeviceAction::None
    }
}

/// The host's writing end of a UART.
#[derive(Clone)]
pub struct SerialInput {
    device: Arc<Mutex<SerialDevice>>,
}

impl SerialInput {
    /// The input of `device`.
    pub fn new(device: Arc<Mutex<SerialDevice>>) -> Self {
        SerialInput { device }
    }

    /// Sends `data` to the guest.
    pub fn send(&self, data: &[u8]) {
        crate::kvm::lock(&self.device).enqueue(data);
    }
}

impl Write for SerialInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSR: u16 = 5;
    const IER: u16 = 1;
    const IIR: u16 = 2;

    fn dev() -> (SerialDevice, SerialOutput, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SerialOutput::new();
        let d = SerialDevice::new(
            IrqTrigger::new(Some(evt.try_clone().unwrap())),
            out.clone(),
            None,
        );
        (d, out, evt)
    }

    fn rd(d: &mut SerialDevice, off: u16) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_log_and_reader() {
        let (mut d, out, _e) = dev();
        assert!(out.first_byte_at().is_none());
        for b in b"hi\n" {
            d.write(0, &[*b]);
        }
        d.write(0, b"xy");
        assert_eq!(out.contents(), b"hi\n");
        assert!(out.first_byte_at().is_some());
        assert!(out.wait_for(b"hi", Duration::from_millis(1)));
        assert!(!out.wait_for(b"zz", Duration::from_millis(1)));
        out.close();
        let mut s = String::new();
        out.reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi\n");
    }

    #[test]
    fn a_flood_keeps_a_bounded_tail_and_counts_what_was_lost() {
        let out = SerialOutput::with_limit(100);
        let all: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for c in all.chunks(7) {
            out.push(c);
        }
        let kept = out.contents();
        assert!(kept.len() <= 100 && kept.len() >= 75, "{}", kept.len());
        assert_eq!(kept[..], all[all.len() - kept.len()..]);
        // Nobody streamed it: everything not kept is lost.
        assert_eq!(out.dropped(), (all.len() - kept.len()) as u64);
        assert!(out.wait_for(&all[990..], Duration::from_millis(1)));
        assert!(!out.wait_for(&all[..5], Duration::from_millis(1)));
    }

    #[test]
    fn a_reader_that_keeps_up_sees_every_byte_and_a_late_one_skips() {
        let out = SerialOutput::with_limit(64);
        let mut early = out.reader();
        let mut late = out.reader();
        let mut seen = Vec::new();
        let mut buf = [0u8; 16];
        for i in 0..100u8 {
            out.push(&[i; 8]);
            let n = early.read(&mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        out.close();
        early.read_to_end(&mut seen).unwrap();
        assert_eq!(seen.len(), 800);
        assert_eq!(out.dropped(), 0, "no reader has skipped yet");
        let mut rest = Vec::new();
        late.read_to_end(&mut rest).unwrap();
        assert_eq!(rest[..], seen[800 - rest.len()..]);
        assert_eq!(out.dropped(), (800 - rest.len()) as u64);
    }

    #[test]
    fn a_throttled_writer_is_woken_once_the_reader_caught_up() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let out = SerialOutput::with_limit(100);
        let woken = Arc::new(AtomicU32::new(0));
        let w = Arc::clone(&woken);
        out.set_waker(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
        // Nobody reads: no backpressure, only the bounded tail.
        out.push(&[1; 80]);
        assert!(!out.throttle());
        let mut r = out.reader();
        assert_eq!(out.backlog(), 80);
        assert!(out.throttle(), "half the limit behind");
        let mut buf = [0u8; 20];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(
            woken.load(Ordering::SeqCst),
            0,
            "60 behind: still throttled"
        );
        r.read_exact(&mut buf).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "20 behind: woken");
        r.read_exact(&mut buf).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "once");
        assert_eq!(out.backlog(), 0);
        assert!(!out.throttle());
        assert_eq!(out.dropped(), 0);
        // A reader that goes away while behind releases the writer.
        out.push(&[2; 60]);
        assert!(out.throttle());
        drop(r);
        assert_eq!(woken.load(Ordering::SeqCst), 2, "woken by the drop");
        assert!(!out.throttle(), "nobody reads: no backpressure");
        // The smallest limit still lets one write through per read.
        let tiny = SerialOutput::with_limit(1);
        let mut t = tiny.reader();
        assert!(!tiny.throttle());
        tiny.push(b"x");
        assert!(tiny.throttle());
        t.read_exact(&mut [0u8; 1]).unwrap();
        assert!(!tiny.throttle());
    }

    #[test]
    fn input_overflowing_the_fifo_waits_and_interrupts() {
        let (mut d, _out, evt) = dev();
        d.write(IER, &[1]); // Received-data-available interrupt on.
        let input: Vec<u8> = (0..100u8).collect();
        d.enqueue(&input);
        assert_eq!(d.pending(), 100 - 64);
        assert!(evt.read().unwrap() >= 1, "interrupt raised");
        assert_eq!(rd(&mut d, IIR) & 0xf, 0x4, "data available");
        let mut got = Vec::new();
        while rd(&mut d, LSR) & 1 != 0 {
            got.push(rd(&mut d, RBR));
        }
        assert_eq!(got, input);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn unknown_offsets_and_sizes_are_harmless() {
        let (mut d, out, _e) = dev();
        let mut b = [7u8; 4];
        d.read(0x100, &mut b);
        assert_eq!(b, [0; 4]);
        assert_eq!(d.write(0x100, &[1]), DeviceAction::None);
        assert_eq!(d.write(0, &[]), DeviceAction::None);
        assert!(out.contents().is_empty());
    }
}
