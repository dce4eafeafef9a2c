//! How many VMs run at once: a semaphore of lock files shared by every test process.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

/// A held VM slot; dropping it frees the slot.
#[derive(Debug)]
pub struct VmSlot {
    _lock: File,
    /// Which slot.
    pub index: usize,
}

/// VMs allowed at once: `KTSTR_VM_SLOTS`, else one per two host CPUs (at least one).
pub fn slot_count() -> usize {
    if let Some(n) = std::env::var("KTSTR_VM_SLOTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpus / 2).max(1)
}

fn slot_path(i: usize) -> PathBuf {
    std::env::temp_dir().join(format!("ktstr-vm-slot-{i}.lock"))
}

/// Waits for a free VM slot (across processes: cargo test threads and nextest processes alike).
pub fn vm_slot() -> std::io::Result<VmSlot> {
    let n = slot_count();
    loop {
        for index in 0..n {
            let lock = File::create(slot_path(index))?;
            // SAFETY: flock on a file we own; LOCK_NB never blocks.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(VmSlot { _lock: lock, index });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_excludes_others() {
        let a = vm_slot().unwrap();
        let probe = File::create(slot_path(a.index)).unwrap();
        // SAFETY: flock on a file we own; LOCK_NB never blocks.
        let rc = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(rc, 0, "a held slot must not be lockable");
        drop(a);
        assert!(slot_count() >= 1);
    }
}
