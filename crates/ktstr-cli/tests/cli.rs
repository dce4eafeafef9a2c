//! Command-line tests that need no VM.

use std::io::Write;
use std::process::{Command, Stdio};

const KTSTR: &str = env!("CARGO_BIN_EXE_ktstr");

#[test]
fn verifier_collapse_reads_stdin_and_folds_loops() {
    let mut log = String::from("0: (b7) r1 = 0                        ; R1_w=0\n");
    for i in 0..200 {
        log += &format!("1: (07) r1 += 1                       ; R1_w={}\n", i + 1);
        log += &format!("2: (a5) if r1 < 0xc8 goto pc-2       ; R1_w={}\n", i + 1);
    }
    log += "3: (95) exit\nR0 !read_ok\n";
    let mut child = Command::new(KTSTR)
        .args(["verifier", "collapse", "--stats", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("--- ktstr fold: "), "{text}");
    assert!(
        text.ends_with("R0 !read_ok\n"),
        "the error survives: {text}"
    );
    assert!(text.lines().count() < 60, "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403 lines in"));
}

#[test]
fn unknown_flags_and_missing_files_fail_clearly() {
    let out = Command::new(KTSTR)
        .args(["exec", "--bogus", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(KTSTR)
        .args(["verifier", "collapse", "/no/such/log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/log"));
}
