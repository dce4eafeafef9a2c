//! The streaming collapse pipeline: read lines, guard errors and the tail, fold, write.
//!
//! ```text
//! reader -> stats -> batches of lines -> (second thread) escape + classify + hash
//!        -> guard (last `keep_tail` lines; marks the tail and the lines before an error unfoldable)
//!        -> runs (each run of precision-backtracking lines becomes one item)
//!        -> pass 1 -> pass 2 -> ... (nested loops fold in later passes)
//!        -> writer
//! ```
//!
//! Every stage holds a bounded number of lines, so memory does not grow with the input. Batches
//! and the text buffers of lines already written or folded away go back to the second thread
//! for reuse, so the steady state allocates nothing per line.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufWriter, Write};
use std::mem;
use std::sync::mpsc;
use std::thread;

use crate::backtrack::Runs;
use crate::batch::Batch;
use crate::cycle::{Folder, PassParams};
use crate::error::VerifierError;
use crate::fold;
use crate::item::Item;
use crate::line::{LineKind, ListingContext};
use crate::pool::TextPool;
use crate::resume::Resumptions;
use crate::stats::{StatsParser, VerifierStats};

/// Longest input line kept whole; the rest of a longer line is dropped with a marker.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Tuning of [`collapse_with`]; [`Default`] suits real verifier logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollapseConfig {
    /// Longest repeated block, in lines, that can be folded (1..=65536).
    pub max_period: usize,
    /// Lines at the end of the log, and before every error line, that are never folded.
    pub keep_tail: usize,
    /// Folding passes; each later pass folds loops around loops folded earlier (1..=8).
    pub passes: usize,
    /// Fewest lines a fold must hide (1..).
    pub min_fold_lines: usize,
    /// Most note lines under one fold header (..=256).
    pub max_notes: usize,
}

impl Default for CollapseConfig {
    fn default() -> Self {
        Self {
            max_period: 2048,
            keep_tail: 32,
            passes: 3,
            min_fold_lines: 4,
            max_notes: 16,
        }
    }
}

impl CollapseConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), VerifierError> {
        let bad = |field, expected| Err(VerifierError::InvalidConfig { field, expected });
        if !(1..=65536).contains(&self.max_period) {
            return bad("max_period", "between 1 and 65536");
        }
        if !(1..=8).contains(&self.passes) {
            return bad("passes", "between 1 and 8");
        }
        if self.min_fold_lines == 0 {
            return bad("min_fold_lines", "at least 1");
        }
        if self.max_notes > 256 {
            return bad("max_notes", "at most 256");
        }
        if self.keep_tail > 1 << 20 {
            return bad("keep_tail", "at most 1048576");
        }
        Ok(())
    }
}

/// What a collapse did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollapseSummary {
    /// Lines read.
    pub lines_in: u64,
    /// Lines written.
    pub lines_out: u64,
    /// Bytes read, newlines included.
    pub bytes_in: u64,
    /// Fold blocks written, over all passes.
    pub folds: u64,
    /// Statistics of each program whose stats the log contains, in log order.
    pub programs: Vec<VerifierStats>,
}

impl CollapseSummary {
    /// Lines in per line out (1.0 for an empty input).
    pub fn ratio(&self) -> f64 {
        if self.lines_out == 0 {
            1.0
        } else {
            self.lines_in as f64 / self.lines_out as f64
        }
    }

    /// Statistics of the last program in the log (the failing one when a load failed).
    pub fn last_program(&self) -> Option<&VerifierStats> {
        self.programs.last()
    }
}

/// A collapsed log held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collapsed {
    /// The collapsed text, one line per `\n`.
    pub text: String,
    /// What the collapse did.
    pub summary: CollapseSummary,
}

impl Collapsed {
    /// The collapsed lines.
    pub fn lines(&self) -> std::str::Lines<'_> {
        self.text.lines()
    }
}

/// Push-based collapser: feed lines one at a time (e.g. from a libbpf print callback).
pub struct Collapser<W: Write> {
    cfg: CollapseConfig,
    out: BufWriter<W>,
    guard: VecDeque<Item>,
    runs: Runs,
    listing: ListingContext,
    passes: Vec<Folder>,
    resume: Resumptions,
    scratch: (Vec<Item>, Vec<Item>),
    stats: StatsParser,
    spent: TextPool,
    lines_in: u64,
    lines_out: u64,
    bytes_in: u64,
}

impl<W: Write> std::fmt::Debug for Collapser<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collapser")
            .field("cfg", &self.cfg)
            .field("lines_in", &self.lines_in)
            .field("lines_out", &self.lines_out)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Collapser<W> {
    /// A collapser writing to `out`.
    pub fn new(out: W, cfg: CollapseConfig) -> Result<Self, VerifierError> {
        cfg.validate()?;
        let params = PassParams {
            max_period: cfg.max_period,
            min_fold_lines: cfg.min_fold_lines,
            max_notes: cfg.max_notes,
        };
        Ok(Self {
            cfg,
            out: BufWriter::with_capacity(1 << 16, out),
            guard: VecDeque::with_capacity(cfg.keep_tail + 1),
            runs: Runs::default(),
            listing: ListingContext::default(),
            passes: (0..cfg.passes).map(|_| Folder::new(params)).collect(),
            resume: Resumptions::new(cfg.max_notes),
            scratch: (Vec::new(), Vec::new()),
            stats: StatsParser::new(),
            spent: TextPool::default(),
            lines_in: 0,
            lines_out: 0,
            bytes_in: 0,
        })
    }

    /// Feeds one line, without its trailing newline.
    pub fn push_line(&mut self, line: &str) -> Result<(), VerifierError> {
        self.observe(line);
        self.push_item(Item::new(fold::escape(line).into_owned()))
    }

    /// Counts a raw input line and feeds it to the stats parser.
    fn observe(&mut self, line: &str) {
        self.lines_in += 1;
        self.bytes_in = self.bytes_in.saturating_add(line.len() as u64 + 1);
        self.stats.observe(line);
    }

    /// Passes a classified line through the tail guard into the folding passes.
    fn push_item(&mut self, item: Item) -> Result<(), VerifierError> {
        if item.class.kind == LineKind::Error {
            for it in &mut self.guard {
                it.foldable = false;
            }
        }
        self.guard.push_back(item);
        if self.guard.len() > self.cfg.keep_tail {
            if let Some(it) = self.guard.pop_front() {
                self.feed(it)?;
            }
        }
        Ok(())
    }

    /// [`Self::push_item`] for a batch, moving only the batch's last lines through the guard.
    fn push_items(&mut self, items: &mut Vec<Item>) -> Result<(), VerifierError> {
        let keep = self.cfg.keep_tail;
        for e in 0..items.len() {
            if items
                .get(e)
                .is_some_and(|it| it.class.kind == LineKind::Error)
            {
                for it in items
                    .get_mut(e.saturating_sub(keep)..e)
                    .into_iter()
                    .flatten()
                {
                    it.foldable = false;
                }
                let from_guard = keep.saturating_sub(e).min(self.guard.len());
                for it in self.guard.iter_mut().rev().take(from_guard) {
                    it.foldable = false;
                }
            }
        }
        let mut to_feed = (self.guard.len() + items.len()).saturating_sub(keep);
        while to_feed > 0 {
            let Some(it) = self.guard.pop_front() else {
                break;
            };
            self.feed(it)?;
            to_feed -= 1;
        }
        let mut rest = items.drain(..);
        for it in rest.by_ref().take(to_feed) {
            self.feed(it)?;
        }
        self.guard.extend(rest);
        Ok(())
    }

    /// Runs one item through the backtracking-run grouping and what that yields onwards.
    fn feed(&mut self, mut item: Item) -> Result<(), VerifierError> {
        let kind = self.listing.kind(&item.text, &item.class);
        if kind != item.class.kind && item.weight == 1 {
            item.class.kind = kind;
        }
        if Runs::joins(&item) {
            let full = self.runs.add(&item);
            self.spent.put(item.text);
            return match full {
                Some(full) => self.fold(full),
                None => Ok(()),
            };
        }
        if let Some(run) = self.runs.take() {
            self.fold(run)?;
        }
        self.fold(item)
    }

    /// Runs one item through every pass and writes what comes out.
    fn fold(&mut self, item: Item) -> Result<(), VerifierError> {
        let (a, b) = &mut self.scratch;
        a.clear();
        match self.passes.split_first_mut() {
            Some((first, rest)) => {
                first.push(item, a);
                for pass in rest {
                    if a.is_empty() {
                        break;
                    }
                    b.clear();
                    for it in a.drain(..) {
                        pass.push(it, b);
                    }
                    mem::swap(a, b);
                }
            }
            None => a.push(item),
        }
        if a.is_empty() {
            return Ok(());
        }
        self.write_items()
    }

    /// Runs the passes' output through the resumption stage and writes what comes out.
    fn write_items(&mut self) -> Result<(), VerifierError> {
        let (a, b) = &mut self.scratch;
        b.clear();
        for it in a.drain(..) {
            self.resume.push(it, b);
        }
        mem::swap(a, b);
        self.write_out()
    }

    /// Writes the items in the first scratch buffer.
    fn write_out(&mut self) -> Result<(), VerifierError> {
        let (a, _) = &mut self.scratch;
        for it in a.drain(..) {
            let lines = 1 + it.text.bytes().filter(|&c| c == b'\n').count() as u64;
            let res = self
                .out
                .write_all(it.text.as_bytes())
                .and_then(|()| self.out.write_all(b"\n"));
            if let Err(source) = res {
                return Err(VerifierError::Write {
                    line: self.lines_out,
                    source,
                });
            }
            self.lines_out += lines;
            self.spent.put(it.text);
        }
        Ok(())
    }

    /// Moves the text buffers of lines already written or folded away into `pool`.
    fn spent_texts(&mut self, pool: &mut TextPool) {
        pool.take_from(&mut self.spent);
        for pass in &mut self.passes {
            pass.spent_texts(pool);
        }
    }

    /// Ends the input: flushes every stage and the writer.
    pub fn finish(mut self) -> Result<CollapseSummary, VerifierError> {
        let tail: Vec<Item> = self.guard.drain(..).collect();
        for mut it in tail {
            it.foldable = false;
            self.feed(it)?;
        }
        if let Some(run) = self.runs.take() {
            self.fold(run)?;
        }
        let n = self.passes.len();
        for i in 0..n {
            let (a, b) = &mut self.scratch;
            a.clear();
            if let Some(p) = self.passes.get_mut(i) {
                p.finish(a);
            }
            for pass in self.passes.iter_mut().skip(i + 1) {
                b.clear();
                for it in a.drain(..) {
                    pass.push(it, b);
                }
                mem::swap(a, b);
            }
            self.write_items()?;
        }
        self.scratch.0.clear();
        self.resume.flush(&mut self.scratch.0);
        self.write_out()?;
        if let Err(source) = self.out.flush() {
            return Err(VerifierError::Write {
                line: self.lines_out,
                source,
            });
        }
        Ok(CollapseSummary {
            lines_in: self.lines_in,
            lines_out: self.lines_out,
            bytes_in: self.bytes_in,
            folds: self.passes.iter().map(Folder::folds).sum::<u64>() + self.resume.folds(),
            programs: self.stats.finish(),
        })
    }
}

/// Collapses a log into memory with the default configuration.
pub fn collapse(reader: impl BufRead) -> Result<Collapsed, VerifierError> {
    let mut out = Vec::new();
    let summary = collapse_with(reader, &mut out, &CollapseConfig::default())?;
    let text = match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(Collapsed { text, summary })
}

/// Collapses a log from `input` to `out` in bounded memory, with the default configuration.
pub fn collapse_to_writer(
    input: impl BufRead,
    out: impl Write,
) -> Result<CollapseSummary, VerifierError> {
    collapse_with(input, out, &CollapseConfig::default())
}

/// Collapses a log from `input` to `out` in bounded memory.
pub fn collapse_with(
    input: impl BufRead,
    out: impl Write,
    cfg: &CollapseConfig,
) -> Result<CollapseSummary, VerifierError> {
    let mut c = Collapser::new(out, *cfg)?;
    // Escaping, classifying and hashing lines runs on a second thread while this one reads,
    // folds and writes; batches go back in order, at most two are in flight (bounded memory),
    // and their buffers are reused.
    thread::scope(|scope| {
        let (to_worker, worker_in) = mpsc::sync_channel::<Batch>(2);
        let (worker_out, from_worker) = mpsc::sync_channel::<Batch>(2);
        scope.spawn(move || {
            for mut batch in worker_in {
                batch.classify();
                if worker_out.send(batch).is_err() {
                    break;
                }
            }
        });
        let mut in_flight = 0usize;
        let mut spare: Vec<Batch> = Vec::new();
        let mut batch = Batch::default();
        let receive = |c: &mut Collapser<_>, spare: &mut Vec<Batch>| {
            let mut back = from_worker.recv().map_err(|_| worker_gone())?;
            c.push_items(&mut back.items)?;
            spare.push(back);
            Ok::<(), VerifierError>(())
        };
        let mut send = |c: &mut Collapser<_>, batch: &mut Batch, in_flight: &mut usize| {
            let mut full = mem::replace(batch, spare.pop().unwrap_or_default());
            c.spent_texts(&mut full.pool);
            if to_worker.send(full).is_err() {
                return Err(worker_gone());
            }
            *in_flight += 1;
            if *in_flight > 1 {
                receive(c, &mut spare)?;
                *in_flight -= 1;
            }
            Ok(())
        };
        for_each_line(input, |line| {
            c.observe(line);
            batch.push(line);
            if batch.is_full() {
                send(&mut c, &mut batch, &mut in_flight)?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(&mut c, &mut batch, &mut in_flight)?;
        }
        while in_flight > 0 {
            receive(&mut c, &mut spare)?;
            in_flight -= 1;
        }
        Ok::<(), VerifierError>(())
    })?;
    c.finish()
}

/// The error for a classifying thread that stopped early (it only stops by panicking).
fn worker_gone() -> VerifierError {
    VerifierError::Worker
}

/// Calls `f` on every line of `r` (newline and trailing `\r` stripped, invalid UTF-8
/// replaced, lines longer than [`MAX_LINE_BYTES`] truncated with a marker).
pub fn for_each_line(
    mut r: impl BufRead,
    mut f: impl FnMut(&str) -> Result<(), VerifierError>,
) -> Result<(), VerifierError> {
    let mut acc: Vec<u8> = Vec::new();
    let mut dropped: u64 = 0;
    let mut lines: u64 = 0;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(VerifierError::Read {
                    line: lines,
                    source,
                })
            }
        };
        if buf.is_empty() {
            break;
        }
        // Validate the buffer's UTF-8 once; lines inside its valid part need no check of their own.
        let text = match std::str::from_utf8(buf) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
        };
        let mut pos = 0;
        while let Some(nl) = find_newline(&buf[pos..]) {
            let seg = &buf[pos..pos + nl];
            if acc.is_empty() && dropped == 0 && nl <= MAX_LINE_BYTES {
                match text.get(pos..pos + nl) {
                    Some(line) => f(line.strip_suffix('\r').unwrap_or(line))?,
                    None => emit(seg, 0, &mut f)?,
                }
            } else {
                append_bounded(&mut acc, &mut dropped, seg);
                emit(&acc, dropped, &mut f)?;
                acc.clear();
                dropped = 0;
            }
            lines += 1;
            pos += nl + 1;
        }
        append_bounded(&mut acc, &mut dropped, &buf[pos..]);
        let n = buf.len();
        r.consume(n);
    }
    if !acc.is_empty() || dropped > 0 {
        emit(&acc, dropped, &mut f)?;
    }
    Ok(())
}

fn append_bounded(acc: &mut Vec<u8>, dropped: &mut u64, seg: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(acc.len());
    let take = room.min(seg.len());
    acc.extend_from_slice(&seg[..take]);
    *dropped = dropped.saturating_add((seg.len() - take) as u64);
}

fn emit(
    mut seg: &[u8],
    dropped: u64,
    f: &mut impl FnMut(&str) -> Result<(), VerifierError>,
) -> Result<(), VerifierError> {
    if let [rest @ .., b'\r'] = seg {
        seg = rest;
    }
    let text = match std::str::from_utf8(seg) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(seg),
    };
    if dropped > 0 {
        f(&format!(
            "{text} [ktstr: line truncated, {dropped} bytes dropped]"
        ))
    } else {
        f(&text)
    }
}

/// Position of the first `\n`.
fn find_newline(b: &[u8]) -> Option<usize> {
    crate::bytes::find_byte(b, b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::expanded_line_count;

    fn loop_log(iters: u32, fail: bool) -> String {
        let mut s = String::from(
            "func#0 @0\n0: R1=ctx() R10=fp0\n0: (b7) r7 = 0                       ; R7_w=0\n",
        );
        for i in 0..iters {
            s.push_str("; for (i = 0; i < 40; i++) @ main.bpf.c:33\n");
            s.push_str(&format!(
                "1: (bf) r1 = r7                       ; R1_w={i} R7_w={i}\n"
            ));
            s.push_str(&format!(
                "2: (67) r1 <<= 3                      ; R1_w={}\n",
                i * 8
            ));
            if fail && i + 1 == iters {
                s.push_str("3: (61) r2 = *(u32 *)(r1 +0)\nR1 invalid mem access 'scalar'\n");
                s.push_str("processed 200 insns (limit 1000000) max_states_per_insn 1 total_states 12 peak_states 12 mark_read 3\n");
                return s;
            }
            s.push_str(&format!(
                "3: (07) r7 += 1                       ; R7_w={}\n",
                i + 1
            ));
            s.push_str(&format!(
                "4: (a5) if r7 < 0x28 goto pc-4       ; R7_w={}\n",
                i + 1
            ));
        }
        s.push_str("5: (95) exit\nprocessed 203 insns (limit 1000000) max_states_per_insn 1 total_states 12 peak_states 12 mark_read 3\n");
        s
    }

    #[test]
    fn passing_loop_collapses_and_counts_back() {
        let log = loop_log(40, false);
        let c = collapse(log.as_bytes()).expect("collapse");
        assert!(c.summary.lines_out * 3 < c.summary.lines_in, "{}", c.text);
        assert_eq!(expanded_line_count(&c.text).ok(), Some(c.summary.lines_in));
        assert!(c.text.contains("R7 (insn 1): 0 -> "), "{}", c.text);
        assert_eq!(c.summary.folds, 1);
        assert_eq!(
            c.summary.last_program().and_then(|p| p.processed_insns),
            Some(203)
        );
    }

    #[test]
    fn failing_loop_keeps_error_and_context() {
        let log = loop_log(40, true);
        let c = collapse(log.as_bytes()).expect("collapse");
        let tail: Vec<&str> = log.lines().rev().take(32).collect();
        let out_tail: Vec<&str> = c.lines().rev().take(32).collect();
        assert_eq!(tail, out_tail);
        assert_eq!(expanded_line_count(&c.text).ok(), Some(c.summary.lines_in));
        assert!(c.summary.lines_out < c.summary.lines_in / 2);
    }

    #[test]
    fn crlf_missing_final_newline_and_invalid_utf8() {
        let input: &[u8] = b"a\r\nb\xffc\nlast";
        let mut got = Vec::new();
        for_each_line(input, |l| {
            got.push(l.to_string());
            Ok(())
        })
        .expect("read");
        assert_eq!(got, vec!["a", "b\u{fffd}c", "last"]);
    }

    #[test]
    fn long_lines_are_truncated() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nshort\n");
        let mut got = Vec::new();
        let reader = io::BufReader::with_capacity(4096, input.as_slice());
        for_each_line(reader, |l| {
            got.push(l.len());
            Ok(())
        })
        .expect("read");
        assert_eq!(got.len(), 2);
        assert!(got[0] > MAX_LINE_BYTES && got[0] < MAX_LINE_BYTES + 100);
        assert_eq!(got[1], 5);
    }

    #[test]
    fn long_lines_are_truncated_whatever_the_buffer_size() {
        let mut input = vec![b'y'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nshort\n");
        let mut got = Vec::new();
        for_each_line(input.as_slice(), |l| {
            got.push(l.to_string());
            Ok(())
        })
        .expect("read");
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(" [ktstr: line truncated, 10 bytes dropped]"));
        assert_eq!(got[1], "short");
    }

    #[test]
    fn newline_search_matches_naive() {
        for len in 0..40 {
            for at in 0..=len {
                let mut v = vec![b'a'; len];
                if at < len {
                    v[at] = b'\n';
                }
                assert_eq!(find_newline(&v), v.iter().position(|&c| c == b'\n'));
            }
        }
        assert_eq!(find_newline(b"\x8a\x0b\n"), Some(2));
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = CollapseConfig {
            passes: 0,
            ..CollapseConfig::default()
        };
        let r = collapse_with(&b""[..], io::sink(), &cfg);
        assert!(matches!(
            r,
            Err(VerifierError::InvalidConfig {
                field: "passes",
                ..
            })
        ));
    }

    struct FailWriter;
    impl Write for FailWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    #[test]
    fn write_errors_are_reported() {
        let r = collapse_to_writer(&b"a\nb\n"[..], FailWriter);
        assert!(matches!(r, Err(VerifierError::Write { .. })));
    }

    struct FailReader;
    impl io::Read for FailReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("gone"))
        }
    }

    #[test]
    fn read_errors_are_reported() {
        let r = collapse_to_writer(io::BufReader::new(FailReader), io::sink());
        assert!(matches!(r, Err(VerifierError::Read { line: 0, .. })));
    }

    /// The batched pipeline and the line-at-a-time [`Collapser`] agree, errors near batch
    /// boundaries included.
    #[test]
    fn batched_pipeline_matches_line_at_a_time() {
        let mut log = String::new();
        let mut n = 0usize;
        let mut errors = [1000usize, 2050, 4100, 6200].into_iter().peekable();
        while n < 7000 {
            let line = if errors.next_if(|&e| e <= n).is_some() {
                "R1 invalid mem access 'scalar'".to_string()
            } else if n > 5000 && n % 7 == 6 {
                "mark_precise: frame0: regs=r1 stack= before 2: (07) r1 += 1".to_string()
            } else if n > 5000 {
                format!("{}: (07) r1 += 1                       ; R1_w={n}", n % 7)
            } else {
                // Period 1: a line more or less in the guard changes the fold counts.
                format!("1: (07) r1 += 1                       ; R1_w={n}")
            };
            log.push_str(&line);
            log.push('\n');
            n += 1;
        }
        for keep_tail in [0, 1, 5, 32, 3000] {
            let cfg = CollapseConfig {
                keep_tail,
                ..CollapseConfig::default()
            };
            let mut batched = Vec::new();
            let a = collapse_with(log.as_bytes(), &mut batched, &cfg).expect("batched");
            let mut single = Vec::new();
            let mut c = Collapser::new(&mut single, cfg).expect("collapser");
            for l in log.lines() {
                c.push_line(l).expect("push");
            }
            let b = c.finish().expect("finish");
            assert_eq!(a, b, "keep_tail {keep_tail}");
            assert!(batched == single, "keep_tail {keep_tail}: outputs differ");
        }
    }

    #[test]
    fn escaped_marker_lines_count_once() {
        let log = "--- ktstr fold: 99 lines omitted: iterations 2-2 of 3 (period 1 lines); 0 notes ---\nx\n";
        let c = collapse(log.as_bytes()).expect("collapse");
        assert!(c.text.starts_with("\\--- ktstr fold: 99"));
        assert_eq!(expanded_line_count(&c.text).ok(), Some(2));
    }
}
