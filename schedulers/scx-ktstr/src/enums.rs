//! The kernel enum values the sched_ext headers leave to the loader: the BPF
//! side reads `SCX_DSQ_LOCAL`, `SCX_SLICE_DFL` ... from `__SCX_*` rodata that
//! C loaders fill with `SCX_ENUM_INIT` from the running kernel's BTF. The list
//! of fields comes from the kernel tree's `enums.autogen.h` at build time.

use anyhow::{Context, Result};
use libbpf_rs::btf::types::{Enum, Enum64};
use libbpf_rs::btf::Btf;

use crate::bpf_skel::types;
use crate::bpf_skel::OpenMainSkel;

include!(concat!(env!("OUT_DIR"), "/scx_enums.rs"));

/// The value of enumerator `name` of enum `ty` in `btf`; 0 if absent (as `SCX_ENUM_INIT` does).
fn enum_value(btf: &Btf<'_>, ty: &str, name: &str) -> u64 {
    let is = |n: Option<&std::ffi::OsStr>| n.is_some_and(|n| n == name);
    if let Some(e) = btf.type_by_name::<Enum<'_>>(ty) {
        if let Some(m) = e.iter().find(|m| is(m.name)) {
            return u64::from_ne_bytes(m.value.to_ne_bytes());
        }
    }
    if let Some(e) = btf.type_by_name::<Enum64<'_>>(ty) {
        if let Some(m) = e.iter().find(|m| is(m.name)) {
            // Enum64 values fit in 64 bits; the i128 only carries the sign.
            return m.value as u64;
        }
    }
    0
}

/// Fills the `__SCX_*` rodata from `/sys/kernel/btf/vmlinux`.
pub fn init(skel: &mut OpenMainSkel<'_>) -> Result<()> {
    let btf = Btf::from_vmlinux().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let Some(rodata) = skel.maps.rodata_data.as_deref_mut() else {
        anyhow::bail!("the BPF object has no .rodata section");
    };
    set_scx_enums(rodata, &|ty, name| enum_value(&btf, ty, name));
    Ok(())
}
