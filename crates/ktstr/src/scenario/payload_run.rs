//! Running payloads in the guest: started in a cgroup of their own beside the workers,
//! stopped at the end of the scenario if still running, judged by how they ended.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::test_support::Payload;

/// Output lines of a payload kept for its result.
const TAIL: usize = 40;
/// How long a payload may take to exit after SIGINT before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How a payload run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadResult {
    /// The payload's name.
    pub name: String,
    /// The arguments it ran with.
    pub args: Vec<String>,
    /// Its exit status, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// True when ktstr stopped it because the scenario ended (not a failure).
    pub stopped_at_end: bool,
    /// Start to end, ms.
    pub runtime_ms: u64,
    /// Last lines of its stdout.
    pub stdout_tail: Vec<String>,
    /// Last lines of its stderr.
    pub stderr_tail: Vec<String>,
}

impl PayloadResult {
    /// Why it counts as failed (`None` when it exited 0 or ran until stopped).
    pub fn failure(&self) -> Option<String> {
        if self.stopped_at_end || self.exit_code == Some(0) {
            return None;
        }
        let how = match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exited with status {c}"),
            (_, Some(s)) => format!("was killed by signal {s}"),
            _ => "ended without a status".into(),
        };
        let last = self
            .stderr_tail
            .last()
            .or(self.stdout_tail.last())
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        Some(format!(
            "payload {} {how} after {} ms{last}",
            self.name, self.runtime_ms
        ))
    }
}

/// A payload process the engine started.
pub(super) struct RunningPayload {
    name: String,
    args: Vec<String>,
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<VecDeque<String>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

fn pump(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<VecDeque<String>>> {
    let sink = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(pipe) = pipe {
        let s = Arc::clone(&sink);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut q) = s.lock() {
                    if q.len() == TAIL {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            }
        });
    }
    sink
}

fn tail(q: &Arc<Mutex<VecDeque<String>>>) -> Vec<String> {
    q.lock()
        .map(|q| q.iter().cloned().collect())
        .unwrap_or_default()
}

impl RunningPayload {
    /// Starts `payload` with `args` (its defaults when `None`) in the cgroup directory `cgroup`.
    pub(super) fn start(payload: &Payload, args: &[String], cgroup: &Path) -> anyhow::Result<Self> {
        let path = payload.guest_path();
        if !Path::new(&path).is_file() {
            anyhow::bail!(
                "payload {} is not in the guest: name it in `payload` or `workloads`",
                payload.name
            );
        }
        let args: Vec<String> = payload
            .default_args
            .iter()
            .map(|a| a.to_string())
            .chain(args.iter().cloned())
            .collect();
        let procs = cgroup.join("cgroup.procs");
        let mut cmd = Command::new(&path);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let procs_c = std::ffi::CString::new(procs.to_string_lossy().as_bytes())?;
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // async-signal-safe functions (open, write, close) on a path prepared before fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let rc = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if rc != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting payload {} ({path}): {e}", payload.name))?;
        Ok(RunningPayload {
            name: payload.name.to_string(),
            args,
            stdout: pump(child.stdout.take()),
            stderr: pump(child.stderr.take()),
            child,
            started: Instant::now(),
        })
    }

    /// Its name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn result(mut self, status: std::process::ExitStatus, stopped_at_end: bool) -> PayloadResult {
        use std::os::unix::process::ExitStatusExt;
        let runtime_ms = self.started.elapsed().as_millis() as u64;
        // Let the output threads drain what it printed last.
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.child.wait();
        PayloadResult {
            name: self.name,
            args: self.args,
            exit_code: status.code(),
            signal: status.signal(),
            stopped_at_end,
            runtime_ms,
            stdout_tail: tail(&self.stdout),
            stderr_tail: tail(&self.stderr),
        }
    }

    /// Waits up to `limit` for it to exit on its own; stops it after that.
    pub(super) fn wait(mut self, limit: Duration) -> PayloadResult {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return self.result(status, false);
            }
            if Instant::now() >= deadline {
                return self.stop();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGINT, then SIGKILL) unless it already exited.
    pub(super) fn stop(mut self) -> PayloadResult {
        if let Ok(Some(status)) = self.child.try_wait() {
            return self.result(status, false);
        }
        // SAFETY: kill(2) on our own child's pid; at worst it has just exited.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return self.result(status, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.result(status, true),
            Err(_) => PayloadResult {
                name: self.name.clone(),
                args: self.args.clone(),
                exit_code: None,
                signal: Some(libc::SIGKILL),
                stopped_at_end: true,
                runtime_ms: self.started.elapsed().as_millis() as u64,
                stdout_tail: tail(&self.stdout),
                stderr_tail: tail(&self.stderr),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: Option<i32>, signal: Option<i32>, stopped: bool) -> PayloadResult {
        PayloadResult {
            name: "bench".into(),
            args: vec![],
            exit_code: code,
            signal,
            stopped_at_end: stopped,
            runtime_ms: 1500,
            stdout_tail: vec!["out".into()],
            stderr_tail: vec!["boom".into()],
        }
    }

    #[test]
    fn failures_name_the_payload_and_how_it_ended() {
        assert_eq!(result(Some(0), None, false).failure(), None);
        assert_eq!(result(None, Some(2), true).failure(), None);
        let f = result(Some(3), None, false).failure().unwrap();
        assert_eq!(f, "payload bench exited with status 3 after 1500 ms: boom");
        assert!(result(None, Some(11), false)
            .failure()
            .unwrap()
            .contains("signal 11"));
    }
}
