//! Checks over a sequence of [`Sample`]s, computed incrementally in memory bounded by
//! the number of CPUs.
//!
//! The names and defaults are the existing ktstr's ([`MonitorThresholds::default`]):
//!
//! - `max_imbalance_ratio` (4.0): per sample, over the CPUs whose runqueue was read
//!   (at least two), `max(max_nr, 1) / max(min_nr, 1)` where `max_nr` and `min_nr` are the
//!   largest and smallest `nr_running` across those CPUs. An empty CPU counts as 1, so
//!   the ratio is never below 1 and one task on an otherwise idle machine is 1.0, while
//!   three tasks on one CPU next to an idle one is 3.0. The CPU reported is the busiest.
//!   A sample violates when the ratio is strictly above the threshold.
//! - `max_local_dsq_depth` (50): per CPU, `scx_local_dsq_nr` strictly above the
//!   threshold (kernels without sched_ext never violate).
//! - `fail_on_rq_clock_stuck` (true): per CPU, a sample whose `rq_clock_ns` equals the
//!   CPU's previous sample's while `nr_running >= 1` in both. A running CPU updates its
//!   rq clock at least every tick, so this repeating for `sustained_samples` samples in a
//!   row *and* for at least [`RQ_CLOCK_STUCK_MIN_NS`] of sampling time (so that fast
//!   sampling between two ticks is not taken for a stuck clock) is a violation. The value
//!   reported is the longest such span in milliseconds.
//! - `max_fallback_rate` (200) and `max_keep_last_rate` (100): sched_ext's
//!   `select_cpu_fallback` and `dispatch_keep_last` events per vCPU-second, from the event
//!   counters summed over CPUs, measured over consecutive windows of at least
//!   [`RATE_WINDOW_NS`] of sampling time (a window violates when its rate is strictly above
//!   the threshold; the value reported is the highest window's rate). A counter that goes
//!   down (a new scheduler attached) starts a new window.
//! - `sustained_samples` (5): a check fails only when its threshold is exceeded in that
//!   many consecutive samples (per CPU for the per-CPU checks; windows for the rates).
//!
//! Besides, a stall detector that does not depend on the kernel's watchdog: per CPU, the
//! longest time the same non-idle task (same `curr_pid`, no context switch in between by
//! `nr_switches`) was seen running while `nr_running >= 2`, i.e. while at least one other
//! task waited at least that long. It is reported as `longest_wait_ms` with the CPU and the
//! task; it fails only against [`MonitorThresholds::max_wait_ms`] when one is set.
//!
//! A CPU entry that carries an error ends that CPU's runs and is otherwise ignored.

use serde::Serialize;

use crate::sampler::{RqSample, Sample};

/// The shortest span of sampling time a stuck rq clock must last to count
/// (see the module documentation).
pub const RQ_CLOCK_STUCK_MIN_NS: u64 = 100_000_000;

/// The shortest span of sampling time an event rate is measured over.
pub const RATE_WINDOW_NS: u64 = 250_000_000;

/// Thresholds of the monitor checks, with the existing ktstr's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonitorThresholds {
    /// Largest allowed `max(max_nr,1) / max(min_nr,1)` of `nr_running` across CPUs.
    pub max_imbalance_ratio: f64,
    /// Largest allowed `scx_local_dsq_nr` of a CPU.
    pub max_local_dsq_depth: u32,
    /// Whether a CPU whose rq clock stops while it has runnable tasks fails.
    pub fail_on_rq_clock_stuck: bool,
    /// Consecutive violating samples needed for a check to fail.
    pub sustained_samples: u32,
    /// Longest allowed `longest_wait_ms`; `None` reports it without a verdict.
    pub max_wait_ms: Option<u64>,
    /// Largest `select_cpu_fallback` events per vCPU-second.
    pub max_fallback_rate: f64,
    /// Largest `dispatch_keep_last` events per vCPU-second.
    pub max_keep_last_rate: f64,
}

impl Default for MonitorThresholds {
    fn default() -> Self {
        MonitorThresholds {
            max_imbalance_ratio: 4.0,
            max_local_dsq_depth: 50,
            fail_on_rq_clock_stuck: true,
            sustained_samples: 5,
            max_wait_ms: None,
            max_fallback_rate: 200.0,
            max_keep_last_rate: 100.0,
        }
    }
}

/// One check's findings over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckResult {
    /// The check's name (`max_imbalance_ratio`, ...).
    pub name: &'static str,
    /// The threshold compared against (`rq_clock_stuck`: milliseconds, see the module).
    pub threshold: f64,
    /// The worst value seen (0 when nothing was measured).
    pub worst: f64,
    /// The CPU where the worst value was seen.
    pub worst_cpu: Option<u32>,
    /// The longest run of consecutive violating samples.
    pub longest_run: u64,
    /// Sample time of the first violating sample.
    pub first_violation_t_ns: Option<u64>,
    /// The CPU of the first violating sample.
    pub first_violation_cpu: Option<u32>,
    /// Whether the check is evaluated at all (`fail_on_rq_clock_stuck = false` is not).
    pub enabled: bool,
    /// Whether any value was measured (the event rates need sched_ext's counters).
    pub measured: bool,
    /// Passed: disabled, or no violation lasted `sustained_samples`.
    pub passed: bool,
}

/// The longest observed wait behind one running task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LongestWait {
    /// Milliseconds the task was seen running with others runnable on its CPU.
    pub ms: u64,
    /// The CPU.
    pub cpu: u32,
    /// The running task's pid.
    pub pid: i32,
    /// Its comm.
    pub comm: String,
    /// Sample time at which that span started.
    pub start_t_ns: u64,
}

/// What the checks found over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonitorReport {
    /// Samples observed.
    pub samples: u64,
    /// Samples per second, first to last sample.
    pub rate_hz: f64,
    /// The thresholds used.
    pub sustained_samples: u32,
    /// `max_imbalance_ratio`, `max_local_dsq_depth`, `rq_clock_stuck`, `max_fallback_rate`,
    /// `max_keep_last_rate`, in that order.
    pub checks: Vec<CheckResult>,
    /// The stall detector's longest wait, when one was seen.
    pub longest_wait: Option<LongestWait>,
    /// `longest_wait_ms` against [`MonitorThresholds::max_wait_ms`], when set.
    pub wait_passed: Option<bool>,
    /// Whether every enabled check passed.
    pub passed: bool,
}

impl MonitorReport {
    /// One line per check for a person: value, threshold, pass or fail.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.checks.len() + 2);
        let verdict = |enabled: bool, passed: bool| match (enabled, passed) {
            (false, _) => "off",
            (true, true) => "pass",
            (true, false) => "FAIL",
        };
        // Event rates only mean something under a sched_ext scheduler with counters.
        let shown = self.checks.iter().filter(|c| {
            c.measured || !matches!(c.name, "max_fallback_rate" | "max_keep_last_rate")
        });
        for c in shown {
            let (value, threshold) = match c.name {
                "max_imbalance_ratio" => (format!("{:.2}", c.worst), format!("{:.2}", c.threshold)),
                "max_fallback_rate" | "max_keep_last_rate" => (
                    format!("{:.1}/vCPU-s", c.worst),
                    format!("{:.1}/vCPU-s", c.threshold),
                ),
                "rq_clock_stuck" => (
                    format!("{:.0} ms", c.worst),
                    format!(
                        "{} samples and {} ms",
                        self.sustained_samples,
                        RQ_CLOCK_STUCK_MIN_NS / 1_000_000
                    ),
                ),
                _ => (format!("{:.0}", c.worst), format!("{:.0}", c.threshold)),
            };
            let mut s = format!(
                "check {}: worst {value}{} threshold {threshold}, longest run {} of {} samples",
                c.name,
                c.worst_cpu
                    .map(|c| format!(" (cpu {c})"))
                    .unwrap_or_default(),
                c.longest_run,
                self.sustained_samples
            );
            if let Some(t) = c.first_violation_t_ns {
                s += &format!(
                    ", first over at {:.3} s on cpu {}",
                    t as f64 / 1e9,
                    c.first_violation_cpu.unwrap_or(0)
                );
            }
            s += &format!(": {}", verdict(c.enabled, c.passed));
            out.push(s);
        }
        let mut w = match &self.longest_wait {
            Some(w) => format!(
                "check longest_wait_ms: {} (cpu {}, pid {} {})",
                w.ms, w.cpu, w.pid, w.comm
            ),
            None => "check longest_wait_ms: 0 (no CPU ran one task with others waiting)".into(),
        };
        w += &match self.wait_passed {
            Some(p) => format!(": {}", verdict(true, p)),
            None => ": info".into(),
        };
        out.push(w);
        out
    }

    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = self
            .checks
            .iter()
            .filter(|c| c.enabled && !c.passed)
            .map(|c| c.name)
            .collect();
        if self.wait_passed == Some(false) {
            f.push("longest_wait_ms");
        }
        f
    }
}

/// A check's running state: the current and longest run of violations.
#[derive(Debug, Clone, Default)]
struct Tracker {
    result: CheckResult,
}

impl Tracker {
    fn new(name: &'static str, threshold: f64, enabled: bool) -> Self {
        Tracker {
            result: CheckResult {
                name,
                threshold,
                enabled,
                passed: true,
                ..CheckResult::default()
            },
        }
    }

    /// Takes a measured value; `cpu` is `None` for machine-wide values.
    fn value(&mut self, v: f64, cpu: Option<u32>) {
        if v > self.result.worst || !self.result.measured {
            self.result.worst = v;
            self.result.worst_cpu = cpu;
            self.result.measured = true;
        }
    }

    /// Records a violation; `run` is the length of the current run it belongs to.
    fn violation(&mut self, t_ns: u64, cpu: Option<u32>, run: u64, sustained: u64) {
        if self.result.first_violation_t_ns.is_none() {
            self.result.first_violation_t_ns = Some(t_ns);
            self.result.first_violation_cpu = cpu;
        }
        self.result.longest_run = self.result.longest_run.max(run);
        if self.result.enabled && run >= sustained {
            self.result.passed = false;
        }
    }
}

/// Per-CPU state between samples.
#[derive(Debug, Clone, Default)]
struct CpuState {
    /// The previous sample's runqueue, if it was read.
    prev: Option<PrevRq>,
    dsq_run: u64,
    /// Consecutive samples repeating the rq clock, and the time of the first of them.
    stuck_run: u64,
    stuck_since_ns: u64,
    /// The running task being timed by the stall detector: (pid, nr_switches, since).
    waiting: Option<(i32, u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct PrevRq {
    t_ns: u64,
    nr_running: u32,
    rq_clock_ns: u64,
}

/// Computes a [`MonitorReport`] one sample at a time.
#[derive(Debug, Clone)]
pub struct Checker {
    th: MonitorThresholds,
    samples: u64,
    first_t: Option<u64>,
    last_t: u64,
    imbalance: Tracker,
    imbalance_run: u64,
    dsq: Tracker,
    stuck: Tracker,
    fallback: RateCheck,
    keep_last: RateCheck,
    cpus: Vec<CpuState>,
    longest_wait: Option<LongestWait>,
}

/// An event-rate check: the open window's start and the current run of violating windows.
#[derive(Debug, Clone)]
struct RateCheck {
    /// The sched_ext event it follows (`select_cpu_fallback`, ...).
    event: &'static str,
    threshold: f64,
    tracker: Tracker,
    /// The open window: its first sample's time and counter.
    start: Option<(u64, i64)>,
    run: u64,
}

impl RateCheck {
    fn new(name: &'static str, event: &'static str, threshold: f64) -> Self {
        RateCheck {
            event,
            threshold,
            tracker: Tracker::new(name, threshold, true),
            start: None,
            run: 0,
        }
    }

    /// Takes the event counter (summed over `nr_cpus` CPUs) of the sample at `t_ns`.
    fn observe(&mut self, t_ns: u64, count: Option<i64>, nr_cpus: usize, sustained: u64) {
        let Some(count) = count else {
            // No scheduler, or its counters could not be read: no window spans it.
            self.start = None;
            return;
        };
        let Some((t0, c0)) = self.start else {
            self.start = Some((t_ns, count));
            return;
        };
        if count < c0 {
            // A new scheduler's counters.
            self.start = Some((t_ns, count));
            return;
        }
        let span = t_ns.saturating_sub(t0);
        if span < RATE_WINDOW_NS {
            return;
        }
        let rate = (count - c0) as f64 * 1e9 / span as f64 / nr_cpus.max(1) as f64;
        self.tracker.value(rate, None);
        if rate > self.threshold {
            self.run += 1;
            self.tracker.violation(t_ns, None, self.run, sustained);
        } else {
            self.run = 0;
        }
        self.start = Some((t_ns, count));
    }
}

impl Checker {
    /// A checker with these thresholds.
    pub fn new(th: MonitorThresholds) -> Self {
        Checker {
            th,
            samples: 0,
            first_t: None,
            last_t: 0,
            imbalance: Tracker::new("max_imbalance_ratio", th.max_imbalance_ratio, true),
            imbalance_run: 0,
            dsq: Tracker::new(
                "max_local_dsq_depth",
                f64::from(th.max_local_dsq_depth),
                true,
            ),
            stuck: Tracker::new(
                "rq_clock_stuck",
                (RQ_CLOCK_STUCK_MIN_NS / 1_000_000) as f64,
                th.fail_on_rq_clock_stuck,
            ),
            fallback: RateCheck::new(
                "max_fallback_rate",
                "select_cpu_fallback",
                th.max_fallback_rate,
            ),
            keep_last: RateCheck::new(
                "max_keep_last_rate",
                "dispatch_keep_last",
                th.max_keep_last_rate,
            ),
            cpus: Vec::new(),
            longest_wait: None,
        }
    }

    /// The thresholds.
    pub fn thresholds(&self) -> &MonitorThresholds {
        &self.th
    }

    /// Takes in one sample taken at `t_ns` (monotonic, non-decreasing).
    pub fn observe(&mut self, t_ns: u64, sample: &Sample) {
        self.samples += 1;
        self.first_t.get_or_insert(t_ns);
        self.last_t = t_ns;
        let sustained = u64::from(self.th.sustained_samples.max(1));

        // Imbalance across the CPUs that were read.
        let mut read = sample
            .cpus
            .iter()
            .filter_map(|c| c.rq.as_ref().map(|rq| (c.cpu, rq.nr_running)));
        if let Some(first) = read.next() {
            let (mut max, mut min, mut n) = (first, first, 1u32);
            for c in read {
                n += 1;
                if c.1 > max.1 {
                    max = c;
                }
                if c.1 < min.1 {
                    min = c;
                }
            }
            if n >= 2 {
                let ratio = f64::from(max.1.max(1)) / f64::from(min.1.max(1));
                self.imbalance.value(ratio, Some(max.0));
                if ratio > self.th.max_imbalance_ratio {
                    self.imbalance_run += 1;
                    let run = self.imbalance_run;
                    self.imbalance.violation(t_ns, Some(max.0), run, sustained);
                } else {
                    self.imbalance_run = 0;
                }
            }
        }

        // sched_ext event rates, from the counters summed over CPUs.
        let events = sample.scx.as_ref().map(|s| &s.events);
        for r in [&mut self.fallback, &mut self.keep_last] {
            let count = events.and_then(|e| e.get(r.event)).copied();
            r.observe(t_ns, count, sample.cpus.len(), sustained);
        }

        for c in &sample.cpus {
            let i = c.cpu as usize;
            if i >= self.cpus.len() {
                if i > 4096 {
                    continue;
                }
                self.cpus.resize(i + 1, CpuState::default());
            }
            let Some(rq) = &c.rq else {
                self.cpus[i] = CpuState::default();
                continue;
            };
            self.per_cpu(c.cpu, t_ns, rq, sustained);
        }
    }

    fn per_cpu(&mut self, cpu: u32, t_ns: u64, rq: &RqSample, sustained: u64) {
        let st = &mut self.cpus[cpu as usize];
        // Local DSQ depth.
        if let Some(d) = rq.scx_local_dsq_nr {
            self.dsq.value(f64::from(d), Some(cpu));
            if d > self.th.max_local_dsq_depth {
                st.dsq_run += 1;
                self.dsq.violation(t_ns, Some(cpu), st.dsq_run, sustained);
            } else {
                st.dsq_run = 0;
            }
        } else {
            st.dsq_run = 0;
        }
        // A stuck rq clock.
        match st.prev {
            Some(p) if p.rq_clock_ns == rq.rq_clock_ns && p.nr_running > 0 && rq.nr_running > 0 => {
                if st.stuck_run == 0 {
                    st.stuck_since_ns = p.t_ns;
                }
                st.stuck_run += 1;
                let span = t_ns.saturating_sub(st.stuck_since_ns);
                self.stuck.value(span as f64 / 1e6, Some(cpu));
                if span >= RQ_CLOCK_STUCK_MIN_NS {
                    self.stuck
                        .violation(t_ns, Some(cpu), st.stuck_run, sustained);
                }
            }
            _ => st.stuck_run = 0,
        }
        st.prev = Some(PrevRq {
            t_ns,
            nr_running: rq.nr_running,
            rq_clock_ns: rq.rq_clock_ns,
        });
        // Stall detector: the same task running, no switch, others runnable.
        if !rq.curr_is_idle && rq.nr_running >= 2 {
            match st.waiting {
                Some((pid, sw, since)) if pid == rq.curr_pid && sw == rq.nr_switches => {
                    let ms = t_ns.saturating_sub(since) / 1_000_000;
                    if self.longest_wait.as_ref().is_none_or(|w| ms > w.ms) {
                        self.longest_wait = Some(LongestWait {
                            ms,
                            cpu,
                            pid,
                            comm: rq.curr_comm.clone(),
                            start_t_ns: since,
                        });
                    }
                }
                _ => st.waiting = Some((rq.curr_pid, rq.nr_switches, t_ns)),
            }
        } else {
            st.waiting = None;
        }
    }

    /// The report so far.
    pub fn report(&self) -> MonitorReport {
        let span = self.last_t.saturating_sub(self.first_t.unwrap_or(0));
        let rate_hz = if self.samples > 1 && span > 0 {
            (self.samples - 1) as f64 * 1e9 / span as f64
        } else {
            0.0
        };
        let checks = vec![
            self.imbalance.result.clone(),
            self.dsq.result.clone(),
            self.stuck.result.clone(),
            self.fallback.tracker.result.clone(),
            self.keep_last.tracker.result.clone(),
        ];
        let wait_passed = self
            .th
            .max_wait_ms
            .map(|max| self.longest_wait.as_ref().is_none_or(|w| w.ms <= max));
        let passed = checks.iter().all(|c| !c.enabled || c.passed) && wait_passed != Some(false);
        MonitorReport {
            samples: self.samples,
            rate_hz,
            sustained_samples: self.th.sustained_samples,
            checks,
            longest_wait: self.longest_wait.clone(),
            wait_passed,
            passed,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sampler::CpuSample;

    /// A runqueue: `nr` runnable, `pid` running (0 = idle), clock and switches.
    pub(crate) fn rq(nr: u32, pid: i32, clock: u64, switches: u64) -> RqSample {
        RqSample {
            nr_running: nr,
            fair_nr_running: Some(nr),
            scx_nr_running: Some(0),
            scx_local_dsq_nr: Some(0),
            curr_pid: pid,
            curr_comm: if pid == 0 {
                "swapper".into()
            } else {
                format!("t{pid}")
            },
            curr_is_idle: pid == 0,
            rq_clock_ns: clock,
            nr_switches: switches,
        }
    }

    pub(crate) fn sample(rqs: Vec<RqSample>) -> Sample {
        Sample {
            cpus: rqs
                .into_iter()
                .enumerate()
                .map(|(i, rq)| CpuSample {
                    cpu: i as u32,
                    rq: Some(rq),
                    error: None,
                })
                .collect(),
            scx: None,
        }
    }

    const MS: u64 = 1_000_000;

    fn check<'a>(r: &'a MonitorReport, name: &str) -> &'a CheckResult {
        r.checks.iter().find(|c| c.name == name).expect(name)
    }

    #[test]
    fn imbalance_ratio_treats_empty_cpus_as_one() {
        let mut c = Checker::new(MonitorThresholds::default());
        // 3 on CPU 1, 0 on CPU 0: 3/1.
        for i in 0..10 {
            c.observe(i * 10 * MS, &sample(vec![rq(0, 0, i, 0), rq(3, 7, i, 0)]));
        }
        let r = c.report();
        let im = check(&r, "max_imbalance_ratio");
        assert_eq!(im.worst, 3.0);
        assert_eq!(im.worst_cpu, Some(1));
        assert_eq!(im.longest_run, 0);
        assert!(im.passed && r.passed);
        assert!((r.rate_hz - 100.0).abs() < 1e-9, "{}", r.rate_hz);
        // All idle is 1.0, not 0/0.
        let mut c = Checker::new(MonitorThresholds::default());
        c.observe(0, &sample(vec![rq(0, 0, 1, 0), rq(0, 0, 1, 0)]));
        assert_eq!(check(&c.report(), "max_imbalance_ratio").worst, 1.0);
        // One readable CPU: nothing measured.
        let mut c = Checker::new(MonitorThresholds::default());
        let mut s = sample(vec![rq(9, 1, 1, 0), rq(0, 0, 1, 0)]);
        s.cpus[1].rq = None;
        s.cpus[1].error = Some("x".into());
        c.observe(0, &s);
        let r = c.report();
        assert_eq!(check(&r, "max_imbalance_ratio").worst_cpu, None);
    }

    /// Two idle CPUs under a scheduler whose counters read `fallback` and `keep_last`.
    fn scx_sample(fallback: i64, keep_last: i64) -> Sample {
        let mut s = sample(vec![rq(0, 0, 0, 0), rq(0, 0, 0, 0)]);
        s.scx = Some(crate::sampler::ScxSample {
            state: "enabled".into(),
            ops: Some("t".into()),
            exit_kind: Some("none".into()),
            events: [
                ("select_cpu_fallback".to_string(), fallback),
                ("dispatch_keep_last".to_string(), keep_last),
            ]
            .into(),
            dsqs: Vec::new(),
            error: None,
        });
        s
    }

    #[test]
    fn event_rates_are_per_vcpu_second_over_windows() {
        let mut c = Checker::new(MonitorThresholds::default());
        // 2 CPUs, every 50 ms: +30 fallbacks (300/s/vCPU, over 200), +5 keep-lasts (50/s/vCPU).
        let w = RATE_WINDOW_NS / 5;
        for i in 0..=25i64 {
            c.observe(i as u64 * w, &scx_sample(30 * i, 5 * i));
        }
        let r = c.report();
        let f = check(&r, "max_fallback_rate");
        assert!((f.worst - 300.0).abs() < 1e-6, "{f:?}");
        assert_eq!((f.worst_cpu, f.longest_run, f.passed), (None, 5, false));
        assert_eq!(f.first_violation_t_ns, Some(RATE_WINDOW_NS));
        let k = check(&r, "max_keep_last_rate");
        assert!((k.worst - 50.0).abs() < 1e-6 && k.passed, "{k:?}");
        assert_eq!(r.failed(), vec!["max_fallback_rate"]);
        let lines = r.lines();
        assert!(
            lines.iter().any(|l| l.starts_with(
                "check max_fallback_rate: worst 300.0/vCPU-s threshold 200.0/vCPU-s, longest run 5"
            ) && l.ends_with("FAIL")),
            "{lines:?}"
        );

        // Counters that go down (a new scheduler) or vanish (none attached) start over; a
        // short burst inside one window is averaged over it.
        let mut c = Checker::new(MonitorThresholds::default());
        let mut t = 0;
        for (f, k) in [(1000, 0), (10, 0), (10, 0), (20, 0)] {
            c.observe(t, &scx_sample(f, k));
            t += RATE_WINDOW_NS;
        }
        c.observe(t, &sample(vec![rq(0, 0, 0, 0), rq(0, 0, 0, 0)]));
        c.observe(t + RATE_WINDOW_NS, &scx_sample(500, 0));
        let r = c.report();
        let f = check(&r, "max_fallback_rate");
        assert!((f.worst - 20.0).abs() < 1e-6, "{f:?}");
        assert!(r.passed);
    }

    #[test]
    fn imbalance_must_be_sustained_to_fail() {
        let th = MonitorThresholds::default();
        let mut c = Checker::new(th);
        // 4 runs of 4 violating samples (ratio 5 > 4) broken by a balanced one: passes.
        let mut t = 0;
        for _ in 0..4 {
            for _ in 0..4 {
                t += MS;
                c.observe(t, &sample(vec![rq(1, 1, t, 0), rq(5, 2, t, 0)]));
            }
            t += MS;
            c.observe(t, &sample(vec![rq(2, 1, t, 0), rq(2, 2, t, 0)]));
        }
        let r = c.report();
        let im = check(&r, "max_imbalance_ratio");
        assert_eq!((im.worst, im.longest_run), (5.0, 4));
        assert_eq!(im.first_violation_t_ns, Some(MS));
        assert_eq!(im.first_violation_cpu, Some(1));
        assert!(im.passed && r.failed().is_empty());
        // The fifth in a row fails it.
        t += MS;
        for _ in 0..5 {
            t += MS;
            c.observe(t, &sample(vec![rq(0, 0, t, 0), rq(5, 2, t, 0)]));
        }
        let r = c.report();
        assert!(!check(&r, "max_imbalance_ratio").passed);
        assert_eq!(r.failed(), vec!["max_imbalance_ratio"]);
        assert!(!r.passed);
        // Exactly at the threshold is not over it.
        let mut c = Checker::new(th);
        for i in 0..10 {
            c.observe(i, &sample(vec![rq(1, 1, i, 0), rq(4, 2, i, 0)]));
        }
        assert!(c.report().passed);
    }

    #[test]
    fn local_dsq_depth_is_per_cpu_and_sustained() {
        let mut c = Checker::new(MonitorThresholds::default());
        let deep = |d: u32| {
            let mut r = rq(1, 1, 0, 0);
            r.scx_local_dsq_nr = Some(d);
            r
        };
        // CPU 0 and CPU 1 alternate being deep: never 5 in a row on one CPU.
        for i in 0..20u64 {
            let (a, b) = if i % 2 == 0 { (60, 0) } else { (0, 70) };
            let mut s = sample(vec![deep(a), deep(b)]);
            s.cpus[0].rq.as_mut().unwrap().rq_clock_ns = i;
            s.cpus[1].rq.as_mut().unwrap().rq_clock_ns = i;
            c.observe(i * MS, &s);
        }
        let r = c.report();
        let d = check(&r, "max_local_dsq_depth");
        assert_eq!((d.worst, d.worst_cpu, d.longest_run), (70.0, Some(1), 1));
        assert!(d.passed);
        for i in 20..25u64 {
            let mut s = sample(vec![deep(0), deep(51)]);
            s.cpus[0].rq.as_mut().unwrap().rq_clock_ns = i;
            s.cpus[1].rq.as_mut().unwrap().rq_clock_ns = i;
            c.observe(i * MS, &s);
        }
        let r = c.report();
        let d = check(&r, "max_local_dsq_depth");
        // CPU 1 was already deep at i = 19: 6 in a row.
        assert_eq!(d.longest_run, 6);
        assert!(!d.passed);
        assert_eq!(r.failed(), vec!["max_local_dsq_depth"]);
    }

    #[test]
    fn rq_clock_stuck_needs_runnable_tasks_samples_and_time() {
        let th = MonitorThresholds::default();
        // Idle CPU 0 with a frozen clock (NOHZ idle) never counts; CPU 1 runnable with
        // a frozen clock for 10 samples 1 ms apart (9 repeats, 9 ms) is too short.
        let mut c = Checker::new(th);
        for i in 0..10u64 {
            c.observe(i * MS, &sample(vec![rq(0, 0, 5, 0), rq(2, 3, 7, 0)]));
        }
        let r = c.report();
        let s = check(&r, "rq_clock_stuck");
        assert_eq!((s.worst, s.worst_cpu), (9.0, Some(1)));
        assert_eq!(s.longest_run, 0);
        assert!(s.passed);
        // 10 samples 50 ms apart: stuck from 0 to 450 ms, violating from 100 ms on.
        let mut c = Checker::new(th);
        for i in 0..10u64 {
            c.observe(i * 50 * MS, &sample(vec![rq(1, 3, i, 0), rq(2, 3, 7, 0)]));
        }
        let r = c.report();
        let s = check(&r, "rq_clock_stuck");
        assert_eq!((s.worst, s.worst_cpu), (450.0, Some(1)));
        assert_eq!(s.first_violation_t_ns, Some(100 * MS));
        assert_eq!(s.longest_run, 9);
        assert!(!s.passed && !r.passed);
        // Advancing clocks: nothing.
        let mut c = Checker::new(th);
        for i in 0..10u64 {
            c.observe(i * 50 * MS, &sample(vec![rq(1, 3, i, 0), rq(2, 3, i, 0)]));
        }
        assert_eq!(check(&c.report(), "rq_clock_stuck").worst, 0.0);
        // Turned off: reported, not failed.
        let mut c = Checker::new(MonitorThresholds {
            fail_on_rq_clock_stuck: false,
            ..th
        });
        for i in 0..10u64 {
            c.observe(i * 50 * MS, &sample(vec![rq(1, 3, i, 0), rq(2, 3, 7, 0)]));
        }
        let r = c.report();
        assert!(r.passed && !check(&r, "rq_clock_stuck").enabled);
        assert_eq!(check(&r, "rq_clock_stuck").longest_run, 9);
    }

    #[test]
    fn longest_wait_is_one_task_running_with_others_runnable() {
        let mut c = Checker::new(MonitorThresholds {
            max_wait_ms: Some(250),
            ..MonitorThresholds::default()
        });
        // CPU 1: pid 7 runs 0..200 ms with 2 runnable, then switches (nr_switches
        // changes) and runs again 210..510 ms: the longest is 300 ms.
        let mut t = 0;
        while t <= 200 {
            c.observe(t * MS, &sample(vec![rq(0, 0, t, 0), rq(2, 7, t, 1)]));
            t += 10;
        }
        let r = c.report();
        assert_eq!(r.longest_wait.as_ref().map(|w| w.ms), Some(200));
        assert_eq!(r.wait_passed, Some(true));
        while t <= 510 {
            c.observe(t * MS, &sample(vec![rq(0, 0, t, 0), rq(3, 7, t, 2)]));
            t += 10;
        }
        let r = c.report();
        let w = r.longest_wait.clone().unwrap();
        assert_eq!((w.ms, w.cpu, w.pid, w.comm.as_str()), (300, 1, 7, "t7"));
        assert_eq!(w.start_t_ns, 210 * MS);
        assert_eq!(r.wait_passed, Some(false));
        assert_eq!(r.failed(), vec!["longest_wait_ms"]);
        // Alone on its CPU or idle: no wait.
        let mut c = Checker::new(MonitorThresholds::default());
        for t in 0..100 {
            c.observe(t * MS, &sample(vec![rq(1, 4, t, 0), rq(0, 0, t, 0)]));
        }
        let r = c.report();
        assert_eq!(r.longest_wait, None);
        assert_eq!(r.wait_passed, None);
    }

    #[test]
    fn report_lines() {
        let mut c = Checker::new(MonitorThresholds::default());
        for i in 0..100u64 {
            c.observe(i * 5 * MS, &sample(vec![rq(0, 0, i, 9), rq(3, 7, i, 9)]));
        }
        let lines = c.report().lines();
        assert_eq!(
            lines[0],
            "check max_imbalance_ratio: worst 3.00 (cpu 1) threshold 4.00, longest run 0 of 5 samples: pass"
        );
        assert!(lines[1].starts_with("check max_local_dsq_depth: worst 0 (cpu 0) threshold 50"));
        assert!(
            lines[2].starts_with("check rq_clock_stuck: worst 0 ms"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3],
            "check longest_wait_ms: 495 (cpu 1, pid 7 t7): info"
        );
    }
}
