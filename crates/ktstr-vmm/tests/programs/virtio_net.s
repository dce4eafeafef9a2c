# Drives a virtio-net device (window V000) through the VMM's L2 loopback; see
# programs::virtio_net. Rings: receiveq 0x300000 (descriptors) / 0x301000 (avail) / 0x302000
# (used); transmitq 0x303000 / 0x304000 / 0x305000; receive buffers 0x306000 and 0x306800
# (2 KiB each); the record is built at 0x308000 and written to COM2.
.intel_syntax noprefix
.code64
start:
  mov edi, 0x308000                    # record
  mov ebx, 0xc0000000                  # net window
  mov eax, [rbx]                       # magic, version, device ID
  stosd
  mov eax, [rbx+4]
  stosd
  mov eax, [rbx+8]
  stosd
  mov dword ptr [rbx+0x70], 3          # Status = ACKNOWLEDGE | DRIVER
  mov dword ptr [rbx+0x14], 0          # DeviceFeatures[31:0]
  mov eax, [rbx+0x10]
  stosd
  mov dword ptr [rbx+0x14], 1          # DeviceFeatures[63:32]
  mov eax, [rbx+0x10]
  stosd
  mov dword ptr [rbx+0x24], 0
  mov dword ptr [rbx+0x20], 0x10020    # DriverFeatures[31:0] = MAC | STATUS
  mov dword ptr [rbx+0x24], 1
  mov dword ptr [rbx+0x20], 1          # DriverFeatures[63:32] = VERSION_1
  mov dword ptr [rbx+0x70], 0xb        # Status |= FEATURES_OK
  mov eax, [rbx+0x70]
  stosd
  mov eax, [rbx+0x100]                 # config: mac[0..4]
  stosd
  mov eax, [rbx+0x104]                 # config: mac[4..6], status
  stosd
  movzx eax, word ptr [rbx+0x108]      # config: max_virtqueue_pairs
  stosd

  mov dword ptr [rbx+0x30], 0          # QueueSel = 0 (receiveq)
  mov dword ptr [rbx+0x38], 8
  mov dword ptr [rbx+0x80], 0x300000
  mov dword ptr [rbx+0x90], 0x301000
  mov dword ptr [rbx+0xa0], 0x302000
  mov dword ptr [rbx+0x44], 1
  mov dword ptr [rbx+0x30], 1          # QueueSel = 1 (transmitq)
  mov dword ptr [rbx+0x38], 8
  mov dword ptr [rbx+0x80], 0x303000
  mov dword ptr [rbx+0x90], 0x304000
  mov dword ptr [rbx+0xa0], 0x305000
  mov dword ptr [rbx+0x44], 1
  mov dword ptr [rbx+0x70], 0xf        # Status |= DRIVER_OK

  mov qword ptr [0x300000], 0x306000   # rx desc[0]: 2 KiB, WRITE
  mov dword ptr [0x300008], 0x800
  mov dword ptr [0x30000c], 2
  mov qword ptr [0x300010], 0x306800   # rx desc[1]: 2 KiB, WRITE
  mov dword ptr [0x300018], 0x800
  mov dword ptr [0x30001c], 2
  mov word ptr [0x301006], 1           # avail.ring = [0, 1]
  mov word ptr [0x301002], 2           # avail.idx = 2
  mov dword ptr [rbx+0x50], 0          # QueueNotify = 0

  lea rax, [rip+data_packet]
  mov qword ptr [0x303000], rax        # tx desc[0]: header and frame
  mov dword ptr [0x303008], 72
  mov word ptr [0x304002], 1           # avail.idx = 1
  mov dword ptr [rbx+0x50], 1          # QueueNotify = 1

  mov esi, 0x305002                    # transmitq used.idx reaches 1
  mov edx, 1
  call wait_used
  stosd
  mov esi, 0x302002                    # receiveq used.idx reaches 2: the looped-back
  mov edx, 2                           # frame, then the one the host injects
  call wait_used
  stosd
  mov eax, [0x302008]                  # used.ring[0].len
  stosd
  mov eax, [0x302010]                  # used.ring[1].len
  stosd
  mov eax, [rbx+0x60]                  # InterruptStatus
  stosd
  mov [rbx+0x64], eax
  mov esi, 0x306000                    # 72 bytes of each receive buffer
  mov ecx, 72
  rep movsb
  mov esi, 0x306800
  mov ecx, 72
  rep movsb

  mov esi, 0x308000                    # 200-byte record to COM2
  mov ecx, 200
  mov dx, 0x2f8
  rep outsb
  mov dx, 0x604                        # exit status 0
  xor eax, eax
  out dx, al
  hlt

# wait_used: spins until the used.idx at [RSI] reaches EDX (or about 2^28 tries); EAX = it.
wait_used:
  mov ecx, 0x10000000
1:
  movzx eax, word ptr [rsi]
  cmp eax, edx
  jae 2f
  pause
  dec ecx
  jnz 1b
2:
  ret

# virtio_net_hdr_v1 (12 bytes, all zero) and a 60-byte broadcast frame of EtherType 0x88b5.
data_packet:
  .zero 12
  .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
  .byte 0x52, 0x54, 0x00, 0x6b, 0x74, 0x00
  .byte 0x88, 0xb5
  .ascii "ktstr loopback frame"
  .zero 26
