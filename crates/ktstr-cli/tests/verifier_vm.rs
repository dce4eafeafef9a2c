//! `ktstr verifier` end to end in the fetched kernel: every BPF program of scx_simple loads
//! with nonzero processed instructions, and a loop that reads past a map value fails with its
//! error line in the folded log.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ktstr, scx_simple, skip, text, vm_slot};

/// One table row: program, type, insns, processed, states, stack, time, verdict.
struct Row {
    name: String,
    processed: u64,
    verdict: String,
}

/// The rows of the table `ktstr verifier` printed (those after a `PROGRAM` header).
fn rows(stdout: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut in_table = false;
    for l in stdout.lines() {
        if l.trim_start().starts_with("PROGRAM ") {
            in_table = true;
            continue;
        }
        if !in_table || !l.starts_with("  ") {
            in_table = false;
            continue;
        }
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        out.push(Row {
            name: cols[0].to_string(),
            processed: cols[3].parse().unwrap_or(0),
            verdict: cols[7..].join(" "),
        });
    }
    out
}

/// `loop40_fail.bpf.c` compiled with clang-19 (`$CLANG`), or `None` after saying why not.
/// `$KTSTR_LOOP40_FAIL_OBJ` names one compiled elsewhere (the nested lane's outer guest has
/// no clang; `scripts/nested` compiles it on the host).
fn loop40_fail_object() -> Option<PathBuf> {
    if let Some(obj) = std::env::var_os("KTSTR_LOOP40_FAIL_OBJ").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(obj));
    }
    compile_bpf("loop40_fail", "loop40_fail", &[])
}

/// `tests/bpf/<source>.bpf.c` of ktstr-verifier compiled with clang-19 (`$CLANG`) and
/// `defines` to `<out>.bpf.o` in a temp dir, or `None` after saying why not.
fn compile_bpf(source: &str, out: &str, defines: &[&str]) -> Option<PathBuf> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang-19".into());
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../ktstr-verifier/tests/bpf/{source}.bpf.c"));
    let dir = std::env::temp_dir().join(format!("ktstr-verifier-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let obj = dir.join(format!("{out}.bpf.o"));
    let out = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .args(defines)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(obj),
        Ok(o) => panic!("{clang} failed on {}: {}", src.display(), text(&o.stderr)),
        Err(e) => {
            skip(&format!(
                "{clang} is not installed ({e}): scripts/setup --sched-ext"
            ));
            None
        }
    }
}

#[test]
fn verifier_table_shows_every_scx_simple_program() {
    let Some(_slot) = vm_slot() else { return };
    let Some(sched) = scx_simple() else { return };
    let out = ktstr(&["verifier", "--scheduler", &sched]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows = rows(&stdout);
    for op in [
        "select_cpu",
        "enqueue",
        "dispatch",
        "running",
        "stopping",
        "enable",
        "init",
        "exit",
    ] {
        let name = format!("simple_{op}");
        assert!(
            rows.iter().any(|r| r.name == name),
            "{name} missing:\n{stdout}"
        );
    }
    for r in &rows {
        assert!(
            r.processed > 0,
            "{}: no processed instructions:\n{stdout}",
            r.name
        );
        assert_eq!(r.verdict, "ok", "{}:\n{stdout}", r.name);
    }
    assert!(
        !stdout.contains("==="),
        "no log expected when all load:\n{stdout}"
    );
}

#[test]
fn verifier_shows_the_failing_loop_and_its_error() {
    let Some(_slot) = vm_slot() else { return };
    let Some(obj) = loop40_fail_object() else {
        return;
    };
    let obj = obj.display().to_string();
    let out = ktstr(&["verifier", "--object", &obj]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(rows[0].name, "loop40_fail");
    assert!(rows[0].processed > 0, "{stdout}");
    assert!(
        rows[0].verdict.starts_with("FAIL: Permission denied"),
        "{stdout}"
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("=== loop40_fail: verifier log, "))
        .unwrap_or_else(|| panic!("no log header:\n{stdout}"));
    assert!(header.contains(" folded to "), "{header}");
    let lines: Vec<&str> = stdout.lines().collect();
    let err = lines
        .iter()
        .position(|l| *l == "invalid access to map value, value_size=156 off=156 size=4")
        .unwrap_or_else(|| panic!("no error line:\n{stdout}"));
    assert_eq!(lines[err - 1], "11: (61) r2 = *(u32 *)(r2 +0)");
    assert!(
        lines.iter().any(|l| l.starts_with("--- ktstr fold: ")),
        "nothing folded"
    );
}

#[test]
fn verifier_compares_two_builds_of_a_program() {
    if std::env::var_os("KTSTR_LOOP40_FAIL_OBJ").is_some() {
        // The nested lane's outer guest has no clang to build the two sides.
        common::say_skipped("no clang here to build the two sides");
        return;
    }
    let Some(_slot) = vm_slot() else { return };
    // The same program name on both sides: the passing loop, then the one whose value is a
    // u32 too short.
    let Some(a) = compile_bpf("loop40_pass", "side_a", &[]) else {
        return;
    };
    let Some(b) = compile_bpf("loop40_fail", "side_b", &["-Dloop40_fail=loop40_pass"]) else {
        return;
    };
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let out = ktstr(&["verifier", "--object", &a, "--object", &b]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a side failed: stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("loop40_pass"))
        .unwrap_or_else(|| panic!("no row for loop40_pass:\n{stdout}"));
    assert!(row.contains("passes -> FAILS"), "{row}");
    assert!(row.contains("<-- differs"), "{row}");
}
