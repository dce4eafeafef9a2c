//! Freezing a running guest from another thread: QMP `stop`/`cont` on QEMU, parked vCPU
//! threads on ktstr's own VMM. While frozen, guest memory holds still, so the host can
//! follow pointers through it without racing the guest.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::kvm::KvmFreezer;
use crate::{Qmp, VmmError};

/// Freezes and thaws one running guest's vCPUs; cheap to clone and `Send`.
#[derive(Debug, Clone)]
pub enum Freezer {
    /// QEMU, through its QMP socket (a connection per freeze).
    Qmp(PathBuf),
    /// ktstr's own VMM.
    Kvm(KvmFreezer),
}

/// A frozen guest: it runs again on [`Frozen::thaw`], or when this is dropped.
#[derive(Debug)]
pub struct Frozen {
    how: Option<Thaw>,
    since: Instant,
}

#[derive(Debug)]
enum Thaw {
    Qmp(Qmp),
    Kvm(KvmFreezer),
}

impl Freezer {
    /// Stops every vCPU, waiting up to `timeout`; returns once none runs guest code.
    pub fn freeze(&self, timeout: Duration) -> Result<Frozen, VmmError> {
        let how = match self {
            Freezer::Qmp(path) => {
                let mut qmp = Qmp::connect(path, timeout)?;
                // `stop` returns once every vCPU has paused.
                qmp.execute("stop", None)?;
                Thaw::Qmp(qmp)
            }
            Freezer::Kvm(k) => {
                k.freeze(timeout)?;
                Thaw::Kvm(k.clone())
            }
        };
        Ok(Frozen {
            how: Some(how),
            since: Instant::now(),
        })
    }
}

impl Frozen {
    /// When the vCPUs stopped.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Lets the guest run again; returns how long it was frozen.
    pub fn thaw(mut self) -> Result<Duration, VmmError> {
        let frozen = self.since.elapsed();
        match self.how.take() {
            Some(Thaw::Qmp(mut q)) => {
                q.execute("cont", None)?;
            }
            Some(Thaw::Kvm(k)) => k.thaw(),
            None => {}
        }
        Ok(frozen)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        match self.how.take() {
            Some(Thaw::Qmp(mut q)) => {
                let _ = q.execute("cont", None);
            }
            Some(Thaw::Kvm(k)) => k.thaw(),
            None => {}
        }
    }
}
