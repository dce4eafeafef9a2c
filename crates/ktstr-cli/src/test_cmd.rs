//! `cargo ktstr test`: run a crate's ktstr tests (under nextest when installed, else
//! `cargo test`) once per kernel, and summarise them as a table, JSON or JUnit XML.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use ktstr::test_support::{gauntlet, TestRecord, Verdict, RESULTS_DIR_ENV};

/// Options of `test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Kernel to run the tests on; repeat to run them on several (default: $KTSTR_KERNEL,
    /// else the newest cached kernel).
    #[arg(long)]
    kernel: Vec<String>,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Run the host-side runqueue monitor beside every VM test (its findings are reported).
    #[arg(long)]
    monitor: bool,
    /// Also run each test on every gauntlet topology preset its constraints admit, as
    /// `gauntlet/<test>/<preset>` (presets bigger than the host on single-threaded TCG;
    /// those whose memory the host cannot hold skipped, saying why).
    #[arg(long)]
    gauntlet: bool,
    /// Say which gauntlet presets the tests' constraints leave out, and why.
    #[arg(short, long)]
    verbose: bool,
    /// Use `cargo test` even when cargo-nextest is installed.
    #[arg(long)]
    cargo_test: bool,
    /// Arguments for `cargo nextest run` (or `cargo test`), after `--`.
    #[arg(last = true)]
    passthrough: Vec<String>,
}

/// One test's record on one kernel.
struct Row {
    kernel_spec: String,
    record: TestRecord,
}

fn nextest_installed() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the tests once per kernel and reports; returns the exit status.
pub fn run(a: &TestArgs, progress: &dyn Fn(&str)) -> Result<i32> {
    let kernels: Vec<Option<String>> = if a.kernel.is_empty() {
        vec![None]
    } else {
        a.kernel.iter().cloned().map(Some).collect()
    };
    let nextest = !a.cargo_test && nextest_installed();
    let mut rows = Vec::new();
    let mut worst = 0;
    for (i, spec) in kernels.iter().enumerate() {
        let kernel = ktstr::kernel::resolve(spec.as_deref(), &mut |m| progress(m))
            .with_context(|| format!("kernel {}", spec.as_deref().unwrap_or("(default)")))?;
        let dir = std::env::temp_dir().join(format!("ktstr-results-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        if nextest {
            cmd.args(["nextest", "run"]);
        } else {
            cmd.arg("test");
        }
        cmd.args(&a.passthrough).env(RESULTS_DIR_ENV, &dir);
        cmd.envs(flag_env(a));
        if let Some(spec) = spec {
            // Resolved (fetched or built) above: the tests find it in the cache.
            cmd.env("KTSTR_KERNEL", spec);
        }
        progress(&format!(
            "running `cargo {}{}` on kernel {}",
            if nextest { "nextest run" } else { "test" },
            a.passthrough
                .iter()
                .map(|p| format!(" {p}"))
                .collect::<String>(),
            kernel.name
        ));
        // The tests' own output streams through; the summary follows.
        let status = cmd.status().context("running cargo")?;
        if !status.success() {
            worst = status.code().unwrap_or(1).max(1);
        }
        if a.gauntlet {
            let rejected = read_rejected(&dir);
            if a.verbose {
                for r in &rejected {
                    progress(r);
                }
            } else if !rejected.is_empty() {
                progress(&format!(
                    "gauntlet: {} test/preset pairs not run: the tests' constraints reject them (-v says which)",
                    rejected.len()
                ));
            }
        }
        for rec in read_records(&dir)? {
            rows.push(Row {
                kernel_spec: kernel.name.clone(),
                record: rec,
            });
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if a.json {
        let recs: Vec<&TestRecord> = rows.iter().map(|r| &r.record).collect();
        println!("{}", serde_json::to_string_pretty(&recs)?);
    } else {
        print!("{}", table(&rows));
    }
    if let Some(path) = &a.junit {
        std::fs::write(path, junit(&rows))
            .with_context(|| format!("writing {}", path.display()))?;
        progress(&format!("JUnit XML written to {}", path.display()));
    }
    if rows.is_empty() {
        progress("no ktstr test ran (none matched, or the crate has no #[ktstr_test])");
    }
    if rows.iter().any(|r| r.record.verdict == Verdict::Fail) && worst == 0 {
        worst = 1;
    }
    Ok(worst)
}

/// The variables the test binaries read for the flags given: `--monitor`, `--gauntlet`, `-v`.
fn flag_env(a: &TestArgs) -> Vec<(&'static str, &'static str)> {
    [
        (a.monitor, ktstr::test_support::runner::MONITOR_ENV),
        (a.gauntlet, gauntlet::GAUNTLET_ENV),
        (a.verbose, gauntlet::VERBOSE_ENV),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, k)| (k, "1"))
    .collect()
}

/// The presets the tests' constraints rejected, as the test binaries' listings wrote them.
fn read_rejected(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(gauntlet::REJECTED_PREFIX)
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn read_records(dir: &Path) -> Result<Vec<TestRecord>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        out.push(
            serde_json::from_str(&text)
                .with_context(|| format!("reading {}", e.path().display()))?,
        );
    }
    out.sort_by(|a: &TestRecord, b: &TestRecord| a.test.cmp(&b.test));
    Ok(out)
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    }
}

/// The summary table: test, kernel, topology, scheduler, duration, verdict, failing check.
fn table(rows: &[Row]) -> String {
    let header = [
        "test",
        "kernel",
        "topology",
        "scheduler",
        "time",
        "verdict",
        "why",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let rec = &r.record;
            [
                rec.test.clone(),
                r.kernel_spec.clone(),
                rec.topology.clone(),
                rec.scheduler.clone(),
                format!("{:.1}s", rec.duration_s),
                verdict_text(rec.verdict).to_string(),
                // Why it failed or skipped, else how it ran (single-threaded TCG).
                rec.reason.clone().or(rec.note.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, v) in width.iter_mut().zip(c.iter()).take(6) {
            *w = (*w).max(v.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, vals: [&str; 7]| {
        let mut l = String::new();
        for (i, v) in vals.iter().enumerate() {
            if i < 6 {
                let _ = write!(l, "{v:<w$}  ", w = width[i]);
            } else {
                l.push_str(v);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, header);
    for c in &cells {
        line(&mut out, [&c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6]]);
    }
    let count = |v| rows.iter().filter(|r| r.record.verdict == v).count();
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
    out
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML: one testsuite per kernel, one testcase per test.
fn junit(rows: &[Row]) -> String {
    let mut kernels: Vec<&str> = rows.iter().map(|r| r.kernel_spec.as_str()).collect();
    kernels.dedup();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for k in kernels {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.kernel_spec == k).collect();
        let failures = mine
            .iter()
            .filter(|r| r.record.verdict == Verdict::Fail)
            .count();
        let skipped = mine
            .iter()
            .filter(|r| r.record.verdict == Verdict::Skip)
            .count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"ktstr ({})\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            xml_escape(k),
            mine.len()
        );
        for r in mine {
            let rec = &r.record;
            let _ = write!(
                out,
                "    <testcase classname=\"ktstr.{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&rec.topology),
                xml_escape(&rec.test),
                rec.duration_s
            );
            match rec.verdict {
                Verdict::Pass => out.push_str("/>\n"),
                Verdict::Skip => {
                    let _ = write!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        xml_escape(rec.reason.as_deref().unwrap_or(""))
                    );
                }
                Verdict::Fail => {
                    let _ = write!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml_escape(rec.reason.as_deref().unwrap_or("")),
                        xml_escape(rec.detail.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(test: &str, verdict: Verdict, reason: Option<&str>) -> Row {
        Row {
            kernel_spec: "debian-7.3".into(),
            record: TestRecord {
                test: test.into(),
                topology: "1,1,2,1".into(),
                kernel: "debian-7.3".into(),
                scheduler: "eevdf".into(),
                duration_s: 4.25,
                verdict,
                reason: reason.map(str::to_string),
                detail: reason.map(|r| format!("{r}\nmore <detail> & stuff")),
                note: None,
            },
        }
    }

    #[test]
    fn the_table_lines_up_and_names_failures() {
        let rows = vec![
            row("steady", Verdict::Pass, None),
            row(
                "frozen_worker_is_caught",
                Verdict::Fail,
                Some("cg_0: worker 7 gap"),
            ),
        ];
        let mut rows = rows;
        let mut big = row("gauntlet/steady/9cpu-3llc-nosmt", Verdict::Pass, None);
        big.record.note = Some("9 vCPUs on 2 host CPUs: single-threaded TCG".into());
        rows.push(big);
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[3].contains("PASS")
                && lines[3].ends_with("9 vCPUs on 2 host CPUs: single-threaded TCG"),
            "{t}"
        );
        assert!(lines[0].starts_with("test "));
        assert!(lines[1].contains("PASS"));
        assert!(lines[2].contains("FAIL") && lines[2].ends_with("cg_0: worker 7 gap"));
        assert_eq!(lines[1].find("debian"), lines[2].find("debian"));
        assert_eq!(lines[4], "2 passed, 1 failed, 0 skipped");
    }

    #[test]
    fn gauntlet_flags_reach_the_test_binaries() {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: TestArgs,
        }
        let w = W::try_parse_from(["t", "--gauntlet", "-v", "--", "-p", "ktstr"]).unwrap();
        assert_eq!(
            flag_env(&w.a),
            [("KTSTR_GAUNTLET", "1"), ("KTSTR_VERBOSE", "1")]
        );
        assert_eq!(w.a.passthrough, ["-p", "ktstr"]);
        let w = W::try_parse_from(["t", "--monitor"]).unwrap();
        assert_eq!(flag_env(&w.a), [("KTSTR_MONITOR", "1")]);
    }

    #[test]
    fn rejected_presets_are_read_back_once_each() {
        let dir = std::env::temp_dir().join(format!("ktstr-rejected-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let line = "gauntlet/t/9cpu-3llc-nosmt: not run: 9 CPUs > max_cpus 4";
        // Two binaries' listings (and a record, which is not one of them).
        std::fs::write(
            dir.join(format!("{}1.txt", gauntlet::REJECTED_PREFIX)),
            format!("{line}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{}2-ignored.txt", gauntlet::REJECTED_PREFIX)),
            format!("{line}\ngauntlet/u/8cpu-2llc-smt: not run: 8 CPUs > max_cpus 4\n"),
        )
        .unwrap();
        std::fs::write(dir.join("t.json"), "{}").unwrap();
        assert_eq!(
            read_rejected(&dir),
            [
                line,
                "gauntlet/u/8cpu-2llc-smt: not run: 8 CPUs > max_cpus 4"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn junit_escapes_and_counts() {
        let rows = vec![
            row("a", Verdict::Pass, None),
            row("b", Verdict::Fail, Some("x < y")),
            row("c", Verdict::Skip, Some("no qemu")),
        ];
        let x = junit(&rows);
        assert!(x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(x.contains("<failure message=\"x &lt; y\">"));
        assert!(x.contains("more &lt;detail&gt; &amp; stuff"));
        assert!(x.contains("<skipped message=\"no qemu\"/>"));
        assert_eq!(x.matches("<testcase").count(), 3);
    }
}
