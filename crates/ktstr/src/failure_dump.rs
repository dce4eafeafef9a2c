//! The failure dump: one JSON file, written beside the monitor's output when a monitored run
//! ends in a scheduler failure or a guest death, holding what it takes to see what led
//! there:
//!
//! - `what`: the failure in one line;
//! - `schedulers`: what became of each scheduler (exit kind, the kernel's reason, its
//!   `sched_ext:` log lines and the last lines it printed, the debug dump among them);
//! - `snapshot`: the `failure` snapshot, taken when the monitor first saw the scheduler's
//!   error exit, while the guest still ran (absent for a guest that died at once);
//! - `last_samples`: the monitor's last samples, oldest first;
//! - `console_tail`: the kernel console's last lines.

use std::path::{Path, PathBuf};

use ktstr_btf_monitor::Snapshot;
use serde::Serialize;

use crate::monitor::MonitorSummary;
use crate::sched::SchedulerReport;

/// The name of the snapshot taken at a scheduler's error exit.
pub const SNAPSHOT_NAME: &str = "failure";
/// Console lines a dump keeps.
pub const CONSOLE_LINES: usize = 200;

/// What a failure dump holds.
#[derive(Debug, Serialize)]
pub struct FailureDump<'a> {
    /// The failure in one line.
    pub what: &'a str,
    /// Every scheduler of the run, in order.
    pub schedulers: &'a [SchedulerReport],
    /// The snapshot taken at the failure, when the guest was still alive for it.
    pub snapshot: Option<&'a Snapshot>,
    /// The monitor's last samples, oldest first.
    pub last_samples: &'a [serde_json::Value],
    /// The kernel console's last lines.
    pub console_tail: Vec<&'a str>,
}

/// Where the dump of a run whose monitor wrote `monitor_output` goes.
pub fn dump_path(monitor_output: &Path) -> PathBuf {
    monitor_output.with_extension("failure-dump.json")
}

/// Writes the dump of a failed run beside its monitor's output; returns the path.
pub fn write(
    what: &str,
    monitor: &MonitorSummary,
    schedulers: &[SchedulerReport],
    console: &str,
) -> Result<PathBuf, String> {
    let lines: Vec<&str> = console.lines().collect();
    let dump = FailureDump {
        what,
        schedulers,
        snapshot: monitor
            .snapshots
            .iter()
            .rev()
            .find(|s| s.name == SNAPSHOT_NAME),
        last_samples: &monitor.recent,
        console_tail: lines[lines.len().saturating_sub(CONSOLE_LINES)..].to_vec(),
    };
    let path = dump_path(&monitor.output);
    let json = serde_json::to_vec_pretty(&dump).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_keeps_the_failure_snapshot_and_the_console_tail() {
        let dir = std::env::temp_dir().join(format!("ktstr-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sample = ktstr_btf_monitor::Sample {
            cpus: Vec::new(),
            scx: None,
        };
        let snap = |name: &str| Snapshot {
            name: name.into(),
            ..Snapshot::of_sample(&sample, Vec::new())
        };
        let m = MonitorSummary {
            output: dir.join("t.jsonl"),
            snapshots: vec![snap("periodic_0"), snap("failure"), snap("periodic_1")],
            recent: vec![serde_json::json!({"t_ns": 5})],
            ..MonitorSummary::default()
        };
        let console: String = (0..300).map(|i| format!("line {i}\n")).collect();
        let path = write("scheduler ejected: runnable task stall", &m, &[], &console).unwrap();
        assert_eq!(path, dir.join("t.failure-dump.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(v["what"], "scheduler ejected: runnable task stall");
        assert_eq!(v["snapshot"]["name"], "failure");
        assert_eq!(v["last_samples"][0]["t_ns"], 5);
        let tail = v["console_tail"].as_array().unwrap();
        assert_eq!(tail.len(), CONSOLE_LINES);
        assert_eq!(tail[CONSOLE_LINES - 1], "line 299");
    }
}
