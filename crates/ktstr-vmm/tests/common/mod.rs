//! Helpers shared by the VM tests.

#![allow(dead_code)]

pub mod asm;
pub mod programs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `/dev/kvm` can be used; prints `SKIPPED <test>: <reason>` when not, and panics
/// instead when `KTSTR_REQUIRE_VM=1`.
pub fn kvm_available(test: &str) -> bool {
    let ok = ktstr_vmm::host_kvm().dev_kvm;
    if !ok {
        skip(test, "/dev/kvm is absent or not accessible");
    }
    ok
}

/// Prints `SKIPPED <test>: <reason>`, or panics with it when `KTSTR_REQUIRE_VM=1`.
pub fn skip(test: &str, reason: &str) {
    let msg = format!("SKIPPED {test}: {reason}\n");
    if std::env::var("KTSTR_REQUIRE_VM").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
}

/// The first `kernels/*/vmlinux` of ktstr's cache, found as ktstr finds it:
/// `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
fn cached_vmlinux() -> Option<PathBuf> {
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    // `$KTSTR_KERNEL` when it names a vmlinux or a cache entry holding one (the nested
    // lane runs these tests on each of its kernels that way).
    if let Some(k) = nonempty("KTSTR_KERNEL") {
        let vmlinux = if k.is_dir() { k.join("vmlinux") } else { k };
        if vmlinux.is_file() && vmlinux.file_name().is_some_and(|n| n == "vmlinux") {
            return Some(vmlinux);
        }
    }
    let cache = nonempty("KTSTR_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("ktstr")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache/ktstr")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache.join("kernels"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// [`cached_vmlinux`], or `None` after [`skip`] said there is none.
pub fn cached_vmlinux_or_skip(test: &str) -> Option<PathBuf> {
    let found = cached_vmlinux();
    if found.is_none() {
        skip(
            test,
            "no cached kernel with a vmlinux: run `ktstr kernel fetch`",
        );
    }
    found
}

/// Whether KVM here can boot Linux; prints `SKIPPED <test>: <reason>` when not, without
/// failing even under `KTSTR_REQUIRE_VM=1`: the CI host's KVM is PVM, where this is expected
/// (the nested lane runs these tests on a KVM that can).
pub fn linux_kvm(test: &str) -> bool {
    match ktstr_vmm::host_kvm().unusable_reason() {
        None => true,
        Some(why) => {
            stderr(&format!(
                "SKIPPED {test}: KVM cannot boot Linux here: {why}\n"
            ));
            false
        }
    }
}

/// Writes `s` to stderr (tests print the guest's output for the log).
pub fn stderr(s: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), s.as_bytes());
}

/// Where the static busybox is, on the host or in the nested lane's outer guest.
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// What every busybox test guest's `/init` starts with: the applets, /proc, /sys and /dev,
/// and its output on COM2.
pub const INIT_PREAMBLE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/ttyS1 2>&1
echo "init: started"
"#;

/// A busybox root at `dir/root`: the standard directories, `/bin/busybox`, and an executable
/// `/init`: [`INIT_PREAMBLE`], then `init`; returns the root.
pub fn busybox_root(dir: &Path, busybox: &Path, init: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("root");
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    for d in ["bin", "proc", "sys", "dev", "tmp", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| io(d, e))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| io("copying busybox", e))?;
    let path = root.join("init");
    std::fs::write(&path, format!("{INIT_PREAMBLE}{init}")).map_err(|e| io("writing /init", e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod /init", e))?;
    Ok(root)
}

/// Writes everything under `root` as a newc cpio at `out`.
pub fn cpio(root: &Path, out: &Path) -> Result<(), String> {
    let archive = std::fs::File::create(out).map_err(|e| format!("creating the cpio: {e}"))?;
    let st = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc")
        .current_dir(root)
        .stdout(archive)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running cpio: {e}"))?;
    if !st.success() {
        return Err(format!("`find . | cpio -o -H newc` failed: {st}"));
    }
    Ok(())
}

/// The rest of the line of `text` that starts with `key `, without the line end.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(key)?
            .strip_prefix(' ')
    })
}

/// What a busybox Linux guest test needs: KVM that boots Linux ([`linux_kvm`]), a cached
/// vmlinux and a static busybox; `None` after saying which is missing.
pub fn linux_guest_prereqs(test: &str) -> Option<(PathBuf, PathBuf)> {
    if !linux_kvm(test) {
        return None;
    }
    let vmlinux = cached_vmlinux_or_skip(test)?;
    let Some(busybox) = busybox() else {
        skip(
            test,
            "no static busybox at /bin/busybox or /usr/bin/busybox",
        );
        return None;
    };
    Some((vmlinux, busybox))
}

/// An empty scratch directory `ktstr-<name>-<pid>` under the temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ktstr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
