//! Requests from a test process in the guest to the host, answered through guest memory.
//!
//! Some scenario ops need the host: `Op::capture_snapshot` asks it to freeze the vCPUs and
//! read the scheduler's state. The way there and back:
//!
//! 1. The test process maps and locks one page, its **mailbox**, and finds the page's
//!    guest-physical address in `/proc/self/pagemap`.
//! 2. It writes one JSON line ([`Request`]) to the FIFO guest init made at
//!    [`REQUEST_PATH_ENV`]; init sends the line on as a [`crate::proto::FrameKind::Request`]
//!    frame.
//! 3. The host does what was asked (with the guest frozen, for a snapshot) and writes the
//!    answer into the mailbox: the message at byte 16, its length at byte 8, and last the
//!    status at byte 0 ([`Status`]).
//! 4. The test process polls the status word until it is set, or gives up after
//!    [`REPLY_TIMEOUT`].
//!
//! The host writes guest memory only at an address a request named, and only a page's worth.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::{KernelTarget, KernelValue, KernelValueWidth};

/// The variable naming the FIFO a test process writes its requests to.
pub const REQUEST_PATH_ENV: &str = "KTSTR_REQUEST_PATH";
/// Where guest init makes that FIFO.
pub const REQUEST_PATH: &str = "/run/ktstr/requests";
/// How long a test process waits for the host's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a mailbox: one page.
pub const MAILBOX_LEN: u64 = 4096;
/// Where the answer's text starts in the mailbox.
const MESSAGE_AT: u64 = 16;

/// What a test process asks of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Guest-physical address of the page-aligned mailbox the answer goes to.
    pub mailbox: u64,
    /// What to do.
    pub op: RequestOp,
}

/// The things a host can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestOp {
    /// Freeze the guest and take a snapshot with this name.
    Snapshot {
        /// Its name in `VmResult::snapshots`.
        name: String,
    },
    /// Take a snapshot named after `symbol` whenever the 8 bytes at it change.
    WatchSymbol {
        /// The kernel symbol.
        symbol: String,
    },
    /// Write kernel memory, in order; `cold`: with the guest frozen around the batch.
    KernelWrite {
        /// Where and what.
        writes: Vec<(KernelTarget, KernelValue)>,
        /// Freeze the guest around the writes.
        cold: bool,
    },
    /// Wait until the host has made the test's BPF map writes (`bpf_map_write`).
    AwaitMapWrites,
    /// Read kernel memory; the answer is the value's JSON ([`KernelValue`]).
    KernelRead {
        /// Where.
        target: KernelTarget,
        /// How much.
        width: KernelValueWidth,
        /// Freeze the guest around the read.
        cold: bool,
    },
}

/// The answer's status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done; the message says what was done.
    Done = 1,
    /// Not done; the message says why.
    Refused = 2,
}

impl Status {
    fn from_u64(v: u64) -> Option<Status> {
        match v {
            1 => Some(Status::Done),
            2 => Some(Status::Refused),
            _ => None,
        }
    }
}

/// Parses a request line; `Err` says what is wrong with it.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let r: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    if r.mailbox % MAILBOX_LEN != 0 {
        return Err(format!(
            "bad request: mailbox {:#x} is not page-aligned",
            r.mailbox
        ));
    }
    Ok(r)
}

/// The host's side: writes an answer into the mailbox at `gpa` with `write_u64`, the
/// status last, so the guest never sees a status before its message.
pub fn write_reply(
    write_u64: &mut dyn FnMut(u64, u64) -> Result<(), String>,
    gpa: u64,
    status: Status,
    message: &str,
) -> Result<(), String> {
    let max = (MAILBOX_LEN - MESSAGE_AT) as usize;
    let msg = &message.as_bytes()[..message.len().min(max)];
    for (i, chunk) in msg.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        write_u64(gpa + MESSAGE_AT + 8 * i as u64, u64::from_le_bytes(w))?;
    }
    write_u64(gpa + 8, msg.len() as u64)?;
    write_u64(gpa, status as u64)
}

/// The guest's side: sends `op` and waits for the host's answer; `Ok` carries the host's
/// message, `Err` why it was refused or never answered.
pub fn ask_host(op: RequestOp) -> Result<String, String> {
    let path = std::env::var(REQUEST_PATH_ENV).map_err(|_| {
        format!("{REQUEST_PATH_ENV} is not set: host requests work only in a ktstr guest")
    })?;
    let mailbox = Mailbox::new()?;
    let mut line = serde_json::to_vec(&Request {
        mailbox: mailbox.gpa,
        op,
    })
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    if line.len() > libc::PIPE_BUF {
        return Err(format!(
            "request of {} bytes is longer than one atomic pipe write ({}): split it",
            line.len(),
            libc::PIPE_BUF
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &line))
        .map_err(|e| format!("writing the request to {path}: {e}"))?;
    mailbox.wait(REPLY_TIMEOUT)
}

/// One locked page whose guest-physical address is known.
struct Mailbox {
    page: *mut u8,
    gpa: u64,
}

impl Mailbox {
    fn new() -> Result<Mailbox, String> {
        let len = MAILBOX_LEN as usize;
        // SAFETY: an anonymous private mapping of one page; checked for failure below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(format!(
                "mapping a mailbox page: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Unmapped on drop, also when a step below fails.
        let mut mailbox = Mailbox {
            page: page.cast(),
            gpa: 0,
        };
        // SAFETY: the page was just mapped, `len` bytes long.
        if unsafe { libc::mlock(page, len) } != 0 {
            return Err(format!(
                "locking the mailbox page: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: writing zero to the first word of our own mapped page faults it in.
        unsafe { std::ptr::write_volatile(mailbox.page.cast::<u64>(), 0) };
        mailbox.gpa = physical_address(mailbox.page as u64)?;
        Ok(mailbox)
    }

    fn word(&self, at: u64) -> u64 {
        // SAFETY: `at` is inside our page and 8-aligned; the host writes it concurrently,
        // hence the volatile read.
        unsafe { std::ptr::read_volatile(self.page.add(at as usize).cast::<u64>()) }
    }

    fn wait(&self, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(s) = Status::from_u64(self.word(0)) {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the host did not answer within {} s (is the host monitor running?)",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let len = self.word(8).min(MAILBOX_LEN - MESSAGE_AT) as usize;
        // SAFETY: `len` bytes from MESSAGE_AT stay inside our page.
        let bytes = unsafe { std::slice::from_raw_parts(self.page.add(MESSAGE_AT as usize), len) };
        let msg = String::from_utf8_lossy(bytes).into_owned();
        match status {
            Status::Done => Ok(msg),
            Status::Refused => Err(msg),
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // SAFETY: unmapping the page this mailbox mapped.
        unsafe { libc::munmap(self.page.cast(), MAILBOX_LEN as usize) };
    }
}

/// The guest-physical address of the page at virtual address `va`, from `/proc/self/pagemap`.
fn physical_address(va: u64) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| format!("opening /proc/self/pagemap: {e}"))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, va / MAILBOX_LEN * 8)
        .map_err(|e| format!("reading /proc/self/pagemap: {e}"))?;
    let entry = u64::from_le_bytes(b);
    let pfn = entry & ((1 << 55) - 1);
    if entry & (1 << 63) == 0 || pfn == 0 {
        return Err(format!(
            "the mailbox page is not present or its frame is hidden (pagemap entry {entry:#x})"
        ));
    }
    Ok(pfn * MAILBOX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let r = Request {
            mailbox: 0x1234_5000,
            op: RequestOp::Snapshot {
                name: "after_move".into(),
            },
        };
        let line = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_request(&line).unwrap(), r);
        assert!(
            parse_request(br#"{"mailbox":4097,"op":{"snapshot":{"name":"x"}}}"#)
                .unwrap_err()
                .contains("not page-aligned")
        );
        assert!(parse_request(b"garbage")
            .unwrap_err()
            .starts_with("bad request"));
        assert!(parse_request(br#"{"mailbox":4096,"op":{"reboot":{}}}"#).is_err());
    }

    #[test]
    fn a_reply_puts_the_status_last_and_clips_the_message() {
        let mut page = vec![0u8; MAILBOX_LEN as usize];
        let mut order = Vec::new();
        let mut w = |gpa: u64, v: u64| {
            let at = (gpa - 0x10_0000) as usize;
            page[at..at + 8].copy_from_slice(&v.to_le_bytes());
            order.push(at);
            Ok(())
        };
        let long = "x".repeat(5000);
        write_reply(&mut w, 0x10_0000, Status::Refused, &long).unwrap();
        assert_eq!(order.last(), Some(&0), "status written last");
        assert_eq!(u64::from_le_bytes(page[0..8].try_into().unwrap()), 2);
        assert_eq!(
            u64::from_le_bytes(page[8..16].try_into().unwrap()),
            MAILBOX_LEN - MESSAGE_AT
        );
    }

    #[test]
    fn the_guest_side_reads_what_the_host_wrote() {
        // The guest side's mailbox against a "host" writing straight into it (same process:
        // pagemap is not needed for this).
        let m = Mailbox {
            // SAFETY: a leaked, zeroed, 8-aligned page-sized buffer stands in for the page.
            page: Box::leak(vec![0u64; MAILBOX_LEN as usize / 8].into_boxed_slice())
                .as_mut_ptr()
                .cast(),
            gpa: 0,
        };
        let base = m.page as u64;
        let mut w = |gpa: u64, v: u64| {
            // SAFETY: `gpa` is inside the leaked page (write_reply stays within one page).
            unsafe { std::ptr::write_volatile((base + gpa) as *mut u64, v) };
            Ok(())
        };
        write_reply(&mut w, 0, Status::Done, "snapshot after_move taken").unwrap();
        assert_eq!(
            m.wait(Duration::from_secs(1)).unwrap(),
            "snapshot after_move taken"
        );
        std::mem::forget(m);
    }
}
