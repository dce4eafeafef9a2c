//! Parse a failure's text into a [`Failure`]: the sched_ext exit (the scheduler's
//! printed exit info and debug dump, the kernel's `sched_ext:` console lines) or a
//! kernel oops or panic with its call trace.
//!
//! The input may mix sources and prefixes: kernel console lines with or without
//! `[  4.63] ` timestamps, and ktstr's `  kernel| ` / `  scx_ktstr| ` prefixes. Lines that
//! match nothing are skipped; text without any failure is an error.

use serde::{Deserialize, Serialize};

use crate::error::ReproError;
use crate::ops::op_of_prog;
use crate::symbol::{classify, Frame, SymbolKind};
use crate::MAX_STACK_DEPTH;

/// Most tasks kept from a debug dump's CPU states.
pub const MAX_DUMP_TASKS: usize = 1024;

/// What kind of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The kernel ejected a sched_ext scheduler with an error (`scx_bpf_error`, a
    /// runnable task stall, ...).
    ScxExit,
    /// A kernel oops (`Oops:`, `BUG:`, a general protection fault).
    Oops,
    /// A kernel panic without an oops before it (e.g. `sysrq triggered crash`).
    Panic,
}

/// A task as the kernel prints it: `comm[pid]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task's comm.
    pub comm: String,
    /// Its pid.
    pub pid: u32,
}

/// One task of the debug dump's `CPU states` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpTask {
    /// The CPU whose runqueue lists it.
    pub cpu: Option<u32>,
    /// Its comm.
    pub comm: String,
    /// Its pid.
    pub pid: u32,
    /// True when it is the CPU's current task (`*` mark).
    pub current: bool,
    /// The DSQ id it sits on (`dsq_id=`; `None` for `(n/a)`).
    pub dsq_id: Option<u64>,
    /// Its remaining slice in ns (`slice=`).
    pub slice: Option<u64>,
    /// Its weight (`weight=`).
    pub weight: Option<u64>,
    /// Milliseconds since it became runnable (negative) as the dump prints it.
    pub runnable_ms: Option<i64>,
    /// Its stack, innermost first, at most [`MAX_STACK_DEPTH`] frames.
    pub stack: Vec<Frame>,
}

/// A parsed failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// The exit reason (`scx_bpf_error`, `runnable task stall`) or the oops/panic title.
    pub reason: String,
    /// The exit message (`src/bpf/main.bpf.c:96: ...`), if printed.
    pub message: Option<String>,
    /// The sched_ext exit kind (1025 `scx_bpf_error`, 1026 stall, ...).
    pub exit_kind: Option<u64>,
    /// The scheduler's ops name.
    pub scheduler: Option<String>,
    /// The CPU the exit or oops happened on.
    pub cpu: Option<u32>,
    /// The task that triggered the exit or oopsed.
    pub culprit: Option<TaskRef>,
    /// Tasks named by a stall message (`comm[pid] failed to run for ...`).
    pub stalled: Vec<TaskRef>,
    /// The exit's backtrace or the oops call trace, innermost first.
    pub backtrace: Vec<Frame>,
    /// Frames past [`MAX_STACK_DEPTH`] that were dropped from `backtrace`.
    pub frames_dropped: usize,
    /// Tasks of the debug dump.
    pub tasks: Vec<DumpTask>,
}

/// A function of the failure, with what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFunction {
    /// The symbol as printed.
    pub symbol: String,
    /// What the symbol names.
    pub kind: SymbolKind,
    /// The sched_ext callback, for a BPF program or struct_ops trampoline.
    pub op: Option<String>,
    /// Index of its first frame in the backtrace (0: innermost).
    pub depth: usize,
}

impl Failure {
    /// Parses failure text; [`ReproError::NoFailure`] when it holds none.
    pub fn parse(text: &str) -> Result<Failure, ReproError> {
        let lines: Vec<&str> = text.lines().map(strip_prefixes).collect();
        let mut p = Parser::default();
        p.run(&lines);
        p.finish(lines.len())
    }

    /// True for a runnable-task stall.
    pub fn is_stall(&self) -> bool {
        self.exit_kind == Some(1026) || self.reason == "runnable task stall"
    }

    /// The distinct functions of the backtrace, innermost first, `?` frames left out.
    ///
    /// A BPF program's callback comes from the struct_ops trampoline frame that called it
    /// when there is one, else from its name ([`op_of_prog`]).
    pub fn functions(&self) -> Vec<StackFunction> {
        let mut out: Vec<StackFunction> = Vec::new();
        let frames: Vec<&Frame> = self.backtrace.iter().filter(|f| !f.unreliable).collect();
        for (i, f) in frames.iter().enumerate() {
            if out.iter().any(|s| s.symbol == f.symbol) {
                continue;
            }
            let kind = classify(&f.symbol);
            let op = match &kind {
                SymbolKind::StructOpsStub { op } => Some(op.clone()),
                SymbolKind::BpfProg { name, .. } => {
                    let via_stub = frames.get(i + 1).and_then(|n| match classify(&n.symbol) {
                        SymbolKind::StructOpsStub { op } => Some(op),
                        _ => None,
                    });
                    via_stub.or_else(|| {
                        op_of_prog(name, self.scheduler.as_deref()).map(|o| o.name.to_string())
                    })
                }
                SymbolKind::Kernel { .. } => None,
            };
            out.push(StackFunction {
                symbol: f.symbol.clone(),
                kind,
                op,
                depth: i,
            });
        }
        out
    }
}

/// Removes a console timestamp (`[    4.631925] `) and a ktstr stream prefix
/// (`  kernel| `, `  scx_ktstr| `, `  | `).
fn strip_prefixes(line: &str) -> &str {
    let mut s = line.trim_end_matches('\r');
    for _ in 0..2 {
        let t = s.trim_start();
        if let Some(bar) = t.find("| ") {
            let name = &t[..bar];
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
            {
                s = &t[bar + 2..];
                continue;
            }
        }
        if let Some(rest) = t.strip_prefix('[') {
            if let Some(close) = rest.find(']') {
                let stamp = &rest[..close];
                if !stamp.is_empty()
                    && stamp
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == ' ')
                {
                    let after = &rest[close + 1..];
                    s = after.strip_prefix(' ').unwrap_or(after);
                    continue;
                }
            }
        }
        break;
    }
    s
}

/// Parses `comm[pid]` at the start of `s`; comm may hold `[`, so the last `[digits]`
/// before a space or the end is the pid. Returns the task and the rest.
fn task_ref(s: &str) -> Option<(TaskRef, &str)> {
    let end = s
        .find("] ")
        .map_or_else(|| s.strip_suffix(']').map(|t| t.len()), Some)?;
    let open = s[..end].rfind('[')?;
    let pid = s[open + 1..end].parse().ok()?;
    let comm = &s[..open];
    if comm.is_empty() {
        return None;
    }
    let rest = s.get(end + 1..).unwrap_or("");
    Some((
        TaskRef {
            comm: comm.to_string(),
            pid,
        },
        rest,
    ))
}

/// Splits `reason (message)` at its outermost parentheses.
fn reason_message(s: &str) -> (String, Option<String>) {
    let s = s.trim();
    let split = s.find(" (").and_then(|open| {
        let inner = s.strip_suffix(')')?.get(open + 2..)?;
        Some((s[..open].to_string(), Some(inner.to_string())))
    });
    split.unwrap_or_else(|| (s.to_string(), None))
}

fn num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[derive(Default)]
struct Parser {
    kind: Option<FailureKind>,
    reason: Option<String>,
    message: Option<String>,
    exit_kind: Option<u64>,
    scheduler: Option<String>,
    cpu: Option<u32>,
    culprit: Option<TaskRef>,
    stalled: Vec<TaskRef>,
    backtrace: Vec<Frame>,
    frames_dropped: usize,
    tasks: Vec<DumpTask>,
}

impl Parser {
    fn run(&mut self, lines: &[&str]) {
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let t = line.trim();
            i += 1;
            if let Some(rest) = t.strip_prefix("sched_ext: BPF scheduler \"") {
                self.dmesg_scheduler(rest, lines, &mut i);
            } else if t.contains(" triggered exit kind ") {
                self.exit_header(t, lines, &mut i);
            } else if t == "DEBUG DUMP" {
                self.dump_title(lines, &mut i);
            } else if t == "Backtrace:" {
                let frames = take_frames(lines, &mut i, false);
                self.set_backtrace(frames);
            } else if t == "CPU states" {
                self.cpu_states(lines, &mut i);
            } else if let Some(rest) = t.strip_prefix("EXIT: ") {
                self.exit_line(rest);
            } else if let Some(rest) = t.strip_prefix("exit kind ") {
                if let Some(k) = rest.split_whitespace().next().and_then(num) {
                    self.exit_kind.get_or_insert(k);
                }
            } else if let Some(title) = oops_title(t) {
                self.oops(title);
            } else if let Some(rest) = t.strip_prefix("Kernel panic - not syncing: ") {
                if self.kind.is_none() {
                    self.kind = Some(FailureKind::Panic);
                    self.reason = Some(rest.to_string());
                }
            } else if let Some(rest) = t.strip_prefix("RIP: 0010:") {
                // Kernel-mode RIP of an oops: the faulting function, innermost.
                if let (Some(f), true) = (Frame::parse(rest), self.backtrace.is_empty()) {
                    self.backtrace.push(f);
                }
            } else if t.starts_with("CPU: ") && t.contains(" PID: ") {
                self.oops_cpu_line(t);
            } else if t == "Call Trace:" {
                let frames = take_frames(lines, &mut i, true);
                if self.kind != Some(FailureKind::ScxExit) {
                    // An oops trace follows its RIP frame.
                    for f in frames {
                        self.push_frame(f);
                    }
                }
            }
        }
    }

    fn set_backtrace(&mut self, frames: Vec<Frame>) {
        if self.backtrace.is_empty() {
            for f in frames {
                self.push_frame(f);
            }
        }
    }

    fn push_frame(&mut self, f: Frame) {
        if self.backtrace.len() < MAX_STACK_DEPTH {
            self.backtrace.push(f);
        } else {
            self.frames_dropped += 1;
        }
    }

    /// `sched_ext: BPF scheduler "NAME" disabled (REASON)`, then `sched_ext: NAME: MSG`
    /// and the backtrace's frames.
    fn dmesg_scheduler(&mut self, rest: &str, lines: &[&str], i: &mut usize) {
        let Some((name, state)) = rest.split_once('"') else {
            return;
        };
        self.scheduler.get_or_insert_with(|| name.to_string());
        let Some(reason) = state
            .trim()
            .strip_prefix("disabled (")
            .and_then(|r| r.strip_suffix(')'))
        else {
            return;
        };
        self.kind = Some(FailureKind::ScxExit);
        self.reason.get_or_insert_with(|| reason.to_string());
        let prefix = format!("sched_ext: {name}: ");
        if let Some(msg) = lines.get(*i).and_then(|l| l.trim().strip_prefix(&prefix)) {
            *i += 1;
            self.note_message(msg);
            let frames = take_frames(lines, i, false);
            self.set_backtrace(frames);
        }
    }

    fn note_message(&mut self, msg: &str) {
        if let Some((task, rest)) = task_ref(msg) {
            if rest.trim_start().starts_with("failed to run for") && !self.stalled.contains(&task) {
                self.stalled.push(task);
            }
        }
        self.message.get_or_insert_with(|| msg.to_string());
    }

    /// `comm[pid] triggered exit kind K on CPU N:` then `  reason (message)`.
    fn exit_header(&mut self, t: &str, lines: &[&str], i: &mut usize) {
        self.kind = Some(FailureKind::ScxExit);
        if let Some((task, rest)) = task_ref(t) {
            self.culprit.get_or_insert(task);
            let mut words = rest.split_whitespace();
            // triggered exit kind K on CPU N:
            let k = words.nth(3).and_then(num);
            let cpu = words
                .nth(2)
                .and_then(|c| c.trim_end_matches(':').parse().ok());
            if let Some(k) = k {
                self.exit_kind.get_or_insert(k);
            }
            if let Some(c) = cpu {
                self.cpu.get_or_insert(c);
            }
        }
        if let Some(next) = lines.get(*i).map(|l| l.trim()).filter(|l| !l.is_empty()) {
            *i += 1;
            let (reason, msg) = reason_message(next);
            self.reason.get_or_insert(reason);
            if let Some(m) = msg {
                self.note_message(&m);
            }
        }
    }

    /// After `DEBUG DUMP` and its rule: `NAME: <cgroup>` names the scheduler.
    fn dump_title(&mut self, lines: &[&str], i: &mut usize) {
        while let Some(l) = lines.get(*i).map(|l| l.trim()) {
            if l.is_empty() || l.starts_with("====") {
                *i += 1;
                continue;
            }
            if let Some((name, _)) = l.split_once(": ") {
                if !name.contains(' ') && !l.contains(" triggered exit kind ") {
                    self.scheduler.get_or_insert_with(|| name.to_string());
                    *i += 1;
                }
            }
            return;
        }
    }

    /// `EXIT: reason (message) on CPU N`.
    fn exit_line(&mut self, rest: &str) {
        self.kind.get_or_insert(FailureKind::ScxExit);
        let (body, cpu) = match rest.rsplit_once(" on CPU ") {
            Some((b, c)) => (b, c.trim().parse().ok()),
            None => (rest, None),
        };
        if let Some(c) = cpu {
            self.cpu.get_or_insert(c);
        }
        let (reason, msg) = reason_message(body);
        self.reason.get_or_insert(reason);
        if let Some(m) = msg {
            self.note_message(&m);
        }
    }

    fn oops(&mut self, title: &str) {
        if self.kind != Some(FailureKind::ScxExit) && self.kind != Some(FailureKind::Oops) {
            self.kind = Some(FailureKind::Oops);
            self.reason = Some(title.to_string());
        }
    }

    /// `CPU: 1 UID: 0 PID: 100 Comm: sh Not tainted ...` of an oops or panic.
    fn oops_cpu_line(&mut self, t: &str) {
        if self.kind == Some(FailureKind::ScxExit) {
            return;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|p| words.get(p + 1))
        };
        if let Some(c) = after("CPU:").and_then(|c| c.parse().ok()) {
            self.cpu.get_or_insert(c);
        }
        if let (Some(pid), Some(comm)) =
            (after("PID:").and_then(|p| p.parse().ok()), after("Comm:"))
        {
            self.culprit.get_or_insert(TaskRef {
                comm: comm.to_string(),
                pid,
            });
        }
    }

    /// The `CPU states` section: `CPU N : ...` headers, task headers, their fields and
    /// stacks, up to `Event counters` or the closing rule.
    fn cpu_states(&mut self, lines: &[&str], i: &mut usize) {
        let mut cpu = None;
        let mut task: Option<DumpTask> = None;
        while let Some(l) = lines.get(*i).map(|l| l.trim()) {
            if l == "Event counters" || l.starts_with("====") || l.starts_with("EXIT: ") {
                break;
            }
            *i += 1;
            if let Some(rest) = l.strip_prefix("CPU ") {
                if let Some((n, tail)) = rest.split_once(':') {
                    if tail.trim_start().starts_with("nr_run=") {
                        self.flush_task(&mut task);
                        cpu = n.trim().parse().ok();
                        continue;
                    }
                }
            }
            if let Some(t) = dump_task_header(l, cpu) {
                self.flush_task(&mut task);
                task = Some(t);
                continue;
            }
            let Some(t) = task.as_mut() else { continue };
            if let Some(f) = Frame::parse(l) {
                if t.stack.len() < MAX_STACK_DEPTH {
                    t.stack.push(f);
                }
                continue;
            }
            for kv in l.split_whitespace() {
                match kv.split_once('=') {
                    Some(("dsq_id", v)) => t.dsq_id = num(v),
                    Some(("slice", v)) => t.slice = num(v),
                    Some(("weight", v)) => t.weight = num(v),
                    _ => {}
                }
            }
        }
        self.flush_task(&mut task);
    }

    fn flush_task(&mut self, task: &mut Option<DumpTask>) {
        if let Some(t) = task.take() {
            if self.tasks.len() < MAX_DUMP_TASKS {
                self.tasks.push(t);
            }
        }
    }

    fn finish(self, lines: usize) -> Result<Failure, ReproError> {
        let kind = self.kind.ok_or(ReproError::NoFailure { lines })?;
        Ok(Failure {
            kind,
            reason: self.reason.unwrap_or_default(),
            message: self.message,
            exit_kind: self.exit_kind,
            scheduler: self.scheduler,
            cpu: self.cpu,
            culprit: self.culprit,
            stalled: self.stalled,
            backtrace: self.backtrace,
            frames_dropped: self.frames_dropped,
            tasks: self.tasks,
        })
    }
}

/// ` *R comm[pid] *root -32ms`: an optional `*` (current), a state letter, the task,
/// then the scheduler and the runnable time.
fn dump_task_header(l: &str, cpu: Option<u32>) -> Option<DumpTask> {
    let (current, rest) = match l.strip_prefix('*') {
        Some(r) => (true, r),
        None => (false, l),
    };
    let mut chars = rest.chars();
    let state = chars.next()?;
    if !state.is_ascii_uppercase() || chars.next() != Some(' ') {
        return None;
    }
    let (task, tail) = task_ref(&rest[2..])?;
    let runnable_ms = tail
        .split_whitespace()
        .find_map(|w| w.strip_suffix("ms").and_then(|n| n.parse().ok()));
    Some(DumpTask {
        cpu,
        comm: task.comm,
        pid: task.pid,
        current,
        runnable_ms,
        ..DumpTask::default()
    })
}

/// The title of an oops line, if `t` is one.
fn oops_title(t: &str) -> Option<&str> {
    [
        "BUG: ",
        "Oops: ",
        "general protection fault",
        "kernel BUG at ",
    ]
    .iter()
    .any(|p| t.starts_with(p))
    .then_some(t)
}

/// Frame lines from `lines[*i]` on; with `tags`, `<TASK>`/`<IRQ>`/`<NMI>` markers are
/// skipped. Stops at the first other line.
fn take_frames(lines: &[&str], i: &mut usize, tags: bool) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(l) = lines.get(*i).map(|l| l.trim()) {
        if tags && l.starts_with('<') && l.ends_with('>') && l.len() < 16 {
            *i += 1;
            continue;
        }
        match Frame::parse(l) {
            Some(f) => out.push(f),
            None => break,
        }
        *i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(
            strip_prefixes("[    4.632602]    scx_do_enqueue_task+0x310/0x7d0"),
            "   scx_do_enqueue_task+0x310/0x7d0"
        );
        assert_eq!(
            strip_prefixes("  kernel|    bpf__sched_ext_ops_enqueue+0x50/0xad"),
            "   bpf__sched_ext_ops_enqueue+0x50/0xad"
        );
        assert_eq!(
            strip_prefixes("  | [    3.091335]  __handle_sysrq.cold+0x91/0x141"),
            " __handle_sysrq.cold+0x91/0x141"
        );
        assert_eq!(strip_prefixes("  scx_ktstr| EXIT: x"), "EXIT: x");
        assert_eq!(strip_prefixes("cpus=3 no_mig=0"), "cpus=3 no_mig=0");
    }

    #[test]
    fn task_refs_keep_brackets_in_comms() {
        let (t, rest) = task_ref("kworker/u8:1[37] triggered exit").unwrap();
        assert_eq!(
            (t.comm.as_str(), t.pid, rest),
            ("kworker/u8:1", 37, " triggered exit")
        );
        let (t, _) = task_ref("a[b][12] x").unwrap();
        assert_eq!((t.comm.as_str(), t.pid), ("a[b]", 12));
        assert!(task_ref("[12] x").is_none());
        assert!(task_ref("no pid here").is_none());
    }

    #[test]
    fn text_without_failure_is_an_error() {
        assert!(matches!(
            Failure::parse("hello\nworld\n"),
            Err(ReproError::NoFailure { lines: 2 })
        ));
        assert!(Failure::parse("").is_err());
    }

    #[test]
    fn overlong_traces_are_cut_at_the_bound() {
        let mut text = String::from("Oops: 0000 [#1] SMP\nCall Trace:\n");
        for n in 0..100 {
            text += &format!(" f{n}+0x1/0x10\n");
        }
        let f = Failure::parse(&text).unwrap();
        assert_eq!(f.backtrace.len(), MAX_STACK_DEPTH);
        assert_eq!(f.frames_dropped, 100 - MAX_STACK_DEPTH);
    }
}
