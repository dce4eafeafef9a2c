//! A test's guest output as the host keeps it: a bounded tail in memory and, where asked,
//! the whole stream in a file.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// Bytes of each stream a test keeps in memory (its last ones).
pub const TAIL_LIMIT: usize = 1 << 20;

/// The last `limit` bytes of a stream, the count of earlier ones, and optionally a file that
/// receives all of them.
#[derive(Debug)]
pub struct StreamTail {
    buf: Vec<u8>,
    limit: usize,
    dropped: u64,
    file: Option<(PathBuf, File)>,
    file_error: Option<String>,
}

impl StreamTail {
    /// A tail of at most `limit` bytes (at least 1), kept in memory only.
    pub fn new(limit: usize) -> Self {
        StreamTail {
            buf: Vec::new(),
            limit: limit.max(1),
            dropped: 0,
            file: None,
            file_error: None,
        }
    }

    /// Also writes the whole stream to `path` (created or truncated now; a failure is
    /// reported by [`StreamTail::file_error`] and the tail goes on).
    pub fn with_file(mut self, path: PathBuf) -> Self {
        match File::create(&path) {
            Ok(f) => self.file = Some((path, f)),
            Err(e) => self.file_error = Some(format!("{}: {e}", path.display())),
        }
        self
    }

    /// Appends `data`, trimming the front once the buffer holds twice the limit.
    pub fn push(&mut self, data: &[u8]) {
        if let Some((path, f)) = &mut self.file {
            if let Err(e) = f.write_all(data) {
                self.file_error = Some(format!("{}: {e}", path.display()));
                self.file = None;
            }
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 2 * self.limit {
            let cut = self.buf.len() - self.limit;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// Bytes seen but no longer in memory.
    pub fn dropped(&self) -> u64 {
        self.dropped + self.buf.len().saturating_sub(self.limit) as u64
    }

    /// Why the stream's file could not be written, if it could not.
    pub fn file_error(&self) -> Option<&str> {
        self.file_error.as_deref()
    }

    /// The kept bytes as text, led by a line saying how many earlier bytes were not kept
    /// (and where the whole stream is, when it went to a file).
    pub fn into_text(self) -> String {
        let dropped = self.dropped();
        let start = self.buf.len().saturating_sub(self.limit);
        let kept = String::from_utf8_lossy(&self.buf[start..]).into_owned();
        if dropped == 0 {
            return kept;
        }
        let whole = match &self.file {
            Some((path, _)) => format!("; all of it is in {}", path.display()),
            None => String::new(),
        };
        format!("[ktstr: {dropped} earlier bytes not kept{whole}]\n{kept}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_streams_are_kept_whole() {
        let mut t = StreamTail::new(16);
        t.push(b"hello ");
        t.push(b"world\n");
        assert_eq!(t.dropped(), 0);
        assert_eq!(t.into_text(), "hello world\n");
    }

    #[test]
    fn long_streams_keep_their_end_and_count_the_rest() {
        let mut t = StreamTail::new(8);
        for i in 0..100u8 {
            t.push(&[b'a' + i % 26]);
        }
        assert_eq!(t.dropped(), 92);
        assert!(t.buf.len() < 16, "memory stays bounded: {}", t.buf.len());
        let text = t.into_text();
        let (head, kept) = text.split_once('\n').unwrap();
        assert_eq!(head, "[ktstr: 92 earlier bytes not kept]");
        let want: String = (92..100u8).map(|i| (b'a' + i % 26) as char).collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn the_whole_stream_goes_to_the_file() {
        let path = std::env::temp_dir().join(format!("ktstr-tail-{}", std::process::id()));
        let mut t = StreamTail::new(4).with_file(path.clone());
        let data: Vec<u8> = (0..1000u32).map(|i| b'0' + (i % 10) as u8).collect();
        for chunk in data.chunks(7) {
            t.push(chunk);
        }
        assert!(t.file_error().is_none());
        let text = t.into_text();
        assert!(
            text.contains(&format!("all of it is in {}", path.display())),
            "{text}"
        );
        assert!(text.ends_with("6789"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_unwritable_file_is_reported_and_the_tail_goes_on() {
        let mut t = StreamTail::new(4).with_file("/nonexistent/dir/out".into());
        t.push(b"abc");
        assert!(t.file_error().unwrap().contains("/nonexistent/dir/out"));
        assert_eq!(t.into_text(), "abc");
    }
}
