//! Guest programs assembled from tests/programs/*.s by tests/programs/asm2rust.

pub mod port_poke;
pub mod virtio;
pub mod virtio_net;
pub mod virtio_notify;
