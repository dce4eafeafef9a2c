//! Timer loop: periodic absolute sleeps, measuring how late each expiry runs.

use super::{Worker, WAIT_SLICE_NS};
use crate::sys;

/// `TimerLatency`: `clock_nanosleep(TIMER_ABSTIME)` every `interval_us`; the overshoot
/// (running time minus expiry) is a timer sample; one unit per expiry. Missed periods
/// are skipped rather than replayed.
pub(super) fn timer_latency(w: &mut Worker<'_>, interval_us: u64, until: Option<u64>) {
    let interval = interval_us.saturating_mul(1000).max(1);
    let mut expiry = sys::now_ns().saturating_add(interval);
    'outer: while w.running(until) {
        loop {
            let now = sys::now_ns();
            if now >= expiry {
                break;
            }
            if !w.running(until) {
                break 'outer;
            }
            // Long periods sleep in slices so a stop request is noticed.
            if expiry - now > WAIT_SLICE_NS {
                sys::sleep_until_ns(now + WAIT_SLICE_NS);
                w.quit_if_orphaned();
            } else {
                sys::sleep_until_ns(expiry);
            }
        }
        let woke = sys::now_ns();
        w.timer.push(woke.saturating_sub(expiry));
        w.done(1);
        expiry = expiry.saturating_add(interval);
        if expiry <= woke {
            expiry = woke.saturating_add(interval);
        }
    }
}
