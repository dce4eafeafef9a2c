//! The crate's error type.

use std::io;

/// Everything that can go wrong while reading, folding or writing a verifier log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// Reading the input log failed.
    #[error("reading verifier log after line {line}")]
    Read {
        /// Number of complete lines read before the failure.
        line: u64,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the collapsed log failed.
    #[error("writing collapsed log at output line {line}")]
    Write {
        /// Number of lines written before the failure.
        line: u64,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A `CollapseConfig` field is out of range.
    #[error("invalid collapse configuration: {field} must be {expected}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What the field must satisfy.
        expected: &'static str,
    },
    /// A fold header in collapsed text could not be parsed.
    #[error("malformed fold header at collapsed line {line}")]
    MalformedFold {
        /// 1-based line number of the header.
        line: u64,
    },
    /// The thread classifying lines stopped before the input ended.
    #[error("the line-classifying thread stopped unexpectedly")]
    Worker,
    /// A fold header announces more note lines than the text contains.
    #[error(
        "fold header at collapsed line {line} announces {notes} notes but the text ends first"
    )]
    TruncatedFold {
        /// 1-based line number of the header.
        line: u64,
        /// Number of notes announced.
        notes: u64,
    },
}
