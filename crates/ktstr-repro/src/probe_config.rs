//! From a plan to what the probe program (`bpf/probe.bpf.c`) needs: one config map entry per
//! probe (`struct ktstr_repro_probe_cfg` of `bpf/probe.h`, encoded here byte for byte) and the
//! list of attachments the agent makes, each with its program, target and cookie.
//!
//! The program finds its config by its attach cookie, which is the probe's index in the
//! plan; the exit trigger's config is at key [`TRIGGER_KEY`].

use serde::{Deserialize, Serialize};

use crate::event::TRIGGER_PROBE;
use crate::plan::{Attach, FieldSpec, Phase, Probe, ProbePlan, Target, ValueType};
use crate::{MAX_FIELDS, MAX_FUNCS};

/// Bytes of `struct ktstr_repro_field_cfg`.
pub const FIELD_CFG_LEN: usize = 16;
/// Bytes of `struct ktstr_repro_probe_cfg`.
pub const PROBE_CFG_LEN: usize = 8 + FIELD_CFG_LEN * MAX_FIELDS;
/// The config map key of the exit trigger.
pub const TRIGGER_KEY: u32 = MAX_FUNCS as u32;

/// One entry of the program's `probe_cfg` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The map key: the probe's index, or [`TRIGGER_KEY`].
    pub key: u32,
    /// The value, laid out as `struct ktstr_repro_probe_cfg`.
    pub value: [u8; PROBE_CFG_LEN],
}

/// Which of the object's programs an attachment uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// `ktstr_repro_kprobe`.
    Kprobe,
    /// `ktstr_repro_fentry`.
    Fentry,
    /// `ktstr_repro_fexit`.
    Fexit,
    /// `ktstr_repro_exit` (`tp_btf/sched_ext_exit`).
    ExitTracepoint,
}

impl Program {
    /// The program's name in the object.
    pub fn name(self) -> &'static str {
        match self {
            Program::Kprobe => "ktstr_repro_kprobe",
            Program::Fentry => "ktstr_repro_fentry",
            Program::Fexit => "ktstr_repro_fexit",
            Program::ExitTracepoint => "ktstr_repro_exit",
        }
    }
}

/// One attachment the agent makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The program (a fresh copy per target for fentry/fexit).
    pub program: Program,
    /// The target: a kernel function, a tracepoint, or for callbacks the scheduler's
    /// program name (else the callback, to be found in its struct_ops map).
    pub target: String,
    /// True when the target is one of the scheduler's BPF programs.
    pub bpf_target: bool,
    /// The attach cookie: the config key.
    pub cookie: u64,
    /// Before or after the scheduler loads.
    pub phase: Phase,
}

fn field_cfg(f: &FieldSpec) -> [u8; FIELD_CFG_LEN] {
    let mut b = [0u8; FIELD_CFG_LEN];
    b[0] = f.arg;
    b[1] = f.derefs.len().min(2) as u8;
    b[2] = f.size;
    b[3] = u8::from(matches!(f.value, ValueType::Str { .. }));
    b[4..8].copy_from_slice(&f.offset.to_le_bytes());
    for (i, d) in f.derefs.iter().take(2).enumerate() {
        b[8 + 4 * i..12 + 4 * i].copy_from_slice(&d.to_le_bytes());
    }
    b
}

fn probe_cfg(
    probe: u16,
    nr_args: usize,
    fields: &[FieldSpec],
    has_ret: bool,
    stack: bool,
) -> [u8; PROBE_CFG_LEN] {
    let mut v = [0u8; PROBE_CFG_LEN];
    v[0..2].copy_from_slice(&probe.to_le_bytes());
    v[2] = nr_args.min(crate::MAX_ARGS) as u8;
    let fields = &fields[..fields.len().min(MAX_FIELDS)];
    v[3] = fields.len() as u8;
    v[4] = u8::from(has_ret);
    v[5] = u8::from(stack);
    for (i, f) in fields.iter().enumerate() {
        let at = 8 + i * FIELD_CFG_LEN;
        v[at..at + FIELD_CFG_LEN].copy_from_slice(&field_cfg(f));
    }
    v
}

/// The config map entries for `plan`: one per probe, then the trigger's.
pub fn probe_configs(plan: &ProbePlan) -> Vec<ProbeConfig> {
    let mut out: Vec<ProbeConfig> = plan
        .probes
        .iter()
        .take(MAX_FUNCS)
        .enumerate()
        .map(|(i, p): (usize, &Probe)| ProbeConfig {
            key: i as u32,
            value: probe_cfg(i as u16, p.args.len(), &p.fields, p.ret.is_some(), false),
        })
        .collect();
    out.push(ProbeConfig {
        key: TRIGGER_KEY,
        value: probe_cfg(
            TRIGGER_PROBE,
            plan.trigger.args.len(),
            &plan.trigger.fields,
            false,
            true,
        ),
    });
    out
}

/// The attachments for `plan`: the trigger first, then each probe's entry and exit.
pub fn attachments(plan: &ProbePlan) -> Vec<Attachment> {
    let trigger = Attachment {
        program: match plan.trigger.attach {
            Attach::TpBtf => Program::ExitTracepoint,
            _ => Program::Fentry,
        },
        target: plan.trigger.target.clone(),
        bpf_target: false,
        cookie: u64::from(TRIGGER_KEY),
        phase: Phase::BeforeScheduler,
    };
    let mut out = vec![trigger];
    for (i, p) in plan.probes.iter().take(MAX_FUNCS).enumerate() {
        let (target, bpf_target) = match &p.target {
            Target::Kernel { function } => (function.clone(), false),
            Target::BpfCallback { op, prog } => (prog.clone().unwrap_or_else(|| op.clone()), true),
        };
        for a in &p.attach {
            let program = match a {
                Attach::Kprobe => Program::Kprobe,
                Attach::Fentry => Program::Fentry,
                Attach::Fexit => Program::Fexit,
                Attach::TpBtf => Program::ExitTracepoint,
            };
            out.push(Attachment {
                program,
                target: target.clone(),
                bpf_target,
                cookie: i as u64,
                phase: p.phase,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_probe_h() {
        // bpf/probe.h _Static_asserts the same numbers.
        assert_eq!(FIELD_CFG_LEN, 16);
        assert_eq!(PROBE_CFG_LEN, 264);
        assert_eq!(crate::event::MAX_RECORD_LEN, 736);
        assert_eq!(TRIGGER_KEY, 64);
    }

    #[test]
    fn field_layout() {
        let f = FieldSpec {
            arg: 1,
            label: "p->scx.dsq->id".into(),
            derefs: vec![784],
            offset: 48,
            size: 8,
            value: ValueType::Unsigned { size: 8 },
        };
        let b = field_cfg(&f);
        assert_eq!(&b[..4], &[1, 1, 8, 0]);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), 48);
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 784);
        assert_eq!(&b[12..], &[0, 0, 0, 0]);
    }
}
