//! Which engine runs a guest, and why.
//!
//! Two choices: the VMM (`--vmm auto|kvm|qemu`, [`VmmKind`]) and, for QEMU, the accelerator
//! (`--accel auto|kvm|tcg`, [`VmmRequest`]). [`choose_vmm`] makes both and says why in one
//! line; [`choose_engine`] is the QEMU-only choice it falls back to, and [`fallback_engine`]
//! where `auto` goes when ktstr's KVM VMM fails before the guest's init says hello.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ktstr_topology::Topology;

use crate::VmmError;

/// What the user asked for (`--accel auto|kvm|tcg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmRequest {
    /// KVM where it can boot Linux, TCG otherwise.
    #[default]
    Auto,
    /// Hardware KVM or an error.
    Kvm,
    /// QEMU's TCG emulator.
    Tcg,
}

/// Which VMM runs the guest (`--vmm auto|kvm|qemu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmKind {
    /// ktstr's own KVM VMM where hardware KVM can boot Linux, QEMU otherwise.
    #[default]
    Auto,
    /// ktstr's own KVM VMM on `/dev/kvm` (spelled `kvm`), even where KVM cannot boot Linux.
    Ktstr,
    /// QEMU, accelerated as `--accel` says.
    Qemu,
}

/// TCG threading: one host thread for all vCPUs, or one per vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcgThreads {
    /// One host thread runs every vCPU in turn (no cross-vCPU code-patching races).
    Single,
    /// One host thread per vCPU.
    Multi,
}

/// The engine that will run the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// QEMU accelerated by hardware KVM.
    QemuKvm,
    /// QEMU's TCG emulator.
    QemuTcg(TcgThreads),
    /// ktstr's own KVM VMM ([`crate::kvm`]), no QEMU process.
    KtstrKvm,
}

/// The chosen engine and the one-line reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChoice {
    /// The engine.
    pub engine: Engine,
    /// Why it was chosen, for the user.
    pub reason: String,
}

/// What this host's KVM can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKvm {
    /// `/dev/kvm` opens read-write.
    pub dev_kvm: bool,
    /// The CPU advertises `vmx` or `svm`.
    pub hw_virt: bool,
    /// The KVM module is PVM (software KVM that cannot boot stock kernels).
    pub pvm: bool,
}

impl HostKvm {
    /// Why KVM cannot boot Linux here, or `None` if it can.
    pub fn unusable_reason(&self) -> Option<String> {
        if !self.dev_kvm {
            Some("/dev/kvm is absent or not accessible".into())
        } else if self.pvm {
            Some("/dev/kvm is PVM (kvm_pvm), which cannot boot stock kernels".into())
        } else if !self.hw_virt {
            Some("the CPU has no vmx/svm flag".into())
        } else {
            None
        }
    }
}

/// Probes `/dev/kvm`, `/proc/cpuinfo` and `/sys/module/kvm_pvm`.
pub fn host_kvm() -> HostKvm {
    let dev_kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    HostKvm {
        dev_kvm,
        hw_virt,
        pvm: Path::new("/sys/module/kvm_pvm").exists(),
    }
}

/// Picks the engine for `topology` on a host with `host_cpus` CPUs.
///
/// TCG runs single-threaded unless `threads` says otherwise: multi-threaded
/// TCG races on the kernel's live code patching (`Oops: int3`) and is slower
/// once vCPUs outnumber host CPUs.
pub fn choose_engine(
    request: VmmRequest,
    threads: Option<TcgThreads>,
    topology: &Topology,
    host: &HostKvm,
    host_cpus: usize,
) -> Result<EngineChoice, VmmError> {
    let vcpus = topology.total_cpus() as usize;
    let tcg = |why: String| {
        let (t, how) = match threads {
            Some(t) => (t, "as asked".to_string()),
            None => (
                TcgThreads::Single,
                if vcpus > host_cpus {
                    format!("{vcpus} vCPUs > {host_cpus} host CPUs")
                } else {
                    "avoids multi-threaded TCG's int3 races".to_string()
                },
            ),
        };
        EngineChoice {
            engine: Engine::QemuTcg(t),
            reason: format!("{why}; TCG {t} ({how})"),
        }
    };
    match (request, host.unusable_reason()) {
        (VmmRequest::Kvm, Some(reason)) => Err(VmmError::KvmUnusable { reason }),
        (VmmRequest::Kvm, None) => Ok(EngineChoice {
            engine: Engine::QemuKvm,
            reason: "KVM as asked".into(),
        }),
        (VmmRequest::Auto, None) => Ok(EngineChoice {
            engine: Engine::QemuKvm,
            reason: "hardware KVM available".into(),
        }),
        (VmmRequest::Auto, Some(reason)) => Ok(tcg(format!("QEMU TCG because {reason}"))),
        (VmmRequest::Tcg, _) => Ok(tcg("QEMU TCG as asked".into())),
    }
}

/// Picks the VMM and its engine for `topology` and says why in one line.
///
/// `auto` takes ktstr's KVM VMM only where hardware KVM can boot Linux (not PVM) and the run
/// needs nothing only QEMU has (`needs_qemu` names such a feature for the reason);
/// otherwise it is [`choose_engine`], whose reason says why. `kvm` takes ktstr's VMM
/// whenever `/dev/kvm` opens, PVM included (the guest then dies early with a KVM internal
/// error); `qemu` is [`choose_engine`].
pub fn choose_vmm(
    vmm: VmmKind,
    accel: VmmRequest,
    threads: Option<TcgThreads>,
    topology: &Topology,
    host: &HostKvm,
    host_cpus: usize,
    needs_qemu: Option<&str>,
) -> Result<EngineChoice, VmmError> {
    let qemu = |why: &str| {
        choose_engine(accel, threads, topology, host, host_cpus).map(|c| EngineChoice {
            engine: c.engine,
            reason: format!("QEMU {why}; {}", c.reason),
        })
    };
    match vmm {
        VmmKind::Qemu => qemu("as asked"),
        VmmKind::Ktstr => {
            if let Some(what) = needs_qemu {
                return Err(VmmError::BadConfig {
                    reason: format!("{what} needs the QEMU VMM (--vmm qemu or auto)"),
                });
            }
            if accel == VmmRequest::Tcg {
                return Err(VmmError::BadConfig {
                    reason: "--accel tcg is QEMU's emulator; ktstr's VMM needs /dev/kvm".into(),
                });
            }
            if !host.dev_kvm {
                return Err(VmmError::KvmUnusable {
                    reason: "/dev/kvm is absent or not accessible".into(),
                });
            }
            let reason = match host.unusable_reason() {
                None => "ktstr's KVM VMM as asked".to_string(),
                Some(why) => format!(
                    "ktstr's KVM VMM as asked, although {why}: expect a KVM internal error early in boot"
                ),
            };
            Ok(EngineChoice {
                engine: Engine::KtstrKvm,
                reason,
            })
        }
        VmmKind::Auto => match (accel, host.unusable_reason(), needs_qemu) {
            // choose_engine's reason already says why QEMU: TCG as asked, or KVM unusable.
            (VmmRequest::Tcg, _, _) | (_, Some(_), _) => {
                choose_engine(accel, threads, topology, host, host_cpus)
            }
            (_, None, Some(what)) => qemu(&format!("because {what} needs it")),
            (_, None, None) => Ok(EngineChoice {
                engine: Engine::KtstrKvm,
                reason: "ktstr's KVM VMM: hardware KVM can boot Linux".into(),
            }),
        },
    }
}

/// The engine `--vmm auto` runs next after `failed` did not bring the guest to init.
///
/// Only `auto`'s own choice is left: ktstr's KVM VMM falls back to QEMU with `-accel kvm`
/// (the host's KVM is hardware-like, or `auto` would not have chosen ours), whatever the
/// failure was, since QEMU is another engine. `--vmm kvm` and `--vmm qemu` run what was
/// asked and report what happened; QEMU has nothing to fall back to.
pub fn fallback_engine(vmm: VmmKind, failed: Engine) -> Option<EngineChoice> {
    (vmm == VmmKind::Auto && failed == Engine::KtstrKvm).then(|| EngineChoice {
        engine: Engine::QemuKvm,
        reason: "QEMU -accel kvm: --vmm auto's fallback after ktstr's KVM VMM failed before init"
            .into(),
    })
}

impl fmt::Display for TcgThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcgThreads::Single => "single-threaded",
            TcgThreads::Multi => "multi-threaded",
        })
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::QemuKvm => f.write_str("qemu/kvm"),
            Engine::QemuTcg(TcgThreads::Single) => f.write_str("qemu/tcg-single"),
            Engine::QemuTcg(TcgThreads::Multi) => f.write_str("qemu/tcg-multi"),
            Engine::KtstrKvm => f.write_str("ktstr/kvm"),
        }
    }
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmKind::Auto => "auto",
            VmmKind::Ktstr => "kvm",
            VmmKind::Qemu => "qemu",
        })
    }
}

/// Names the VMM for runs that do not choose one (`--vmm` absent, `#[ktstr_test]`s):
/// `auto`, `kvm` or `qemu`.
pub const VMM_ENV: &str = "KTSTR_VMM";

impl VmmKind {
    /// The VMM [`VMM_ENV`] names; `auto` when it is unset or empty.
    pub fn from_env() -> Result<Self, VmmError> {
        match std::env::var(VMM_ENV) {
            Ok(v) if !v.is_empty() => v.parse().map_err(|e: VmmError| VmmError::BadConfig {
                reason: format!("${VMM_ENV}: {e}"),
            }),
            _ => Ok(VmmKind::Auto),
        }
    }
}

impl FromStr for VmmKind {
    type Err = VmmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(VmmKind::Auto),
            "kvm" | "ktstr" => Ok(VmmKind::Ktstr),
            "qemu" => Ok(VmmKind::Qemu),
            other => Err(VmmError::BadConfig {
                reason: format!("VMM `{other}`: expected auto, kvm or qemu"),
            }),
        }
    }
}

impl FromStr for VmmRequest {
    type Err = VmmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(VmmRequest::Auto),
            "kvm" => Ok(VmmRequest::Kvm),
            "tcg" => Ok(VmmRequest::Tcg),
            other => Err(VmmError::BadConfig {
                reason: format!("accelerator `{other}`: expected auto, kvm or tcg"),
            }),
        }
    }
}

impl FromStr for TcgThreads {
    type Err = VmmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "single" => Ok(TcgThreads::Single),
            "multi" => Ok(TcgThreads::Multi),
            other => Err(VmmError::BadConfig {
                reason: format!("TCG threading `{other}`: expected single or multi"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVM: HostKvm = HostKvm {
        dev_kvm: true,
        hw_virt: false,
        pvm: true,
    };
    const HW: HostKvm = HostKvm {
        dev_kvm: true,
        hw_virt: true,
        pvm: false,
    };

    #[test]
    fn auto_avoids_pvm_and_says_why() {
        let c = choose_engine(VmmRequest::Auto, None, &Topology::default(), &PVM, 2).unwrap();
        assert_eq!(c.engine, Engine::QemuTcg(TcgThreads::Single));
        assert!(c.reason.contains("PVM"), "{}", c.reason);
    }

    #[test]
    fn auto_takes_hardware_kvm() {
        let c = choose_engine(VmmRequest::Auto, None, &Topology::default(), &HW, 2).unwrap();
        assert_eq!(c.engine, Engine::QemuKvm);
    }

    #[test]
    fn kvm_request_on_pvm_is_an_error() {
        let e = choose_engine(VmmRequest::Kvm, None, &Topology::default(), &PVM, 2);
        assert!(matches!(e, Err(VmmError::KvmUnusable { .. })));
    }

    #[test]
    fn tcg_threads_follow_request_and_cpu_count() {
        let big = Topology::new(1, 2, 4, 2).unwrap();
        let c = choose_engine(VmmRequest::Tcg, None, &big, &HW, 2).unwrap();
        assert_eq!(c.engine, Engine::QemuTcg(TcgThreads::Single));
        assert!(c.reason.contains("16 vCPUs > 2 host CPUs"), "{}", c.reason);
        let m = choose_engine(VmmRequest::Tcg, Some(TcgThreads::Multi), &big, &HW, 2).unwrap();
        assert_eq!(m.engine, Engine::QemuTcg(TcgThreads::Multi));
    }

    fn vmm(kind: VmmKind, host: &HostKvm) -> Result<EngineChoice, VmmError> {
        choose_vmm(
            kind,
            VmmRequest::Auto,
            None,
            &Topology::default(),
            host,
            2,
            None,
        )
    }

    #[test]
    fn auto_vmm_on_pvm_is_qemu_with_the_reason_in_one_line() {
        let c = vmm(VmmKind::Auto, &PVM).unwrap();
        assert_eq!(c.engine, Engine::QemuTcg(TcgThreads::Single));
        assert!(c.reason.starts_with("QEMU TCG because"), "{}", c.reason);
        assert!(c.reason.contains("PVM"), "{}", c.reason);
        assert!(!c.reason.contains('\n'), "{}", c.reason);
    }

    #[test]
    fn auto_vmm_on_hardware_kvm_is_ours() {
        let c = vmm(VmmKind::Auto, &HW).unwrap();
        assert_eq!(c.engine, Engine::KtstrKvm);
        assert!(c.reason.contains("hardware KVM"), "{}", c.reason);
    }

    #[test]
    fn auto_vmm_keeps_qemu_for_tcg_and_for_what_only_qemu_has() {
        let t = Topology::default();
        let c = choose_vmm(VmmKind::Auto, VmmRequest::Tcg, None, &t, &HW, 2, None).unwrap();
        assert_eq!(c.engine, Engine::QemuTcg(TcgThreads::Single));
        let c = choose_vmm(
            VmmKind::Auto,
            VmmRequest::Auto,
            None,
            &t,
            &HW,
            2,
            Some("the monitor"),
        )
        .unwrap();
        assert_eq!(c.engine, Engine::QemuKvm);
        assert!(c.reason.contains("the monitor needs it"), "{}", c.reason);
    }

    #[test]
    fn forced_kvm_vmm_runs_ours_even_on_pvm_and_warns() {
        let c = vmm(VmmKind::Ktstr, &PVM).unwrap();
        assert_eq!(c.engine, Engine::KtstrKvm);
        assert!(c.reason.contains("KVM internal error"), "{}", c.reason);
        let none = HostKvm {
            dev_kvm: false,
            ..PVM
        };
        assert!(matches!(
            vmm(VmmKind::Ktstr, &none),
            Err(VmmError::KvmUnusable { .. })
        ));
        let t = Topology::default();
        assert!(choose_vmm(VmmKind::Ktstr, VmmRequest::Tcg, None, &t, &HW, 2, None).is_err());
        assert!(choose_vmm(
            VmmKind::Ktstr,
            VmmRequest::Auto,
            None,
            &t,
            &HW,
            2,
            Some("x")
        )
        .is_err());
    }

    #[test]
    fn qemu_vmm_is_the_old_choice() {
        let c = vmm(VmmKind::Qemu, &HW).unwrap();
        assert_eq!(c.engine, Engine::QemuKvm);
        assert!(c.reason.starts_with("QEMU as asked"), "{}", c.reason);
    }

    #[test]
    fn only_auto_falls_back_and_only_from_ours_to_qemu_kvm() {
        let c = fallback_engine(VmmKind::Auto, Engine::KtstrKvm).expect("auto falls back");
        assert_eq!(c.engine, Engine::QemuKvm);
        assert!(c.reason.contains("-accel kvm"), "{}", c.reason);
        assert!(!c.reason.contains('\n'), "{}", c.reason);
        // --vmm kvm runs ours only; --vmm qemu and QEMU engines have nothing to fall back to.
        assert_eq!(fallback_engine(VmmKind::Ktstr, Engine::KtstrKvm), None);
        assert_eq!(fallback_engine(VmmKind::Qemu, Engine::QemuKvm), None);
        for engine in [
            Engine::QemuKvm,
            Engine::QemuTcg(TcgThreads::Single),
            Engine::QemuTcg(TcgThreads::Multi),
        ] {
            assert_eq!(fallback_engine(VmmKind::Auto, engine), None, "{engine}");
        }
    }

    #[test]
    fn parses_vmm_kinds() {
        assert_eq!("kvm".parse::<VmmKind>().unwrap(), VmmKind::Ktstr);
        assert_eq!("qemu".parse::<VmmKind>().unwrap(), VmmKind::Qemu);
        assert_eq!(VmmKind::Ktstr.to_string(), "kvm");
        assert!("xen".parse::<VmmKind>().is_err());
    }

    #[test]
    fn parses_requests() {
        assert_eq!("auto".parse::<VmmRequest>().unwrap(), VmmRequest::Auto);
        assert!("xen".parse::<VmmRequest>().is_err());
        assert_eq!("multi".parse::<TcgThreads>().unwrap(), TcgThreads::Multi);
    }
}
