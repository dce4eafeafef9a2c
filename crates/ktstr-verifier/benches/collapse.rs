//! Collapse throughput on a large generated verifier log.
//!
//! `cargo bench -p ktstr-verifier --bench collapse [-- MB]` streams MB megabytes (default 256)
//! of synthetic level-2 verifier output from a generator (never held in memory) through
//! `collapse_to_writer` into a sink, and prints MB/s, the collapse ratio and peak memory.
//! The generator alone is timed too, so the collapse's own cost can be told apart. Last, it
//! collapses the real corpus (tests/fixtures/corpus) and prints the share of lines kept.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::time::Instant;

use ktstr_verifier::collapse_to_writer;

/// Yields programs' logs: a counted loop, branchy code, a nested loop, stats; repeated.
struct LogGen {
    buf: Vec<u8>,
    pos: usize,
    produced: u64,
    limit: u64,
    prog: u64,
    rng: u64,
}

impl LogGen {
    fn new(limit: u64) -> Self {
        Self {
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            produced: 0,
            limit,
            prog: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn s(&mut self, t: &str) {
        self.buf.extend_from_slice(t.as_bytes());
    }

    fn n(&mut self, v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        let mut v = v;
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&tmp[i..]);
    }

    /// Appends one program's log to `buf`.
    fn program(&mut self) {
        let k = self.prog;
        self.prog += 1;
        self.s("libbpf: prog 'bench_");
        self.n(k);
        self.s("': -- BEGIN PROG LOAD LOG --\nfunc#0 @0\n0: R1=ctx() R10=fp0\n");
        self.s("; int BPF_PROG(bench) @ bench.bpf.c:10\n0: (b7) r0 = 0                        ; R0_w=0\n");
        self.s("1: (b7) r1 = 0                        ; R1_w=0\n");
        // A counted loop of 40..4000 iterations with precision backtracking.
        let iters = 40 + (k * 997) % 3960;
        for i in 0..iters {
            if i > 0 {
                self.s("2: R0_w=scalar() R1_w=P");
                self.n(i);
                self.s(" R10=fp0\n");
            }
            self.s("; u64 v = arr[i]; @ bench.bpf.c:14\n2: (18) r2 = 0xffffc90000b52000       ; R2_w=map_value(map=bench.bss,ks=4,vs=32000)\n");
            self.s("4: (bf) r3 = r1                       ; R1_w=P");
            self.n(i);
            self.s(" R3_w=P");
            self.n(i);
            self.s("\n5: (67) r3 <<= 3                      ; R3_w=P");
            self.n(i * 8);
            self.s("\n6: (0f) r2 += r3                      ; R2_w=map_value(map=bench.bss,ks=4,vs=32000,off=");
            self.n(i * 8);
            self.s(") R3_w=P");
            self.n(i * 8);
            self.s("\nmark_precise: frame0: last_idx 6 first_idx 2 subseq_idx -1\n");
            self.s("mark_precise: frame0: regs=r3 stack= before 5: (67) r3 <<= 3\n");
            self.s("mark_precise: frame0: regs=r3 stack= before 4: (bf) r3 = r1\n");
            self.s("mark_precise: frame0: parent state regs=r1 stack=:  R0_w=scalar() R1_rw=P");
            self.n(i);
            self.s(" R10=fp0\n7: (79) r2 = *(u64 *)(r2 +0)          ; R2_w=scalar(id=");
            let id = self.next_rand() % 64;
            self.n(id);
            self.s(")\n; sum += v; @ bench.bpf.c:15\n8: (0f) r0 += r2                      ; R0_w=scalar() R2_w=scalar()\n");
            self.s("; for (i = 0; i < N; i++) @ bench.bpf.c:13\n9: (07) r1 += 1                       ; R1_w=P");
            self.n(i + 1);
            self.s("\n10: (a5) if r1 < 0x1000 goto pc-9     ; R1_w=P");
            self.n(i + 1);
            self.s("\n");
        }
        // Branchy code: explored paths whose states differ, which must not fold.
        for b in 0..200u64 {
            let from = 20 + b;
            let to = 40 + (self.next_rand() % 60);
            let smax = self.next_rand() % 100_000;
            self.s("from ");
            self.n(from);
            self.s(" to ");
            self.n(to);
            self.s(": R0_w=scalar(id=");
            self.n(b);
            self.s(",smin=0,smax=umax=");
            self.n(smax);
            self.s(",var_off=(0x0; 0x1ffff)) R6=ctx() R10=fp0\n");
            self.n(to);
            self.s(": (25) if r0 > 0x");
            self.n(b % 10);
            self.s(" goto pc+");
            self.n(b % 7 + 1);
            self.s("             ; R0_w=scalar(smin=0,smax=umax=");
            self.n(smax / 2);
            self.s(")\n");
            if b % 5 == 0 {
                self.n(to + 1);
                self.s(": safe\n");
            }
        }
        // Nested loop: 8 x 64.
        for j in 0..8u64 {
            self.s("; for (i = 0; i < 64; i++) @ bench.bpf.c:30\n100: (b7) r7 = 0                      ; R7_w=0\n101: (bf) r8 = r6                      ; R6=P");
            self.n(j);
            self.s(" R8_w=P");
            self.n(j);
            self.s("\n");
            for i in 0..64u64 {
                self.s("; m[j][i] += 1; @ bench.bpf.c:31\n102: (bf) r1 = r7                      ; R1_w=P");
                self.n(i);
                self.s(" R7_w=P");
                self.n(i);
                self.s("\n103: (0f) r1 += r8                     ; R1_w=P");
                self.n(j * 64 + i);
                self.s(" R8=P");
                self.n(j);
                self.s("\n104: (07) r7 += 1                      ; R7_w=P");
                self.n(i + 1);
                self.s("\n105: (a5) if r7 < 0x40 goto pc-4      ; R7_w=P");
                self.n(i + 1);
                self.s("\n");
            }
            self.s("106: (07) r6 += 1                      ; R6_w=P");
            self.n(j + 1);
            self.s("\n");
        }
        if k % 3 == 2 {
            self.s("107: (61) r1 = *(u32 *)(r2 +0)\nR2 invalid mem access 'scalar'\n");
        } else {
            self.s("; return sum; @ bench.bpf.c:40\n107: (95) exit\n");
        }
        self.s("verification time ");
        self.n(200 + k % 1000);
        self.s(" usec\nstack depth 8+0\nprocessed ");
        self.n(iters * 13 + 2000);
        self.s(" insns (limit 1000000) max_states_per_insn 4 total_states 300 peak_states 120 mark_read 17\n-- END PROG LOAD LOG --\n");
    }
}

impl Read for LogGen {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.produced >= self.limit {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            while self.buf.len() < (1 << 19) {
                self.program();
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}

/// Peak resident set size in KiB (VmHWM), if /proc says.
fn vm_hwm_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system, all threads) this process has used, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Counts bytes and newlines written.
struct CountingSink {
    bytes: u64,
}

impl Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.bytes += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() {
    let mb: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    let limit = mb << 20;
    let mb_f = |b: u64| b as f64 / f64::from(1u32 << 20);

    let t = Instant::now();
    let mut gen = LogGen::new(limit);
    let gen_bytes = io::copy(&mut gen, &mut io::sink()).unwrap_or(0);
    let gen_s = t.elapsed().as_secs_f64();
    let hwm_before = vm_hwm_kib();

    let cpu_before = cpu_seconds();
    let t = Instant::now();
    let input = BufReader::with_capacity(1 << 16, LogGen::new(limit));
    let mut sink = CountingSink { bytes: 0 };
    let summary = match collapse_to_writer(input, &mut sink) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("collapse failed: {e}");
            std::process::exit(1);
        }
    };
    let total_s = t.elapsed().as_secs_f64();
    let cpu = cpu_before.zip(cpu_seconds()).map(|(b, a)| a - b);
    let hwm_after = vm_hwm_kib();

    let bytes = summary.bytes_in;
    println!(
        "input:            {:.1} MB, {} lines, {} programs",
        mb_f(bytes),
        summary.lines_in,
        summary.programs.len()
    );
    println!(
        "output:           {:.1} MB, {} lines, {} folds",
        mb_f(sink.bytes),
        summary.lines_out,
        summary.folds
    );
    println!(
        "collapse ratio:   {:.1}x lines in / lines out",
        summary.ratio()
    );
    println!(
        "generator alone:  {:.0} MB/s ({:.2} s for {:.1} MB)",
        mb_f(gen_bytes) / gen_s,
        gen_s,
        mb_f(gen_bytes)
    );
    println!(
        "generate+collapse:{:.0} MB/s ({:.2} s)",
        mb_f(bytes) / total_s,
        total_s
    );
    let collapse_s = (total_s - gen_s).max(1e-9);
    println!(
        "collapse alone:   {:.0} MB/s (estimated: total minus generator time)",
        mb_f(bytes) / collapse_s
    );
    if let Some(cpu) = cpu {
        println!(
            "CPU time:         {cpu:.2} s over both threads ({:.0} MB per CPU-second; \
             wall/CPU {:.2})",
            mb_f(bytes) / cpu.max(1e-9),
            total_s / cpu.max(1e-9)
        );
    }
    match (hwm_before, hwm_after) {
        (Some(b), Some(a)) => println!(
            "peak RSS (VmHWM): {:.1} MiB before collapse, {:.1} MiB after",
            b as f64 / 1024.0,
            a as f64 / 1024.0
        ),
        _ => println!("peak RSS (VmHWM): unavailable"),
    }
    corpus_ratio();
}

/// Collapses every log of the real corpus (tests/fixtures/corpus) and prints the share of
/// lines kept, and the corpus's own throughput.
fn corpus_ratio() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let Ok(entries) = fs::read_dir(&dir) else {
        println!("corpus:           {} not found", dir.display());
        return;
    };
    let mut logs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if !p.to_string_lossy().ends_with(".log.zst") {
            continue;
        }
        let text = fs::File::open(&p).ok().and_then(|f| {
            let mut d = ruzstd::decoding::StreamingDecoder::new(f).ok()?;
            let mut s = Vec::new();
            d.read_to_end(&mut s).ok()?;
            Some(s)
        });
        match text {
            Some(t) => logs.push(t),
            None => println!("corpus:           cannot read {}", p.display()),
        }
    }
    let (mut lines_in, mut lines_out, mut bytes) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    for log in &logs {
        match collapse_to_writer(log.as_slice(), io::sink()) {
            Ok(s) => {
                lines_in += s.lines_in;
                lines_out += s.lines_out;
                bytes += s.bytes_in;
            }
            Err(e) => println!("corpus:           collapse failed: {e}"),
        }
    }
    let s = t.elapsed().as_secs_f64().max(1e-9);
    println!(
        "corpus:           {} logs, {lines_in} -> {lines_out} lines, {:.1}% kept, {:.0} MB/s",
        logs.len(),
        100.0 * lines_out as f64 / lines_in.max(1) as f64,
        bytes as f64 / f64::from(1u32 << 20) / s
    );
}
