//! Kernel `.config` parsing and the checks ktstr makes before booting.

use std::collections::BTreeMap;

/// The kernel config fragment a ktstr kernel is built with (`ktstr.kconfig` at the workspace root).
pub const KTSTR_KCONFIG: &str = include_str!("../../../../ktstr.kconfig");

/// Options a kernel must have built in (`=y`) for `ktstr exec` to work at all.
pub const EXEC_REQUIRED: &[&str] = &[
    "BLK_DEV_INITRD",
    "DEVTMPFS",
    "PROC_FS",
    "SYSFS",
    "TTY",
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "BINFMT_ELF",
    "SMP",
    "CGROUPS",
];

/// One option's value in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// `=y`.
    Yes,
    /// `=m`.
    Module,
    /// `# CONFIG_X is not set`.
    NotSet,
    /// Any other value (numbers, strings).
    Value(String),
}

/// Parses `.config` text (or a fragment) into option name (without `CONFIG_`) -> value.
pub fn parse_config(text: &str) -> BTreeMap<String, ConfigValue> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# CONFIG_") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                out.insert(name.to_string(), ConfigValue::NotSet);
            }
        } else if let Some(rest) = line.strip_prefix("CONFIG_") {
            if let Some((name, value)) = rest.split_once('=') {
                let v = match value {
                    "y" => ConfigValue::Yes,
                    "m" => ConfigValue::Module,
                    "n" => ConfigValue::NotSet,
                    other => ConfigValue::Value(other.to_string()),
                };
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// The `required` options that `config` does not build in, each as `CONFIG_X (why)`.
pub fn check_config(config: &str, required: &[&str]) -> Vec<String> {
    let parsed = parse_config(config);
    required
        .iter()
        .filter_map(|name| match parsed.get(*name) {
            Some(ConfigValue::Yes) => None,
            Some(ConfigValue::Module) => Some(format!("CONFIG_{name} (=m, must be =y)")),
            _ => Some(format!("CONFIG_{name} (not set)")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let c = parse_config("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\nCONFIG_E=512\n# comment\n");
        assert_eq!(c["A"], ConfigValue::Yes);
        assert_eq!(c["B"], ConfigValue::Module);
        assert_eq!(c["C"], ConfigValue::NotSet);
        assert_eq!(c["D"], ConfigValue::Value("\"x\"".into()));
        assert_eq!(c["E"], ConfigValue::Value("512".into()));
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn names_what_is_missing_and_why() {
        let missing = check_config(
            "CONFIG_DEVTMPFS=m\nCONFIG_PROC_FS=y\n",
            &["DEVTMPFS", "PROC_FS", "SYSFS"],
        );
        assert_eq!(
            missing,
            ["CONFIG_DEVTMPFS (=m, must be =y)", "CONFIG_SYSFS (not set)"]
        );
    }

    #[test]
    fn fragment_asks_for_sched_ext_btf_and_net() {
        let f = parse_config(KTSTR_KCONFIG);
        for opt in [
            "SCHED_CLASS_EXT",
            "DEBUG_INFO_BTF",
            "NET",
            "CPUSETS",
            "VIRTIO_MMIO_CMDLINE_DEVICES",
        ] {
            assert_eq!(f.get(opt), Some(&ConfigValue::Yes), "{opt}");
        }
        assert_eq!(f.get("STRICT_DEVMEM"), Some(&ConfigValue::NotSet));
        for opt in EXEC_REQUIRED {
            assert_eq!(f.get(*opt), Some(&ConfigValue::Yes), "fragment lacks {opt}");
        }
    }
}
