//! The CMOS real-time clock (MC146818) at ports 0x70/0x71, reading the host's clock.
//!
//! Without one, the ports read as all ones, so register A's update-in-progress bit never
//! clears. Linux reads the wall clock at boot through `mc146818_get_time(.., 1000)`, which
//! polls that bit every 100 us and gives up after one second: a second of every boot and
//! 20,000 port exits (measured under nested KVM). This clock is never updating: UIP reads 0, register D says the time is valid, and
//! the time registers hold the host's UTC time in BCD, 24-hour mode, as a PC BIOS leaves
//! them. Writes to the time registers and to registers A-D are ignored (the guest cannot set
//! the host's clock, and the clock has no interrupts to enable); the rest of the 128 bytes of
//! CMOS RAM store what the guest writes.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kvm::bus::{DeviceAction, PioDevice};

/// Index port; the data port follows it.
pub const RTC_BASE: u16 = 0x70;
/// Ports the clock decodes.
pub const RTC_LEN: u16 = 2;
/// Index register bit 7 masks NMIs on a PC; the register number is the low 7 bits.
const INDEX_MASK: u8 = 0x7f;
/// Register A: divider 010 (32.768 kHz), rate 0110 (1024 Hz); UIP (bit 7) clear.
const REG_A: u8 = 0x26;
/// Register B: 24-hour mode (bit 1), BCD (bit 2 clear), no interrupts enabled.
const REG_B: u8 = 0x02;
/// Register D: VRT, the battery and the time are valid.
const REG_D: u8 = 0x80;
/// CMOS register of the century, where ACPI's FADT CENTURY field usually points.
pub const CENTURY: u8 = 0x32;

/// The clock's state: the selected register and the CMOS RAM.
#[derive(Debug)]
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
    now: fn() -> u64,
}

impl Default for Rtc {
    fn default() -> Self {
        Rtc::with_clock(host_seconds)
    }
}

impl Rtc {
    /// A clock that reads seconds since the Unix epoch from `now` (tests pass a fixed one).
    pub fn with_clock(now: fn() -> u64) -> Self {
        Rtc {
            index: 0,
            ram: [0; 128],
            now,
        }
    }

    /// The value of register `reg` now; the calendar is computed only for time registers.
    fn register(&self, reg: u8) -> u8 {
        let time = || Civil::from_unix((self.now)());
        match reg {
            0x00 => bcd(time().second),
            0x02 => bcd(time().minute),
            0x04 => bcd(time().hour),
            0x06 => bcd(time().weekday + 1),
            0x07 => bcd(time().day),
            0x08 => bcd(time().month),
            0x09 => bcd((time().year % 100) as u32),
            CENTURY => bcd((time().year / 100) as u32),
            0x0a => REG_A,
            0x0b => REG_B,
            0x0c => 0,
            0x0d => REG_D,
            // Alarm registers (1, 3, 5) and the rest: CMOS RAM.
            r => self.ram[usize::from(r & INDEX_MASK)],
        }
    }
}

impl PioDevice for Rtc {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let v = match offset {
            0 => self.index,
            _ => self.register(self.index),
        };
        data.fill(v);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        let Some(&v) = data.first() else {
            return DeviceAction::None;
        };
        match offset {
            0 => self.index = v & INDEX_MASK,
            _ => match self.index {
                0x00 | 0x02 | 0x04 | 0x06..=0x0d | CENTURY => {}
                r => self.ram[usize::from(r)] = v,
            },
        }
        DeviceAction::None
    }
}

/// Seconds since the Unix epoch on the host (0 if the host clock is before it).
fn host_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `v` (0..=99) in packed BCD.
fn bcd(v: u32) -> u8 {
    let v = v % 100;
    ((v / 10) << 4 | (v % 10)) as u8
}

/// A UTC calendar time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

impl Civil {
    /// The calendar time `secs` seconds after 1970-01-01 00:00:00 UTC (proleptic Gregorian,
    /// Howard Hinnant's days-to-civil algorithm).
    fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3_600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (4).
            weekday: ((days + 4).rem_euclid(7)) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03 07:45:09 UTC, a Thursday.
    fn fixed() -> u64 {
        1_796_283_909
    }

    fn read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(0, &[reg | 0x80]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    #[test]
    fn calendar_from_unix_seconds() {
        assert_eq!(
            Civil::from_unix(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 4
            }
        );
        // Leap day and the turn of a century.
        let leap = Civil::from_unix(951_782_400);
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        let t = Civil::from_unix(fixed());
        assert_eq!((t.year, t.month, t.day), (2026, 12, 3));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (7, 45, 9, 4));
    }

    #[test]
    fn time_registers_are_bcd_and_never_updating() {
        let mut rtc = Rtc::with_clock(fixed);
        assert_eq!(read(&mut rtc, 0x00), 0x09);
        assert_eq!(read(&mut rtc, 0x02), 0x45);
        assert_eq!(read(&mut rtc, 0x04), 0x07);
        assert_eq!(read(&mut rtc, 0x06), 0x05, "Thursday is day 5");
        assert_eq!(read(&mut rtc, 0x07), 0x03);
        assert_eq!(read(&mut rtc, 0x08), 0x12);
        assert_eq!(read(&mut rtc, 0x09), 0x26);
        assert_eq!(read(&mut rtc, CENTURY), 0x20);
        assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0, "UIP clear");
        assert_eq!(read(&mut rtc, 0x0b), REG_B);
        assert_eq!(read(&mut rtc, 0x0d), 0x80, "time valid");
    }

    #[test]
    fn cmos_ram_keeps_writes_but_the_clock_ignores_them() {
        let mut rtc = Rtc::with_clock(fixed);
        rtc.write(0, &[0x0f]);
        rtc.write(1, &[0x5a]);
        assert_eq!(read(&mut rtc, 0x0f), 0x5a);
        rtc.write(0, &[0x00]);
        rtc.write(1, &[0x59]);
        assert_eq!(read(&mut rtc, 0x00), 0x09, "seconds stay the host's");
        rtc.write(0, &[]);
        let mut index = [0u8];
        rtc.read(0, &mut index);
        assert_eq!(index[0], 0x00);
    }
}
