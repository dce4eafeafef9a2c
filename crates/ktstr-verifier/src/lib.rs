//! Fold and summarise BPF verifier logs.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`line`](mod@line) | classify a log line and abstract its values into a shape |
//! | `item` (private) | the unit flowing between passes: a line, a backtracking run, a fold |
//! | `batch` (private) | lines handed to the classifying thread in one reused buffer |
//! | `bytes` (private) | byte searches eight bytes at a time |
//! | `pool` (private) | spent line buffers reused for new lines |
//! | `backtrack` (private) | group each run of precision-backtracking lines into one item |
//! | `cycle` (private) | one folding pass that finds repeated blocks of equal shape |
//! | `resume` (private) | fold the resumptions of one branch popped after a loop |
//! | [`fold`] | the fold block format, value summaries, [`expanded_line_count`] |
//! | [`collapse`](mod@collapse) | the streaming pipeline, [`collapse()`], [`collapse_to_writer`], [`Collapser`] |
//! | [`stats`] | [`VerifierStats`] parsed from the log |
//! | [`diff`] | A/B comparison of two captures, one [`diff::DiffRow`] per program |
//! | [`error`] | [`VerifierError`] |
//! | `embedded` (feature `capture`) | find BPF ELF objects in a `.bpf.o` or a scheduler binary |
//!
//! The `capture` feature also builds `ktstr-veristat`, the in-guest tool that loads every
//! program of a BPF object with libbpf at verifier log level 2 plus stats and prints the
//! logs and statistics as one JSON document (`src/bin/ktstr-veristat.rs` documents its format).
//!
//! ```
//! let mut log = String::from("0: (b7) r1 = 0                        ; R1_w=0\n");
//! for i in 0..40 {
//!     log += &format!("1: (07) r1 += 1                       ; R1_w={}\n", i + 1);
//!     log += &format!("2: (a5) if r1 < 0x28 goto pc-2       ; R1_w={}\n", i + 1);
//! }
//! log += "3: (95) exit\nR0 !read_ok\n";
//! let c = ktstr_verifier::collapse(log.as_bytes())?;
//! assert!(c.text.contains("--- ktstr fold: "));
//! assert!(c.text.contains("R1 (insn 1): 1 -> "));
//! assert_eq!(ktstr_verifier::expanded_line_count(&c.text)?, c.summary.lines_in);
//! # Ok::<(), ktstr_verifier::VerifierError>(())
//! ```

mod backtrack;
mod batch;
mod bytes;
pub mod collapse;
mod cycle;
pub mod diff;
#[cfg(feature = "capture")]
pub mod embedded;
pub mod error;
pub mod fold;
mod item;
pub mod line;
mod pool;
mod resume;
pub mod stats;

pub use collapse::{
    collapse, collapse_to_writer, collapse_with, CollapseConfig, CollapseSummary, Collapsed,
    Collapser,
};
pub use error::VerifierError;
pub use fold::expanded_line_count;
pub use line::{classify, LineKind};
pub use stats::{parse_stats, StatsParser, VerifierStats};
