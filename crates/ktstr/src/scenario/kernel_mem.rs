//! What the kernel-memory ops (`Op::write_kernel_hot`/`_cold`, `Op::read_kernel_hot`/`_cold`)
//! address and carry. The host resolves and performs them (see [`crate::kernel_ops`]):
//! "hot" with the guest running, "cold" with every vCPU frozen around the batch.

use serde::{Deserialize, Serialize};

/// Where in the guest kernel an op reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KernelTarget {
    /// A kernel symbol (data or bss for writes), found in vmlinux and moved by KASLR.
    Symbol(String),
    /// A direct-map kernel virtual address (`page_offset_base` + physical).
    Direct(u64),
    /// Any kernel virtual address, translated through the kernel's page tables.
    Kva(u64),
    /// A field of a per-CPU variable on one CPU (`runqueues`, `nr_running`, 1).
    PerCpuField {
        /// The per-CPU variable; its type comes from BTF.
        symbol: String,
        /// A member path in that type (`scx.nr_running`).
        field: String,
        /// The CPU.
        cpu: u32,
    },
    /// A field of a task's `task_struct`, found by pid.
    TaskField {
        /// The thread id.
        pid: u32,
        /// `task_struct.start_time` the task must have (guards against a reused pid);
        /// 0 skips the check.
        expected_start_time_ns: u64,
        /// A member path in `task_struct` (`scx.dsq_vtime`, `comm`).
        field: String,
    },
}

impl KernelTarget {
    /// A kernel symbol.
    pub fn symbol(name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        KernelTarget::Symbol(name.into().into_owned())
    }
    /// A direct-map kernel virtual address.
    pub const fn direct(kva: u64) -> Self {
        KernelTarget::Direct(kva)
    }
    /// Any kernel virtual address.
    pub const fn kva(kva: u64) -> Self {
        KernelTarget::Kva(kva)
    }
    /// Field `field` of per-CPU variable `symbol` on CPU `cpu`.
    pub fn per_cpu_field(
        symbol: impl Into<std::borrow::Cow<'static, str>>,
        field: impl Into<std::borrow::Cow<'static, str>>,
        cpu: u32,
    ) -> Self {
        KernelTarget::PerCpuField {
            symbol: symbol.into().into_owned(),
            field: field.into().into_owned(),
            cpu,
        }
    }
    /// Field `field` of thread `pid`'s `task_struct` (`expected_start_time_ns` 0: any).
    pub fn task_field(
        pid: u32,
        expected_start_time_ns: u64,
        field: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Self {
        KernelTarget::TaskField {
            pid,
            expected_start_time_ns,
            field: field.into().into_owned(),
        }
    }
}

/// A value to write (or a value read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KernelValue {
    /// A little-endian `u32`.
    U32(u32),
    /// A little-endian `u64`.
    U64(u64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// OR this mask into the `u32` there (read, OR, write; atomic only when cold).
    OrU32(u32),
}

impl KernelValue {
    /// A `u32`.
    pub const fn u32(v: u32) -> Self {
        KernelValue::U32(v)
    }
    /// A `u64`.
    pub const fn u64(v: u64) -> Self {
        KernelValue::U64(v)
    }
    /// Raw bytes.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        KernelValue::Bytes(data.into())
    }
    /// OR `mask` into the `u32` there.
    pub const fn or_u32(mask: u32) -> Self {
        KernelValue::OrU32(mask)
    }

    /// The value as a `u64`, for a `U32`, `U64` or a bytes value of at most 8 bytes.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            KernelValue::U32(v) | KernelValue::OrU32(v) => Some(u64::from(*v)),
            KernelValue::U64(v) => Some(*v),
            KernelValue::Bytes(b) if b.len() <= 8 => {
                let mut w = [0u8; 8];
                w[..b.len()].copy_from_slice(b);
                Some(u64::from_le_bytes(w))
            }
            KernelValue::Bytes(_) => None,
        }
    }
}

/// How much a read reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KernelValueWidth {
    /// A `u32`.
    U32,
    /// A `u64`.
    U64,
    /// This many bytes (at most [`MAX_KERNEL_READ`]).
    Bytes(usize),
}

/// Most bytes one read returns.
pub const MAX_KERNEL_READ: usize = 1024;

impl KernelValueWidth {
    /// A `u32`.
    pub const fn u32() -> Self {
        KernelValueWidth::U32
    }
    /// A `u64`.
    pub const fn u64() -> Self {
        KernelValueWidth::U64
    }
    /// `len` bytes.
    pub const fn bytes(len: usize) -> Self {
        KernelValueWidth::Bytes(len)
    }
    /// Bytes it reads.
    pub fn len(&self) -> usize {
        match self {
            KernelValueWidth::U32 => 4,
            KernelValueWidth::U64 => 8,
            KernelValueWidth::Bytes(n) => *n,
        }
    }
    /// Whether it reads nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The value `bytes` (of [`Self::len`]) make at this width.
    pub fn value(&self, bytes: &[u8]) -> KernelValue {
        let word = |n: usize| {
            let mut w = [0u8; 8];
            let k = bytes.len().min(n);
            w[..k].copy_from_slice(&bytes[..k]);
            u64::from_le_bytes(w)
        };
        match self {
            KernelValueWidth::U32 => KernelValue::U32(word(4) as u32),
            KernelValueWidth::U64 => KernelValue::U64(word(8)),
            KernelValueWidth::Bytes(_) => KernelValue::Bytes(bytes.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_make_values_and_values_round_trip_as_json() {
        assert_eq!(
            KernelValueWidth::u32().value(&[1, 2, 3, 4]),
            KernelValue::u32(0x0403_0201)
        );
        assert_eq!(KernelValueWidth::u64().value(&[1]), KernelValue::u64(1));
        assert_eq!(KernelValueWidth::bytes(2).len(), 2);
        for v in [
            KernelValue::u32(7),
            KernelValue::u64(1 << 40),
            KernelValue::bytes(*b"abc"),
            KernelValue::or_u32(1 << 5),
        ] {
            let j = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<KernelValue>(&j).unwrap(), v);
        }
        assert_eq!(KernelValue::bytes(*b"ab").as_u64(), Some(0x6261));
        let t = KernelTarget::per_cpu_field("runqueues", "cpu", 1);
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<KernelTarget>(&j).unwrap(), t);
    }
}
