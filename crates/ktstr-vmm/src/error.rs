//! Errors of the engines.

use std::path::PathBuf;

/// Why a VM could not be started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The engine's program is not installed.
    #[error("`{program}` not found: install it with `apt-get install -y {package}`")]
    EngineMissing {
        /// The program looked for.
        program: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file the VM needs does not exist.
    #[error("{what} not found at {path}")]
    MissingFile {
        /// Which input (kernel, initramfs).
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// KVM was asked for but this host cannot boot Linux with it.
    #[error("KVM cannot boot Linux guests on this host: {reason}")]
    KvmUnusable {
        /// What makes KVM unusable.
        reason: String,
    },
    /// The topology or memory size does not fit the engine.
    #[error("bad VM configuration: {reason}")]
    BadConfig {
        /// What is wrong.
        reason: String,
    },
    /// Spawning the engine process failed.
    #[error("could not start `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Creating or removing a run file failed.
    #[error("could not prepare {path}")]
    RunFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// ktstr's own KVM VMM failed to build, start or run the guest.
    #[error("ktstr's KVM VMM failed")]
    Kvm(#[from] crate::kvm::KvmError),
    /// Reading registers over QMP failed.
    #[error("QMP failed")]
    Qmp(#[from] crate::QmpError),
    /// Waiting for or signalling the engine process failed.
    #[error("could not wait for the VM process")]
    Wait(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads_as_clap_and_anyhow_need() {
        fn send_sync_static<T: std::error::Error + Send + Sync + 'static>() {}
        send_sync_static::<VmmError>();
    }
}
