//! `cargo ktstr test` end to end: it runs a crate's `#[ktstr_test]`s (here the ktstr crate's
//! quick taste, through `cargo test`) and reports them as JSON and JUnit.
//!
//! It takes no VM slot itself: the test it runs takes one.

mod common;

use std::process::{Command, Stdio};

#[test]
fn cargo_ktstr_test_runs_and_tabulates_a_ktstr_test() {
    if !common::vm_runnable() {
        return;
    }
    let junit = std::env::temp_dir().join(format!("ktstr-junit-{}.xml", std::process::id()));
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .args(["test", "--json", "--cargo-test", "--junit"])
        .arg(&junit)
        .args([
            "--",
            "-q",
            "-p",
            "ktstr",
            "--test",
            "ktstr_tests",
            "quick_taste",
        ])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo-ktstr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let json_start = stdout.find("[\n").expect("a JSON array on stdout");
    let records: serde_json::Value =
        serde_json::from_str(&stdout[json_start..]).expect("JSON records");
    let records = records.as_array().expect("an array");
    assert_eq!(records.len(), 1, "{stdout}");
    assert_eq!(records[0]["test"], "quick_taste");
    assert_eq!(records[0]["verdict"], "pass");
    assert_eq!(records[0]["topology"], "1,1,2,1");
    let xml = std::fs::read_to_string(&junit).expect("JUnit file");
    let _ = std::fs::remove_file(&junit);
    assert!(
        xml.contains("name=\"quick_taste\"") && xml.contains("failures=\"0\""),
        "{xml}"
    );
}
