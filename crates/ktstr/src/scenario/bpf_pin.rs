//! `Op::pin_bpf_map`: pin one of the guest's BPF maps to the BPF filesystem, through the
//! `bpf(2)` system call (walk the map ids, match the name, `BPF_OBJ_PIN`), so a test or a
//! payload can open it by path.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the BPF filesystem is mounted (and mounted if it is not).
pub const BPF_FS: &str = "/sys/fs/bpf";

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_FS_MAGIC`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `union bpf_attr`, large enough for every command used here (the kernel zero-checks the
/// bytes past what a command reads, so it starts zeroed).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a writable, zero-initialised bpf_attr of 128 bytes, its size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Every map's id and name.
fn maps() -> std::io::Result<Vec<(u32, String, OwnedFd)>> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut a = Attr::new();
        a.put_u32(0, id);
        match bpf(BPF_MAP_GET_NEXT_ID, &mut a) {
            Ok(_) => id = a.u32_at(4),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let mut a = Attr::new();
        a.put_u32(0, id);
        let fd = match bpf(BPF_MAP_GET_FD_BY_ID, &mut a) {
            Ok(fd) => fd as i32,
            // The map went away between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut info = [0u8; 88];
        let mut a = Attr::new();
        a.put_u32(0, std::os::fd::AsRawFd::as_raw_fd(&fd) as u32);
        a.put_u32(4, info.len() as u32);
        a.put_u64(8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
        // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        let name = &info[24..40];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push((id, String::from_utf8_lossy(&name[..end]).into_owned(), fd));
    }
}

/// Where [`pin_map`] pins the map named `name`: `/sys/fs/bpf/<name>` with each `.` made `_`.
pub fn pinned_path(name: &str) -> PathBuf {
    Path::new(BPF_FS).join(name.replace('.', "_"))
}

/// Pins the map whose name is `name` (or ends with it) at [`pinned_path`] (the BPF
/// filesystem mounted first if it is not); returns the path.
pub fn pin_map(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("`{name}` cannot name a pinned map"));
    }
    mount_bpf_fs()?;
    let all = maps().map_err(|e| format!("listing BPF maps: {e}"))?;
    let found: Vec<_> = all
        .iter()
        .filter(|(_, n, _)| n == name || n.ends_with(name))
        .collect();
    let (id, map_name, fd) = match found.as_slice() {
        [one] => *one,
        [] => {
            let names: Vec<&str> = all.iter().map(|m| m.1.as_str()).collect();
            return Err(format!("no BPF map named `{name}` (maps: {names:?})"));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|m| m.1.as_str()).collect();
            return Err(format!("`{name}` matches several BPF maps: {names:?}"));
        }
    };
    // The BPF filesystem refuses names with a dot (bpf_lookup): `main_bpf.bss` pins as
    // `main_bpf_bss`.
    let path = pinned_path(name);
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut a = Attr::new();
    a.put_u64(0, c.as_ptr() as u64);
    a.put_u32(8, std::os::fd::AsRawFd::as_raw_fd(fd) as u32);
    bpf(BPF_OBJ_PIN, &mut a).map_err(|e| {
        format!(
            "pinning map {map_name} (id {id}) at {}: {e}",
            path.display()
        )
    })?;
    Ok(path)
}

/// Mounts the BPF filesystem at [`BPF_FS`] unless it is there.
fn mount_bpf_fs() -> Result<(), String> {
    let c = CString::new(BPF_FS).map_err(|e| e.to_string())?;
    // SAFETY: statfs into a zeroed struct we own, with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(BPF_FS).map_err(|e| format!("creating {BPF_FS}: {e}"))?;
    let fstype = CString::new("bpf").map_err(|e| e.to_string())?;
    // SAFETY: mount(2) with NUL-terminated strings we own and no data.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "mounting the BPF filesystem at {BPF_FS}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
