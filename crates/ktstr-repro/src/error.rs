//! [`ReproError`]: everything that can go wrong turning a failure into a plan and
//! decoding the events the probes send back.

/// Errors of this crate; each says which input was wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReproError {
    /// The text holds neither a sched_ext exit nor a kernel oops or panic.
    #[error("no sched_ext exit, oops or panic found in {lines} lines of failure text")]
    NoFailure {
        /// Lines read.
        lines: usize,
    },
    /// The kernel release string does not start with `MAJOR.MINOR`.
    #[error("kernel release `{release}` does not start with MAJOR.MINOR")]
    BadRelease {
        /// The release given.
        release: String,
    },
    /// The kernel predates sched_ext (6.12) or its BTF has no `struct sched_ext_ops`.
    #[error("kernel {release} has no sched_ext ({why})")]
    NoSchedExt {
        /// The release given.
        release: String,
        /// What was missing.
        why: &'static str,
    },
    /// None of the exit triggers this crate knows is in the kernel's BTF.
    #[error("kernel {release}: no exit trigger in BTF (looked for {looked_for})")]
    NoExitTrigger {
        /// The release given.
        release: String,
        /// The candidates, in order of preference.
        looked_for: String,
    },
    /// An event record is shorter than its header or than what its header announces.
    #[error("event at byte {at}: truncated, needs {need} bytes but {have} remain")]
    EventTruncated {
        /// Offset of the record in the stream.
        at: usize,
        /// Bytes the record needs.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// An event record does not start with [`crate::event::EVENT_MAGIC`].
    #[error("event at byte {at}: bad magic {found:#010x}")]
    EventBadMagic {
        /// Offset of the record in the stream.
        at: usize,
        /// The first four bytes, little-endian.
        found: u32,
    },
    /// An event record of a wire-format version this decoder does not read.
    #[error("event at byte {at}: wire format version {found}, this decoder reads {expected}")]
    EventBadVersion {
        /// Offset of the record in the stream.
        at: usize,
        /// Version found.
        found: u8,
        /// Version this decoder reads.
        expected: u8,
    },
    /// A header field is out of its range (kind, counts past the bounds, a field's length).
    #[error("event at byte {at}: {field} is {value}, at most {max} allowed")]
    EventOutOfRange {
        /// Offset of the record in the stream.
        at: usize,
        /// The header field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Its bound.
        max: u64,
    },
    /// An event names a probe the plan does not have, or disagrees with the plan's layout.
    #[error("event at byte {at}: {what}")]
    EventPlanMismatch {
        /// Offset of the record in the stream.
        at: usize,
        /// How it disagrees.
        what: String,
    },
}
