//! A writer for the `newc` cpio format the kernel unpacks as an initramfs.

use std::io::{self, Write};

/// File type bits of `mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes entries one after another; [`CpioWriter::finish`] writes the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    /// Adds a directory (permissions `perm`, e.g. 0o755).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | perm, 0, &[])
    }

    /// Adds a regular file with `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | perm, 0, data)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 0, target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | perm, (major << 8) | minor, &[])
    }

    /// Writes the trailer and returns the sink and the archive size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.entry("TRAILER!!!", 0, 0, &[])?;
        Ok((self.out, self.written))
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let name = if name.is_empty() { "." } else { name };
        if name.as_bytes().contains(&0) || data.len() > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot store `{path}` in a newc archive"),
            ));
        }
        let (rmaj, rmin) = (rdev >> 8, rdev & 0xff);
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            data.len(),
            0,
            0,
            rmaj,
            rmin,
            name.len() + 1,
            0, // check
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }
}

/// One entry read back from a newc archive (used by tests and `ktstr` diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path without a leading slash.
    pub name: String,
    /// Mode including file type bits.
    pub mode: u32,
    /// File data or link target.
    pub data: Vec<u8>,
}

/// Reads every entry of one or more concatenated newc archives, stopping at malformed data.
pub fn read_entries(mut buf: &[u8]) -> Result<Vec<CpioEntry>, String> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    loop {
        // Concatenated archives may be separated by zero padding.
        while buf.first() == Some(&0) {
            buf = &buf[1..];
            offset += 1;
        }
        if buf.is_empty() {
            return Ok(out);
        }
        if buf.len() < 110 || &buf[..6] != b"070701" {
            return Err(format!("no newc header at offset {offset}"));
        }
        let field = |i: usize| -> Result<usize, String> {
            let s = std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            usize::from_str_radix(s, 16).map_err(|e| format!("{e} at offset {offset}"))
        };
        let mode = field(1)? as u32;
        let size = field(6)?;
        let namesize = field(11)?;
        let name_end = 110 + namesize;
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if data_end > buf.len() || namesize == 0 {
            return Err(format!("truncated entry at offset {offset}"));
        }
        let name = String::from_utf8_lossy(&buf[110..name_end - 1]).into_owned();
        let next = data_end.div_ceil(4) * 4;
        let trailer = name == "TRAILER!!!";
        if !trailer {
            out.push(CpioEntry {
                name,
                mode,
                data: buf[data_start..data_end].to_vec(),
            });
        }
        let next = next.min(buf.len());
        buf = &buf[next..];
        offset += next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/hello", 0o755, b"#!/bin/sh\necho hi\n")
            .unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        let (bytes, size) = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(size % 4, 0);
        let e = read_entries(&bytes).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/hello", "bin/sh", "dev/console"]);
        assert_eq!(e[1].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(e[1].mode, 0o100755);
        assert_eq!(e[2].data, b"busybox");
        assert_eq!(e[3].mode & 0o170000, S_IFCHR);
    }

    #[test]
    fn header_matches_gnu_cpio_layout() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let (bytes, _) = w.finish().unwrap();
        // magic, then ino 1, mode 0100644, filesize 3, namesize 2
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081a4");
        assert_eq!(&bytes[54..62], b"00000003");
        assert_eq!(&bytes[94..102], b"00000002");
        // name "a\0" ends at 112, padded to 112; data at 112..115, padded to 116
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz");
    }

    #[test]
    fn concatenated_archives_read_as_one() {
        let mut a = CpioWriter::new(Vec::new());
        a.file("one", 0o644, b"1").unwrap();
        let (mut bytes, _) = a.finish().unwrap();
        let mut b = CpioWriter::new(Vec::new());
        b.file("two", 0o644, b"22").unwrap();
        bytes.extend(b.finish().unwrap().0);
        let names: Vec<String> = read_entries(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let mut a = CpioWriter::new(Vec::new());
        a.file("one", 0o644, b"12345678").unwrap();
        let (bytes, _) = a.finish().unwrap();
        assert!(read_entries(&bytes[..115]).is_err());
    }
}
