//! The probe events' wire format, version 1, and its decoder.
//!
//! The probe program writes one record per event; records follow each other with no gap.
//! Every integer is little-endian, every record is a multiple of 8 bytes, and the C
//! layout below has no implicit padding:
//!
//! ```c
//! struct ktstr_repro_event {       /* 48 bytes */
//!     __u32 magic;                 /*  0: KTSTR_REPRO_MAGIC 0x5052544b ("KTRP") */
//!     __u8  version;               /*  4: 1 */
//!     __u8  kind;                  /*  5: 0 entry, 1 exit, 2 exit trigger */
//!     __u8  nr_args;               /*  6: <= 6 */
//!     __u8  nr_fields;             /*  7: <= 16 */
//!     __u16 probe;                 /*  8: index in ProbePlan::probes; 0xffff: the trigger */
//!     __u8  nr_stack;              /* 10: <= 32 */
//!     __u8  flags;                 /* 11: bit 0: ret is valid */
//!     __u32 cpu;                   /* 12: bpf_get_smp_processor_id() */
//!     __u32 pid;                   /* 16: thread id */
//!     __u32 tgid;                  /* 20: process id */
//!     __u64 ts_ns;                 /* 24: bpf_ktime_get_ns() */
//!     __u64 ret;                   /* 32: return value (exit), else 0 */
//!     __u64 seq;                   /* 40: the ring's sequence number, for counting drops */
//! };
//! /* then: __u64 args[nr_args];                       raw argument registers/values   */
//! /*       struct { __u8 status; __u8 len; __u8 pad[6]; __u8 data[16]; } fields[nr_fields];
//!                                                     status 0: read, 1: read faulted  */
//! /*       __u64 stack[nr_stack];                     kernel return addresses, innermost first */
//! ```
//!
//! [`RawEvent::parse`] reads one record and checks every count and length against its
//! bound before reading; [`decode`] gives names and values to a record with the plan.
//! Garbage and truncated input are errors, never panics.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ReproError;
use crate::plan::{ArgSpec, FieldSpec, ProbePlan, ValueType, MAX_FIELD_BYTES};
use crate::{MAX_ARGS, MAX_FIELDS, MAX_STACK_DEPTH};

/// First four bytes of every record: "KTRP" read as a little-endian u32.
pub const EVENT_MAGIC: u32 = 0x5052_544b;
/// The wire format's version.
pub const WIRE_VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 48;
/// Bytes of one field slot.
pub const FIELD_SLOT_LEN: usize = 8 + MAX_FIELD_BYTES;
/// The `probe` value of the exit trigger's records.
pub const TRIGGER_PROBE: u16 = 0xffff;
/// Longest record: every count at its bound.
pub const MAX_RECORD_LEN: usize =
    HEADER_LEN + 8 * MAX_ARGS + FIELD_SLOT_LEN * MAX_FIELDS + 8 * MAX_STACK_DEPTH;

/// What a record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A function or callback was entered.
    Entry,
    /// It returned.
    Exit,
    /// The scheduler is exiting (the plan's exit trigger fired).
    Trigger,
}

impl EventKind {
    fn from_wire(v: u8) -> Option<EventKind> {
        match v {
            0 => Some(EventKind::Entry),
            1 => Some(EventKind::Exit),
            2 => Some(EventKind::Trigger),
            _ => None,
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            EventKind::Entry => 0,
            EventKind::Exit => 1,
            EventKind::Trigger => 2,
        }
    }
}

/// One field as read by the probe: its bytes, or `None` when the read faulted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawField {
    /// The bytes read (at most [`MAX_FIELD_BYTES`]), `None` on a fault.
    pub bytes: Option<Vec<u8>>,
}

/// One record, parsed but not yet interpreted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEvent {
    /// Entry, exit or trigger.
    pub kind: EventKind,
    /// Index in the plan's probes; [`TRIGGER_PROBE`] for the trigger.
    pub probe: u16,
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Monotonic time in ns.
    pub ts_ns: u64,
    /// Return value of an exit event.
    pub ret: Option<u64>,
    /// The ring's sequence number.
    pub seq: u64,
    /// Raw argument values.
    pub args: Vec<u64>,
    /// Fields read through the arguments.
    pub fields: Vec<RawField>,
    /// Kernel return addresses, innermost first.
    pub stack: Vec<u64>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl RawEvent {
    /// Parses the record at the start of `buf` (`at` is its offset in the stream, for
    /// errors); returns it and its length.
    pub fn parse(buf: &[u8], at: usize) -> Result<(RawEvent, usize), ReproError> {
        let truncated = |need| ReproError::EventTruncated {
            at,
            need,
            have: buf.len(),
        };
        if buf.len() < 4 {
            return Err(truncated(HEADER_LEN));
        }
        let magic = u32_at(buf, 0);
        if magic != EVENT_MAGIC {
            return Err(ReproError::EventBadMagic { at, found: magic });
        }
        if buf.len() < HEADER_LEN {
            return Err(truncated(HEADER_LEN));
        }
        let h = &buf[..HEADER_LEN];
        if h[4] != WIRE_VERSION {
            return Err(ReproError::EventBadVersion {
                at,
                found: h[4],
                expected: WIRE_VERSION,
            });
        }
        let range = |field, value: usize, max: usize| {
            if value > max {
                Err(ReproError::EventOutOfRange {
                    at,
                    field,
                    value: value as u64,
                    max: max as u64,
                })
            } else {
                Ok(value)
            }
        };
        let kind = EventKind::from_wire(h[5]).ok_or(ReproError::EventOutOfRange {
            at,
            field: "kind",
            value: u64::from(h[5]),
            max: 2,
        })?;
        let nr_args = range("nr_args", usize::from(h[6]), MAX_ARGS)?;
        let nr_fields = range("nr_fields", usize::from(h[7]), MAX_FIELDS)?;
        let nr_stack = range("nr_stack", usize::from(h[10]), MAX_STACK_DEPTH)?;
        let flags = h[11];
        range("flags", usize::from(flags), 1)?;
        let len = HEADER_LEN + 8 * nr_args + FIELD_SLOT_LEN * nr_fields + 8 * nr_stack;
        if buf.len() < len {
            return Err(truncated(len));
        }
        let mut o = HEADER_LEN;
        let mut args = Vec::with_capacity(nr_args);
        for _ in 0..nr_args {
            args.push(u64_at(buf, o));
            o += 8;
        }
        let mut fields = Vec::with_capacity(nr_fields);
        for _ in 0..nr_fields {
            let (status, flen) = (buf[o], usize::from(buf[o + 1]));
            range("field status", usize::from(status), 1)?;
            range("field len", flen, MAX_FIELD_BYTES)?;
            let bytes = (status == 0).then(|| buf[o + 8..o + 8 + flen].to_vec());
            fields.push(RawField { bytes });
            o += FIELD_SLOT_LEN;
        }
        let mut stack = Vec::with_capacity(nr_stack);
        for _ in 0..nr_stack {
            stack.push(u64_at(buf, o));
            o += 8;
        }
        Ok((
            RawEvent {
                kind,
                probe: u16_at(h, 8),
                cpu: u32_at(h, 12),
                pid: u32_at(h, 16),
                tgid: u32_at(h, 20),
                ts_ns: u64_at(h, 24),
                ret: (flags & 1 != 0).then(|| u64_at(h, 32)),
                seq: u64_at(h, 40),
                args,
                fields,
                stack,
            },
            len,
        ))
    }

    /// Parses a stream of records; the first bad record ends it with an error.
    pub fn parse_stream(buf: &[u8]) -> Result<Vec<RawEvent>, ReproError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let (ev, len) = RawEvent::parse(&buf[at..], at)?;
            out.push(ev);
            at += len;
        }
        Ok(out)
    }

    /// The record's bytes, as the probe program writes them (counts are cut at their
    /// bounds and field bytes at [`MAX_FIELD_BYTES`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let args = &self.args[..self.args.len().min(MAX_ARGS)];
        let fields = &self.fields[..self.fields.len().min(MAX_FIELDS)];
        let stack = &self.stack[..self.stack.len().min(MAX_STACK_DEPTH)];
        let mut b = Vec::with_capacity(MAX_RECORD_LEN);
        b.extend_from_slice(&EVENT_MAGIC.to_le_bytes());
        b.extend_from_slice(&[
            WIRE_VERSION,
            self.kind.to_wire(),
            args.len() as u8,
            fields.len() as u8,
        ]);
        b.extend_from_slice(&self.probe.to_le_bytes());
        b.extend_from_slice(&[stack.len() as u8, u8::from(self.ret.is_some())]);
        for v in [self.cpu, self.pid, self.tgid] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.ts_ns, self.ret.unwrap_or(0), self.seq] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for a in args {
            b.extend_from_slice(&a.to_le_bytes());
        }
        for f in fields {
            let mut slot = [0u8; FIELD_SLOT_LEN];
            match &f.bytes {
                Some(bytes) => {
                    let n = bytes.len().min(MAX_FIELD_BYTES);
                    slot[1] = n as u8;
                    slot[8..8 + n].copy_from_slice(&bytes[..n]);
                }
                None => slot[0] = 1,
            }
            b.extend_from_slice(&slot);
        }
        for s in stack {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// An unsigned integer.
    Unsigned(u64),
    /// A signed integer.
    Signed(i64),
    /// A bool.
    Bool(bool),
    /// A pointer.
    Pointer(u64),
    /// A string (bytes up to the first NUL, lossy UTF-8).
    Str(String),
    /// An enum value: its enumerator when one matches.
    Enum {
        /// The enumerator.
        name: Option<String>,
        /// The raw value.
        raw: i64,
    },
    /// Flag bits: the named ones, and the bits no enumerator names.
    Flags {
        /// Names of the set bits.
        names: Vec<String>,
        /// Bits left unnamed.
        rest: u64,
    },
    /// The probe could not read it (a fault on a bad pointer).
    Unreadable,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unsigned(v) => write!(f, "{v}"),
            Value::Signed(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Pointer(v) => write!(f, "{v:#x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Enum { name: Some(n), .. } => f.write_str(n),
            Value::Enum { name: None, raw } => write!(f, "{raw}"),
            Value::Flags { names, rest } => {
                let mut parts: Vec<String> = names.clone();
                if *rest != 0 || parts.is_empty() {
                    parts.push(format!("{rest:#x}"));
                }
                f.write_str(&parts.join("|"))
            }
            Value::Unreadable => f.write_str("<unreadable>"),
        }
    }
}

/// A decoded event: what fired, where, and the named values it saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Entry, exit or trigger.
    pub kind: EventKind,
    /// The function, callback program or trigger target.
    pub function: String,
    /// CPU.
    pub cpu: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Monotonic time in ns.
    pub ts_ns: u64,
    /// The ring's sequence number.
    pub seq: u64,
    /// `(name, value)` per argument.
    pub args: Vec<(String, Value)>,
    /// `(label, value)` per field.
    pub fields: Vec<(String, Value)>,
    /// The return value, for an exit event of a non-void function.
    pub ret: Option<Value>,
    /// Kernel return addresses, innermost first.
    pub stack: Vec<u64>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.kind {
            EventKind::Entry => "->",
            EventKind::Exit => "<-",
            EventKind::Trigger => "!!",
        };
        write!(
            f,
            "{}.{:09} cpu{} {}[{}] {dir} {}(",
            self.ts_ns / 1_000_000_000,
            self.ts_ns % 1_000_000_000,
            self.cpu,
            self.tgid,
            self.pid,
            self.function
        )?;
        let args: Vec<String> = self.args.iter().map(|(n, v)| format!("{n}={v}")).collect();
        f.write_str(&args.join(", "))?;
        f.write_str(")")?;
        if let Some(r) = &self.ret {
            write!(f, " = {r}")?;
        }
        for (l, v) in &self.fields {
            write!(f, " {l}={v}")?;
        }
        Ok(())
    }
}

/// Interprets an unsigned raw value as `ty` says; `size` is the value's width in bytes.
fn value(ty: &ValueType, raw: u64) -> Value {
    let width = |size: u8| u32::from(size.clamp(1, 8)) * 8;
    match ty {
        ValueType::Unsigned { size } => {
            let w = width(*size);
            Value::Unsigned(if w == 64 {
                raw
            } else {
                raw & ((1u64 << w) - 1)
            })
        }
        ValueType::Signed { size } => {
            let w = width(*size);
            let shift = 64 - w;
            Value::Signed(((raw << shift) as i64) >> shift)
        }
        ValueType::Bool => Value::Bool(raw & 0xff != 0),
        ValueType::Pointer | ValueType::Str { .. } => Value::Pointer(raw),
        ValueType::Enum { values, .. } => {
            let name = values
                .iter()
                .find(|(_, v)| *v as u64 == raw || (*v as u32 as u64 == raw && *v >= 0))
                .map(|(n, _)| n.clone());
            Value::Enum {
                name,
                raw: raw as i64,
            }
        }
        ValueType::Flags { bits, .. } => {
            let mut rest = raw;
            let mut names = Vec::new();
            for (n, b) in bits {
                if raw & b != 0 && rest & b != 0 {
                    names.push(n.clone());
                    rest &= !b;
                }
            }
            Value::Flags { names, rest }
        }
    }
}

fn field_value(spec: &FieldSpec, raw: &RawField, at: usize) -> Result<Value, ReproError> {
    let Some(bytes) = &raw.bytes else {
        return Ok(Value::Unreadable);
    };
    if let ValueType::Str { .. } = spec.value {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        return Ok(Value::Str(
            String::from_utf8_lossy(&bytes[..end]).into_owned(),
        ));
    }
    if bytes.len() != usize::from(spec.size) || bytes.len() > 8 {
        return Err(ReproError::EventPlanMismatch {
            at,
            what: format!(
                "field {} has {} bytes, the plan reads {}",
                spec.label,
                bytes.len(),
                spec.size
            ),
        });
    }
    let mut a = [0u8; 8];
    a[..bytes.len()].copy_from_slice(bytes);
    Ok(value(&spec.value, u64::from_le_bytes(a)))
}

/// Decodes one record with the plan that made its probes (`at`: offset, for errors).
pub fn decode(plan: &ProbePlan, raw: &RawEvent, at: usize) -> Result<Event, ReproError> {
    let mismatch = |what: String| ReproError::EventPlanMismatch { at, what };
    let (function, args, fields, ret): (String, &[ArgSpec], &[FieldSpec], Option<&ValueType>) =
        match (raw.kind, raw.probe) {
            (EventKind::Trigger, TRIGGER_PROBE) => (
                plan.trigger.target.clone(),
                &plan.trigger.args,
                &plan.trigger.fields,
                None,
            ),
            (EventKind::Trigger, p) => {
                return Err(mismatch(format!("a trigger record names probe {p}")))
            }
            (_, p) => {
                let probe = plan.probes.get(usize::from(p)).ok_or_else(|| {
                    mismatch(format!(
                        "probe {p}, but the plan has {} probes",
                        plan.probes.len()
                    ))
                })?;
                (
                    probe.name().to_string(),
                    &probe.args,
                    &probe.fields,
                    probe.ret.as_ref(),
                )
            }
        };
    if raw.args.len() != args.len() || raw.fields.len() != fields.len() {
        return Err(mismatch(format!(
            "{function}: {} args and {} fields, the plan records {} and {}",
            raw.args.len(),
            raw.fields.len(),
            args.len(),
            fields.len()
        )));
    }
    let ret = match (raw.kind, raw.ret, ret) {
        (EventKind::Exit, Some(r), Some(ty)) => Some(value(ty, r)),
        (EventKind::Exit, None, Some(_)) => {
            return Err(mismatch(format!(
                "{function}: exit record without its return value"
            )))
        }
        _ => None,
    };
    Ok(Event {
        kind: raw.kind,
        function,
        cpu: raw.cpu,
        pid: raw.pid,
        tgid: raw.tgid,
        ts_ns: raw.ts_ns,
        seq: raw.seq,
        args: args
            .iter()
            .zip(&raw.args)
            .map(|(s, &v)| (s.name.clone(), value(&s.value, v)))
            .collect(),
        fields: fields
            .iter()
            .zip(&raw.fields)
            .map(|(s, f)| Ok((s.label.clone(), field_value(s, f, at)?)))
            .collect::<Result<_, ReproError>>()?,
        ret,
        stack: raw.stack.clone(),
    })
}

/// Parses and decodes a stream of records.
pub fn decode_stream(plan: &ProbePlan, buf: &[u8]) -> Result<Vec<Event>, ReproError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (raw, len) = RawEvent::parse(&buf[at..], at)?;
        out.push(decode(plan, &raw, at)?);
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawEvent {
        RawEvent {
            kind: EventKind::Exit,
            probe: 3,
            cpu: 1,
            pid: 122,
            tgid: 122,
            ts_ns: 9_826_945_000,
            ret: Some(0xffff_ffff_ffff_fff0),
            seq: 77,
            args: vec![0xffff_8880_0123_4000, 9],
            fields: vec![
                RawField {
                    bytes: Some(b"spin\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
                },
                RawField { bytes: None },
            ],
            stack: vec![0xffff_ffff_8100_0000, 0xffff_ffff_8100_0010],
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let b = sample().to_bytes();
        assert_eq!(b.len(), HEADER_LEN + 2 * 8 + 2 * FIELD_SLOT_LEN + 2 * 8);
        assert_eq!(&b[0..4], b"KTRP");
        assert_eq!(&b[4..12], &[1, 1, 2, 2, 3, 0, 2, 1]);
        assert_eq!(u32_at(&b, 16), 122);
        assert_eq!(u64_at(&b, 40), 77);
        assert_eq!(u64_at(&b, 48), 0xffff_8880_0123_4000);
        // First field slot: status 0, len 16, then "spin".
        assert_eq!(&b[64..66], &[0, 16]);
        assert_eq!(&b[72..76], b"spin");
        // Second: status 1 (fault).
        assert_eq!(b[64 + FIELD_SLOT_LEN], 1);
        assert_eq!(MAX_RECORD_LEN % 8, 0);
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let b = e.to_bytes();
        let (back, len) = RawEvent::parse(&b, 0).unwrap();
        assert_eq!((back, len), (e, b.len()));
    }

    #[test]
    fn every_truncation_and_every_single_byte_corruption_is_an_error_or_a_record() {
        let b = sample().to_bytes();
        for cut in 0..b.len() {
            assert!(
                matches!(
                    RawEvent::parse(&b[..cut], 0),
                    Err(ReproError::EventTruncated { .. } | ReproError::EventBadMagic { .. })
                ),
                "cut at {cut}"
            );
        }
        for i in 0..b.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = RawEvent::parse(&c, 0);
                let _ = RawEvent::parse_stream(&c);
            }
        }
    }

    #[test]
    fn header_bounds_are_checked() {
        let b = sample().to_bytes();
        let set = |i: usize, v: u8| {
            let mut c = b.clone();
            c[i] = v;
            RawEvent::parse(&c, 0).unwrap_err()
        };
        assert!(matches!(set(0, b'X'), ReproError::EventBadMagic { .. }));
        assert!(matches!(
            set(4, 2),
            ReproError::EventBadVersion { found: 2, .. }
        ));
        for (i, field) in [
            (5, "kind"),
            (6, "nr_args"),
            (7, "nr_fields"),
            (10, "nr_stack"),
            (11, "flags"),
        ] {
            match set(i, 0xff) {
                ReproError::EventOutOfRange {
                    field: f,
                    value: 255,
                    ..
                } => assert_eq!(f, field),
                other => panic!("{field}: {other}"),
            }
        }
        // A field longer than a slot.
        assert!(matches!(
            set(65, 17),
            ReproError::EventOutOfRange {
                field: "field len",
                ..
            }
        ));
    }

    #[test]
    fn values_decode() {
        assert_eq!(
            value(&ValueType::Signed { size: 4 }, 0xffff_ffff),
            Value::Signed(-1)
        );
        assert_eq!(
            value(&ValueType::Unsigned { size: 4 }, 0x1_0000_0005),
            Value::Unsigned(5)
        );
        let flags = ValueType::Flags {
            name: "f".into(),
            bits: vec![("A".into(), 1), ("B".into(), 4)],
        };
        assert_eq!(value(&flags, 0x15).to_string(), "A|B|0x10");
        assert_eq!(value(&flags, 0).to_string(), "0x0");
        let en = ValueType::Enum {
            name: "e".into(),
            values: vec![("X".into(), 1025)],
        };
        assert_eq!(value(&en, 1025).to_string(), "X");
        assert_eq!(value(&en, 7).to_string(), "7");
    }
}
