//! The parent's side of a workload: fork the workers, open the gate, watch, stop, collect.

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use crate::report::WorkerReport;
use crate::shared::SharedRegion;
use crate::sys::{self, NS_PER_MS, NS_PER_SEC};
use crate::worker::{self, WorkerSetup};
use crate::{WakeMechanism, WorkType, WorkloadConfig, WorkloadError};

/// How long stopping workers get to report before they are killed, ns: generous, as a
/// guest on QEMU TCG sharing busy host CPUs may run a worker only now and then.
const STOP_TIMEOUT_NS: u64 = 10 * NS_PER_SEC;
/// How long killed workers get to be reaped before they are given up on, ns.
const KILL_GRACE_NS: u64 = 2 * NS_PER_SEC;
/// How long `spawn` waits for workers to reach the start gate, ns.
const READY_TIMEOUT_NS: u64 = 5 * NS_PER_SEC;
/// Most report bytes read from one worker (a report is well under 1 MiB).
const MAX_REPORT_BYTES: usize = 16 << 20;

/// One forked worker as the parent tracks it.
struct WorkerProc {
    pid: i32,
    report: OwnedFd,
    buf: Vec<u8>,
    eof: bool,
    status: Option<i32>,
    timed_out: bool,
}

/// A running workload: one forked process per worker, sharing one memory region.
pub struct WorkloadHandle {
    shared: SharedRegion,
    procs: Vec<WorkerProc>,
    work_name: String,
    started: bool,
}

impl fmt::Debug for WorkloadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadHandle")
            .field("work_type", &self.work_name)
            .field("pids", &self.pids())
            .field("started", &self.started)
            .finish()
    }
}

impl WorkloadHandle {
    /// Forks one process per worker; each sets comm, is moved into `cfg.cgroup`, applies
    /// affinity/policy/nice (recording failures in its report) and waits at the start gate.
    pub fn spawn(cfg: &WorkloadConfig) -> Result<Self, WorkloadError> {
        cfg.validate()?;
        let workers = cfg.num_workers;
        let leaves = cfg.work_type.leaf_count();
        let shared = SharedRegion::new(workers, leaves)?;
        let mut pipe_ends: Vec<OwnedFd> = Vec::new();
        let mut inboxes: Vec<Option<(RawFd, RawFd)>> = vec![None; leaves * workers];
        let mut pipe_error = None;
        cfg.work_type.for_each_leaf(&mut |leaf, work| {
            let ring = match work {
                WorkType::FutexPingPong { .. } => 2,
                WorkType::WakeChain {
                    depth,
                    wake: WakeMechanism::Futex,
                    ..
                } => *depth,
                WorkType::PipeIo { .. }
                | WorkType::CachePipe { .. }
                | WorkType::WakeChain {
                    wake: WakeMechanism::Pipe,
                    ..
                } => {
                    for index in 0..workers {
                        match inbox_pipe() {
                            Ok((read, write)) => {
                                inboxes[leaf * workers + index] =
                                    Some((read.as_raw_fd(), write.as_raw_fd()));
                                pipe_ends.extend([read, write]);
                            }
                            Err(e) => {
                                // The first failure is the one worth reporting; stop there.
                                pipe_error = Some(e);
                                return;
                            }
                        }
                    }
                    return;
                }
                _ => return,
            };
            // Each ring starts with its token at its first member.
            for base in (0..workers).step_by(ring.max(1)) {
                shared.coop(leaf, base).word.store(1, Ordering::Relaxed);
            }
        });
        if let Some(e) = pipe_error {
            return Err(e);
        }

        let comm = cfg.effective_comm();
        let parent = sys::getpid();
        let mut handle = Self {
            shared,
            procs: Vec::with_capacity(workers),
            work_name: cfg.work_type.name().to_string(),
            started: false,
        };
        for index in 0..workers {
            // On any error below, dropping `handle` kills the workers forked so far.
            let (report_read, report_write) = sys::pipe().map_err(|source| WorkloadError::Sys {
                what: format!("pipe for worker {index}'s report"),
                source,
            })?;
            // SAFETY: fork has no preconditions; the child only runs `worker::run`, which
            // avoids locks other than malloc's and ends with `_exit`.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(WorkloadError::last_os(format!("fork worker {index}")));
            }
            if pid == 0 {
                worker::run(WorkerSetup {
                    index,
                    cfg,
                    comm: &comm,
                    shared: &handle.shared,
                    inboxes: &inboxes,
                    report_fd: report_write.as_raw_fd(),
                    parent,
                });
            }
            drop(report_write);
            handle.procs.push(WorkerProc {
                pid,
                report: report_read,
                buf: Vec::new(),
                eof: false,
                status: None,
                timed_out: false,
            });
            sys::set_nonblocking(handle.procs[index].report.as_raw_fd()).map_err(|source| {
                WorkloadError::Sys {
                    what: format!("O_NONBLOCK on worker {index}'s report pipe"),
                    source,
                }
            })?;
            if let Some(dir) = &cfg.cgroup {
                let path = dir.join("cgroup.procs");
                let value = pid.to_string();
                std::fs::write(&path, &value).map_err(|source| WorkloadError::Write {
                    path,
                    value,
                    source,
                })?;
            }
            let placed = &handle.shared.slot(index).placed;
            placed.store(1, Ordering::Release);
            sys::futex_wake(placed, i32::MAX);
        }
        drop(pipe_ends);
        handle.wait_ready();
        Ok(handle)
    }

    /// Waits (bounded) until every live worker sits at the start gate.
    fn wait_ready(&mut self) {
        let deadline = sys::now_ns().saturating_add(READY_TIMEOUT_NS);
        loop {
            self.reap();
            let waiting = self.procs.iter().enumerate().any(|(index, p)| {
                p.status.is_none() && self.shared.slot(index).ready.load(Ordering::Acquire) == 0
            });
            if !waiting || sys::now_ns() >= deadline {
                return;
            }
            sys::sleep_ns(NS_PER_MS);
        }
    }

    /// Opens the start gate; each worker's wall clock starts as it passes.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let gate = &self.shared.header().gate;
        gate.store(1, Ordering::Release);
        sys::futex_wake(gate, i32::MAX);
    }

    /// Worker process ids, in worker order.
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Live work-unit counts per worker, read from shared memory.
    pub fn progress(&self) -> Vec<u64> {
        (0..self.procs.len())
            .map(|index| self.shared.slot(index).work_units.load(Ordering::Relaxed))
            .collect()
    }

    /// `sched_setaffinity(cpus)` on every live worker; the first failure is returned.
    pub fn set_affinity(&self, cpus: &BTreeSet<usize>) -> Result<(), WorkloadError> {
        let mut first_error = None;
        for p in self.procs.iter().filter(|p| p.status.is_none()) {
            if let Err(source) = sys::set_affinity(p.pid, cpus) {
                if source.raw_os_error() == Some(libc::ESRCH) {
                    continue;
                }
                let list: Vec<u32> = cpus.iter().map(|&c| c as u32).collect();
                first_error.get_or_insert(WorkloadError::Sys {
                    what: format!(
                        "sched_setaffinity({}) on worker {}",
                        ktstr_topology::format_cpu_list(&list),
                        p.pid
                    ),
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every worker and returns their reports in worker order.
    ///
    /// Workers get 10 s to report after the stop request (stopped ones are SIGCONTed);
    /// the rest are SIGKILLed. A worker that died or was killed yields `completed: false`,
    /// `exit_info` saying how it ended, and the counters it last published.
    pub fn stop_and_collect(mut self) -> Vec<WorkerReport> {
        self.request_stop();
        for p in self.procs.iter().filter(|p| p.status.is_none()) {
            sys::kill(p.pid, libc::SIGCONT);
        }
        self.pump_until(sys::now_ns().saturating_add(STOP_TIMEOUT_NS));
        for p in self.procs.iter_mut().filter(|p| p.status.is_none()) {
            p.timed_out = true;
            sys::kill(p.pid, libc::SIGKILL);
        }
        self.pump_until(sys::now_ns().saturating_add(KILL_GRACE_NS));
        self.read_reports();
        (0..self.procs.len()).map(|i| self.report(i)).collect()
    }

    fn request_stop(&self) {
        let header = self.shared.header();
        header.stop.store(1, Ordering::Release);
        sys::futex_wake(&header.gate, i32::MAX);
        for index in 0..self.procs.len() {
            sys::futex_wake(&self.shared.slot(index).placed, i32::MAX);
        }
    }

    /// Reads reports and reaps workers until all are reaped or `deadline` passes.
    fn pump_until(&mut self, deadline: u64) {
        loop {
            self.read_reports();
            self.reap();
            if self.procs.iter().all(|p| p.status.is_some()) {
                return;
            }
            let now = sys::now_ns();
            if now >= deadline {
                return;
            }
            let slice_ms = ((deadline - now) / NS_PER_MS).clamp(1, 10) as i32;
            let mut fds: Vec<libc::pollfd> = self
                .procs
                .iter()
                .filter(|p| !p.eof)
                .map(|p| libc::pollfd {
                    fd: p.report.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if fds.is_empty() {
                sys::sleep_ns(slice_ms as u64 * NS_PER_MS);
            } else {
                // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, slice_ms) };
            }
        }
    }

    /// Reads whatever the report pipes hold, without blocking.
    fn read_reports(&mut self) {
        let mut chunk = [0u8; 16384];
        for p in self.procs.iter_mut().filter(|p| !p.eof) {
            loop {
                match sys::read(p.report.as_raw_fd(), &mut chunk) {
                    Ok(0) => {
                        p.eof = true;
                        break;
                    }
                    Ok(n) => {
                        if p.buf.len() + n > MAX_REPORT_BYTES {
                            p.eof = true;
                            break;
                        }
                        p.buf.extend_from_slice(&chunk[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn reap(&mut self) {
        for p in self.procs.iter_mut().filter(|p| p.status.is_none()) {
            p.status = sys::try_reap(p.pid);
        }
    }

    /// Worker `index`'s report: its own if it sent one, else what shared memory tells.
    fn report(&self, index: usize) -> WorkerReport {
        let p = &self.procs[index];
        let line = p.buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let parsed = serde_json::from_slice::<WorkerReport>(line);
        if let Ok(report) = parsed {
            return report;
        }
        let mut report =
            worker::report_from_shared(self.shared.slot(index), p.pid, index, &self.work_name);
        let ended = match p.status {
            Some(status) => sys::describe_status(status),
            None => "could not be reaped after SIGKILL".to_string(),
        };
        let info = if p.timed_out {
            format!(
                "did not stop within {} s; {ended}",
                STOP_TIMEOUT_NS / NS_PER_SEC
            )
        } else if p
            .status
            .is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0)
        {
            let why = match &parsed {
                Err(e) if !line.is_empty() => format!(" ({e})"),
                _ => String::new(),
            };
            format!("{ended} without a readable report{why}")
        } else {
            ended
        };
        report.exit_info = Some(info);
        report
    }
}

/// A worker's pipe inbox, both ends non-blocking (waits use poll with timeouts).
fn inbox_pipe() -> Result<(OwnedFd, OwnedFd), WorkloadError> {
    let sys_err = |source| WorkloadError::Sys {
        what: "pipe for a PipeIo inbox".into(),
        source,
    };
    let (read, write) = sys::pipe().map_err(sys_err)?;
    sys::set_nonblocking(read.as_raw_fd()).map_err(sys_err)?;
    sys::set_nonblocking(write.as_raw_fd()).map_err(sys_err)?;
    Ok((read, write))
}

impl Drop for WorkloadHandle {
    fn drop(&mut self) {
        if self.procs.iter().all(|p| p.status.is_some()) {
            return;
        }
        self.request_stop();
        for p in self.procs.iter().filter(|p| p.status.is_none()) {
            sys::kill(p.pid, libc::SIGKILL);
        }
        self.pump_until(sys::now_ns().saturating_add(KILL_GRACE_NS));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{AffinityMode, SchedPolicy};

    fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// Spawns, starts, runs `ms`, collects.
    fn run(cfg: &WorkloadConfig, ms: u64) -> Vec<WorkerReport> {
        let mut handle = WorkloadHandle::spawn(cfg).unwrap();
        handle.start();
        sleep_ms(ms);
        handle.stop_and_collect()
    }

    /// Every worker completed, did work, and saw at least one CPU.
    fn assert_progress(reports: &[WorkerReport], workers: usize) {
        assert_eq!(reports.len(), workers);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.index, i);
            assert!(r.completed, "worker {i} did not complete: {r:?}");
            assert_eq!(r.exit_info, None);
            assert!(r.work_units > 0, "worker {i} made no progress: {r:?}");
            assert!(!r.cpus_used.is_empty());
            assert!(r.iterations >= 2);
        }
    }

    fn wake_samples_everywhere(reports: &[WorkerReport]) {
        for r in reports {
            assert!(r.wake_sample_total > 0, "no wake samples: {r:?}");
            assert!(!r.wake_latencies_ns.is_empty());
            assert!(r.wake_latencies_ns.len() as u64 <= r.wake_sample_total);
        }
    }

    fn pid_alive(pid: i32) -> bool {
        // A reaped worker's /proc entry is gone (barring an unlikely pid reuse).
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn spin_wait_progresses_on_every_worker() {
        let cfg = WorkloadConfig::new(2, WorkType::SpinWait);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pids = handle.pids();
        assert_eq!(pids.len(), 2);
        assert_eq!(sys::get_comm_of(pids[0]), "ktstr-spinwait");
        assert_eq!(
            handle.progress(),
            vec![0, 0],
            "no work before the gate opens"
        );
        handle.start();
        sleep_ms(300);
        assert!(handle.progress().iter().all(|&units| units > 0));
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 2);
        for (r, pid) in reports.iter().zip(&pids) {
            assert_eq!(r.tid, *pid);
            assert_eq!(r.work_type, "SpinWait");
            assert!(r.wall_time_ns >= 250 * NS_PER_MS, "{r:?}");
            assert!(r.cpu_time_ns > 0);
            assert!(r.off_cpu_ns <= r.wall_time_ns);
            assert!(!r.allowed_cpus.is_empty());
            assert_eq!(r.cpus_used.values().sum::<u64>(), r.iterations);
            assert!(r.max_gap_cpu.is_some());
        }
    }

    #[test]
    fn ids_and_memory_policy_apply_before_work() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
            .uid(65534)
            .gid(65533)
            .mem_policy(crate::MemPolicy::Local, crate::MpolFlags::NONE);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pid = handle.pids()[0];
        handle.start();
        sleep_ms(200);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let numa = std::fs::read_to_string(format!("/proc/{pid}/numa_maps"));
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        if !root {
            let err = reports[0].sched_policy_error.clone().unwrap_or_default();
            assert!(err.contains("setresgid(65533)"), "{err}");
            return;
        }
        assert_eq!(reports[0].sched_policy_error, None);
        let line = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        };
        assert_eq!(line("Uid:").as_deref(), Some("65534 65534 65534 65534"));
        assert_eq!(line("Gid:").as_deref(), Some("65533 65533 65533 65533"));
        assert_eq!(line("Groups:").as_deref(), Some("65533"));
        // Without CONFIG_NUMA there is no numa_maps and no memory policy to see.
        if let Ok(numa) = numa {
            assert!(
                numa.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("local")),
                "no mapping under the local policy:\n{numa}"
            );
        }
    }

    #[test]
    fn fixed_affinity_keeps_worker_on_cpu_zero() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
            .affinity(AffinityMode::Fixed([0].into()))
            .comm("pinned-worker-with-long-name");
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        assert_eq!(sys::get_comm_of(handle.pids()[0]), "pinned-worker-w");
        handle.start();
        sleep_ms(250);
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        assert_eq!(
            reports[0].cpus_used.keys().copied().collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(reports[0].allowed_cpus, [0]);
        assert_eq!(reports[0].migration_count, 0);
        assert_eq!(reports[0].affinity_error, None);
    }

    #[test]
    fn impossible_affinity_and_policy_are_reported_not_fatal() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
            .affinity(AffinityMode::Fixed([MAX_AFFINITY_CPU_FOR_TEST].into()))
            .sched_policy(SchedPolicy::Fifo(1000));
        let reports = run(&cfg, 200);
        assert_progress(&reports, 1);
        let affinity = reports[0].affinity_error.as_deref().unwrap_or_default();
        assert!(affinity.contains("sched_setaffinity(1000)"), "{affinity}");
        let policy = reports[0].sched_policy_error.as_deref().unwrap_or_default();
        assert!(policy.contains("SCHED_FIFO"), "{policy}");
    }

    const MAX_AFFINITY_CPU_FOR_TEST: usize = 1000;

    #[test]
    fn batch_policy_and_nice_apply_cleanly() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
            .sched_policy(SchedPolicy::Batch)
            .nice(5);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pid = handle.pids()[0];
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the comm: state is field 3, nice field 19, policy field 41.
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        assert_eq!(fields[16], "5", "nice");
        assert_eq!(fields[38], libc::SCHED_BATCH.to_string(), "policy");
        handle.start();
        sleep_ms(150);
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        assert_eq!(reports[0].sched_policy_error, None);
    }

    #[test]
    fn sigstopped_worker_reports_gap() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pid = handle.pids()[0];
        handle.start();
        sleep_ms(100);
        sys::kill(pid, libc::SIGSTOP);
        sleep_ms(700);
        sys::kill(pid, libc::SIGCONT);
        sleep_ms(100);
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        let r = &reports[0];
        assert!(r.max_gap_ms >= 600, "{r:?}");
        assert!(r.max_gap_at_ms >= r.max_gap_ms, "{r:?}");
        assert!(r.off_cpu_ns >= 600 * NS_PER_MS);
    }

    #[test]
    fn worker_left_stopped_reports_gap_at_stop() {
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        handle.start();
        sleep_ms(50);
        sys::kill(handle.pids()[0], libc::SIGSTOP);
        sleep_ms(700);
        let reports = handle.stop_and_collect();
        assert!(reports[0].completed, "{:?}", reports[0]);
        assert!(reports[0].max_gap_ms >= 600, "{:?}", reports[0]);
    }

    #[test]
    fn pipe_io_pairs_measure_wake_latency() {
        let reports = run(&WorkloadConfig::new(2, WorkType::pipe_io()), 300);
        assert_progress(&reports, 2);
        wake_samples_everywhere(&reports);
    }

    #[test]
    fn futex_ping_pong_measures_wake_latency() {
        let reports = run(&WorkloadConfig::new(2, WorkType::futex_ping_pong()), 300);
        assert_progress(&reports, 2);
        wake_samples_everywhere(&reports);
    }

    #[test]
    fn wake_chain_measures_wake_latency() {
        for wake in [WakeMechanism::Futex, WakeMechanism::Pipe] {
            let work = WorkType::WakeChain {
                depth: 3,
                wake,
                work_per_hop: Duration::from_micros(20),
            };
            // Two rings of three.
            let reports = run(&WorkloadConfig::new(6, work), 300);
            assert_progress(&reports, 6);
            wake_samples_everywhere(&reports);
            // One token per ring: its members' hop counts differ by at most one.
            for ring in reports.chunks(3) {
                let units: Vec<u64> = ring.iter().map(|r| r.work_units).collect();
                let spread = units.iter().max().unwrap() - units.iter().min().unwrap();
                assert!(spread <= 1, "{wake:?}: hops {units:?}");
            }
        }
    }

    #[test]
    fn futex_fan_out_measures_wake_latency() {
        let cfg = WorkloadConfig::new(
            3,
            WorkType::FutexFanOut {
                fan_out: 2,
                spin_iters: 1024,
            },
        );
        let reports = run(&cfg, 300);
        assert_progress(&reports, 3);
        wake_samples_everywhere(&reports);
        // Every waiter saw (about) every round the waker started.
        assert!(reports[1].work_units + 1 >= reports[0].work_units);
    }

    #[test]
    fn timer_latency_measures_overshoot() {
        let cfg = WorkloadConfig::new(1, WorkType::TimerLatency { interval_us: 500 });
        let reports = run(&cfg, 300);
        assert_progress(&reports, 1);
        let r = &reports[0];
        assert!(r.timer_sample_total > 0);
        assert_eq!(r.timer_latencies_ns.len() as u64, r.timer_sample_total);
        assert_eq!(r.work_units, r.timer_sample_total);
    }

    fn custom_units() -> u64 {
        sys::spin(2000);
        3
    }

    fn custom_panics() -> u64 {
        panic!("custom work failed on purpose")
    }

    /// Runs one worker (or a group) of `work` for 250 ms and checks progress.
    fn makes_progress(work: WorkType) -> Vec<WorkerReport> {
        let workers = work.group_size();
        let reports = run(&WorkloadConfig::new(workers, work), 250);
        assert_progress(&reports, workers);
        reports
    }

    #[test]
    fn cache_yield_progresses() {
        makes_progress(WorkType::CacheYield {
            size_kib: 64,
            stride: 64,
        });
    }

    #[test]
    fn ipc_variance_progresses() {
        makes_progress(WorkType::IpcVariance {
            hot_iters: 1000,
            cold_iters: 100,
            period_iters: 2,
        });
    }

    #[test]
    fn mutex_contention_lets_every_contender_in() {
        let reports = makes_progress(WorkType::MutexContention {
            contenders: 3,
            hold_iters: 2000,
            work_iters: 500,
        });
        assert!(reports.iter().all(|r| r.work_units > 0), "{reports:?}");
    }

    #[test]
    fn idle_churn_sleeps_and_measures_wakeups() {
        let work = WorkType::IdleChurn {
            burst_duration: Duration::from_millis(1),
            sleep_duration: Duration::from_millis(5),
            precise_timing: true,
        };
        let r = makes_progress(work);
        assert!(r[0].wake_sample_total >= 10, "{:?}", r[0]);
        // Asleep most of the time: 5 ms of every 6.
        assert!(r[0].off_cpu_ns > r[0].wall_time_ns / 2, "{:?}", r[0]);
    }

    #[test]
    fn policy_churn_changes_policy() {
        let cfg = WorkloadConfig::new(1, WorkType::PolicyChurn { spin_iters: 4096 });
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pid = handle.pids()[0];
        handle.start();
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while seen.len() < 3 && Instant::now() < deadline {
            // Field 41 of /proc/<pid>/stat is the scheduling policy.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            if let Some(p) = after.split_whitespace().nth(38) {
                seen.insert(p.to_string());
            }
        }
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        assert!(seen.len() >= 3, "policies seen: {seen:?}");
    }

    #[test]
    fn thundering_herd_wakes_every_waiter_each_batch() {
        let work = WorkType::ThunderingHerd {
            waiters: 3,
            batches: 3,
            inter_batch_ms: 20,
        };
        let reports = run(&WorkloadConfig::new(4, work), 300);
        // The waker broadcast three times and every waiter woke for each.
        for r in &reports {
            assert_eq!(r.work_units, 3, "{r:?}");
        }
        assert!(reports[1..].iter().all(|r| r.wake_sample_total == 3));
    }

    /// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
    fn stat_field(pid: i32, n: usize) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(n - 3).map(str::to_string)
    }

    #[test]
    fn preempt_storm_runs_one_real_time_worker() {
        let work = WorkType::PreemptStorm {
            cfs_workers: 1,
            rt_burst_iters: 4096,
            rt_sleep_us: 500,
        };
        let mut handle = WorkloadHandle::spawn(&WorkloadConfig::new(2, work)).unwrap();
        let pids = handle.pids();
        handle.start();
        sleep_ms(200);
        let policies: Vec<Option<String>> = pids.iter().map(|&p| stat_field(p, 41)).collect();
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 2);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(policies[0].as_deref(), Some("1"), "{policies:?}");
        }
        assert_eq!(policies[1].as_deref(), Some("0"), "{policies:?}");
    }

    #[test]
    fn signal_storm_pairs_catch_each_others_signals() {
        let work = WorkType::SignalStorm {
            signals_per_iter: 2,
            work_iters: 4096,
        };
        let mut handle = WorkloadHandle::spawn(&WorkloadConfig::new(2, work)).unwrap();
        let pids = handle.pids();
        handle.start();
        sleep_ms(200);
        let caught: Vec<u64> = pids
            .iter()
            .map(|p| {
                let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
                let line = status.lines().find(|l| l.starts_with("SigCgt:")).unwrap();
                u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
            })
            .collect();
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 2);
        // Both survived each other's SIGUSR1s, caught by the handler.
        let usr1 = 1u64 << (libc::SIGUSR1 - 1);
        assert!(caught.iter().all(|c| c & usr1 != 0), "{caught:x?}");
        assert!(reports.iter().all(|r| r.exit_info.is_none()));
    }

    #[test]
    fn numa_migration_churn_progresses() {
        makes_progress(WorkType::NumaMigrationChurn { period_ms: 5 });
    }

    #[test]
    fn cache_pipe_pairs_wake_each_other() {
        let reports = makes_progress(WorkType::CachePipe {
            size_kib: 64,
            burst_iters: 512,
        });
        wake_samples_everywhere(&reports);
    }

    #[test]
    fn fan_out_compute_wakes_and_computes_in_rounds() {
        let work = WorkType::FanOutCompute {
            fan_out: 2,
            cache_footprint_kib: 24,
            operations: 2,
            sleep_usec: 200,
        };
        let reports = makes_progress(work);
        wake_samples_everywhere(&reports[1..]);
        // Rounds: the messenger finishes one only after both workers did theirs.
        let rounds = reports[0].work_units;
        for r in &reports[1..] {
            assert!(r.work_units.abs_diff(rounds) <= 1, "{reports:?}");
        }
    }

    #[test]
    fn cross_affinity_churn_without_a_cgroup_only_spins() {
        // Outside a dedicated cgroup it must leave every other process alone.
        let before = sys::get_affinity(0).unwrap();
        makes_progress(WorkType::CrossAffinityChurn { spin_iters: 1024 });
        assert_eq!(sys::get_affinity(0).unwrap(), before);
    }

    #[test]
    fn cgroup_churn_without_a_cgroup_stays_put() {
        let cfg = WorkloadConfig::new(
            1,
            WorkType::CgroupChurn {
                groups: 2,
                cycle_ms: 5,
            },
        );
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        let pid = handle.pids()[0];
        handle.start();
        sleep_ms(100);
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let reports = handle.stop_and_collect();
        assert_progress(&reports, 1);
        let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(theirs, ours);
    }

    #[test]
    fn producer_consumer_queue_backs_up_when_consumers_are_slow() {
        // 2 producers at 1 kHz against one consumer spinning long per item: the queue fills
        // (depth 8), further items are dropped, so the consumer takes about what fits in
        // its time, far fewer than were offered.
        let work = WorkType::ProducerConsumerImbalance {
            producers: 2,
            consumers: 1,
            produce_rate_hz: 1000,
            consume_iters: 5_000_000,
            queue_depth_target: 8,
        };
        let reports = makes_progress(work);
        let produced: u64 = reports[..2].iter().map(|r| r.work_units).sum();
        let consumed = reports[2].work_units;
        assert!(
            produced >= consumed,
            "{produced} produced, {consumed} consumed"
        );
        assert!(
            produced <= consumed + 8 + 2,
            "{produced} produced, {consumed} consumed"
        );
    }

    #[test]
    fn rt_starvation_starves_the_normal_worker_on_a_shared_cpu() {
        let work = WorkType::RtStarvation {
            rt_workers: 1,
            cfs_workers: 1,
            rt_priority: 1,
            burst_iters: 20_000,
        };
        // Both on CPU 0, for a short while (the real-time worker has it to itself).
        let cfg = WorkloadConfig::new(2, work).affinity(AffinityMode::Fixed([0].into()));
        let reports = run(&cfg, 150);
        assert_eq!(reports.len(), 2);
        assert!(reports[0].work_units > 0, "{reports:?}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(
                reports[1].work_units * 4 < reports[0].work_units,
                "the normal worker was not starved: {} vs {}",
                reports[1].work_units,
                reports[0].work_units
            );
        }
    }

    #[test]
    fn numa_working_set_sweep_progresses() {
        makes_progress(WorkType::NumaWorkingSetSweep {
            region_kib: 256,
            sweep_period_ms: 10,
            target_nodes: vec![0],
        });
    }

    #[test]
    fn cgroup_attach_storm_without_a_cgroup_does_nothing() {
        let work = WorkType::CgroupAttachStorm {
            dest: "elsewhere".into(),
            reap: crate::ReapMode::Waitpid,
        };
        let reports = run(&WorkloadConfig::new(1, work), 100);
        assert_eq!(reports[0].work_units, 0, "{reports:?}");
        assert!(reports[0].completed);
    }

    #[test]
    fn fork_exit_progresses() {
        makes_progress(WorkType::ForkExit);
    }

    #[test]
    fn page_fault_churn_progresses() {
        makes_progress(WorkType::PageFaultChurn {
            region_kib: 256,
            touches_per_cycle: 64,
            spin_iters: 1024,
        });
    }

    #[test]
    fn cache_pressure_progresses() {
        makes_progress(WorkType::CachePressure {
            size_kib: 256,
            stride: 64,
        });
    }

    #[test]
    fn yield_heavy_progresses() {
        makes_progress(WorkType::YieldHeavy);
    }

    #[test]
    fn mixed_progresses() {
        makes_progress(WorkType::Mixed);
    }

    #[test]
    fn bursty_progresses_and_sleeps() {
        let r = makes_progress(WorkType::bursty(
            Duration::from_millis(20),
            Duration::from_millis(40),
        ));
        assert!(r[0].max_gap_ms >= 30, "{:?}", r[0]);
        assert!(r[0].off_cpu_ns > 0);
    }

    #[test]
    fn nice_sweep_progresses() {
        makes_progress(WorkType::NiceSweep);
    }

    #[test]
    fn affinity_churn_progresses_and_restores_affinity() {
        let r = makes_progress(WorkType::affinity_churn());
        let all = sys::get_affinity(0).unwrap();
        assert_eq!(r[0].allowed_cpus, all);
    }

    #[test]
    fn sequence_cycles_through_phases() {
        let r = makes_progress(WorkType::sequence(vec![
            (WorkType::SpinWait, 20),
            (WorkType::pipe_io(), 20),
            (WorkType::TimerLatency { interval_us: 1000 }, 20),
        ]));
        assert_eq!(r[0].work_type, "Sequence");
        wake_samples_everywhere(&r);
        assert!(r.iter().all(|w| w.timer_sample_total > 0));
    }

    #[test]
    fn custom_function_progresses() {
        let r = makes_progress(WorkType::custom("triple", custom_units));
        assert_eq!(r[0].work_type, "triple");
        assert_eq!(r[0].work_units % 3, 0);
    }

    #[test]
    fn panicking_custom_function_is_reported() {
        let cfg = WorkloadConfig::new(1, WorkType::custom("boom", custom_panics));
        let r = run(&cfg, 100);
        assert!(!r[0].completed);
        let info = r[0].exit_info.as_deref().unwrap_or_default();
        assert!(info.contains("custom work failed on purpose"), "{info}");
    }

    #[test]
    fn sigkilled_worker_is_reported_with_shared_counters() {
        let cfg = WorkloadConfig::new(2, WorkType::SpinWait);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        handle.start();
        sleep_ms(150);
        sys::kill(handle.pids()[0], libc::SIGKILL);
        sleep_ms(100);
        let reports = handle.stop_and_collect();
        let dead = &reports[0];
        assert!(!dead.completed);
        let info = dead.exit_info.as_deref().unwrap_or_default();
        assert!(info.contains("SIGKILL"), "{info}");
        assert!(dead.work_units > 0 && dead.iterations > 0, "{dead:?}");
        assert!(!dead.cpus_used.is_empty());
        assert!(reports[1].completed);
    }

    #[test]
    fn stop_is_bounded_when_partner_died() {
        for work in [WorkType::futex_ping_pong(), WorkType::pipe_io()] {
            let mut handle = WorkloadHandle::spawn(&WorkloadConfig::new(2, work)).unwrap();
            handle.start();
            sleep_ms(100);
            sys::kill(handle.pids()[1], libc::SIGKILL);
            sleep_ms(100);
            let t0 = Instant::now();
            let reports = handle.stop_and_collect();
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            assert!(reports[0].completed);
            assert!(!reports[1].completed);
        }
    }

    #[test]
    fn stop_before_start_reports_no_work() {
        let handle = WorkloadHandle::spawn(&WorkloadConfig::new(2, WorkType::SpinWait)).unwrap();
        let t0 = Instant::now();
        let reports = handle.stop_and_collect();
        assert!(t0.elapsed() < Duration::from_secs(2));
        for r in reports {
            assert!(r.completed);
            assert_eq!(r.work_units, 0);
        }
    }

    #[test]
    fn drop_kills_and_reaps_workers() {
        let mut handle =
            WorkloadHandle::spawn(&WorkloadConfig::new(2, WorkType::SpinWait)).unwrap();
        handle.start();
        let pids = handle.pids();
        assert!(pids.iter().all(|&p| pid_alive(p)));
        drop(handle);
        assert!(pids.iter().all(|&p| !pid_alive(p)));
    }

    #[test]
    fn set_affinity_repins_live_workers() {
        let mut handle =
            WorkloadHandle::spawn(&WorkloadConfig::new(2, WorkType::SpinWait)).unwrap();
        handle.start();
        handle.set_affinity(&[0].into()).unwrap();
        assert!(handle
            .set_affinity(&[MAX_AFFINITY_CPU_FOR_TEST].into())
            .is_err());
        sleep_ms(100);
        let reports = handle.stop_and_collect();
        for r in reports {
            assert_eq!(r.allowed_cpus, [0]);
        }
    }

    #[test]
    fn handle_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WorkloadHandle>();
        let mut handle =
            WorkloadHandle::spawn(&WorkloadConfig::new(1, WorkType::SpinWait)).unwrap();
        handle.start();
        let reports = std::thread::spawn(move || {
            sleep_ms(100);
            handle.stop_and_collect()
        })
        .join()
        .unwrap();
        assert_progress(&reports, 1);
    }

    #[test]
    fn spawn_rejects_partial_groups_and_missing_cgroup() {
        let err = WorkloadHandle::spawn(&WorkloadConfig::new(3, WorkType::pipe_io()));
        assert!(matches!(err, Err(WorkloadError::GroupSize { .. })));
        let cfg = WorkloadConfig::new(1, WorkType::SpinWait).cgroup("/nonexistent/ktstr-cg");
        let err = WorkloadHandle::spawn(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("writing \"") && err.contains("/nonexistent/ktstr-cg/cgroup.procs"),
            "{err}"
        );
    }
}
