//! Tests on real kernel BTF: the host's `/sys/kernel/btf/vmlinux` and the cached Debian
//! 7.3 vmlinux (with sched_ext). Each is skipped, with the reason printed, when absent.
//!
//! The 7.3 offsets were checked against `pahole -C <struct>` on the same file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{resolve, Btf, BtfError, Field, Kind, TypeBody};

/// The vmlinux ktstr caches for Debian's 7.3 kernel (`ktstr kernel fetch`), in ktstr's
/// cache: `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
pub(crate) fn vmlinux_7_3() -> PathBuf {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    };
    let cache = nonempty("KTSTR_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("ktstr")))
        .unwrap_or_else(|| nonempty("HOME").unwrap_or_default().join(".cache/ktstr"));
    cache.join("kernels/7.3.4+deb13-cloud-amd64/vmlinux")
}

/// Says visibly (libtest hides a passing test's `println!`) that a test skips, and
/// fails it instead when `KTSTR_REQUIRE_VM=1` (CI, after `scripts/setup`).
pub(crate) fn skip(why: &str) {
    assert!(
        std::env::var("KTSTR_REQUIRE_VM").as_deref() != Ok("1"),
        "KTSTR_REQUIRE_VM=1 but {why}"
    );
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The host kernel's raw BTF.
const HOST_BTF: &str = "/sys/kernel/btf/vmlinux";

fn load(path: &Path, cell: &'static OnceLock<Option<Btf>>) -> Option<&'static Btf> {
    cell.get_or_init(|| {
        if !path.exists() {
            return None;
        }
        Some(Btf::from_file(path).expect("real BTF parses"))
    })
    .as_ref()
}

fn kernel_7_3() -> Option<&'static Btf> {
    static CELL: OnceLock<Option<Btf>> = OnceLock::new();
    let path = vmlinux_7_3();
    let btf = load(&path, &CELL);
    if btf.is_none() {
        skip(&format!(
            "{} is absent (`ktstr kernel fetch`)",
            path.display()
        ));
    }
    btf
}

fn host() -> Option<&'static Btf> {
    static CELL: OnceLock<Option<Btf>> = OnceLock::new();
    let btf = load(Path::new(HOST_BTF), &CELL);
    if btf.is_none() {
        skip(&format!(
            "{HOST_BTF} is absent (kernel without CONFIG_DEBUG_INFO_BTF)"
        ));
    }
    btf
}

fn field(btf: &Btf, ty: &str, path: &str) -> Field {
    resolve(btf, ty, path).unwrap_or_else(|e| panic!("{ty}.{path}: {e}"))
}

/// `(type, path, offset_bytes, size)` from pahole on the 7.3 vmlinux.
const KNOWN_7_3: &[(&str, &str, u32, u32)] = &[
    ("rq", "nr_running", 0, 4),
    ("rq", "curr", 24, 8), // in an anonymous union with `donor`
    ("rq", "donor", 24, 8),
    ("rq", "nr_switches", 64, 8),
    ("rq", "cfs", 256, 512),
    ("rq", "cfs.h_nr_queued", 276, 4),
    ("rq", "scx", 2552, 672),
    ("rq", "scx.nr_running", 3000, 4),
    ("rq", "scx.local_dsq", 2552, 104),
    ("rq", "clock", 3984, 8),
    ("task_struct", "pid", 2872, 4),
    ("task_struct", "comm", 3408, 16),
    ("task_struct", "comm[3]", 3411, 1),
    ("task_struct", "scx.runnable_at", 776 + 176, 8),
    ("task_struct", "scx.kf_tasks[1]", 776 + 144 + 8, 8),
    ("scx_sched", "watchdog_timeout", 904, 8),
];

#[test]
fn kernel_7_3_known_offsets() {
    let Some(btf) = kernel_7_3() else { return };
    for &(ty, path, off, size) in KNOWN_7_3 {
        let f = field(btf, ty, path);
        assert_eq!((f.offset_bytes, f.size), (off, size), "{ty}.{path}");
        assert!(!f.is_bitfield(), "{ty}.{path}");
    }
    let comm = field(btf, "task_struct", "comm");
    let elem = match btf.get(btf.skip_modifiers(comm.type_id).expect("skip")) {
        Some(t) => t.body.clone(),
        None => panic!("comm has no type"),
    };
    assert!(matches!(elem, TypeBody::Array { len: 16, .. }), "{elem:?}");
}

#[test]
fn kernel_7_3_bitfields() {
    let Some(btf) = kernel_7_3() else { return };
    let reset = field(btf, "task_struct", "sched_reset_on_fork");
    assert_eq!(
        (reset.bit_offset, reset.bit_size, reset.size),
        (2796 * 8, 1, 4)
    );
    assert!(reset.is_bitfield());
    let execve = field(btf, "task_struct", "in_execve");
    assert_eq!(
        (execve.offset_bytes, execve.bit_offset % 8, execve.bit_size),
        (2800, 2, 1)
    );
    let mce = field(btf, "task_struct", "__mce_reserved");
    assert_eq!(
        (mce.bit_offset, mce.bit_size, mce.size),
        (5832 * 8 + 2, 62, 8)
    );
    // Extraction from an image of the bytes around the bitfield.
    let mut image = vec![0u8; 2801];
    image[2800] = 0b100;
    assert_eq!(execve.value_in(&image), Some(1));
    image[2800] = 0b011;
    assert_eq!(execve.value_in(&image), Some(0));
}

#[test]
fn kernel_7_3_errors_name_member_and_struct() {
    let Some(btf) = kernel_7_3() else { return };
    let err = resolve(btf, "rq", "scx.no_such_field").expect_err("missing");
    match &err {
        BtfError::MemberNotFound {
            member, in_type, ..
        } => {
            assert_eq!(member, "no_such_field");
            assert_eq!(in_type, "struct scx_rq");
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        resolve(btf, "rq", "curr.pid"),
        Err(BtfError::NotComposite {
            kind: Kind::Ptr,
            ..
        })
    ));
    assert!(matches!(
        resolve(btf, "task_struct", "comm[16]"),
        Err(BtfError::IndexOutOfBounds { len: 16, .. })
    ));
}

#[test]
fn kernel_7_3_has_every_kind_the_kernel_emits() {
    let Some(btf) = kernel_7_3() else { return };
    let mut seen = std::collections::HashMap::new();
    for (_, t) in btf.types() {
        *seen.entry(t.kind()).or_insert(0usize) += 1;
    }
    for kind in [
        Kind::Int,
        Kind::Ptr,
        Kind::Array,
        Kind::Struct,
        Kind::Union,
        Kind::Enum,
        Kind::Enum64,
        Kind::Fwd,
        Kind::Typedef,
        Kind::Volatile,
        Kind::Const,
        Kind::Func,
        Kind::FuncProto,
        Kind::Var,
        Kind::Datasec,
        Kind::DeclTag,
        Kind::TypeTag,
    ] {
        assert!(
            seen.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} in 7.3 BTF"
        );
    }
    assert!(btf.find("runqueues", Kind::Var).is_some());
    assert!(btf.find(".data..percpu", Kind::Datasec).is_some());
    assert!(btf.find("scx_exit_kind", Kind::Enum).is_some());
}

/// Every named member of every struct and union resolves inside its type.
fn sweep(btf: &Btf) -> usize {
    let mut checked = 0;
    for (id, t) in btf.types() {
        let (size, members) = match &t.body {
            TypeBody::Struct { size, members } | TypeBody::Union { size, members } => {
                (*size, members)
            }
            _ => continue,
        };
        let name = btf.str_at(t.name_off);
        // Anonymous and duplicated names cannot be looked up by name unambiguously.
        if name.is_empty() || btf.find_struct(name).ok() != Some(id) {
            continue;
        }
        for m in members.iter().filter(|m| m.name_off != 0) {
            let path = btf.str_at(m.name_off);
            let f = resolve(btf, name, path).unwrap_or_else(|e| panic!("{name}.{path}: {e}"));
            let end = u64::from(f.bit_offset) + u64::from(f.bit_size);
            let flexible = f.size == 0;
            assert!(
                flexible || end <= u64::from(size) * 8,
                "{name}.{path} ends at bit {end}, past {size} bytes"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn host_btf_every_member_resolves_inside_its_struct() {
    let Some(btf) = host() else { return };
    let checked = sweep(btf);
    assert!(checked > 10_000, "only {checked} members");
    let nr = field(btf, "rq", "nr_running");
    assert_eq!(nr.size, 4);
    let comm = field(btf, "task_struct", "comm");
    assert_eq!(comm.size, 16);
}

#[test]
fn kernel_7_3_every_member_resolves_inside_its_struct() {
    let Some(btf) = kernel_7_3() else { return };
    assert!(sweep(btf) > 10_000);
}
