//! Plan the probes of a re-run from a [`Failure`] and the kernel's BTF.
//!
//! What gets probed, in this order until [`MAX_FUNCS`]:
//! 1. the functions of the failure's backtrace, innermost first: kernel functions get a
//!    kprobe (entry) and an fexit (exit, with the return value); a BPF program that
//!    implements a sched_ext callback gets fentry and fexit on the program, attached
//!    after the scheduler loads;
//! 2. for each such callback, the kernel functions that call it ([`crate::ops`]);
//! 3. for a runnable-task stall, the callbacks that move tasks through the scheduler
//!    ([`crate::ops::SCHEDULING_OPS`]) and their callers.
//!
//! A function the kernel cannot probe is left out with the reason ([`LeftOut`]). Each
//! probe records up to [`MAX_ARGS`] arguments, typed from BTF, and up to [`MAX_FIELDS`]
//! fields of the structs they point to ([`FieldSpec`]), offsets resolved from BTF here so
//! that decoding needs only the plan. The exit trigger is chosen by kernel version and
//! BTF ([`ExitTrigger`]).

use std::collections::HashSet;

use ktstr_btf_monitor::btf::TypeBody;
use ktstr_btf_monitor::{resolve, Btf, Kind, SymbolTable, TypeId};
use serde::{Deserialize, Serialize};

use crate::error::ReproError;
use crate::failure::{Failure, StackFunction};
use crate::ops::{op, OpInfo, SCHEDULING_OPS};
use crate::symbol::SymbolKind;
use crate::{MAX_ARGS, MAX_FIELDS, MAX_FUNCS};

/// Bytes one field value may take on the wire (a comm's length).
pub const MAX_FIELD_BYTES: usize = 16;
/// Pointers one field may follow from its argument.
pub const MAX_DEREFS: usize = 2;

/// A kernel release's `MAJOR.MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KernelVersion {
    /// The first release with sched_ext.
    pub const SCHED_EXT: KernelVersion = KernelVersion {
        major: 6,
        minor: 12,
    };

    /// Parses the start of a release string such as `7.3.4+deb13-cloud-amd64`.
    pub fn parse(release: &str) -> Result<KernelVersion, ReproError> {
        let bad = || ReproError::BadRelease {
            release: release.to_string(),
        };
        let (major, rest) = release.split_once('.').ok_or_else(bad)?;
        let major = major.parse().map_err(|_| bad())?;
        let minor = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(bad)?;
        Ok(KernelVersion { major, minor })
    }
}

/// How a probe attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attach {
    /// `kprobe/<function>`: entry, arguments from registers.
    Kprobe,
    /// `fentry/<function>`: entry through the BPF trampoline, typed arguments.
    Fentry,
    /// `fexit/<function>`: exit, arguments and return value.
    Fexit,
    /// `tp_btf/<tracepoint>`: a BTF-typed raw tracepoint.
    TpBtf,
}

/// When a probe can attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the scheduler starts (kernel functions, the exit trigger).
    BeforeScheduler,
    /// Once the scheduler's BPF programs are loaded (fentry/fexit need their fds).
    AfterScheduler,
}

/// What a probe is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A kernel function.
    Kernel {
        /// Its name.
        function: String,
    },
    /// The scheduler's BPF program for a callback.
    BpfCallback {
        /// The `struct sched_ext_ops` member.
        op: String,
        /// The program's name when the failure named it; else the agent finds the program
        /// attached to `op` in the scheduler's struct_ops map.
        prog: Option<String>,
    },
}

/// How to show a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ValueType {
    /// An unsigned integer of `size` bytes.
    Unsigned {
        /// Bytes.
        size: u8,
    },
    /// A signed integer of `size` bytes.
    Signed {
        /// Bytes.
        size: u8,
    },
    /// A `bool`.
    Bool,
    /// A pointer, shown in hex.
    Pointer,
    /// A NUL-terminated string of at most `len` bytes.
    Str {
        /// Bytes read.
        len: u8,
    },
    /// An enum: the value's enumerator name.
    Enum {
        /// The enum's name.
        name: String,
        /// `(enumerator, value)` pairs.
        values: Vec<(String, i64)>,
    },
    /// A set of flag bits named by an enum's single-bit enumerators.
    Flags {
        /// The enum the names come from.
        name: String,
        /// `(enumerator, bit value)` pairs.
        bits: Vec<(String, u64)>,
    },
}

/// One recorded argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgSpec {
    /// Its position (0-based).
    pub index: u8,
    /// Its name in BTF.
    pub name: String,
    /// Its C type, e.g. `struct task_struct *`.
    pub c_type: String,
    /// How to show it.
    pub value: ValueType,
}

/// One field read through an argument: start at argument `arg`, for each offset in
/// `derefs` read the pointer at (current + offset), then read `size` bytes at
/// (current + `offset`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The argument the read starts from.
    pub arg: u8,
    /// What is read, e.g. `p->scx.dsq->id`.
    pub label: String,
    /// Offsets of the pointers followed, at most [`MAX_DEREFS`].
    pub derefs: Vec<u32>,
    /// Offset of the value in the last struct.
    pub offset: u32,
    /// Bytes read, at most [`MAX_FIELD_BYTES`].
    pub size: u8,
    /// How to show it.
    pub value: ValueType,
}

/// One probed function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// What it attaches to.
    pub target: Target,
    /// How (kprobe and fexit, or fentry and fexit).
    pub attach: Vec<Attach>,
    /// When.
    pub phase: Phase,
    /// Why it is in the plan.
    pub why: String,
    /// Recorded arguments.
    pub args: Vec<ArgSpec>,
    /// Arguments past [`MAX_ARGS`] that are not recorded.
    pub args_dropped: usize,
    /// Fields read through the arguments.
    pub fields: Vec<FieldSpec>,
    /// Fields of the catalogue left out past [`MAX_FIELDS`].
    pub fields_dropped: usize,
    /// The return value's type; `None` for `void`.
    pub ret: Option<ValueType>,
}

impl Probe {
    /// The probed function's or callback's name.
    pub fn name(&self) -> &str {
        match &self.target {
            Target::Kernel { function } => function,
            Target::BpfCallback { op, prog } => prog.as_deref().unwrap_or(op),
        }
    }
}

/// Why a function is not probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOutReason {
    /// The kernel has no symbol for it: the compiler inlined it into its callers.
    Inlined,
    /// It has a symbol but no BTF `FUNC` (assembly, or its types were not emitted).
    MissingFromBtf,
    /// Neither BTF nor (without a symbol table) anything else knows it.
    NotInBtf,
    /// Entry code marked `noinstr` or not in the traceable list: fentry/kprobe refuse it.
    Notrace,
    /// A compiler clone (`.isra`, `.constprop`, `.part`) whose arguments BTF does not describe.
    CompilerClone,
    /// A BPF program that maps to no sched_ext callback.
    UnknownBpfProgram,
    /// A struct_ops trampoline: its callback's program is probed instead.
    Trampoline,
    /// The plan already holds [`MAX_FUNCS`] functions.
    TooMany,
}

/// A function of the failure that the plan does not probe, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The function or symbol.
    pub function: String,
    /// Why.
    pub reason: LeftOutReason,
    /// Details for the reader.
    pub detail: String,
}

/// The probe that marks the scheduler's exit and ends the recording window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitTrigger {
    /// How it attaches (`tp_btf` or `fentry`).
    pub attach: Attach,
    /// The tracepoint or function.
    pub target: String,
    /// Why this one: the kernel version and what its BTF has.
    pub why: String,
    /// Its recorded arguments (for `tp_btf`, the tracepoint's, without the context).
    pub args: Vec<ArgSpec>,
    /// Fields read through them.
    pub fields: Vec<FieldSpec>,
}

/// The plan of a re-run: what to probe, what was left out, and the exit trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePlan {
    /// The kernel release planned for.
    pub release: String,
    /// Its version.
    pub version: KernelVersion,
    /// The exit trigger.
    pub trigger: ExitTrigger,
    /// The probes; an event's function index is a position in this list.
    pub probes: Vec<Probe>,
    /// Functions of the failure that are not probed.
    pub left_out: Vec<LeftOut>,
    /// Comms the failure names (the stalled tasks, the culprit), for the timeline.
    pub focus_comms: Vec<String>,
}

/// What the planner knows about the kernel besides the failure.
#[derive(Clone, Copy)]
pub struct KernelInfo<'a> {
    /// The kernel's release (`uname -r`).
    pub release: &'a str,
    /// Its BTF.
    pub btf: &'a Btf,
    /// Its symbols (vmlinux ELF or `/proc/kallsyms`), to tell inlined functions from
    /// ones merely missing from BTF.
    pub symbols: Option<&'a SymbolTable>,
    /// `available_filter_functions`, when known: functions outside it are notrace.
    pub traceable: Option<&'a HashSet<String>>,
    /// The kprobe blacklist (`/sys/kernel/debug/kprobes/blacklist`), when known: a
    /// traceable function on it gets fentry instead of a kprobe.
    pub no_kprobe: Option<&'a HashSet<String>>,
}

impl<'a> KernelInfo<'a> {
    /// A kernel known only by its release and BTF (no symbols, trace or kprobe lists).
    pub fn new(release: &'a str, btf: &'a Btf) -> Self {
        KernelInfo {
            release,
            btf,
            symbols: None,
            traceable: None,
            no_kprobe: None,
        }
    }
}

/// Function names of `available_filter_functions` text (`name` or `name [module]`).
pub fn parse_filter_functions(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Function names of the kprobe blacklist (`0xstart-0xend<TAB>name`).
pub fn parse_kprobe_blacklist(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// Why a function of 7.3's x86-64 entry code cannot be probed: assembly, or C marked
/// `noinstr` (`DEFINE_IDTENTRY*`, the syscall and irq entry helpers).
fn entry_code(name: &str) -> Option<&'static str> {
    const NOINSTR: &[&str] = &[
        "do_syscall_64",
        "irqentry_exit",
        "irqentry_enter",
        "irqentry_nmi_enter",
        "irqentry_nmi_exit",
        "do_int80_emulation",
    ];
    if name.starts_with("asm_") || name.starts_with("entry_") || name.ends_with("_asm") {
        Some("x86 entry assembly")
    } else if NOINSTR.contains(&name) || name.starts_with("sysvec_") || name.starts_with("exc_") {
        Some("noinstr C entry code")
    } else {
        None
    }
}

/// Fields read through a pointer to each struct: `(label, path)`, where `->` follows a
/// pointer. Resolved against BTF; paths the kernel lacks are skipped.
pub const FIELD_CATALOGUE: &[(&str, &[(&str, &str)])] = &[
    (
        "task_struct",
        &[
            ("pid", "pid"),
            ("comm", "comm"),
            ("cpu", "thread_info.cpu"),
            ("scx.dsq->id", "scx.dsq->id"),
            ("scx.slice", "scx.slice"),
            ("scx.dsq_vtime", "scx.dsq_vtime"),
            ("scx.weight", "scx.weight"),
        ],
    ),
    (
        "rq",
        &[("cpu", "cpu"), ("scx.nr_running", "scx.nr_running")],
    ),
    ("scx_dispatch_q", &[("id", "id"), ("nr", "nr")]),
    ("scx_sched", &[("ops.name", "ops.name")]),
    (
        "scx_exit_info",
        &[("kind", "kind"), ("exit_code", "exit_code")],
    ),
];

/// Scalar arguments whose values are flags of a sched_ext enum, by parameter name.
pub const FLAG_ARGS: &[(&str, &str)] = &[
    ("enq_flags", "scx_enq_flags"),
    ("deq_flags", "scx_deq_flags"),
    ("wake_flags", "scx_wake_flags"),
];

/// An exit-trigger candidate.
struct TriggerCandidate {
    attach: Attach,
    target: &'static str,
    /// The BTF name that must exist, and its kind.
    btf_name: &'static str,
    kind: Kind,
    /// Why it is a good trigger.
    reason: &'static str,
    /// Parameter names, for a prototype whose BTF has none (a tracepoint's).
    names: &'static [&'static str],
}

/// Exit-trigger candidates, best first.
const TRIGGERS: &[TriggerCandidate] = &[
    TriggerCandidate {
        attach: Attach::TpBtf,
        target: "sched_ext_exit",
        btf_name: "btf_trace_sched_ext_exit",
        kind: Kind::Typedef,
        reason: "the tracepoint fires in scx_claim_exit() on the exiting CPU, before the dump",
        names: &["sch", "kind"],
    },
    TriggerCandidate {
        attach: Attach::Fentry,
        target: "scx_vexit",
        btf_name: "scx_vexit",
        kind: Kind::Func,
        reason: "every error exit (scx_bpf_error, stall, kernel-side errors) goes through it",
        names: &[],
    },
    TriggerCandidate {
        attach: Attach::Fentry,
        target: "scx_dump_state",
        btf_name: "scx_dump_state",
        kind: Kind::Func,
        reason: "the debug dump runs once per error exit, after the exit is claimed",
        names: &[],
    },
];

/// Plans the re-run's probes for `failure` on the kernel `kernel` describes.
pub fn plan(failure: &Failure, kernel: &KernelInfo<'_>) -> Result<ProbePlan, ReproError> {
    let version = KernelVersion::parse(kernel.release)?;
    if version < KernelVersion::SCHED_EXT {
        return Err(ReproError::NoSchedExt {
            release: kernel.release.to_string(),
            why: "sched_ext arrived in 6.12",
        });
    }
    if kernel.btf.find("sched_ext_ops", Kind::Struct).is_none() {
        return Err(ReproError::NoSchedExt {
            release: kernel.release.to_string(),
            why: "BTF has no struct sched_ext_ops (CONFIG_SCHED_CLASS_EXT off?)",
        });
    }
    let trigger = exit_trigger(kernel, version)?;
    let mut p = Planner {
        k: *kernel,
        probes: Vec::new(),
        left_out: Vec::new(),
        ops_done: Vec::new(),
    };
    let funcs = failure.functions();
    for (i, f) in funcs.iter().enumerate() {
        p.stack_function(f, funcs.get(i.wrapping_sub(1)).filter(|_| i > 0));
    }
    let stack_ops: Vec<String> = funcs.iter().filter_map(|f| f.op.clone()).collect();
    for o in &stack_ops {
        p.callers_of(o);
    }
    if failure.is_stall() {
        for o in SCHEDULING_OPS {
            p.callback(o, None, "stall: the callbacks that move tasks");
        }
        for o in SCHEDULING_OPS {
            p.callers_of(o);
        }
    }
    let mut focus_comms: Vec<String> = failure.stalled.iter().map(|t| t.comm.clone()).collect();
    if let Some(c) = &failure.culprit {
        if !focus_comms.contains(&c.comm) {
            focus_comms.push(c.comm.clone());
        }
    }
    Ok(ProbePlan {
        release: kernel.release.to_string(),
        version,
        trigger,
        probes: p.probes,
        left_out: p.left_out,
        focus_comms,
    })
}

fn exit_trigger(k: &KernelInfo<'_>, version: KernelVersion) -> Result<ExitTrigger, ReproError> {
    let mut missing = Vec::new();
    for c in TRIGGERS {
        let (attach, btf_name, kind) = (c.attach, c.btf_name, c.kind);
        let Some(id) = k.btf.find(btf_name, kind) else {
            missing.push(format!("{btf_name} ({kind:?})"));
            continue;
        };
        let proto = match attach {
            // btf_trace_<tp> is a typedef of a pointer to the tracepoint's prototype,
            // whose first parameter is the probe's context, not a tracepoint argument.
            Attach::TpBtf => k.btf.skip_modifiers(id).ok().and_then(|ptr| {
                match k.btf.get(ptr).map(|t| &t.body) {
                    Some(TypeBody::Ptr { target }) => k.btf.skip_modifiers(*target).ok(),
                    _ => None,
                }
            }),
            _ => func_proto(k.btf, id),
        };
        let skip = usize::from(attach == Attach::TpBtf);
        let (mut args, _, fields, _, _) = proto
            .map(|pr| signature(k.btf, pr, skip, c.names))
            .unwrap_or_default();
        // sched_ext_exit passes the exit kind as a __u32: show it as the enum it holds.
        for a in args.iter_mut().filter(|a| a.name == "kind") {
            if let (ValueType::Unsigned { .. }, Some(values)) =
                (&a.value, enum_entries(k.btf, "scx_exit_kind"))
            {
                a.value = ValueType::Enum {
                    name: "scx_exit_kind".into(),
                    values,
                };
            }
        }
        let mut why = format!(
            "{}.{}: BTF has {btf_name}; {}",
            version.major, version.minor, c.reason
        );
        if !missing.is_empty() {
            why += &format!("; not available: {}", missing.join(", "));
        }
        return Ok(ExitTrigger {
            attach,
            target: c.target.to_string(),
            why,
            args,
            fields,
        });
    }
    Err(ReproError::NoExitTrigger {
        release: k.release.to_string(),
        looked_for: TRIGGERS
            .iter()
            .map(|t| t.btf_name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

struct Planner<'a> {
    k: KernelInfo<'a>,
    probes: Vec<Probe>,
    left_out: Vec<LeftOut>,
    ops_done: Vec<String>,
}

impl Planner<'_> {
    fn leave_out(&mut self, function: &str, reason: LeftOutReason, detail: String) {
        if !self.left_out.iter().any(|l| l.function == function) {
            self.left_out.push(LeftOut {
                function: function.to_string(),
                reason,
                detail,
            });
        }
    }

    fn has(&self, target: &Target) -> bool {
        self.probes.iter().any(|p| &p.target == target)
    }

    fn push(&mut self, probe: Probe) {
        if self.has(&probe.target) {
            return;
        }
        if self.probes.len() >= MAX_FUNCS {
            let name = probe.name().to_string();
            self.leave_out(
                &name,
                LeftOutReason::TooMany,
                format!(
                    "the plan already probes {MAX_FUNCS} functions ({})",
                    probe.why
                ),
            );
            return;
        }
        self.probes.push(probe);
    }

    fn stack_function(&mut self, f: &StackFunction, inner: Option<&StackFunction>) {
        let why = format!("backtrace frame {}", f.depth);
        match &f.kind {
            SymbolKind::Kernel {
                function,
                clone_suffix,
            } => match clone_suffix.as_deref() {
                // The cold part of a function is still that function.
                Some(".cold") | None => {
                    self.kernel(function, &why);
                }
                Some(sfx) => self.leave_out(
                    &f.symbol,
                    LeftOutReason::CompilerClone,
                    format!("`{sfx}` clone of {function}: BTF describes the original's arguments"),
                ),
            },
            SymbolKind::BpfProg { name, .. } => match &f.op {
                Some(o) => self.callback(o, Some(name), &why),
                None => self.leave_out(
                    &f.symbol,
                    LeftOutReason::UnknownBpfProgram,
                    format!("BPF program {name} implements no sched_ext callback this crate knows"),
                ),
            },
            SymbolKind::StructOpsStub { op } => {
                let via_prog = inner.is_some_and(|i| {
                    matches!(i.kind, SymbolKind::BpfProg { .. }) && i.op.as_deref() == Some(op)
                });
                if via_prog {
                    self.leave_out(
                        &f.symbol,
                        LeftOutReason::Trampoline,
                        format!("struct_ops trampoline of ops.{op}; its program is probed"),
                    );
                } else {
                    self.callback(op, None, &why);
                }
            }
        }
    }

    /// Adds a kernel function's probe, or says why it cannot be probed.
    fn kernel(&mut self, function: &str, why: &str) -> bool {
        let target = Target::Kernel {
            function: function.to_string(),
        };
        if self.has(&target) {
            return true;
        }
        // An empty table (a stripped vmlinux) knows nothing.
        let has_symbol = self
            .k
            .symbols
            .filter(|s| !s.is_empty())
            .map(|s| s.lookup(function).is_some());
        let refusal = if let Some(why) = entry_code(function) {
            Some((LeftOutReason::Notrace, why))
        } else if has_symbol == Some(false) {
            Some((
                LeftOutReason::Inlined,
                "no symbol: inlined into its callers",
            ))
        } else if self.k.traceable.is_some_and(|t| !t.contains(function)) {
            Some((
                LeftOutReason::Notrace,
                "absent from available_filter_functions",
            ))
        } else {
            None
        };
        if let Some((reason, detail)) = refusal {
            self.leave_out(function, reason, detail.into());
            return false;
        }
        let Some(proto) = self
            .k
            .btf
            .find(function, Kind::Func)
            .and_then(|id| func_proto(self.k.btf, id))
        else {
            let (reason, detail) = match has_symbol {
                Some(_) => (
                    LeftOutReason::MissingFromBtf,
                    "has a symbol but no BTF FUNC",
                ),
                None => (
                    LeftOutReason::NotInBtf,
                    "no BTF FUNC (inlined, assembly, or static without BTF)",
                ),
            };
            self.leave_out(function, reason, detail.into());
            return false;
        };
        let (args, args_dropped, fields, fields_dropped, ret) =
            signature(self.k.btf, proto, 0, &[]);
        let no_kprobe = self.k.no_kprobe.is_some_and(|b| b.contains(function));
        let (entry, why) = if no_kprobe {
            (
                Attach::Fentry,
                format!("{why}; on the kprobe blacklist, so fentry"),
            )
        } else {
            (Attach::Kprobe, why.to_string())
        };
        self.push(Probe {
            target,
            attach: vec![entry, Attach::Fexit],
            phase: Phase::BeforeScheduler,
            why,
            args,
            args_dropped,
            fields,
            fields_dropped,
            ret,
        });
        true
    }

    /// Adds a callback's probe; the arguments come from the `struct sched_ext_ops`
    /// member's prototype.
    fn callback(&mut self, op_name: &str, prog: Option<&str>, why: &str) {
        let known = self
            .probes
            .iter()
            .any(|p| matches!(&p.target, Target::BpfCallback { op, .. } if op == op_name));
        if known {
            return;
        }
        // The kernel's CFI stub `sched_ext_ops__<op>` has the member's prototype with
        // parameter names; the member's own FUNC_PROTO has none.
        let stub = self
            .k
            .btf
            .find(&format!("sched_ext_ops__{op_name}"), Kind::Func)
            .and_then(|id| func_proto(self.k.btf, id));
        let proto = stub.or_else(|| {
            resolve(self.k.btf, "sched_ext_ops", op_name)
                .ok()
                .and_then(|f| self.k.btf.skip_modifiers(f.type_id).ok())
                .and_then(|id| match self.k.btf.get(id).map(|t| &t.body) {
                    Some(TypeBody::Ptr { target }) => self.k.btf.skip_modifiers(*target).ok(),
                    _ => None,
                })
        });
        let (args, args_dropped, fields, fields_dropped, ret) = proto
            .map(|pr| signature(self.k.btf, pr, 0, &[]))
            .unwrap_or_default();
        self.push(Probe {
            target: Target::BpfCallback {
                op: op_name.to_string(),
                prog: prog.map(str::to_string),
            },
            attach: vec![Attach::Fentry, Attach::Fexit],
            phase: Phase::AfterScheduler,
            why: why.to_string(),
            args,
            args_dropped,
            fields,
            fields_dropped,
            ret,
        });
    }

    /// Adds the kernel callers of a callback: the first probeable function of each path.
    fn callers_of(&mut self, op_name: &str) {
        if self.ops_done.iter().any(|o| o == op_name) {
            return;
        }
        self.ops_done.push(op_name.to_string());
        let Some(info): Option<&OpInfo> = op(op_name) else {
            return;
        };
        for path in info.callers {
            for (n, f) in path.iter().enumerate() {
                let why = if n == 0 {
                    format!("calls ops.{op_name} ({})", info.sites)
                } else {
                    format!("calls ops.{op_name} through {}", path[..n].join(" <- "))
                };
                if self.kernel(f, &why) {
                    break;
                }
            }
        }
    }
}

fn func_proto(btf: &Btf, func: TypeId) -> Option<TypeId> {
    match btf.get(func).map(|t| &t.body) {
        Some(TypeBody::Func { proto, .. }) => btf.skip_modifiers(*proto).ok(),
        _ => None,
    }
}

type Signature = (
    Vec<ArgSpec>,
    usize,
    Vec<FieldSpec>,
    usize,
    Option<ValueType>,
);

/// Arguments (skipping the first `skip` parameters), fields and return type of a
/// FUNC_PROTO; `names` name parameters BTF leaves unnamed.
fn signature(btf: &Btf, proto: TypeId, skip: usize, names: &[&str]) -> Signature {
    let Some(TypeBody::FuncProto { ret, params }) = btf.get(proto).map(|t| &t.body) else {
        return Signature::default();
    };
    let params: Vec<_> = params.iter().skip(skip).filter(|p| p.ty.0 != 0).collect();
    let mut args = Vec::new();
    let mut fields = Vec::new();
    let mut fields_dropped = 0;
    for (i, p) in params.iter().take(MAX_ARGS).enumerate() {
        let name = match btf.str_at(p.name_off) {
            "" => names
                .get(i)
                .map_or_else(|| format!("arg{i}"), |n| n.to_string()),
            // The verifier's annotation, not part of the name.
            n => n.trim_end_matches("__nullable").to_string(),
        };
        let index = i as u8;
        let value = value_type(btf, p.ty, &name);
        for f in fields_through(btf, p.ty, index, &name) {
            if fields.len() < MAX_FIELDS {
                fields.push(f);
            } else {
                fields_dropped += 1;
            }
        }
        args.push(ArgSpec {
            index,
            name,
            c_type: c_type(btf, p.ty),
            value,
        });
    }
    let ret = (ret.0 != 0).then(|| value_type(btf, *ret, ""));
    (
        args,
        params.len().saturating_sub(MAX_ARGS),
        fields,
        fields_dropped,
        ret,
    )
}

/// The struct a pointer type points to: `(name, id)`.
fn pointee_struct(btf: &Btf, ty: TypeId) -> Option<(String, TypeId)> {
    let id = btf.skip_modifiers(ty).ok()?;
    let TypeBody::Ptr { target } = btf.get(id)?.body else {
        return None;
    };
    let s = btf.skip_modifiers(target).ok()?;
    let t = btf.get(s)?;
    matches!(t.kind(), Kind::Struct | Kind::Union).then(|| (btf.str_at(t.name_off).to_string(), s))
}

/// True for `char *` / `const char *`.
fn is_char_ptr(btf: &Btf, ty: TypeId) -> bool {
    let Ok(id) = btf.skip_modifiers(ty) else {
        return false;
    };
    let Some(TypeBody::Ptr { target }) = btf.get(id).map(|t| &t.body) else {
        return false;
    };
    btf.skip_modifiers(*target)
        .ok()
        .and_then(|c| btf.get(c))
        .is_some_and(|c| matches!(c.body, TypeBody::Int { size: 1, .. }))
}

/// The catalogue's fields through argument `arg` of type `ty`.
fn fields_through(btf: &Btf, ty: TypeId, arg: u8, arg_name: &str) -> Vec<FieldSpec> {
    if is_char_ptr(btf, ty) {
        return vec![FieldSpec {
            arg,
            label: format!("*{arg_name}"),
            derefs: Vec::new(),
            offset: 0,
            size: MAX_FIELD_BYTES as u8,
            value: ValueType::Str {
                len: MAX_FIELD_BYTES as u8,
            },
        }];
    }
    let Some((sname, _)) = pointee_struct(btf, ty) else {
        return Vec::new();
    };
    let Some((_, paths)) = FIELD_CATALOGUE.iter().find(|(s, _)| *s == sname) else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|(label, path)| {
            field_spec(btf, &sname, path, arg, &format!("{arg_name}->{label}"))
        })
        .collect()
}

/// Resolves `path` (with `->` hops) from struct `sname`.
fn field_spec(btf: &Btf, sname: &str, path: &str, arg: u8, label: &str) -> Option<FieldSpec> {
    let mut derefs = Vec::new();
    let mut cur = sname.to_string();
    let mut steps = path.split("->").peekable();
    while let Some(step) = steps.next() {
        let f = resolve(btf, &cur, step).ok()?;
        if steps.peek().is_some() {
            if derefs.len() >= MAX_DEREFS {
                return None;
            }
            derefs.push(f.offset_bytes);
            cur = pointee_struct(btf, f.type_id)?.0;
            continue;
        }
        if f.is_bitfield() {
            return None;
        }
        let value = value_type(btf, f.type_id, step.rsplit('.').next().unwrap_or(step));
        let size = match value {
            ValueType::Str { len } => len,
            _ => u8::try_from(f.size).ok().filter(|s| usize::from(*s) <= 8)?,
        };
        return Some(FieldSpec {
            arg,
            label: label.to_string(),
            derefs,
            offset: f.offset_bytes,
            size,
            value,
        });
    }
    None
}

/// How to show a value of type `ty` named `name`.
fn value_type(btf: &Btf, ty: TypeId, name: &str) -> ValueType {
    if let Some((_, enum_name)) = FLAG_ARGS.iter().find(|(n, _)| *n == name) {
        if let Some(bits) = enum_entries(btf, enum_name) {
            let bits = bits
                .into_iter()
                .filter(|(_, v)| *v != 0 && (*v as u64).is_power_of_two())
                .map(|(n, v)| (n, v as u64))
                .collect();
            return ValueType::Flags {
                name: enum_name.to_string(),
                bits,
            };
        }
    }
    let Ok(id) = btf.skip_modifiers(ty) else {
        return ValueType::Unsigned { size: 8 };
    };
    match btf.get(id).map(|t| &t.body) {
        Some(TypeBody::Int { size, encoding, .. }) => {
            let size = u8::try_from(*size).unwrap_or(8);
            if encoding & 4 != 0 {
                ValueType::Bool
            } else if encoding & 1 != 0 {
                ValueType::Signed { size }
            } else {
                ValueType::Unsigned { size }
            }
        }
        Some(TypeBody::Ptr { .. }) => ValueType::Pointer,
        Some(TypeBody::Enum { values, .. }) => ValueType::Enum {
            name: btf.name(id).to_string(),
            values: values
                .iter()
                .map(|e| (btf.str_at(e.name_off).to_string(), e.value))
                .collect(),
        },
        Some(TypeBody::Array { elem, len, .. }) => {
            let is_char = btf
                .skip_modifiers(*elem)
                .ok()
                .and_then(|e| btf.get(e))
                .is_some_and(|e| matches!(e.body, TypeBody::Int { size: 1, .. }));
            if is_char {
                ValueType::Str {
                    len: (*len).min(MAX_FIELD_BYTES as u32) as u8,
                }
            } else {
                ValueType::Pointer
            }
        }
        _ => ValueType::Unsigned { size: 8 },
    }
}

fn enum_entries(btf: &Btf, name: &str) -> Option<Vec<(String, i64)>> {
    let id = btf
        .find(name, Kind::Enum)
        .or_else(|| btf.find(name, Kind::Enum64))?;
    match &btf.get(id)?.body {
        TypeBody::Enum { values, .. } => Some(
            values
                .iter()
                .map(|e| (btf.str_at(e.name_off).to_string(), e.value))
                .collect(),
        ),
        _ => None,
    }
}

/// A C spelling of a type, for the reader: `struct task_struct *`, `u64`, `const char *`.
fn c_type(btf: &Btf, ty: TypeId) -> String {
    let mut ptrs = 0;
    let mut id = ty;
    let mut konst = false;
    for _ in 0..8 {
        match btf.get(id).map(|t| &t.body) {
            Some(TypeBody::Ptr { target }) => {
                ptrs += 1;
                id = *target;
            }
            Some(TypeBody::Const { target }) => {
                konst = true;
                id = *target;
            }
            Some(
                TypeBody::Volatile { target }
                | TypeBody::Restrict { target }
                | TypeBody::TypeTag { target },
            ) => id = *target,
            _ => break,
        }
    }
    let base = match btf.get(id) {
        None => "?".to_string(),
        Some(t) => {
            let name = btf.str_at(t.name_off);
            match t.kind() {
                Kind::Void => "void".into(),
                Kind::Struct => format!("struct {name}"),
                Kind::Union => format!("union {name}"),
                Kind::Enum | Kind::Enum64 => format!("enum {name}"),
                _ if name.is_empty() => "?".into(),
                _ => name.to_string(),
            }
        }
    };
    let mut s = if konst { format!("const {base}") } else { base };
    if ptrs > 0 {
        s.push(' ');
        s.push_str(&"*".repeat(ptrs));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = KernelVersion::parse("7.3.4+deb13-cloud-amd64").unwrap();
        assert_eq!((v.major, v.minor), (7, 3));
        assert_eq!(KernelVersion::parse("6.12").unwrap().minor, 12);
        assert!(KernelVersion::parse("6.11.0").unwrap() < KernelVersion::SCHED_EXT);
        for bad in ["", "x", "7", "7.", ".3", "7-3"] {
            assert!(KernelVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_code_is_not_probed() {
        for f in [
            "do_syscall_64",
            "sysvec_apic_timer_interrupt",
            "asm_sysvec_irq_work",
            "entry_SYSCALL_64_after_hwframe",
            "ret_from_fork_asm",
        ] {
            assert!(entry_code(f).is_some(), "{f}");
        }
        for f in [
            "__sysvec_irq_work",
            "handle_softirqs",
            "scx_do_enqueue_task",
            "ret_from_fork",
        ] {
            assert!(entry_code(f).is_none(), "{f}");
        }
    }
}
