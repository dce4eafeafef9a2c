//! Soak run: many boots, each must end in the command's result or a named
//! infrastructure failure, never a hang or a wrong verdict.
//!
//! `cargo bench -p ktstr-cli --bench soak [-- BOOTS [TOPOLOGY [TCG_THREADS]]]`
//! (defaults: 200 boots, 1,1,2,1, the default TCG mode). Each boot runs a
//! command whose output and exit status are known in advance and checks both.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KTSTR;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let boots: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let topo = args.get(1).cloned().unwrap_or_else(|| "1,1,2,1".into());
    let threads = args.get(2).cloned();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut retries: BTreeMap<String, u32> = BTreeMap::new();
    let mut walls = Vec::new();
    let start = Instant::now();
    for i in 0..boots {
        let code = (i % 7) as i32;
        let script = format!("echo soak-{i}; exit {code}");
        let mut cmd = Command::new(KTSTR);
        cmd.args(["exec", "--timeout", "120", "--topology", &topo]);
        if let Some(t) = &threads {
            cmd.args(["--tcg-threads", t]);
        }
        cmd.args(["--", "sh", "-c", &script]).stdin(Stdio::null());
        let t = Instant::now();
        let out = cmd.output().expect("run ktstr");
        walls.push(t.elapsed().as_secs_f64());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for l in stderr.lines().filter(|l| l.contains("retried:")) {
            let kind = l
                .split(": ")
                .nth(2)
                .unwrap_or("?")
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            *retries.entry(kind).or_default() += 1;
        }
        let outcome = if t.elapsed() > Duration::from_secs(200) {
            "HANG (ktstr did not end within 200 s)".to_string()
        } else if out.status.code() == Some(code) && stdout == format!("soak-{i}\n") {
            "ok: command result, right output and status".to_string()
        } else if out.status.code() == Some(125) && stderr.contains("infrastructure failure") {
            let why = stderr
                .lines()
                .find(|l| l.contains("infrastructure failure"))
                .and_then(|l| l.split("): ").nth(1))
                .unwrap_or("?");
            format!(
                "named infrastructure failure: {}",
                why.chars().take(60).collect::<String>()
            )
        } else {
            format!(
                "WRONG VERDICT: status {:?}, stdout {:?}, stderr tail {:?}",
                out.status.code(),
                stdout.chars().take(40).collect::<String>(),
                stderr.lines().last().unwrap_or("")
            )
        };
        *counts.entry(outcome).or_default() += 1;
        print!("\rboot {}/{boots}", i + 1);
        let _ = std::io::stdout().flush();
    }
    println!();
    walls.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{boots} boots of topology {topo} in {:.0} s (median {:.2} s, max {:.2} s per boot)",
        start.elapsed().as_secs_f64(),
        walls.get(walls.len() / 2).copied().unwrap_or(0.0),
        walls.last().copied().unwrap_or(0.0)
    );
    for (k, v) in &counts {
        println!("{v:>6}  {k}");
    }
    for (k, v) in &retries {
        println!("{v:>6}  retried attempt: {k}");
    }
    let bad = counts
        .keys()
        .any(|k| k.starts_with("WRONG") || k.starts_with("HANG"));
    std::process::exit(i32::from(bad));
}
