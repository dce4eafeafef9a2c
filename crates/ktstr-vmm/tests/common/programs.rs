//! Hand-assembled 64-bit guest programs (GNU as, Intel syntax, shown beside the bytes).
//!
//! Each is loaded at 0x100000 and entered on every vCPU in long mode with RDI = vCPU
//! index, RSI = APIC ID, RDX = vCPU count and RSP = the top of the vCPU's own stack.

#![allow(dead_code)]

/// Writes "hello COM1\n" to COM1 and "hello COM2\n" to COM2, then exit status 7 at port 0x604.
pub fn hello() -> Vec<u8> {
    let code: &[u8] = &[
        0x48, 0x8d, 0x35, 0x2d, 0x00, 0x00,
        0x00, // 0x00: lea rsi, [rip+0x2d]   (msg1 at 0x34)
        0x66, 0xba, 0xf8, 0x03, //                   0x07: mov dx, 0x3f8
        0xe8, 0x1b, 0x00, 0x00, 0x00, //             0x0b: call puts (0x2b)
        0x48, 0x8d, 0x35, 0x29, 0x00, 0x00,
        0x00, // 0x10: lea rsi, [rip+0x29]   (msg2 at 0x40)
        0x66, 0xba, 0xf8, 0x02, //                   0x17: mov dx, 0x2f8
        0xe8, 0x0b, 0x00, 0x00, 0x00, //             0x1b: call puts
        0x66, 0xba, 0x04, 0x06, //                   0x20: mov dx, 0x604
        0xb8, 0x07, 0x00, 0x00, 0x00, //             0x24: mov eax, 7
        0xef, //                                     0x29: out dx, eax
        0xf4, //                                     0x2a: hlt
        // puts: write the NUL-terminated string at RSI to port DX.
        0xac, //                                     0x2b: lodsb
        0x84, 0xc0, //                               0x2c: test al, al
        0x74, 0x03, //                               0x2e: je 0x33
        0xee, //                                     0x30: out dx, al
        0xeb, 0xf8, //                               0x31: jmp puts
        0xc3, //                                     0x33: ret
    ];
    [code, b"hello COM1\n\0", b"hello COM2\n\0"].concat()
}

/// Size of one record of [`topology`].
pub const TOPOLOGY_RECORD: usize = 10;

/// vCPU by vCPU in index order (a turn counter at 0x300000), writes a 10-byte record to COM2:
/// 0xA5, index, leaf 1 EBX[31:24], leaf 0xB.0 EDX (4 bytes LE), leaf 0xB.0 EAX[7:0],
/// leaf 0xB.1 EAX[7:0], leaf 0xB.1 EBX[7:0]. The last vCPU then exits with status 0x42.
pub fn topology() -> Vec<u8> {
    vec![
        0x49, 0x89, 0xf8, //                         0x00: mov r8, rdi          (index)
        0x49, 0x89, 0xd1, //                         0x03: mov r9, rdx          (count)
        0x41, 0xba, 0x00, 0x00, 0x30, 0x00, //       0x06: mov r10d, 0x300000   (turn)
        // wait:
        0xf3, 0x90, //                               0x0c: pause
        0x41, 0x8b, 0x02, //                         0x0e: mov eax, [r10]
        0x44, 0x39, 0xc0, //                         0x11: cmp eax, r8d
        0x75, 0xf6, //                               0x14: jne wait
        0xc6, 0x04, 0x24, 0xa5, //                   0x16: mov byte [rsp], 0xa5
        0x44, 0x88, 0x44, 0x24, 0x01, //             0x1a: mov [rsp+1], r8b
        0xb8, 0x01, 0x00, 0x00, 0x00, //             0x1f: mov eax, 1
        0x0f, 0xa2, //                               0x24: cpuid
        0xc1, 0xeb, 0x18, //                         0x26: shr ebx, 24
        0x88, 0x5c, 0x24, 0x02, //                   0x29: mov [rsp+2], bl
        0xb8, 0x0b, 0x00, 0x00, 0x00, //             0x2d: mov eax, 0xb
        0x31, 0xc9, //                               0x32: xor ecx, ecx
        0x0f, 0xa2, //                               0x34: cpuid
        0x89, 0x54, 0x24, 0x03, //                   0x36: mov [rsp+3], edx
        0x88, 0x44, 0x24, 0x07, //                   0x3a: mov [rsp+7], al
        0xb8, 0x0b, 0x00, 0x00, 0x00, //             0x3e: mov eax, 0xb
        0xb9, 0x01, 0x00, 0x00, 0x00, //             0x43: mov ecx, 1
        0x0f, 0xa2, //                               0x48: cpuid
        0x88, 0x44, 0x24, 0x08, //                   0x4a: mov [rsp+8], al
        0x88, 0x5c, 0x24, 0x09, //                   0x4e: mov [rsp+9], bl
        0x48, 0x89, 0xe6, //                         0x52: mov rsi, rsp
        0xb9, 0x0a, 0x00, 0x00, 0x00, //             0x55: mov ecx, 10
        0x66, 0xba, 0xf8, 0x02, //                   0x5a: mov dx, 0x2f8
        0xf3, 0x6e, //                               0x5e: rep outsb
        0x41, 0xff, 0xc0, //                         0x60: inc r8d
        0x45, 0x89, 0x02, //                         0x63: mov [r10], r8d       (next turn)
        0x45, 0x39, 0xc8, //                         0x66: cmp r8d, r9d
        0x75, 0x07, //                               0x69: jne done
        0x66, 0xba, 0x04, 0x06, //                   0x6b: mov dx, 0x604
        0xb0, 0x42, //                               0x6f: mov al, 0x42
        0xee, //                                     0x71: out dx, al
        // done:
        0xf4, //                                     0x72: hlt
        0xeb, 0xfd, //                               0x73: jmp done
    ]
}

/// Publishes one ring record (kind 0x77, payload "ring-record!") and exits with status 0.
pub fn ring_record() -> Vec<u8> {
    let code: &[u8] = &[
        0xbb, 0x00, 0x00, 0x00, 0xd0, //             0x00: mov ebx, 0xd0000000  (ring header)
        0x48, 0x8b, 0x43, 0x10, //                   0x05: mov rax, [rbx+16]    (producer)
        0x48, 0x8d, 0x7c, 0x03, 0x40, //             0x09: lea rdi, [rbx+rax+64]
        0xc7, 0x07, 0x0c, 0x00, 0x00, 0x00, //       0x0e: mov dword [rdi], 12  (len)
        0xc7, 0x47, 0x04, 0x77, 0x00, 0x00, 0x00, // 0x14: mov dword [rdi+4], 0x77 (kind)
        0x48, 0x83, 0xc7, 0x08, //                   0x1b: add rdi, 8
        0x48, 0x8d, 0x35, 0x17, 0x00, 0x00,
        0x00, // 0x1f: lea rsi, [rip+0x17]  (payload at 0x3d)
        0xb9, 0x0c, 0x00, 0x00, 0x00, //             0x26: mov ecx, 12
        0xf3, 0xa4, //                               0x2b: rep movsb
        0x48, 0x83, 0xc0,
        0x18, //                   0x2d: add rax, 24          (8 + 12, padded)
        0x48, 0x89, 0x43, 0x10, //                   0x31: mov [rbx+16], rax    (publish)
        0x66, 0xba, 0x04, 0x06, //                   0x35: mov dx, 0x604
        0x31, 0xc0, //                               0x39: xor eax, eax
        0xee, //                                     0x3b: out dx, al
        0xf4, //                                     0x3c: hlt
    ];
    [code, b"ring-record!"].concat()
}

/// One byte ('!') to COM1, then `n` OUTs to the unclaimed port 0x80, then exit status 0.
pub fn out_loop(n: u32) -> Vec<u8> {
    let [a, b, c, d] = n.to_le_bytes();
    vec![
        0x66, 0xba, 0xf8, 0x03, //                   0x00: mov dx, 0x3f8
        0xb0, 0x21, //                               0x04: mov al, '!'
        0xee, //                                     0x06: out dx, al
        0xb9, a, b, c, d, //                         0x07: mov ecx, n
        0xe6, 0x80, //                               0x0c: out 0x80, al
        0xff, 0xc9, //                               0x0e: dec ecx
        0x75, 0xfa, //                               0x10: jne 0x0c
        0x66, 0xba, 0x04, 0x06, //                   0x12: mov dx, 0x604
        0x31, 0xc0, //                               0x16: xor eax, eax
        0xee, //                                     0x18: out dx, al
        0xf4, //                                     0x19: hlt
    ]
}

/// Powers off through the ACPI sleep control register (SLP_TYP 5, SLP_EN) at port 0x600.
pub fn acpi_s5() -> Vec<u8> {
    vec![
        0x66, 0xba, 0x00, 0x06, //                   0x00: mov dx, 0x600
        0xb0, 0x34, //                               0x04: mov al, 5 << 2 | 0x20
        0xee, //                                     0x06: out dx, al
        0xf4, //                                     0x07: hlt
    ]
}

/// Asks the i8042 for a reset (0xFE to port 0x64).
pub fn keyboard_reset() -> Vec<u8> {
    vec![
        0xb0, 0xfe, //                               0x00: mov al, 0xfe
        0xe6, 0x64, //                               0x02: out 0x64, al
        0xf4, //                                     0x04: hlt
    ]
}

/// Loads an empty IDT and reads a non-canonical address: #GP, #DF, triple fault.
pub fn triple_fault() -> Vec<u8> {
    vec![
        0x0f, 0x01, 0x1d, 0x0c, 0x00, 0x00, 0x00, // 0x00: lidt [rip+0xc]       (idtr at 0x13)
        0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0x80, //    0x07: movabs rax, 1 << 63
        0x8a, 0x00, //                               0x11: mov al, [rax]
        0x00, 0x00, //                               0x13: idtr.limit = 0
        0, 0, 0, 0, 0, 0, 0, 0, //                   0x15: idtr.base = 0
    ]
}

/// Loads an empty IDT and executes INT3 (PVM cannot emulate it: KVM internal error at 0x100007).
pub fn int3() -> Vec<u8> {
    vec![
        0x0f, 0x01, 0x1d, 0x01, 0x00, 0x00, 0x00, // 0x00: lidt [rip+1]        (idtr at 0x08)
        0xcc, //                                     0x07: int3
        0x00, 0x00, //                               0x08: idtr.limit = 0
        0, 0, 0, 0, 0, 0, 0, 0, //                   0x0a: idtr.base = 0
    ]
}

/// Just HLT.
pub fn halt() -> Vec<u8> {
    vec![0xf4]
}

/// Bytes of the record [`virtio`] writes to COM2.
pub const VIRTIO_RECORD: usize = 80;

/// Drives the virtio-MMIO devices of a VM with a virtio-console at 0xc0000000 and a disk at
/// 0xc0001000, then writes an 80-byte record to COM2 and exits with status 0 (source:
/// tests/programs/virtio.s). After each QueueNotify it waits for the used ring, as the device
/// may serve the queue on the VMM's I/O thread.
///
/// Record (little-endian u32s unless said): 0 console magic, version, device ID; 12 the same
/// for the disk; 24 console DeviceFeatures[63:32]; 28 console Status after FEATURES_OK;
/// 32 console used.idx after it notified a 14-byte "hi from virtio" buffer on the transmitq;
/// 36 console InterruptStatus; 40 disk DeviceFeatures[31:0]; 44 disk capacity (u64);
/// 52 disk used.idx after an IN of sector 0; 56 its used length; 60 its status byte;
/// 64 the first 16 bytes of sector 0.
pub fn virtio() -> Vec<u8> {
    super::asm::virtio::VIRTIO.to_vec()
}

/// Bytes of the record [`virtio_net`] writes to COM2.
pub const VIRTIO_NET_RECORD: usize = 200;

/// The 60-byte frame [`virtio_net`] transmits (after a zeroed 12-byte virtio-net header):
/// broadcast, from 52:54:00:6b:74:00, EtherType 0x88b5, "ktstr loopback frame", zero padding.
pub fn virtio_net_frame() -> Vec<u8> {
    let mut f = [
        [0xff; 6].as_slice(),
        &[0x52, 0x54, 0x00, 0x6b, 0x74, 0x00],
        &[0x88, 0xb5],
    ]
    .concat();
    f.extend_from_slice(b"ktstr loopback frame");
    f.resize(60, 0);
    f
}

/// Drives a virtio-net device at 0xc0000000 (source: tests/programs/virtio_net.s): negotiates
/// VERSION_1, MAC and STATUS, posts two 2 KiB receive buffers, transmits [`virtio_net_frame`],
/// waits until the transmitq used one buffer and the receiveq two (its own frame looped back,
/// then one the host injects), writes a 200-byte record to COM2 and exits with status 0.
///
/// Record (little-endian u32s): 0 magic, 4 version, 8 device ID, 12 DeviceFeatures[31:0],
/// 16 DeviceFeatures[63:32], 20 Status after FEATURES_OK, 24 config bytes 0..4 (MAC),
/// 28 config bytes 4..8 (MAC, status), 32 max_virtqueue_pairs, 36 transmitq used.idx,
/// 40 receiveq used.idx, 44 and 48 the two receive lengths, 52 InterruptStatus; then 56 the
/// first 72 bytes of each receive buffer (header and frame).
pub fn virtio_net() -> Vec<u8> {
    super::asm::virtio_net::VIRTIO_NET.to_vec()
}

/// Notification round trips [`virtio_notify`] makes.
pub const VIRTIO_NOTIFY_ROUNDS: u64 = 20_000;

/// Makes [`VIRTIO_NOTIFY_ROUNDS`] notification round trips on a virtio-console at 0xc0000000
/// (source: tests/programs/virtio_notify.s): each a 1-byte transmit buffer, QueueNotify, and a
/// spin until the device used it; exits with status 0 (1 if a round trip was lost).
pub fn virtio_notify() -> Vec<u8> {
    super::asm::virtio_notify::VIRTIO_NOTIFY.to_vec()
}
