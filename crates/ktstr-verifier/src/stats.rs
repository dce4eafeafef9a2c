//! Verifier statistics parsed from the log text.
//!
//! The kernel ends each program's log with (the first two only at `BPF_LOG_STATS`):
//!
//! ```text
//! verification time 123 usec
//! stack depth 8+0
//! processed 1234 insns (limit 1000000) max_states_per_insn 4 total_states 56 peak_states 56 mark_read 12
//! ```
//!
//! Kernels from 7.x print the stack as a maximum and one line per subprogram instead:
//!
//! ```text
//! stack depth max 16
//! subprog 0 (loop40_pass) main insns_self 291 insns_total 291 stack 8
//! ```
//!
//! ktstr's guest capture adds `prog size N insns` before a program's log; the kernel never prints it.

/// Most programs one [`StatsParser`] records; later ones are counted but not kept.
pub const MAX_PROGRAMS: usize = 4096;

/// Statistics of one program's verification; `None` where the log did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// Instructions processed (`processed N insns`).
    pub processed_insns: Option<u64>,
    /// The processed-instruction limit (`(limit N)`).
    pub insn_limit: Option<u64>,
    /// Most states kept for one instruction.
    pub max_states_per_insn: Option<u64>,
    /// States created in total.
    pub total_states: Option<u64>,
    /// Most states alive at once.
    pub peak_states: Option<u64>,
    /// Register reads marked.
    pub mark_read: Option<u64>,
    /// Stack depth of each subprogram (`stack depth 8+0` gives `[8, 0]`; 7.x: each `subprog` line's `stack N`).
    pub stack_depth: Vec<u64>,
    /// Deepest stack over all call chains (7.x: `stack depth max N`).
    pub stack_depth_max: Option<u64>,
    /// Verification time in microseconds.
    pub verification_time_us: Option<u64>,
    /// Program size in instructions, when the capture recorded it.
    pub prog_size_insns: Option<u64>,
}

impl VerifierStats {
    /// The deepest stack the kernel reported: `stack depth max`, else the subprograms' sum.
    pub fn max_stack_depth(&self) -> Option<u64> {
        self.stack_depth_max.or_else(|| self.total_stack_depth())
    }

    /// Sum of the subprograms' stack depths, if any were reported.
    pub fn total_stack_depth(&self) -> Option<u64> {
        if self.stack_depth.is_empty() {
            None
        } else {
            Some(
                self.stack_depth
                    .iter()
                    .fold(0u64, |a, d| a.saturating_add(*d)),
            )
        }
    }

    /// True when no field was filled in.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Streaming parser: feed it every line; each `processed` line closes one program's stats.
#[derive(Debug, Default)]
pub struct StatsParser {
    current: VerifierStats,
    done: Vec<VerifierStats>,
    dropped: u64,
}

impl StatsParser {
    /// A parser that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at one line (without its newline) and records any statistic on it.
    pub fn observe(&mut self, line: &str) {
        let Some(&first) = line.as_bytes().first() else {
            return;
        };
        if !matches!(first, b'p' | b's' | b'v' | b'B') {
            return;
        }
        if let Some(rest) = line.strip_prefix("processed ") {
            self.parse_processed(rest);
            let stats = std::mem::take(&mut self.current);
            if self.done.len() < MAX_PROGRAMS {
                self.done.push(stats);
            } else {
                self.dropped = self.dropped.saturating_add(1);
            }
        } else if let Some(rest) = line.strip_prefix("stack depth ") {
            if let Some(max) = rest.strip_prefix("max ") {
                self.current.stack_depth_max = leading_number(max);
            } else {
                self.current.stack_depth = rest
                    .trim()
                    .split('+')
                    .map_while(|d| d.trim().parse().ok())
                    .collect();
            }
        } else if let Some(rest) = line.strip_prefix("subprog ") {
            if let Some(depth) = subprog_stack(rest) {
                self.current.stack_depth.push(depth);
            }
        } else if let Some(rest) = line.strip_prefix("verification time ") {
            self.current.verification_time_us = leading_number(rest);
        } else if let Some(rest) = line.strip_prefix("prog size ") {
            self.current.prog_size_insns = leading_number(rest);
        } else if let Some(rest) = line.strip_prefix("BPF program is too large. Processed ") {
            self.current.processed_insns = leading_number(rest);
        }
    }

    fn parse_processed(&mut self, rest: &str) {
        let s = &mut self.current;
        s.processed_insns = leading_number(rest);
        let mut words = rest.split_whitespace().peekable();
        while let Some(w) = words.next() {
            let slot = match w {
                "(limit" => &mut s.insn_limit,
                "max_states_per_insn" => &mut s.max_states_per_insn,
                "total_states" => &mut s.total_states,
                "peak_states" => &mut s.peak_states,
                "mark_read" => &mut s.mark_read,
                _ => continue,
            };
            if let Some(v) = words.peek().and_then(|n| leading_number(n)) {
                *slot = Some(v);
            }
        }
    }

    /// Programs whose `processed` line has been seen, in log order.
    pub fn programs(&self) -> &[VerifierStats] {
        &self.done
    }

    /// Programs beyond [`MAX_PROGRAMS`] that were seen but not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Ends parsing: the closed programs, plus a trailing partial one if it has any field.
    pub fn finish(mut self) -> Vec<VerifierStats> {
        if !self.current.is_empty() && self.done.len() < MAX_PROGRAMS {
            self.done.push(self.current);
        }
        self.done
    }
}

/// Parses every program's statistics out of a whole log.
pub fn parse_stats(log: &str) -> Vec<VerifierStats> {
    let mut p = StatsParser::new();
    for line in log.lines() {
        p.observe(line);
    }
    p.finish()
}

/// The `stack N` of a 7.x `subprog K (NAME) KIND insns_self A insns_total B stack N` line.
fn subprog_stack(rest: &str) -> Option<u64> {
    if !rest.starts_with(|c: char| c.is_ascii_digit()) || !rest.contains(" insns_self ") {
        return None;
    }
    let mut words = rest.split_whitespace();
    words.find(|w| *w == "stack")?;
    words.next().and_then(leading_number)
}

/// The decimal number at the start of `s` (after spaces), if any.
fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_stats_block() {
        let log = "prog size 57 insns\n0: (b7) r0 = 0\nverification time 123 usec\nstack depth 8+0\n\
                   processed 1234 insns (limit 1000000) max_states_per_insn 4 total_states 56 peak_states 50 mark_read 12\n";
        let p = parse_stats(log);
        assert_eq!(p.len(), 1);
        let s = &p[0];
        assert_eq!(s.processed_insns, Some(1234));
        assert_eq!(s.insn_limit, Some(1_000_000));
        assert_eq!(s.max_states_per_insn, Some(4));
        assert_eq!(s.total_states, Some(56));
        assert_eq!(s.peak_states, Some(50));
        assert_eq!(s.mark_read, Some(12));
        assert_eq!(s.stack_depth, vec![8, 0]);
        assert_eq!(s.total_stack_depth(), Some(8));
        assert_eq!(s.verification_time_us, Some(123));
        assert_eq!(s.prog_size_insns, Some(57));
    }

    #[test]
    fn two_programs_and_partial_tail() {
        let log = "processed 5 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n\
                   stack depth 16\nprocessed 9 insns (limit 1000000)\nverification time 7 usec\n";
        let p = parse_stats(log);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].processed_insns, Some(5));
        assert_eq!(p[1].processed_insns, Some(9));
        assert_eq!(p[1].stack_depth, vec![16]);
        assert_eq!(p[1].total_states, None);
        assert_eq!(p[2].verification_time_us, Some(7));
    }

    #[test]
    fn garbage_yields_nothing() {
        let p = parse_stats("processed lots of insns\nstack depth x+y\nverification time soon\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].processed_insns, None);
        assert!(p[0].stack_depth.is_empty());
    }

    #[test]
    fn kernel_7x_stack_lines() {
        let log = "subprog#0: analyzing (depth 0)...\nverification time 76265 usec\nstack depth max 16\n\
                   subprog 0 (loop40_pass) main insns_self 291 insns_total 291 stack 8\n\
                   subprog 1 (helper) global insns_self 9 insns_total 9 stack 4\n\
                   processed 291 insns (limit 1000000) max_states_per_insn 4 total_states 6 peak_states 6 mark_read 0\n";
        let p = parse_stats(log);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].stack_depth_max, Some(16));
        assert_eq!(p[0].stack_depth, vec![8, 4]);
        assert_eq!(p[0].max_stack_depth(), Some(16));
        assert_eq!(p[0].total_stack_depth(), Some(12));
        let old = parse_stats("stack depth 8+0\nprocessed 1 insns (limit 1000000)\n");
        assert_eq!(old[0].max_stack_depth(), Some(8));
    }

    #[test]
    fn too_large_counts_processed() {
        let p = parse_stats("BPF program is too large. Processed 1000001 insn\n");
        assert_eq!(p[0].processed_insns, Some(1_000_001));
    }
}
