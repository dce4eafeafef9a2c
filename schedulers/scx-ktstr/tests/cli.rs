//! The loader's command line, without loading BPF (no root or sched_ext needed).
//! Having an integration test also makes `cargo test --workspace` build the
//! `scx_ktstr` binary that ktstr-cli's VM tests run.

use std::process::Command;

const SCX_KTSTR: &str = env!("CARGO_BIN_EXE_scx_ktstr");

#[test]
fn help_lists_every_knob() {
    let out = Command::new(SCX_KTSTR).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--stall-every",
        "--stall-comm",
        "--error-after",
        "--error-on",
        "--slow-dispatch-us",
        "--slice-us",
        "--watchdog-ms",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_knobs_are_refused_before_loading() {
    for args in [
        &["--watchdog-ms", "60000"][..],
        &["--error-on", "tick"],
        &["--stall-comm", "a-comm-longer-than-15"],
    ] {
        let out = Command::new(SCX_KTSTR).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
