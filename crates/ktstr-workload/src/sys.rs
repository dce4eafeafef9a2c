//! Thin, safe wrappers over the Linux calls workers and their parent make.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;

/// Nanoseconds in a second.
pub(crate) const NS_PER_SEC: u64 = 1_000_000_000;
/// Nanoseconds in a millisecond.
pub(crate) const NS_PER_MS: u64 = 1_000_000;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    timespec_ns(&ts)
}

fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec.max(0) as u64)
        .saturating_mul(NS_PER_SEC)
        .saturating_add(ts.tv_nsec.max(0) as u64)
}

fn ns_timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / NS_PER_SEC).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (ns % NS_PER_SEC) as libc::c_long,
    }
}

/// CLOCK_MONOTONIC, ns.
pub(crate) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread, ns.
pub(crate) fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The CPU the caller runs on, if the kernel says.
pub(crate) fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and only returns a value.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// Spins `iters` iterations the optimiser cannot remove.
///
/// Plain arithmetic, no PAUSE (`spin_loop`): a work unit is computation, not a wait for a lock.
/// Under QEMU's single-threaded TCG every PAUSE hands the host thread to the next vCPU, so
/// 16384 paused iterations beside three busy vCPUs took 155 s instead of 0.2 ms; on hardware
/// KVM a long PAUSE loop trips pause-loop exiting and the host yields the vCPU away.
pub(crate) fn spin(iters: u64) {
    let mut acc = 0u64;
    for i in 0..iters {
        acc = std::hint::black_box(acc.wrapping_add(i));
    }
    std::hint::black_box(acc);
}

/// Sleeps (relative, CLOCK_MONOTONIC) for `ns`.
pub(crate) fn sleep_ns(ns: u64) {
    let ts = ns_timespec(ns);
    // SAFETY: `ts` is a valid timespec; a null remainder pointer is allowed.
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns`.
pub(crate) fn sleep_until_ns(deadline_ns: u64) {
    let ts = ns_timespec(deadline_ns);
    // SAFETY: `ts` is a valid timespec; a null remainder pointer is allowed with TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// `sched_yield`.
pub(crate) fn yield_now() {
    // SAFETY: sched_yield has no arguments and cannot fail in a way that matters.
    unsafe { libc::sched_yield() };
}

/// Blocks while `*word == expected`, at most `timeout_ns`; shared (not private) futex.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = ns_timespec(timeout_ns);
    // SAFETY: `word` points to a live, aligned u32 (an AtomicU32 in shared memory); the
    // timeout is a valid relative timespec; the other arguments are unused by FUTEX_WAIT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Wakes up to `count` waiters blocked on `word` (shared futex).
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: `word` points to a live, aligned u32; FUTEX_WAKE only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Pins `pid` (0 = caller) to `cpus`.
pub fn set_affinity(pid: i32, cpus: &BTreeSet<usize>) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bytes; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `cpu` was checked against CPU_SETSIZE, so the bit lies inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPUs `pid` (0 = caller) may run on.
pub(crate) fn get_affinity(pid: i32) -> io::Result<Vec<u32>> {
    // SAFETY: cpu_set_t is plain bytes; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE, inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .map(|cpu| cpu as u32)
        .collect())
}

/// A pipe whose both ends are close-on-exec; returns (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets O_NONBLOCK on `fd`.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor the caller owns; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to be readable (or hung up); true when it is.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    rc > 0 && pfd.revents != 0
}

/// Reads into `buf`; `Ok(0)` at end of file, `Err(WouldBlock)` when nothing is there.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes from `buf`; returns bytes written.
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes all of `buf`, retrying on EINTR/EAGAIN; gives up on other errors.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes every descriptor from 3 up except those in `keep` (close_range; best effort).
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; the caller owns the whole process
    // (a freshly forked single-threaded worker), so nothing else uses them.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
}

/// Sends `signal` to `pid`; errors (already gone) are ignored.
pub(crate) fn kill(pid: i32, signal: i32) {
    // SAFETY: kill only sends a signal; `pid` is one of our own unreaped children.
    unsafe { libc::kill(pid, signal) };
}

/// Wait status stand-in for a child someone else reaped (waitpid said ECHILD).
pub(crate) const LOST_STATUS: i32 = i32::MIN;

/// Non-blocking waitpid; `Some(status)` once `pid` has been reaped ([`LOST_STATUS`] if gone).
pub(crate) fn try_reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc == pid {
        Some(status)
    } else if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
        // Not our child (already reaped elsewhere): nothing more will come.
        Some(LOST_STATUS)
    } else {
        None
    }
}

/// `set_mempolicy(mode | flags, nodes)` for the caller; nodes must be at most 63.
pub(crate) fn set_mempolicy(mode: i32, flags: u32, nodes: &BTreeSet<usize>) -> io::Result<()> {
    let mask: libc::c_ulong = nodes
        .iter()
        .filter(|&&n| n < 64)
        .fold(0, |m, &n| m | (1 << n));
    let maxnode: libc::c_ulong = if nodes.is_empty() { 0 } else { 64 };
    let mode = mode | flags as i32;
    let mask_ptr: *const libc::c_ulong = if nodes.is_empty() {
        std::ptr::null()
    } else {
        &mask
    };
    // SAFETY: `mask_ptr` is null or points at one c_ulong, which holds `maxnode` (64) bits.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask_ptr, maxnode) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mbind(addr, len, MPOL_BIND, {node}, MPOL_MF_MOVE)`: bind a mapping to one node (node
/// at most 63), moving its pages there.
pub(crate) fn mbind_to_node(addr: *mut libc::c_void, len: usize, node: usize) -> io::Result<()> {
    /// `MPOL_BIND`.
    const MPOL_BIND: libc::c_ulong = 2;
    /// `MPOL_MF_MOVE`.
    const MPOL_MF_MOVE: libc::c_uint = 1 << 1;
    if node > 63 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mask: libc::c_ulong = 1 << node;
    // SAFETY: `addr`/`len` describe a mapping the caller owns; `mask` holds 64 node bits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_BIND,
            &mask as *const libc::c_ulong,
            64 as libc::c_ulong,
            MPOL_MF_MOVE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setgroups([gid])` then `setresgid(gid, gid, gid)` for the caller.
pub(crate) fn set_gid(gid: u32) -> io::Result<()> {
    let groups = [gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of one gid_t.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setresgid takes plain integers.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setresuid(uid, uid, uid)` for the caller.
pub(crate) fn set_uid(uid: u32) -> io::Result<()> {
    // SAFETY: setresuid takes plain integers.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A SIGUSR1 handler that does nothing, so the signal interrupts without killing.
extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Catches SIGUSR1 with a handler that does nothing (`SA_RESTART`), for signal storms.
pub(crate) fn ignore_sigusr1_with_handler() {
    // SAFETY: an all-zero sigaction is valid; the handler is an extern "C" fn that does
    // nothing and so is async-signal-safe.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut());
    }
}

/// Sets `SIGCHLD` to `SIG_IGN`, so exited children are reaped by the kernel.
pub(crate) fn ignore_children() {
    // SAFETY: SIG_IGN for SIGCHLD only changes how this process's children are reaped.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
}

/// `prctl(PR_SET_TIMERSLACK, ns)` for the caller (best effort: RT tasks ignore it).
pub(crate) fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

/// `prctl(PR_SET_NAME)`; `comm` must have no NUL (longer names are cut by the kernel).
pub(crate) fn set_comm(comm: &str) {
    let mut buf = [0u8; 16];
    let len = comm.len().min(15);
    buf[..len].copy_from_slice(&comm.as_bytes()[..len]);
    // SAFETY: `buf` is a NUL-terminated 16-byte buffer, as PR_SET_NAME expects.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr(), 0, 0, 0) };
}

/// A process's comm, read from `/proc/<pid>/comm` (empty when unreadable).
#[cfg(test)]
pub(crate) fn get_comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Sets the nice value of the caller.
pub(crate) fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the scheduling policy and (real-time) priority of the caller.
pub(crate) fn set_scheduler(policy: i32, priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Voluntary and involuntary context switches of the caller (getrusage RUSAGE_SELF).
pub(crate) fn context_switches() -> (u64, u64) {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0, 0);
    }
    (usage.ru_nvcsw.max(0) as u64, usage.ru_nivcsw.max(0) as u64)
}

/// The caller's process id.
pub(crate) fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The caller's parent process id.
pub(crate) fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// Ends the calling process at once, without running the parent's atexit or destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

/// The conventional name of a signal (`SIGKILL`), or `signal N`.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// How a wait status reads to a person: `killed by signal 9 (SIGKILL)`, `exited with 3`.
pub(crate) fn describe_status(status: i32) -> String {
    if status == LOST_STATUS {
        "vanished (reaped elsewhere, status unknown)".to_string()
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("killed by signal {sig} ({})", signal_name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else {
        format!("ended with wait status {status:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let a = now_ns();
        spin(10_000);
        assert!(now_ns() >= a);
        assert!(thread_cpu_ns() > 0);
    }

    #[test]
    fn statuses_read_well() {
        assert_eq!(
            describe_status(libc::SIGKILL),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe_status(3 << 8), "exited with status 3");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn affinity_round_trip_on_self() {
        let allowed = get_affinity(0).unwrap();
        assert!(!allowed.is_empty());
        assert!(current_cpu().is_some());
    }

    #[test]
    fn comm_of_self_is_readable() {
        assert!(!get_comm_of(getpid()).is_empty());
    }
}
