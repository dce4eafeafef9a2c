//! Devices on the port-I/O and MMIO buses, one per file (the virtio ones under [`virtio`]).

pub mod i8042;
pub mod power;
pub mod rtc;
pub mod serial;
pub mod virtio;

pub use i8042::I8042;
pub use power::{
    PowerDevice, EXIT_PORT, POWER_PORT_BASE, POWER_PORT_LEN, RESET_PORT, RESET_VALUE, SLEEP_PORT,
};
pub use rtc::{Rtc, RTC_BASE, RTC_LEN};
pub use serial::{IrqTrigger, SerialDevice, SerialInput, SerialOutput, SerialReader};
