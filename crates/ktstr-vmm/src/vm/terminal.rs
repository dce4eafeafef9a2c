//! Raw mode for the caller's terminal while a guest shell owns it, as QEMU's
//! `-chardev stdio,signal=off` does: every key (Ctrl-C, Ctrl-Z, Tab, arrows) goes to the guest,
//! which echoes; the previous settings come back when the guard drops.

use std::os::fd::RawFd;

/// The terminal settings to restore; dropping it restores them.
pub(crate) struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode; `None` if `fd` is not a terminal or refuses.
    pub(crate) fn enable(fd: RawFd) -> Option<RawMode> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it and its result is checked.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write to.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Output post-processing stays: the guest's "\n" still starts a new line.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same descriptor; a failure (the
        // terminal went away) leaves nothing to restore.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags of the terminal on `fd`.
    fn attrs(fd: RawFd) -> libc::termios {
        // SAFETY: as in RawMode::enable.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to write to.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t
    }

    #[test]
    fn raw_while_held_and_restored_after() {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors; name, termios and winsize may be null.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        let before = attrs(slave);
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a new pty is canonical");
        {
            let _raw = RawMode::enable(slave).expect("a pty is a terminal");
            let t = attrs(slave);
            assert_eq!(t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
            assert_ne!(t.c_oflag & libc::OPOST, 0, "output still post-processed");
        }
        let after = attrs(slave);
        assert_eq!(
            (after.c_lflag, after.c_iflag, after.c_oflag),
            (before.c_lflag, before.c_iflag, before.c_oflag)
        );
        // SAFETY: both descriptors came from openpty and are closed once.
        unsafe {
            libc::close(master);
            libc::close(slave);
        }
        // A pipe is not a terminal.
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(RawMode::enable(fds[0]).is_none());
        // SAFETY: both came from pipe.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
