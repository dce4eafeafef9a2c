//! Payloads: outside programs (schbench, stress-ng, a benchmark of your own) run in the
//! guest beside the cgroup workers, their exit status and output part of the result.

use std::path::PathBuf;

/// Where payload binaries are packed in the guest.
pub const GUEST_PAYLOAD_DIR: &str = "/ktstr/payload";

/// An outside program a test runs in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Name used in reports and by `Op::wait_payload`/`Op::kill_payload`.
    pub name: &'static str,
    /// The host binary: an absolute path, or a name looked up in `PATH`.
    pub binary: &'static str,
    /// Arguments used when an op gives none.
    pub default_args: &'static [&'static str],
}

impl Payload {
    /// A payload called `name` running `binary` (a path, or a name found in `PATH`).
    pub const fn binary(name: &'static str, binary: &'static str) -> Self {
        Payload {
            name,
            binary,
            default_args: &[],
        }
    }

    /// A payload whose binary has its name.
    pub const fn named(name: &'static str) -> Self {
        Self::binary(name, name)
    }

    /// Sets the arguments used when none are given.
    pub const fn default_args(mut self, args: &'static [&'static str]) -> Self {
        self.default_args = args;
        self
    }

    /// Where it is in the guest.
    pub fn guest_path(&self) -> String {
        format!("{GUEST_PAYLOAD_DIR}/{}", self.name)
    }

    /// Finds the binary on the host.
    pub fn resolve_binary(&self) -> Result<PathBuf, String> {
        let p = PathBuf::from(self.binary);
        if self.binary.contains('/') {
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "payload {}: {} does not exist",
                    self.name,
                    p.display()
                ))
            };
        }
        crate::initramfs::find_in_path(self.binary)
            .ok_or_else(|| format!("payload {}: `{}` is not in PATH", self.name, self.binary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_resolve_through_path_or_fail_naming_themselves() {
        const SH: Payload = Payload::binary("shell", "sh").default_args(&["-c", "true"]);
        assert!(SH.resolve_binary().unwrap().is_file());
        assert_eq!(SH.guest_path(), "/ktstr/payload/shell");
        let e = Payload::named("no-such-binary-xyz")
            .resolve_binary()
            .unwrap_err();
        assert!(
            e.contains("no-such-binary-xyz") && e.contains("PATH"),
            "{e}"
        );
        assert!(Payload::binary("x", "/nonexistent/x")
            .resolve_binary()
            .is_err());
    }
}
