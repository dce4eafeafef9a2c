//! Everything that can go wrong building a workload or driving cgroups.

use std::io;
use std::path::PathBuf;

/// Why a workload could not be spawned or a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The configuration is inconsistent (an empty CPU set, a zero stride, ...).
    #[error("invalid workload config: {0}")]
    Config(String),
    /// The worker count does not split into whole cooperating groups.
    #[error("{num_workers} workers of {work_type} do not form whole groups of {group_size}")]
    GroupSize {
        /// Workers asked for.
        num_workers: usize,
        /// Workers per cooperating group.
        group_size: usize,
        /// Name of the work type.
        work_type: String,
    },
    /// A system call failed; `what` says which and on what.
    #[error("{what}: {}", os_msg(source))]
    Sys {
        /// The operation, e.g. `fork worker 3`.
        what: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a value to a (cgroup) file failed.
    #[error("writing {value:?} to {}: {}", path.display(), os_msg(source))]
    Write {
        /// File written.
        path: PathBuf,
        /// Value written.
        value: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a (cgroup) file or directory failed.
    #[error("reading {}: {}", path.display(), os_msg(source))]
    Read {
        /// File read.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup path or state is not what the operation needs.
    #[error("{}: {reason}", path.display())]
    Cgroup {
        /// The cgroup directory (or file) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl WorkloadError {
    /// Builds a [`WorkloadError::Sys`] from the calling thread's `errno`.
    pub(crate) fn last_os(what: impl Into<String>) -> Self {
        Self::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }
}

/// The OS's description of an error without Rust's ` (os error N)` suffix.
pub(crate) fn os_msg(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_names_path_and_value() {
        let err = WorkloadError::Write {
            path: PathBuf::from("/sys/fs/cgroup/x/cpuset.cpus"),
            value: "0-3".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(
            err.to_string(),
            "writing \"0-3\" to /sys/fs/cgroup/x/cpuset.cpus: Invalid argument"
        );
    }

    #[test]
    fn group_size_error_reads_well() {
        let err = WorkloadError::GroupSize {
            num_workers: 3,
            group_size: 2,
            work_type: "PipeIo".into(),
        };
        assert_eq!(
            err.to_string(),
            "3 workers of PipeIo do not form whole groups of 2"
        );
    }
}
