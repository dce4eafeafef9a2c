//! The guest-to-host frame protocol carried on COM2.
//!
//! A frame is a 20-byte header then the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `KTSF` |
//! | 4 | kind ([`FrameKind`]) |
//! | 5..8 | zero |
//! | 8..12 | sequence number, u32 LE, from 0 |
//! | 12..16 | payload length, u32 LE, at most [`MAX_PAYLOAD`] |
//! | 16..20 | CRC-32 of bytes 4..16 and the payload, u32 LE |
//!
//! The [`Decoder`] is fed raw bytes as they arrive and reports frames, skipped
//! garbage, CRC failures, sequence gaps, and at the end a truncated frame, so the
//! host can always tell a complete report from a damaged one.

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"KTSF";
/// Header size in bytes.
pub const HEADER_LEN: usize = 20;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Guest init is up; payload is JSON [`crate::guest::Hello`].
    Hello = 1,
    /// Bytes the command wrote to stdout.
    Stdout = 2,
    /// Bytes the command wrote to stderr.
    Stderr = 3,
    /// The command ended; payload is JSON [`crate::guest::CommandExit`].
    Exit = 4,
    /// A message from guest init itself (UTF-8 text).
    Log = 5,
    /// Guest init failed before or while running the command (UTF-8 text).
    InitError = 6,
    /// What became of the sched_ext scheduler; payload is JSON [`crate::sched::SchedulerReport`].
    Scheduler = 7,
    /// Kernel symbols the host asked for, as `/proc/kallsyms` lines (UTF-8 text).
    Symbols = 8,
    /// A `#[ktstr_test]` body's report (JSON [`crate::test_support::GuestReport`]), which the
    /// body wrote to the file guest init named; a long one spans several frames, in order.
    Report = 9,
    /// A test process's request to the host (JSON [`crate::request::Request`]), answered
    /// in guest memory.
    Request = 10,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Hello,
            2 => FrameKind::Stdout,
            3 => FrameKind::Stderr,
            4 => FrameKind::Exit,
            5 => FrameKind::Log,
            6 => FrameKind::InitError,
            7 => FrameKind::Scheduler,
            8 => FrameKind::Symbols,
            9 => FrameKind::Report,
            10 => FrameKind::Request,
            _ => return None,
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: FrameKind,
    /// Its sequence number.
    pub seq: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Something the decoder found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A good frame.
    Frame(Frame),
    /// Bytes that were not part of any frame were skipped.
    Garbage {
        /// How many.
        bytes: usize,
    },
    /// A frame header or payload failed its check; the decoder resynchronised.
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// Frames are missing: `expected` was due, `got` arrived.
    Gap {
        /// The sequence number that was due.
        expected: u32,
        /// The one that arrived.
        got: u32,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes of the frame that arrived.
        have: usize,
        /// Bytes the frame needed (header only, if the header was incomplete).
        need: usize,
    },
}

/// Encodes one frame.
pub fn encode(kind: FrameKind, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(MAX_PAYLOAD);
    let payload = &payload[..len];
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[4..16]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame writer that numbers frames and splits large payloads.
#[derive(Debug, Default)]
pub struct Encoder {
    next_seq: u32,
}

impl Encoder {
    /// Encodes `payload` as one or more frames of `kind` (split at [`MAX_PAYLOAD`]).
    pub fn frames(&mut self, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunks: Vec<&[u8]> = payload.chunks(MAX_PAYLOAD).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            out.extend(encode(kind, self.next_seq, chunk));
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        out
    }
}

/// A streaming decoder; memory is bounded by one frame plus one read.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    next_seq: u32,
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

impl Decoder {
    /// A decoder expecting sequence number 0 first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes and returns what they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            // Find the magic; everything before it is garbage.
            let start = find_magic(&self.buf);
            let skip = start.unwrap_or_else(|| {
                // Keep a possible partial magic at the end.
                let keep = (1..MAGIC.len())
                    .rev()
                    .find(|&k| self.buf.len() >= k && self.buf.ends_with(&MAGIC[..k]))
                    .unwrap_or(0);
                self.buf.len() - keep
            });
            if skip > 0 {
                events.push(Event::Garbage { bytes: skip });
                self.buf.drain(..skip);
            }
            if start.is_none() || self.buf.len() < HEADER_LEN {
                return events;
            }
            let kind = self.buf[4];
            let len = le32(&self.buf[12..16]) as usize;
            let bad_header = if FrameKind::from_u8(kind).is_none() {
                Some(format!("unknown frame kind {kind}"))
            } else if self.buf[5..8] != [0, 0, 0] {
                Some("reserved header bytes are not zero".to_string())
            } else if len > MAX_PAYLOAD {
                Some(format!("payload length {len} exceeds {MAX_PAYLOAD}"))
            } else {
                None
            };
            if let Some(reason) = bad_header {
                events.push(Event::Corrupt { reason });
                // Skip this magic and look for the next one.
                self.buf.drain(..1);
                continue;
            }
            if self.buf.len() < HEADER_LEN + len {
                return events;
            }
            let mut h = crc32fast::Hasher::new();
            h.update(&self.buf[4..16]);
            h.update(&self.buf[HEADER_LEN..HEADER_LEN + len]);
            let want = le32(&self.buf[16..20]);
            if h.finalize() != want {
                events.push(Event::Corrupt {
                    reason: format!("CRC mismatch in a {len}-byte frame"),
                });
                self.buf.drain(..1);
                continue;
            }
            let seq = le32(&self.buf[8..12]);
            if seq != self.next_seq {
                events.push(Event::Gap {
                    expected: self.next_seq,
                    got: seq,
                });
            }
            self.next_seq = seq.wrapping_add(1);
            let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
            self.buf.drain(..HEADER_LEN + len);
            if let Some(kind) = FrameKind::from_u8(kind) {
                events.push(Event::Frame(Frame { kind, seq, payload }));
            }
        }
    }

    /// Ends the stream: reports a frame left incomplete, or garbage left over.
    pub fn finish(&mut self) -> Option<Event> {
        if self.buf.is_empty() {
            return None;
        }
        let have = self.buf.len();
        let ev = if self.buf.starts_with(&MAGIC) {
            let need = if have >= HEADER_LEN {
                HEADER_LEN + le32(&self.buf[12..16]) as usize
            } else {
                HEADER_LEN
            };
            Event::Truncated { have, need }
        } else {
            Event::Garbage { bytes: have }
        };
        self.buf.clear();
        Some(ev)
    }
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(MAGIC.len()).position(|w| w == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(events: &[Event]) -> Vec<&Frame> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut enc = Encoder::default();
        let mut wire = enc.frames(FrameKind::Stdout, b"hello\n");
        wire.extend(enc.frames(FrameKind::Exit, br#"{"code":0}"#));
        let mut dec = Decoder::new();
        let mut events = Vec::new();
        for b in &wire {
            events.extend(dec.push(std::slice::from_ref(b)));
        }
        assert_eq!(dec.finish(), None);
        let f = frames(&events);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (f[0].kind, f[0].seq, &f[0].payload[..]),
            (FrameKind::Stdout, 0, &b"hello\n"[..])
        );
        assert_eq!(f[1].kind, FrameKind::Exit);
    }

    #[test]
    fn large_payloads_are_split() {
        let mut enc = Encoder::default();
        let data = vec![7u8; MAX_PAYLOAD * 2 + 10];
        let wire = enc.frames(FrameKind::Stderr, &data);
        let events = Decoder::new().push(&wire);
        let f = frames(&events);
        assert_eq!(f.len(), 3);
        assert_eq!(f.iter().map(|f| f.payload.len()).sum::<usize>(), data.len());
    }

    #[test]
    fn garbage_before_and_between_frames_is_reported() {
        let mut wire = b"noise\r\n".to_vec();
        wire.extend(encode(FrameKind::Log, 0, b"a"));
        wire.extend(b"KT");
        wire.extend(encode(FrameKind::Log, 1, b"b"));
        let mut dec = Decoder::new();
        let events = dec.push(&wire);
        assert_eq!(frames(&events).len(), 2);
        let garbage: usize = events
            .iter()
            .map(|e| match e {
                Event::Garbage { bytes } => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(garbage, 9);
    }

    #[test]
    fn corrupted_payload_fails_crc_and_decoder_resyncs() {
        let mut bad = encode(FrameKind::Stdout, 0, b"payload");
        let last = bad.len() - 1;
        bad[last] ^= 0x20;
        let mut wire = bad;
        wire.extend(encode(FrameKind::Stdout, 1, b"next"));
        let events = Decoder::new().push(&wire);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Corrupt { reason } if reason.contains("CRC"))));
        let f = frames(&events);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].payload, b"next");
        // The corrupt frame's loss shows as a gap only if numbering skips: here 0 was lost, 1 arrived.
        assert!(events.contains(&Event::Gap {
            expected: 0,
            got: 1
        }));
    }

    #[test]
    fn corrupted_length_does_not_swallow_the_stream() {
        let mut bad = encode(FrameKind::Stdout, 0, b"x");
        bad[12..16].copy_from_slice(&(10_000_000u32).to_le_bytes());
        let mut wire = bad;
        wire.extend(encode(FrameKind::Exit, 1, b"{}"));
        let events = Decoder::new().push(&wire);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Corrupt { reason } if reason.contains("exceeds"))));
        assert_eq!(
            frames(&events).last().map(|f| f.kind),
            Some(FrameKind::Exit)
        );
    }

    #[test]
    fn truncated_frame_is_reported_at_finish() {
        let wire = encode(FrameKind::Stdout, 0, b"0123456789");
        let mut dec = Decoder::new();
        assert!(dec.push(&wire[..25]).is_empty());
        assert_eq!(dec.finish(), Some(Event::Truncated { have: 25, need: 30 }));
        let mut dec = Decoder::new();
        dec.push(&wire[..6]);
        assert_eq!(dec.finish(), Some(Event::Truncated { have: 6, need: 20 }));
    }

    #[test]
    fn unknown_kind_is_corrupt() {
        let mut f = encode(FrameKind::Log, 0, b"z");
        f[4] = 99;
        let events = Decoder::new().push(&f);
        assert!(matches!(&events[0], Event::Corrupt { reason } if reason.contains("kind 99")));
        assert!(frames(&events).is_empty());
    }
}
