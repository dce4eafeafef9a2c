//! Cooperating loops that wake each other: pipe ping-pong, futex token rings, futex fan-out.
//!
//! The waker stores CLOCK_MONOTONIC in the wakee's shared `wake_ts` just before waking it;
//! the wakee subtracts that from its own clock once it runs. Every wait is sliced so stop
//! requests, phase deadlines and dead partners never hang a worker.

use std::sync::atomic::Ordering;

use super::Worker;
use crate::shared::Coop;
use crate::sys;

/// The work a ring member does holding the token.
#[derive(Clone, Copy)]
pub(crate) enum Hop {
    /// This many spin iterations.
    Spin(u64),
    /// Spinning for this long.
    For(std::time::Duration),
}

impl Hop {
    fn run(self) {
        match self {
            Hop::Spin(iters) => sys::spin(iters),
            Hop::For(d) => {
                let end =
                    sys::now_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                while sys::now_ns() < end {
                    sys::spin(64);
                }
            }
        }
    }
}
/// Spin iterations each `FutexFanOut` waiter does after being woken.
const FAN_OUT_SPIN_ITERS: u64 = 256;
/// Distance between the bytes `CachePipe` touches.
const CACHE_LINE: usize = 64;
/// Longest one poll on a pipe inbox, ms.
const POLL_SLICE_MS: i32 = 10;

/// `PipeIo` (and `CachePipe` with `cache_kib`): the pair passes a byte back and forth,
/// bursting between receiving and sending back; one unit per wake-up that received it.
pub(super) fn pipe_io(
    w: &mut Worker<'_>,
    leaf: usize,
    burst_iters: u64,
    cache_kib: Option<usize>,
    until: Option<u64>,
) {
    let mut cache: Vec<u8> = Vec::new();
    if let Some(kib) = cache_kib {
        let len = kib.saturating_mul(1024).max(CACHE_LINE);
        if cache.try_reserve_exact(len).is_err() {
            return;
        }
        cache.resize(len, 0);
    }
    let mut at = 0usize;
    let base = w.index - w.index % 2;
    let partner = base + 1 - (w.index - base);
    let (Some((inbox, _)), Some((_, outbox))) = (w.inbox(leaf, w.index), w.inbox(leaf, partner))
    else {
        return;
    };
    let me = w.coop(leaf, w.index);
    let other = w.coop(leaf, partner);
    // The first of the pair serves the one token, once for the workload's whole life.
    if w.index == base && me.seen.swap(1, Ordering::AcqRel) == 0 {
        other.wake_ts.store(sys::now_ns(), Ordering::Release);
        let _ = sys::write(outbox, &[1]);
    }
    let mut buf = [0u8; 64];
    while w.running(until) {
        if !sys::poll_readable(inbox, POLL_SLICE_MS) {
            w.quit_if_orphaned();
            continue;
        }
        let now = sys::now_ns();
        let got = match sys::read(inbox, &mut buf) {
            Ok(n) if n > 0 => n,
            _ => continue,
        };
        w.sample_wake(me.wake_ts.load(Ordering::Acquire), now);
        if cache.is_empty() {
            sys::spin(burst_iters);
        } else {
            for _ in 0..burst_iters {
                if let Some(byte) = cache.get_mut(at) {
                    *byte = std::hint::black_box(byte.wrapping_add(1));
                }
                at = (at + CACHE_LINE) % cache.len();
            }
        }
        other.wake_ts.store(sys::now_ns(), Ordering::Release);
        // Hand back as many tokens as arrived; a full pipe means the partner is gone.
        let _ = sys::write(outbox, &buf[..got]);
        w.done(1);
    }
}

/// `FutexPingPong` / futex `WakeChain`: a token goes round a ring of `size` workers.
pub(super) fn token_ring(
    w: &mut Worker<'_>,
    leaf: usize,
    size: usize,
    hop: Hop,
    until: Option<u64>,
) {
    let size = size.max(1);
    let base = w.index - w.index % size;
    let next_index = base + (w.index - base + 1) % size;
    let me = w.coop(leaf, w.index);
    let next = w.coop(leaf, next_index);
    while w.running(until) {
        if !w.wait_until(&me.word, |v| v != 0, until) {
            break;
        }
        let now = sys::now_ns();
        me.word.store(0, Ordering::Relaxed);
        w.sample_wake(me.wake_ts.load(Ordering::Acquire), now);
        hop.run();
        next.wake_ts.store(sys::now_ns(), Ordering::Relaxed);
        next.word.store(1, Ordering::Release);
        sys::futex_wake(&next.word, 1);
        w.done(1);
    }
}

/// `FutexFanOut`: the group's first worker spins `spin_iters`, wakes the other `fan_out`
/// and sleeps until the last of them acknowledges (that wake is measured too).
pub(super) fn fan_out(
    w: &mut Worker<'_>,
    leaf: usize,
    fan_out: usize,
    spin_iters: u64,
    until: Option<u64>,
) {
    let group = fan_out.saturating_add(1);
    let base = w.index - w.index % group;
    let lead = w.coop(leaf, base);
    let waiters = u32::try_from(fan_out).unwrap_or(u32::MAX);
    if w.index == base {
        while w.running(until) {
            sys::spin(spin_iters);
            let generation = lead.word.load(Ordering::Relaxed).wrapping_add(1).max(1);
            lead.count.store(0, Ordering::Relaxed);
            lead.wake_ts.store(sys::now_ns(), Ordering::Relaxed);
            lead.word.store(generation, Ordering::Release);
            sys::futex_wake(&lead.word, i32::MAX);
            if !w.wait_until(&lead.reply, |v| v == generation, until) {
                break;
            }
            let now = sys::now_ns();
            w.sample_wake(lead.reply_ts.load(Ordering::Acquire), now);
            w.done(1);
        }
        return;
    }
    let me = w.coop(leaf, w.index);
    while w.running(until) {
        let Some(generation) = next_broadcast(w, me, lead, until) else {
            break;
        };
        sys::spin(FAN_OUT_SPIN_ITERS);
        if lead.count.fetch_add(1, Ordering::AcqRel).wrapping_add(1) == waiters {
            lead.reply_ts.store(sys::now_ns(), Ordering::Relaxed);
            lead.reply.store(generation, Ordering::Release);
            sys::futex_wake(&lead.reply, 1);
        }
        w.done(1);
    }
}

/// `MutexContention`: the group shares a futex mutex (0 free, 1 held, 2 held with waiters),
/// in the group's first worker's word; each worker spins `work_iters`, takes it, spins
/// `hold_iters`, releases it.
pub(super) fn mutex_contention(
    w: &mut Worker<'_>,
    leaf: usize,
    contenders: usize,
    hold_iters: u64,
    work_iters: u64,
    until: Option<u64>,
) {
    let group = contenders.max(1);
    let lock = &w.coop(leaf, w.index - w.index % group).word;
    'work: while w.running(until) {
        sys::spin(work_iters);
        let mut state = match lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => 0,
            Err(held) => held,
        };
        if state != 0 {
            if state != 2 {
                state = lock.swap(2, Ordering::Acquire);
            }
            while state != 0 {
                if !w.running(until) {
                    break 'work;
                }
                sys::futex_wait(lock, 2, super::WAIT_SLICE_NS);
                w.quit_if_orphaned();
                state = lock.swap(2, Ordering::Acquire);
            }
        }
        sys::spin(hold_iters);
        if lock.fetch_sub(1, Ordering::Release) != 1 {
            lock.store(0, Ordering::Release);
            sys::futex_wake(lock, 1);
        }
        w.done(1);
    }
}

/// `ThunderingHerd`: the group's first worker bumps one futex word and wakes every waiter
/// at once, `batches` times `inter_batch_ms` apart, then only sleeps; each waiter records
/// its wake latency, one unit per wake (the waker: one per broadcast).
pub(super) fn thundering_herd(
    w: &mut Worker<'_>,
    leaf: usize,
    waiters: usize,
    batches: u64,
    inter_batch_ms: u64,
    until: Option<u64>,
) {
    let group = waiters.saturating_add(1);
    let base = w.index - w.index % group;
    let lead = w.coop(leaf, base);
    let gap_ns = inter_batch_ms.saturating_mul(sys::NS_PER_MS);
    if w.index == base {
        let mut sent = 0u64;
        while w.running(until) {
            if sent < batches {
                let generation = lead.word.load(Ordering::Relaxed).wrapping_add(1).max(1);
                lead.wake_ts.store(sys::now_ns(), Ordering::Relaxed);
                lead.word.store(generation, Ordering::Release);
                sys::futex_wake(&lead.word, i32::MAX);
                sent += 1;
                w.done(1);
            }
            w.sleep(gap_ns.max(1), until);
        }
        return;
    }
    // The last broadcast this waiter saw, kept across Sequence phases; it starts at 0, so
    // a broadcast sent before the waiter first looked still counts.
    let me = w.coop(leaf, w.index);
    while w.running(until) {
        if next_broadcast(w, me, lead, until).is_none() {
            break;
        }
        w.done(1);
    }
}

/// Waits for a broadcast on `lead.word` newer than the last one `me` saw, marks it seen and
/// samples the wake-up; its generation, or `None` when the run ended first.
fn next_broadcast(w: &mut Worker<'_>, me: &Coop, lead: &Coop, until: Option<u64>) -> Option<u32> {
    let seen = me.seen.load(Ordering::Relaxed);
    if !w.wait_until(&lead.word, |v| v != seen, until) {
        return None;
    }
    let now = sys::now_ns();
    let generation = lead.word.load(Ordering::Acquire);
    me.seen.store(generation, Ordering::Relaxed);
    w.sample_wake(lead.wake_ts.load(Ordering::Relaxed), now);
    Some(generation)
}

/// `SignalStorm`: each of a pair publishes its pid, then in rounds spins `work_iters` and
/// sends the partner `signals_per_iter` SIGUSR1s (caught by a handler that does nothing).
pub(super) fn signal_storm(
    w: &mut Worker<'_>,
    leaf: usize,
    signals_per_iter: u64,
    work_iters: u64,
    until: Option<u64>,
) {
    sys::ignore_sigusr1_with_handler();
    let base = w.index - w.index % 2;
    let partner = base + 1 - (w.index - base);
    let me = w.coop(leaf, w.index);
    let other = w.coop(leaf, partner);
    me.reply
        .store(u32::try_from(sys::getpid()).unwrap_or(0), Ordering::Release);
    sys::futex_wake(&me.reply, 1);
    if !w.wait_until(&other.reply, |v| v != 0, until) {
        return;
    }
    let Ok(partner_pid) = i32::try_from(other.reply.load(Ordering::Acquire)) else {
        return;
    };
    while w.running(until) {
        sys::spin(work_iters);
        for _ in 0..signals_per_iter {
            sys::kill(partner_pid, libc::SIGUSR1);
        }
        w.done(1);
    }
}

/// Pipe `WakeChain`: a one-byte token goes round a ring of `size` workers, each writing it
/// to the next one's inbox after its hop.
pub(super) fn pipe_ring(
    w: &mut Worker<'_>,
    leaf: usize,
    size: usize,
    hop: Hop,
    until: Option<u64>,
) {
    let size = size.max(1);
    let base = w.index - w.index % size;
    let next_index = base + (w.index - base + 1) % size;
    let (Some((inbox, _)), Some((_, outbox))) = (w.inbox(leaf, w.index), w.inbox(leaf, next_index))
    else {
        return;
    };
    let me = w.coop(leaf, w.index);
    let next = w.coop(leaf, next_index);
    // The ring's first member serves the one token, once for the workload's whole life.
    if w.index == base && me.seen.swap(1, Ordering::AcqRel) == 0 {
        hop.run();
        next.wake_ts.store(sys::now_ns(), Ordering::Release);
        let _ = sys::write(outbox, &[1]);
        w.done(1);
    }
    let mut buf = [0u8; 1];
    while w.running(until) {
        if !sys::poll_readable(inbox, POLL_SLICE_MS) {
            w.quit_if_orphaned();
            continue;
        }
        let now = sys::now_ns();
        if !matches!(sys::read(inbox, &mut buf), Ok(1)) {
            continue;
        }
        w.sample_wake(me.wake_ts.load(Ordering::Acquire), now);
        hop.run();
        next.wake_ts.store(sys::now_ns(), Ordering::Release);
        let _ = sys::write(outbox, &buf);
        w.done(1);
    }
}

/// `FanOutCompute`: like `FutexFanOut`, but each woken worker sleeps `sleep_usec`, then does
/// `operations` n×n matrix multiplications (three f64 matrices filling about
/// `cache_footprint_kib`) before acknowledging; the messenger waits for every acknowledgement.
pub(super) fn fan_out_compute(
    w: &mut Worker<'_>,
    leaf: usize,
    fan_out: usize,
    cache_footprint_kib: usize,
    operations: usize,
    sleep_usec: u64,
    until: Option<u64>,
) {
    let group = fan_out.saturating_add(1);
    let base = w.index - w.index % group;
    let lead = w.coop(leaf, base);
    let waiters = u32::try_from(fan_out).unwrap_or(u32::MAX);
    if w.index == base {
        while w.running(until) {
            let generation = lead.word.load(Ordering::Relaxed).wrapping_add(1).max(1);
            lead.count.store(0, Ordering::Relaxed);
            lead.wake_ts.store(sys::now_ns(), Ordering::Relaxed);
            lead.word.store(generation, Ordering::Release);
            sys::futex_wake(&lead.word, i32::MAX);
            if !w.wait_until(&lead.reply, |v| v == generation, until) {
                break;
            }
            w.done(1);
        }
        return;
    }
    // Three n×n f64 matrices in about the footprint asked for.
    let n = ((cache_footprint_kib.saturating_mul(1024) / (3 * 8)) as f64)
        .sqrt()
        .max(1.0) as usize;
    let a: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64 + 1.0).collect();
    let b: Vec<f64> = (0..n * n).map(|i| (i % 5) as f64 + 0.5).collect();
    let mut c = vec![0.0f64; n * n];
    let me = w.coop(leaf, w.index);
    while w.running(until) {
        let seen = me.seen.load(Ordering::Relaxed);
        if !w.wait_until(&lead.word, |v| v != seen, until) {
            break;
        }
        let now = sys::now_ns();
        let generation = lead.word.load(Ordering::Acquire);
        me.seen.store(generation, Ordering::Relaxed);
        w.sample_wake(lead.wake_ts.load(Ordering::Relaxed), now);
        w.sleep(sleep_usec.saturating_mul(1000), until);
        for _ in 0..operations {
            matmul(&a, &b, &mut c, n);
        }
        std::hint::black_box(&c);
        if lead.count.fetch_add(1, Ordering::AcqRel).wrapping_add(1) == waiters {
            lead.reply_ts.store(sys::now_ns(), Ordering::Relaxed);
            lead.reply.store(generation, Ordering::Release);
            sys::futex_wake(&lead.reply, 1);
        }
        w.done(1);
    }
}

/// `c = a × b` for n×n row-major matrices.
fn matmul(a: &[f64], b: &[f64], c: &mut [f64], n: usize) {
    for i in 0..n {
        for j in 0..n {
            let mut sum = 0.0;
            for k in 0..n {
                sum += a[i * n + k] * b[k * n + j];
            }
            c[i * n + j] = sum;
        }
    }
}

/// `ProducerConsumerImbalance`: the group's queue is a count of waiting items in its first
/// worker's word (at most `depth`); producers add one every `1 / rate_hz` s (dropping it when
/// the queue is full) and wake a consumer, consumers take one and spin `consume_iters`.
pub(super) fn producer_consumer(
    w: &mut Worker<'_>,
    leaf: usize,
    (producers, consumers): (usize, usize),
    rate_hz: u64,
    consume_iters: u64,
    depth: u64,
    until: Option<u64>,
) {
    let group = producers.saturating_add(consumers).max(1);
    let base = w.index - w.index % group;
    let queue = &w.coop(leaf, base).word;
    let depth = u32::try_from(depth).unwrap_or(u32::MAX);
    if w.index - base < producers {
        let period_ns = sys::NS_PER_SEC / rate_hz.max(1);
        let mut due = sys::now_ns();
        while w.running(until) {
            let added = queue
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < depth).then_some(n + 1)
                })
                .is_ok();
            if added {
                sys::futex_wake(queue, 1);
                w.done(1);
            }
            due = due.saturating_add(period_ns);
            let now = sys::now_ns();
            if due > now {
                w.sleep(due - now, until);
            } else {
                // Behind schedule: catch up without sleeping.
                due = now;
            }
        }
        return;
    }
    while w.running(until) {
        let waited_from = sys::now_ns();
        if !w.wait_until(queue, |n| n > 0, until) {
            break;
        }
        let took = queue
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !took {
            continue;
        }
        w.sample_wake(waited_from, sys::now_ns());
        sys::spin(consume_iters);
        w.done(1);
    }
}
