//! Interrupts a scenario can steer to a CPU: chosen by number or by the name a driver gave
//! them in `/proc/interrupts`.

use std::borrow::Cow;

use super::owned;
use std::collections::BTreeSet;

/// Which interrupt [`Op::SteerIrq`](super::Op::SteerIrq) steers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqSelector {
    /// This IRQ number.
    Number(u32),
    /// Every numbered IRQ a handler of this name is on (`/proc/interrupts`' last column).
    Label(String),
}

impl IrqSelector {
    /// IRQ `n`.
    pub fn by_number(n: u32) -> Self {
        IrqSelector::Number(n)
    }
    /// The IRQs whose handler is called `label` (such as `ttyS0` or `virtio0-requests`).
    pub fn by_label(label: impl Into<Cow<'static, str>>) -> Self {
        IrqSelector::Label(owned(label))
    }

    /// The IRQ numbers this selects, given the text of `/proc/interrupts`.
    pub fn resolve(&self, interrupts: &str) -> Result<BTreeSet<u32>, String> {
        let table = parse_interrupts(interrupts);
        let found: BTreeSet<u32> = match self {
            IrqSelector::Number(n) => table
                .iter()
                .filter(|(i, _)| i == n)
                .map(|(i, _)| *i)
                .collect(),
            IrqSelector::Label(label) => table
                .iter()
                .filter(|(_, names)| names.iter().any(|n| n == label))
                .map(|(i, _)| *i)
                .collect(),
        };
        if found.is_empty() {
            let known: Vec<String> = table
                .iter()
                .map(|(i, n)| format!("{i}:{}", n.join(",")))
                .collect();
            return Err(format!(
                "{self:?} matches no IRQ (have {})",
                known.join(" ")
            ));
        }
        Ok(found)
    }
}

/// Numbered IRQs of `/proc/interrupts` and the names of their handlers.
fn parse_interrupts(text: &str) -> Vec<(u32, Vec<String>)> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .map_or(0, |header| header.split_whitespace().count());
    lines
        .filter_map(|line| {
            let (num, rest) = line.trim_start().split_once(':')?;
            let irq: u32 = num.trim().parse().ok()?;
            // Per-CPU counts, the chip, the hardware IRQ and trigger, then the handlers.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let handlers = fields.get(cpus + 2..).unwrap_or_default().join(" ");
            let names = handlers
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            Some((irq, names))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1
  0:         47          0   IO-APIC   2-edge      timer
  4:        310         12   IO-APIC   4-edge      ttyS0
  9:          0          0   IO-APIC   9-fasteoi   acpi
 24:        100          3  PCI-MSIX-0000:00:03.0   1-edge      virtio0-input.0, virtio0-output.0
NMI:          0          0   Non-maskable interrupts
";

    #[test]
    fn irqs_resolve_by_number_and_label() {
        let n = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(IrqSelector::by_number(4).resolve(INTERRUPTS), Ok(n(&[4])));
        assert_eq!(
            IrqSelector::by_label("ttyS0").resolve(INTERRUPTS),
            Ok(n(&[4]))
        );
        assert_eq!(
            IrqSelector::by_label("virtio0-output.0").resolve(INTERRUPTS),
            Ok(n(&[24]))
        );
        let err = IrqSelector::by_label("eth0")
            .resolve(INTERRUPTS)
            .unwrap_err();
        assert!(err.contains("4:ttyS0"), "{err}");
        assert!(IrqSelector::by_number(7).resolve(INTERRUPTS).is_err());
        // A label is a whole handler name, not a part of one.
        assert!(IrqSelector::by_label("tty").resolve(INTERRUPTS).is_err());
    }
}
