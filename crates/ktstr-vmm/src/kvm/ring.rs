//! A shared-memory ring from the guest to the host, in a reserved guest-physical range.
//!
//! The region is [`RING_GPA`]`..+ring size` (e820 reserved, its own KVM memory slot, so the
//! guest kernel never allocates it; a guest maps it through `/dev/mem` or a test program
//! uses it directly). The host writes the header when the VM is built; the guest produces,
//! the host consumes. All fields are little-endian.
//!
//! ```text
//! header, 64 bytes at RING_GPA
//!   0  u32 magic        RING_MAGIC ("KTRG")
//!   4  u32 version      RING_VERSION (1)
//!   8  u32 header_size  64: the data area starts at RING_GPA + 64
//!  12  u32 data_size    bytes of data area, a multiple of 8
//!  16  u64 producer     guest: bytes ever produced (position = producer % data_size)
//!  24  u64 consumer     host: bytes ever consumed
//!  32  u64 dropped      guest: records it dropped because the ring was full
//!  40  24 bytes reserved, zero
//! record, 8-byte aligned, never split across the end of the data area
//!   0  u32 len          payload bytes
//!   4  u32 kind         RECORD_PAD (0): skip to the end of the data area; others: the
//!                       application's own
//!   8  payload, then zero padding to a multiple of 8
//! ```
//!
//! Producing: if `8 + len` rounded up to 8 does not fit before the end of the data area, the
//! guest first writes a `RECORD_PAD` header filling the rest (it is always at least 8
//! bytes) and continues at offset 0. It writes the record, then publishes it by storing
//! the new `producer` (a release store; x86 keeps stores in order). It must not let
//! `producer - consumer` exceed `data_size`; when it would, it drops the record and
//! increments `dropped` instead. The host reads `producer` with an acquire load, decodes
//! every record up to it, then stores `consumer`. A header or record that breaks these rules
//! is a [`RingError`], never a panic.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use super::layout::RING_GPA;
use super::memory::GuestMemory;

/// `magic`: "KTRG" read as a little-endian u32.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"KTRG");
/// Protocol version.
pub const RING_VERSION: u32 = 1;
/// Header bytes before the data area.
pub const HEADER_SIZE: u64 = 64;
/// Record kind that pads to the end of the data area.
pub const RECORD_PAD: u32 = 0;
/// Offset of `magic`.
pub const OFF_MAGIC: u64 = 0;
/// Offset of `version`.
pub const OFF_VERSION: u64 = 4;
/// Offset of `header_size`.
pub const OFF_HEADER_SIZE: u64 = 8;
/// Offset of `data_size`.
pub const OFF_DATA_SIZE: u64 = 12;
/// Offset of `producer`.
pub const OFF_PRODUCER: u64 = 16;
/// Offset of `consumer`.
pub const OFF_CONSUMER: u64 = 24;
/// Offset of `dropped`.
pub const OFF_DROPPED: u64 = 32;

/// Why the ring could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Guest memory at the ring could not be accessed.
    #[error("ring memory at {gpa:#x} is not accessible")]
    Access {
        /// The address.
        gpa: u64,
    },
    /// The header does not carry the magic and version the host wrote.
    #[error("ring header has magic {magic:#x} version {version}; expected {RING_MAGIC:#x} v{RING_VERSION}")]
    BadHeader {
        /// Magic found.
        magic: u32,
        /// Version found.
        version: u32,
    },
    /// `producer` went backwards or ran more than the data area ahead of `consumer`.
    #[error("ring producer {producer} is inconsistent with consumer {consumer} (data area {data_size} bytes)")]
    BadProducer {
        /// Producer index.
        producer: u64,
        /// Consumer index.
        consumer: u64,
        /// Data area size.
        data_size: u64,
    },
    /// A record is longer than the rest of the produced bytes or the data area.
    #[error(
        "ring record at offset {offset} claims {len} payload bytes; only {room} are available"
    )]
    BadRecord {
        /// Offset of the record in the data area.
        offset: u64,
        /// The length it claims.
        len: u32,
        /// Bytes available to it.
        room: u64,
    },
}

/// One record the guest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingRecord {
    /// Application-defined kind (never [`RECORD_PAD`]).
    pub kind: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// The host's side of the ring: initializes the header and consumes records.
#[derive(Debug, Clone)]
pub struct RingReader {
    mem: GuestMemory,
    base: u64,
    data_size: u64,
}

/// `n` rounded up to a multiple of 8.
fn pad8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

impl RingReader {
    /// Writes a fresh header for a region of `region_size` bytes at [`RING_GPA`] and returns its reader.
    pub fn init(mem: &GuestMemory, region_size: u64) -> Result<Self, RingError> {
        Self::init_at(mem, RING_GPA, region_size)
    }

    /// As [`RingReader::init`] for a region at `base` (tests use ordinary RAM).
    pub fn init_at(mem: &GuestMemory, base: u64, region_size: u64) -> Result<Self, RingError> {
        let data_size = (region_size.saturating_sub(HEADER_SIZE)) / 8 * 8;
        let data32 = u32::try_from(data_size).map_err(|_| RingError::Access { gpa: base })?;
        let header: [(u64, u32); 4] = [
            (OFF_MAGIC, RING_MAGIC),
            (OFF_VERSION, RING_VERSION),
            (OFF_HEADER_SIZE, HEADER_SIZE as u32),
            (OFF_DATA_SIZE, data32),
        ];
        let w = |off: u64, f: &dyn Fn(GuestAddress) -> Result<(), vm_memory::GuestMemoryError>| {
            f(GuestAddress(base + off)).map_err(|_| RingError::Access { gpa: base + off })
        };
        w(0, &|a| mem.write_slice(&[0u8; HEADER_SIZE as usize], a))?;
        for (off, v) in header {
            w(off, &|a| mem.write_obj(v, a))?;
        }
        Ok(RingReader {
            mem: mem.clone(),
            base,
            data_size,
        })
    }

    /// Bytes of data area.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Guest-physical address of the data area.
    pub fn data_gpa(&self) -> u64 {
        self.base + HEADER_SIZE
    }

    fn load(&self, off: u64) -> Result<u64, RingError> {
        let gpa = self.base + off;
        self.mem
            .load::<u64>(GuestAddress(gpa), Ordering::Acquire)
            .map_err(|_| RingError::Access { gpa })
    }

    /// Records the guest reported dropping.
    pub fn dropped(&self) -> Result<u64, RingError> {
        self.load(OFF_DROPPED)
    }

    /// Decodes every record produced since the last call and marks them consumed.
    pub fn poll(&self) -> Result<Vec<RingRecord>, RingError> {
        let a = |gpa: u64| RingError::Access { gpa };
        let magic: u32 = self
            .mem
            .read_obj(GuestAddress(self.base))
            .map_err(|_| a(self.base))?;
        let version: u32 = self
            .mem
            .read_obj(GuestAddress(self.base + OFF_VERSION))
            .map_err(|_| a(self.base + OFF_VERSION))?;
        if magic != RING_MAGIC || version != RING_VERSION {
            return Err(RingError::BadHeader { magic, version });
        }
        let producer = self.load(OFF_PRODUCER)?;
        let mut consumer = self.load(OFF_CONSUMER)?;
        let size = self.data_size;
        if producer < consumer || producer - consumer > size || producer % 8 != 0 {
            return Err(RingError::BadProducer {
                producer,
                consumer,
                data_size: size,
            });
        }
        let mut out = Vec::new();
        while consumer < producer {
            let offset = consumer % size;
            let gpa = self.data_gpa() + offset;
            let len: u32 = self.mem.read_obj(GuestAddress(gpa)).map_err(|_| a(gpa))?;
            let kind: u32 = self
                .mem
                .read_obj(GuestAddress(gpa + 4))
                .map_err(|_| a(gpa))?;
            let to_end = size - offset;
            let produced = producer - consumer;
            let step = if kind == RECORD_PAD {
                to_end
            } else {
                pad8(8 + u64::from(len))
            };
            let room = to_end.min(produced);
            if step > room || step < 8 {
                return Err(RingError::BadRecord {
                    offset,
                    len,
                    room: room.saturating_sub(8),
                });
            }
            if kind != RECORD_PAD {
                let mut payload = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut payload, GuestAddress(gpa + 8))
                    .map_err(|_| a(gpa + 8))?;
                out.push(RingRecord { kind, payload });
            }
            consumer += step;
        }
        self.mem
            .store(
                consumer,
                GuestAddress(self.base + OFF_CONSUMER),
                Ordering::Release,
            )
            .map_err(|_| a(self.base + OFF_CONSUMER))?;
        Ok(out)
    }
}

/// The guest's side in Rust, as a reference implementation for tests and documentation.
#[cfg(test)]
pub(crate) fn produce(mem: &GuestMemory, base: u64, kind: u32, payload: &[u8]) -> bool {
    let size: u32 = mem.read_obj(GuestAddress(base + OFF_DATA_SIZE)).unwrap();
    let size = u64::from(size);
    let mut p: u64 = mem.read_obj(GuestAddress(base + OFF_PRODUCER)).unwrap();
    let c: u64 = mem.read_obj(GuestAddress(base + OFF_CONSUMER)).unwrap();
    let need = pad8(8 + payload.len() as u64);
    let to_end = size - p % size;
    let total = if need > to_end { to_end + need } else { need };
    if p + total - c > size {
        let d: u64 = mem.read_obj(GuestAddress(base + OFF_DROPPED)).unwrap();
        mem.write_obj(d + 1, GuestAddress(base + OFF_DROPPED))
            .unwrap();
        return false;
    }
    let data = base + HEADER_SIZE;
    if need > to_end {
        let at = GuestAddress(data + p % size);
        mem.write_obj((to_end - 8) as u32, at).unwrap();
        mem.write_obj(RECORD_PAD, GuestAddress(at.0 + 4)).unwrap();
        p += to_end;
    }
    let at = data + p % size;
    mem.write_obj(payload.len() as u32, GuestAddress(at))
        .unwrap();
    mem.write_obj(kind, GuestAddress(at + 4)).unwrap();
    mem.write_slice(payload, GuestAddress(at + 8)).unwrap();
    mem.write_obj(p + need, GuestAddress(base + OFF_PRODUCER))
        .unwrap();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn records_round_trip_and_wrap() {
        let m = mem();
        let base = 0x1000;
        // 64-byte header + 128-byte data area.
        let r = RingReader::init_at(&m, base, 64 + 128).unwrap();
        assert_eq!(r.data_size(), 128);
        assert!(produce(&m, base, 7, b"hello"));
        assert!(produce(&m, base, 8, &[1; 56]));
        let got = r.poll().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            RingRecord {
                kind: 7,
                payload: b"hello".to_vec()
            }
        );
        assert_eq!(got[1].payload, vec![1; 56]);
        // 16 + 64 = 80 used; a 72-byte record does not fit the 48 left before the end: pad + wrap.
        assert!(produce(&m, base, 9, &[2; 60]));
        let got = r.poll().unwrap();
        assert_eq!(
            got,
            vec![RingRecord {
                kind: 9,
                payload: vec![2; 60]
            }]
        );
        assert_eq!(r.poll().unwrap(), vec![]);
    }

    #[test]
    fn full_ring_drops() {
        let m = mem();
        let r = RingReader::init_at(&m, 0, 64 + 64).unwrap();
        assert!(produce(&m, 0, 1, &[0; 48]));
        assert!(!produce(&m, 0, 1, &[0; 8]));
        assert_eq!(r.dropped().unwrap(), 1);
        assert_eq!(r.poll().unwrap().len(), 1);
        assert!(produce(&m, 0, 1, &[0; 8]));
    }

    #[test]
    fn corrupt_rings_are_errors() {
        let m = mem();
        let r = RingReader::init_at(&m, 0, 64 + 128).unwrap();
        // A record claiming more bytes than were produced.
        m.write_obj(1000u32, GuestAddress(64)).unwrap();
        m.write_obj(3u32, GuestAddress(68)).unwrap();
        m.write_obj(16u64, GuestAddress(OFF_PRODUCER)).unwrap();
        assert!(matches!(
            r.poll(),
            Err(RingError::BadRecord { len: 1000, .. })
        ));
        // Producer too far ahead.
        m.write_obj(4096u64, GuestAddress(OFF_PRODUCER)).unwrap();
        assert!(matches!(r.poll(), Err(RingError::BadProducer { .. })));
        // Producer behind the consumer.
        m.write_obj(8u64, GuestAddress(OFF_CONSUMER)).unwrap();
        m.write_obj(0u64, GuestAddress(OFF_PRODUCER)).unwrap();
        assert!(matches!(r.poll(), Err(RingError::BadProducer { .. })));
        m.write_obj(0u32, GuestAddress(0)).unwrap();
        assert!(matches!(r.poll(), Err(RingError::BadHeader { .. })));
        let outside = RingReader::init_at(&m, 0x20000, 128);
        assert!(matches!(outside, Err(RingError::Access { .. })));
    }
}
