//! The probe program's side of a plan: config entries and attachments (always), and the
//! program itself compiled with clang-19 against the 7.3 kernel's BTF (skipped, visibly,
//! without clang-19, bpftool, libbpf's headers or the cached kernel).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, skip, subset_btf, vmlinux_7_3, FAILURES, RELEASE};
use ktstr_repro::plan::Phase;
use ktstr_repro::probe_config::{attachments, probe_configs, Program, PROBE_CFG_LEN, TRIGGER_KEY};
use ktstr_repro::{plan, Failure, KernelInfo, ProbePlan};

fn error_after_plan() -> ProbePlan {
    let btf = subset_btf();
    let k = KernelInfo::new(RELEASE, &btf);
    let text: String = FAILURES[0].iter().map(|n| fixture(n)).collect();
    plan(&Failure::parse(&text).unwrap(), &k).unwrap()
}

#[test]
fn configs_follow_the_plan() {
    let p = error_after_plan();
    let cfgs = probe_configs(&p);
    assert_eq!(cfgs.len(), p.probes.len() + 1);
    // The enqueue callback, probe 2: index, 2 args, 7 fields, no return value.
    let cb = &cfgs[2];
    assert_eq!(cb.key, 2);
    assert_eq!(&cb.value[..6], &[2, 0, 2, 7, 0, 0]);
    // Its 4th field is p->scx.dsq->id: arg 0, one deref at 784, then 8 bytes at 48.
    let f = &cb.value[8 + 3 * 16..8 + 4 * 16];
    assert_eq!(&f[..4], &[0, 1, 8, 0]);
    assert_eq!(u32::from_le_bytes([f[4], f[5], f[6], f[7]]), 48);
    assert_eq!(u32::from_le_bytes([f[8], f[9], f[10], f[11]]), 784);
    // Its 2nd field, comm, is read as a string.
    assert_eq!(cb.value[8 + 16 + 3], 1);
    // The trigger: key 64, probe 0xffff, 2 args, 1 field, the kernel stack.
    let t = cfgs.last().unwrap();
    assert_eq!(t.key, TRIGGER_KEY);
    assert_eq!(&t.value[..6], &[0xff, 0xff, 2, 1, 0, 1]);
    assert_eq!(t.value.len(), PROBE_CFG_LEN);
    // scx_exit_bstr returns bool: its exit records carry the value.
    assert_eq!(cfgs[0].value[4], 1);
}

#[test]
fn attachments_follow_the_plan() {
    let p = error_after_plan();
    let a = attachments(&p);
    assert_eq!(a.len(), 1 + 2 * p.probes.len());
    assert_eq!(
        (a[0].program, a[0].target.as_str(), a[0].cookie),
        (Program::ExitTracepoint, "sched_ext_exit", 64)
    );
    let cb: Vec<_> = a.iter().filter(|x| x.bpf_target).collect();
    assert_eq!(cb.len(), 2);
    assert_eq!(
        (
            cb[0].program,
            cb[0].target.as_str(),
            cb[0].cookie,
            cb[0].phase
        ),
        (Program::Fentry, "ktstr_enqueue", 2, Phase::AfterScheduler)
    );
    assert_eq!(cb[1].program, Program::Fexit);
    let k: Vec<_> = a
        .iter()
        .filter(|x| x.target == "scx_do_enqueue_task")
        .map(|x| x.program.name())
        .collect();
    assert_eq!(k, ["ktstr_repro_kprobe", "ktstr_repro_fexit"]);
}

fn find_libbpf_include() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KTSTR_LIBBPF_INCLUDE") {
        return Some(PathBuf::from(d));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let built = home.join(".cache/ktstr/schedulers/build/build/include");
    if built.join("bpf/bpf_helpers.h").is_file() {
        return Some(built);
    }
    None
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles bpf/probe.bpf.c; `None` (after saying why) when something is missing.
fn compile(out: &Path) -> Option<PathBuf> {
    let vmlinux = vmlinux_7_3();
    let missing = if !tool("clang-19") {
        Some("clang-19 is not installed".to_string())
    } else if !tool("bpftool") {
        Some("bpftool is not installed".to_string())
    } else if !vmlinux.exists() {
        Some(format!("{} is absent", vmlinux.display()))
    } else if find_libbpf_include().is_none() {
        Some(
            "libbpf headers not found (scripts/build-scx-examples, or KTSTR_LIBBPF_INCLUDE)"
                .to_string(),
        )
    } else {
        None
    };
    if let Some(why) = missing {
        skip(&why);
        return None;
    }
    std::fs::create_dir_all(out).unwrap();
    let dump = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&vmlinux)
        .args(["format", "c"])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(out.join("vmlinux.h"), dump.stdout).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let obj = out.join("probe.bpf.o");
    let st = Command::new("clang-19")
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
            "-Wno-missing-declarations",
        ])
        .arg(format!("-I{}", out.display()))
        .arg(format!("-I{}", find_libbpf_include().unwrap().display()))
        .arg(format!("-I{}", src.display()))
        .arg("-c")
        .arg(src.join("probe.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "clang-19: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    Some(obj)
}

#[test]
fn probe_program_compiles_with_its_programs_and_maps() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ktstr-repro-bpf");
    let Some(obj) = compile(&out) else { return };
    let bytes = std::fs::read(&obj).unwrap();
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for sec in [
        "kprobe/scx_do_enqueue_task",
        "fentry/scx_do_enqueue_task",
        "fexit/scx_do_enqueue_task",
        "tp_btf/sched_ext_exit",
        "ktstr_repro_kprobe",
        "ktstr_repro_fentry",
        "ktstr_repro_fexit",
        "ktstr_repro_exit",
        "probe_cfg",
        "ring",
        "ring_head",
        "frozen",
    ] {
        assert!(has(sec), "{sec} missing from {}", obj.display());
    }
}
