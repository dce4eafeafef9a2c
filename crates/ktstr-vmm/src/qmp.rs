//! A minimal QMP client: connect to QEMU's monitor socket, negotiate capabilities, run
//! commands, and read every vCPU's control registers through `info registers -a`.
//!
//! QEMU listens on `-qmp unix:<path>,server=on,wait=off` (see [`crate::VmConfig::qmp_socket`]).
//! Replies are one JSON object per line; asynchronous events (`{"event": ...}`) that arrive
//! between a command and its reply are skipped. Nothing QEMU sends is trusted: every
//! field is checked and a bad reply is a [`QmpError`], never a panic.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest reply line accepted (`info registers -a` is ~2.5 KiB per vCPU).
const MAX_LINE: usize = 16 << 20;
/// Events skipped while waiting for one reply before giving up.
const MAX_EVENTS: usize = 1000;

/// Errors from talking to QEMU's monitor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be connected to before the deadline.
    #[error("cannot connect to the QMP socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The last OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP I/O failed during `{command}`")]
    Io {
        /// The command in flight (`greeting` before the first).
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection.
    #[error("QEMU closed the QMP connection during `{command}`")]
    Closed {
        /// The command in flight.
        command: String,
    },
    /// A reply is not the JSON QMP promises.
    #[error("unexpected QMP reply to `{command}`: {reason}")]
    Protocol {
        /// The command.
        command: String,
        /// What was wrong.
        reason: String,
    },
    /// QEMU answered with an error.
    #[error("QEMU refused `{command}`: {class}: {desc}")]
    Refused {
        /// The command.
        command: String,
        /// QMP's error class.
        class: String,
        /// QMP's description.
        desc: String,
    },
    /// The text of `info registers` could not be parsed.
    #[error("cannot parse `info registers` for CPU {cpu}: {reason}")]
    Registers {
        /// The vCPU index (or the count so far when no `CPU#` header was seen).
        cpu: u32,
        /// What was missing or malformed.
        reason: String,
    },
}

/// Control registers of one vCPU, as QEMU's `info registers` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuRegisters {
    /// vCPU index (`CPU#n`).
    pub cpu: u32,
    /// CR0.
    pub cr0: u64,
    /// CR3: the page-table root and PCID.
    pub cr3: u64,
    /// CR4 (bit 12 is LA57, 5-level paging).
    pub cr4: u64,
    /// EFER (bit 10 is LMA, long mode active).
    pub efer: u64,
    /// The GS segment base: the kernel's per-CPU offset while the vCPU is in the kernel.
    pub gs_base: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// The vCPU is halted (idle).
    pub halted: bool,
}

impl VcpuRegisters {
    /// CR4.LA57: 5-level paging.
    pub fn la57(&self) -> bool {
        self.cr4 & (1 << 12) != 0
    }

    /// EFER.LMA and CR0.PG: 64-bit paging is on, so `cr3` is a 4- or 5-level root.
    pub fn long_mode(&self) -> bool {
        self.efer & (1 << 10) != 0 && self.cr0 & (1 << 31) != 0
    }
}

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `path`, retrying until `timeout` passes (QEMU creates the socket as it
    /// starts), reads the greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let io = |command: &str| {
            let command = command.to_string();
            move |source| QmpError::Io { command, source }
        };
        stream
            .set_read_timeout(Some(timeout.max(Duration::from_secs(1))))
            .map_err(io("greeting"))?;
        let writer = stream.try_clone().map_err(io("greeting"))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                command: "greeting".into(),
                reason: format!("no QMP greeting: {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let (Some(args), Some(obj)) = (arguments, msg.as_object_mut()) {
            obj.insert("arguments".into(), args);
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                command: command.into(),
                source,
            })?;
        for _ in 0..MAX_EVENTS {
            let reply = self.read_message(command)?;
            if reply.get("event").is_some() {
                continue;
            }
            return reply_value(command, reply);
        }
        Err(QmpError::Protocol {
            command: command.into(),
            reason: format!("no reply after {MAX_EVENTS} events"),
        })
    }

    /// Runs a human-monitor (HMP) command line and returns its text output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, QmpError> {
        let v = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        match v {
            Value::String(s) => Ok(s),
            other => Err(QmpError::Protocol {
                command: command_line.into(),
                reason: format!("HMP output is not a string: {other}"),
            }),
        }
    }

    /// Every vCPU's control registers (`info registers -a`).
    pub fn registers(&mut self) -> Result<Vec<VcpuRegisters>, QmpError> {
        parse_info_registers(&self.hmp("info registers -a")?)
    }

    fn read_message(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|source| QmpError::Io {
                command: command.into(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed {
                command: command.into(),
            });
        }
        if !line.ends_with(b"\n") {
            return Err(QmpError::Protocol {
                command: command.into(),
                reason: format!("reply longer than {MAX_LINE} bytes or cut off"),
            });
        }
        serde_json::from_slice(&line).map_err(|e| QmpError::Protocol {
            command: command.into(),
            reason: format!("not JSON: {e}"),
        })
    }
}

/// The `return` of a QMP reply, or its `error` as [`QmpError::Refused`].
fn reply_value(command: &str, mut reply: Value) -> Result<Value, QmpError> {
    if let Some(ret) = reply.get_mut("return") {
        return Ok(ret.take());
    }
    if let Some(err) = reply.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        return Err(QmpError::Refused {
            command: command.into(),
            class: field("class"),
            desc: field("desc"),
        });
    }
    Err(QmpError::Protocol {
        command: command.into(),
        reason: format!("neither return nor error: {reply}"),
    })
}

/// Parses the text of `info registers -a` (x86): one block per `CPU#n` header, in 64-bit
/// (`RAX=`, 16-digit bases) or 32-bit (`EAX=`, 8-digit) layout.
pub fn parse_info_registers(text: &str) -> Result<Vec<VcpuRegisters>, QmpError> {
    let mut cpus = Vec::new();
    let mut block: Option<(u32, Vec<&str>)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.trim().strip_prefix("CPU#") {
            if let Some((cpu, lines)) = block.take() {
                cpus.push(parse_block(cpu, &lines)?);
            }
            let cpu = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| QmpError::Registers {
                    cpu: cpus.len() as u32,
                    reason: format!("bad header `{line}`"),
                })?;
            block = Some((cpu, Vec::new()));
        } else if let Some((_, lines)) = block.as_mut() {
            lines.push(line);
        }
    }
    match block {
        Some((cpu, lines)) => cpus.push(parse_block(cpu, &lines)?),
        None if cpus.is_empty() => {
            // `info registers` without -a on a single vCPU has no header.
            if text.contains("CR3=") {
                cpus.push(parse_block(0, &text.lines().collect::<Vec<_>>())?);
            } else {
                return Err(QmpError::Registers {
                    cpu: 0,
                    reason: "no CPU#n blocks and no CR3".into(),
                });
            }
        }
        None => {}
    }
    Ok(cpus)
}

fn parse_block(cpu: u32, lines: &[&str]) -> Result<VcpuRegisters, QmpError> {
    let bad = |reason: String| QmpError::Registers { cpu, reason };
    let mut regs = VcpuRegisters {
        cpu,
        cr0: 0,
        cr3: 0,
        cr4: 0,
        efer: 0,
        gs_base: 0,
        cpl: 0,
        halted: false,
    };
    let (mut cr0, mut cr3, mut cr4, mut gs) = (None, None, None, None);
    for line in lines {
        let line = line.trim_end();
        if let Some(seg) = line.strip_prefix("GS =") {
            // `GS =<selector> <base> <limit> <flags> ...`
            let base = seg
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| bad(format!("GS line without a base: `{line}`")))?;
            gs = Some(hex(base).ok_or_else(|| bad(format!("GS base `{base}` is not hex")))?);
            continue;
        }
        for (key, value) in key_values(line) {
            let parsed = || hex(value).ok_or_else(|| bad(format!("{key}=`{value}` is not hex")));
            match key {
                "CR0" => cr0 = Some(parsed()?),
                "CR3" => cr3 = Some(parsed()?),
                "CR4" => cr4 = Some(parsed()?),
                "EFER" => regs.efer = parsed()?,
                "CPL" => regs.cpl = value.parse().map_err(|_| bad(format!("CPL=`{value}`")))?,
                "HLT" => regs.halted = value == "1",
                _ => {}
            }
        }
    }
    let need = |v: Option<u64>, what: &str| v.ok_or_else(|| bad(format!("no {what}")));
    regs.cr0 = need(cr0, "CR0")?;
    regs.cr3 = need(cr3, "CR3")?;
    regs.cr4 = need(cr4, "CR4")?;
    regs.gs_base = need(gs, "GS line")?;
    Ok(regs)
}

/// `KEY=value` pairs of a register line; `R8 =...` style padding is allowed.
fn key_values(line: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].split_whitespace().last().unwrap_or("");
        let after = &rest[eq + 1..];
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        out.push((key, &after[..end]));
        rest = &after[end..];
    }
    out.into_iter()
}

fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `info registers -a` from QEMU 7.2 (KVM) booting Debian's 7.3 kernel: CPU 0 in
    /// 64-bit mode, CPU 1 still in the BIOS in 32-bit mode. FPU/XMM lines trimmed.
    const CAPTURED: &str = "\r
CPU#0\r
RAX=00000000009aa2f0 RBX=ffffffff8296a5a0 RCX=ffffffff83333368 RDX=ffffffff82947330\r
RSI=ffffffff82989070 RDI=ffffffff82979b00 RBP=0000000000000010 RSP=ffffffff83003db8\r
R8 =00000000009b988a R9 =000000000001ead0 R10=ffffffff828c8f2e R11=ffffffff83003dd0\r
R12=ffffffff83003e58 R13=ffffffff82989070 R14=000000000001ead0 R15=0000000000000000\r
RIP=ffffffff8164f913 RFL=00000006 [-----P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r
ES =0000 0000000000000000 00000000 00000000\r
CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]\r
SS =0000 0000000000000000 00000000 00000000\r
DS =0000 0000000000000000 00000000 00000000\r
FS =0000 0000000000000000 00000000 00000000\r
GS =0000 ffff88800f600000 00000000 00000000\r
LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT\r
TR =0000 0000000000000000 0000ffff 00008b00 DPL=0 TSS64-busy\r
GDT=     ffffffff83cce000 0000007f\r
IDT=     ffffffff83d00000 00000fff\r
CR0=80050033 CR2=ffff8880000011c0 CR3=0000000003974000 CR4=000000b0\r
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \r
DR6=00000000ffff0ff0 DR7=0000000000000400\r
EFER=0000000000000d01\r
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\r
\r
CPU#1\r
EAX=000f49f6 EBX=00000000 ECX=000002ff EDX=00000001\r
ESI=00000000 EDI=00000000 EBP=00000000 ESP=00006c5c\r
EIP=000fd09a EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\r
ES =0010 00000000 ffffffff 00c09300 DPL=0 DS   [-WA]\r
GS =0010 00000000 ffffffff 00c09300 DPL=0 DS   [-WA]\r
GDT=     000f6180 00000037\r
CR0=00000011 CR2=00000000 CR3=00000000 CR4=00000000\r
EFER=0000000000000000\r
";

    #[test]
    fn parses_64_and_32_bit_blocks() {
        let regs = parse_info_registers(CAPTURED).expect("parses");
        assert_eq!(regs.len(), 2);
        let c0 = regs[0];
        assert_eq!(
            (c0.cpu, c0.cr3, c0.cr4, c0.gs_base),
            (0, 0x3974000, 0xb0, 0xffff_8880_0f60_0000)
        );
        assert!(c0.long_mode() && !c0.la57() && !c0.halted);
        assert_eq!(c0.efer, 0xd01);
        let c1 = regs[1];
        assert_eq!((c1.cpu, c1.cr3, c1.gs_base), (1, 0, 0));
        assert!(!c1.long_mode() && c1.halted);
    }

    #[test]
    fn la57_and_user_mode() {
        let text =
            "CPU#3\nRIP=0000000000401000 RFL=00000246 [---Z-P-] CPL=3 II=0 A20=1 SMM=0 HLT=0\n\
                    GS =0000 00007f0000001000 ffffffff 00c00000\n\
                    CR0=80050033 CR2=0 CR3=000000000a5c7806 CR4=00371ef0\nEFER=0000000000000d01\n";
        let r = parse_info_registers(text).expect("parses");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].cpu, r[0].cpl, r[0].cr3), (3, 3, 0xa5c7806));
        assert!(r[0].la57());
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for text in [
            "",
            "garbage",
            "CPU#x\nCR3=0\n",
            "CPU#0\nCR0=1 CR3=2\nGS =0000 0 0 0\n", // no CR4
            "CPU#0\nCR0=1 CR3=zz CR4=0\nGS =0 0\n", // bad hex
            "CPU#0\nCR0=1 CR3=1 CR4=0\nGS =0000\n", // GS without base
            "CPU#0\nCR0=1 CR3=11111111111111111 CR4=0\nGS =0 0\n",
            "CPU#0\nCR0=1 CR3=1 CR4=0 CPL=9999\nGS =0 0\n",
        ] {
            assert!(parse_info_registers(text).is_err(), "{text:?}");
        }
        // Odd spacing and a lone `=` do not panic.
        let _ = parse_info_registers("CPU#0\n= = =\nCR0=1 CR3=1 CR4=0 X=\nGS =0 0\n");
    }

    #[test]
    fn replies_and_errors() {
        assert_eq!(
            reply_value("x", json!({"return": {"a": 1}})).expect("ok"),
            json!({"a": 1})
        );
        let e = reply_value(
            "x",
            json!({"error": {"class": "GenericError", "desc": "no"}}),
        )
        .expect_err("refused");
        assert!(matches!(e, QmpError::Refused { ref class, .. } if class == "GenericError"));
        assert!(reply_value("x", json!({"foo": 1})).is_err());
    }

    #[test]
    fn talks_to_a_fake_server() {
        use std::os::unix::net::UnixListener;
        let path = std::env::temp_dir().join(format!("ktstr-qmp-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut w = s;
            let mut line = String::new();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("info registers -a"), "{line}");
            writeln!(w, r#"{{"event": "RESUME", "timestamp": {{}}}}"#).unwrap();
            let reply = json!({ "return": CAPTURED });
            writeln!(w, "{reply}").unwrap();
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).expect("connect");
        let regs = qmp.registers().expect("registers");
        assert_eq!(regs.len(), 2);
        server.join().expect("server");
        let _ = std::fs::remove_file(&path);
    }
}
