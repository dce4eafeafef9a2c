//! Errors of the ktstr library.

use std::path::{Path, PathBuf};

/// Why a ktstr operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KtstrError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A path given with `--include-files` does not exist.
    #[error("include file {0} not found (bare names are looked up in PATH)")]
    IncludeMissing(PathBuf),
    /// A shared library an ELF needs is not on the host.
    #[error("shared library {library} needed by {needed_by} not found on the host")]
    LibraryMissing {
        /// The DT_NEEDED name.
        library: String,
        /// The ELF needing it.
        needed_by: PathBuf,
    },
    /// An ELF file could not be parsed.
    #[error("{path} is not a usable ELF file: {reason}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No kernel matched what was asked.
    #[error("kernel `{spec}` not found: {hint}")]
    KernelNotFound {
        /// What the user asked for.
        spec: String,
        /// What to do about it.
        hint: String,
    },
    /// The scheduler binary asked for is not there.
    #[error("scheduler binary `{}` not found", path.display())]
    SchedulerNotFound {
        /// The path given.
        path: std::path::PathBuf,
    },
    /// The kernel lacks configuration ktstr needs.
    #[error("kernel {kernel} lacks what ktstr needs: {}", missing.join(", "))]
    KernelConfig {
        /// The kernel.
        kernel: String,
        /// Missing options, e.g. `CONFIG_DEVTMPFS (not set)`.
        missing: Vec<String>,
    },
    /// Fetching a kernel package failed.
    #[error("kernel fetch failed while {step}: {detail}")]
    Fetch {
        /// What was being done.
        step: String,
        /// What went wrong (command output).
        detail: String,
    },
    /// Building a kernel failed.
    #[error("kernel build failed while {step}: {detail}")]
    Build {
        /// What was being done.
        step: String,
        /// What went wrong.
        detail: String,
    },
    /// A kernel module asked for cannot be provided.
    #[error("module {module} for kernel {kernel}: {hint}")]
    ModuleMissing {
        /// The module.
        module: String,
        /// The kernel.
        kernel: String,
        /// Why.
        hint: String,
    },
    /// A required host tool is missing.
    #[error("`{tool}` not found: {hint}")]
    ToolMissing {
        /// The tool.
        tool: String,
        /// How to install it.
        hint: String,
    },
    /// The guest memory asked for is more than the host can give; refused before boot.
    #[error("guest memory of {requested} is more than {limit}")]
    MemoryTooLarge {
        /// The size asked for, e.g. `99999999999 GiB`.
        requested: String,
        /// What the host has, e.g. `this host has (7982 MiB, MemTotal in /proc/meminfo)`.
        limit: String,
    },
    /// `--vmm auto` left ktstr's KVM VMM, which could not start the guest, and QEMU could
    /// not start either.
    #[error("{fallback}, but QEMU could not start")]
    FallbackFailed {
        /// The fallback line, saying why ktstr's VMM was left.
        fallback: String,
        /// Why QEMU could not start.
        #[source]
        source: ktstr_vmm::VmmError,
    },
    /// The engine failed.
    #[error(transparent)]
    Vmm(#[from] ktstr_vmm::VmmError),
    /// A compressed kernel module could not be unpacked (a corrupt `.ko.zst`, say).
    #[error("{}: cannot decompress: {source}", path.display())]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// What the decompressor said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A kernel module file's compression is none ktstr can unpack.
    #[error("{}: unknown module compression `.{extension}` (ktstr reads .ko, .ko.zst, .ko.xz, .ko.gz)", path.display())]
    UnknownCompression {
        /// The module file.
        path: PathBuf,
        /// Its extension.
        extension: String,
    },
    /// A host command ktstr runs failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// Writing an archive entry into an initramfs failed.
    #[error("initramfs entry {entry}: {source}")]
    Cpio {
        /// The entry's path in the archive.
        entry: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising ktstr's own data as JSON failed.
    #[error("writing {what} as JSON: {source}")]
    Json {
        /// What was being written.
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A host thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's purpose.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl KtstrError {
    /// The error for `cmd`'s failed `output`.
    pub fn command_failed(cmd: &std::process::Command, output: &std::process::Output) -> Self {
        let args: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        KtstrError::CommandFailed {
            command: args.join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        KtstrError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
