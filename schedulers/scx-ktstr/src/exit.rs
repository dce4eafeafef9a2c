//! The scheduler's exit info, as `UEI_RECORD` left it in the BPF program's
//! data, printed the way the kernel tree's `user_exit_info.h` prints it.

use std::fmt;

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf_skel::types::user_exit_info;
use crate::bpf_skel::{MainSkel, OpenMainSkel};

/// Size of the debug dump buffer (`UEI_DUMP_DFL_LEN`, the kernel's default `exit_dump_len`).
pub const DUMP_LEN: u32 = 32768;
/// Exit kinds from this value up are errors (`SCX_EXIT_ERROR`).
pub const SCX_EXIT_ERROR: i32 = 1024;

/// Why the scheduler stopped, from the kernel's `struct scx_exit_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// `enum scx_exit_kind`.
    pub kind: i32,
    /// The exit code (`scx_bpf_exit()`'s, or the kernel's reason and action bits).
    pub exit_code: i64,
    /// The CPU that triggered the exit, if known.
    pub exit_cpu: Option<u32>,
    /// The kernel's reason, e.g. `runnable task stall`.
    pub reason: String,
    /// The detail, e.g. the scx_bpf_error() message.
    pub msg: String,
    /// The kernel's debug dump, possibly empty.
    pub dump: String,
}

/// Sizes the dump buffer that `UEI_RECORD` fills (the `UEI_SET_SIZE` of C loaders).
pub fn set_dump_size(skel: &mut OpenMainSkel<'_>) -> Result<()> {
    let Some(rodata) = skel.maps.rodata_data.as_deref_mut() else {
        anyhow::bail!("the BPF object has no .rodata section");
    };
    rodata.uei_dump_len = DUMP_LEN;
    skel.struct_ops.ktstr_ops_mut().exit_dump_len = DUMP_LEN;
    skel.maps
        .data_uei_dump
        .set_value_size(DUMP_LEN)
        .context("resizing the exit dump buffer")
}

/// The recorded exit kind; 0 while the scheduler runs.
pub fn exit_kind(skel: &MainSkel<'_>) -> i32 {
    skel.maps.data_data.as_deref().map_or(0, |d| {
        // SAFETY: `d.uei.kind` is an aligned i32 in the loaded object's mmapped
        // .data, alive as long as `skel`; the BPF side writes it concurrently,
        // so read it volatile.
        unsafe { std::ptr::read_volatile(&d.uei.kind) }
    })
}

fn c_string(bytes: &[i8]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .map(|&b| b as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl ExitInfo {
    /// Reads the exit info after the scheduler has exited (`exit_kind` non-zero).
    pub fn read(skel: &MainSkel<'_>) -> Result<ExitInfo> {
        let data = skel
            .maps
            .data_data
            .as_deref()
            .context("the BPF object has no .data section")?;
        // SAFETY: `data.uei` is an aligned plain-data struct in the mmapped .data,
        // alive as long as `skel`; the BPF side finished writing it before
        // setting `kind`, so a volatile copy sees the final values.
        let uei: user_exit_info = unsafe { std::ptr::read_volatile(&data.uei) };
        let dump = skel
            .maps
            .data_uei_dump
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("reading the exit dump")?
            .map(|b| {
                String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
            })
            .unwrap_or_default();
        Ok(ExitInfo {
            kind: uei.kind,
            exit_code: uei.exit_code,
            exit_cpu: u32::try_from(uei.exit_cpu).ok(),
            reason: c_string(&uei.reason),
            msg: c_string(&uei.msg),
            dump,
        })
    }

    /// True if the kernel ejected the scheduler for an error (a stall, scx_bpf_error() ...).
    pub fn is_error(&self) -> bool {
        self.kind >= SCX_EXIT_ERROR
    }

    /// The name of `enum scx_exit_kind`'s value.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "none",
            1 => "done",
            64 => "unreg",
            65 => "unreg_bpf",
            66 => "unreg_kern",
            67 => "sysrq",
            68 => "parent",
            69 => "parent_kill",
            1024 => "error",
            1025 => "error_bpf",
            1026 => "error_stall",
            1027 => "error_reenq",
            1028 => "error_rescue",
            _ => "unknown",
        }
    }
}

impl fmt::Display for ExitInfo {
    /// The debug dump (if any), then `EXIT: reason (msg) on CPU n`, then the kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.dump.is_empty() {
            let rule = "=".repeat(80);
            writeln!(f, "\nDEBUG DUMP\n{rule}\n\n{}\n{rule}\n", self.dump)?;
        }
        write!(f, "EXIT: {}", self.reason)?;
        if !self.msg.is_empty() {
            write!(f, " ({})", self.msg)?;
        }
        if let Some(cpu) = self.exit_cpu {
            write!(f, " on CPU {cpu}")?;
        }
        write!(
            f,
            "\nexit kind {} ({}), code {:#x}",
            self.kind,
            self.kind_name(),
            self.exit_code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: i32) -> ExitInfo {
        ExitInfo {
            kind,
            exit_code: 0,
            exit_cpu: Some(1),
            reason: "scx_bpf_error".into(),
            msg: "main.bpf.c:90: error-after: 100 tasks dispatched".into(),
            dump: String::new(),
        }
    }

    #[test]
    fn prints_like_user_exit_info() {
        assert_eq!(
            info(1025).to_string(),
            "EXIT: scx_bpf_error (main.bpf.c:90: error-after: 100 tasks dispatched) on CPU 1\n\
             exit kind 1025 (error_bpf), code 0x0"
        );
        assert!(info(1026).is_error());
        assert!(!info(64).is_error());
    }

    #[test]
    fn c_strings_stop_at_nul() {
        assert_eq!(c_string(&[b'o' as i8, b'k' as i8, 0, b'x' as i8]), "ok");
    }
}
