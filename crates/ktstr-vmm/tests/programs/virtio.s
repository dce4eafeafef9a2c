# Drives the virtio-console (window V000) and virtio-blk (V001) devices; see programs::virtio.
# Rings: console transmitq 0x300000 (descriptors) / 0x301000 (avail) / 0x302000 (used);
# disk queue 0x303000 / 0x304000 / 0x305000; request header 0x306000, status byte 0x306010,
# data 0x307000; the record is built at 0x308000 and written to COM2.
.intel_syntax noprefix
.code64
start:
  mov edi, 0x308000                    # record
  mov ebx, 0xc0000000                  # console window
  call probe
  mov ebx, 0xc0001000                  # disk window
  call probe

  mov ebx, 0xc0000000
  mov dword ptr [rbx+0x70], 3          # Status = ACKNOWLEDGE | DRIVER
  mov dword ptr [rbx+0x14], 1          # DeviceFeaturesSel = 1
  mov eax, [rbx+0x10]                  # DeviceFeatures[63:32]
  stosd
  mov dword ptr [rbx+0x24], 1          # DriverFeaturesSel = 1
  mov dword ptr [rbx+0x20], 1          # DriverFeatures = VERSION_1
  mov dword ptr [rbx+0x70], 0xb        # Status |= FEATURES_OK
  mov eax, [rbx+0x70]                  # Status read back
  stosd
  mov dword ptr [rbx+0x30], 1          # QueueSel = 1 (transmitq)
  mov dword ptr [rbx+0x38], 8          # QueueNum = 8
  mov dword ptr [rbx+0x80], 0x300000   # QueueDescLow
  mov dword ptr [rbx+0x90], 0x301000   # QueueDriverLow
  mov dword ptr [rbx+0xa0], 0x302000   # QueueDeviceLow
  mov dword ptr [rbx+0x44], 1          # QueueReady
  mov dword ptr [rbx+0x70], 0xf        # Status |= DRIVER_OK
  lea rax, [rip+data_msg]
  mov qword ptr [0x300000], rax        # desc[0].addr
  mov dword ptr [0x300008], 14         # desc[0].len
  mov word ptr [0x301002], 1           # avail.idx = 1 (ring[0] = 0)
  mov dword ptr [rbx+0x50], 1          # QueueNotify = 1
  mov esi, 0x302002                    # wait for used.idx
  call wait_used
  stosd
  mov eax, [rbx+0x60]                  # InterruptStatus
  stosd
  mov [rbx+0x64], eax                  # InterruptACK

  mov ebx, 0xc0001000
  mov dword ptr [rbx+0x70], 3
  mov eax, [rbx+0x10]                  # DeviceFeatures[31:0]
  stosd
  mov dword ptr [rbx+0x24], 1
  mov dword ptr [rbx+0x20], 1
  mov dword ptr [rbx+0x70], 0xb
  mov dword ptr [rbx+0x38], 8          # QueueNum = 8 (queue 0)
  mov dword ptr [rbx+0x80], 0x303000
  mov dword ptr [rbx+0x90], 0x304000
  mov dword ptr [rbx+0xa0], 0x305000
  mov dword ptr [rbx+0x44], 1
  mov dword ptr [rbx+0x70], 0xf
  mov rax, [rbx+0x100]                 # config: capacity
  stosq
  mov qword ptr [0x303000], 0x306000   # desc[0]: request header
  mov dword ptr [0x303008], 16
  mov dword ptr [0x30300c], 0x10001    # NEXT, next 1
  mov qword ptr [0x303010], 0x307000   # desc[1]: data
  mov dword ptr [0x303018], 512
  mov dword ptr [0x30301c], 0x20003    # NEXT | WRITE, next 2
  mov qword ptr [0x303020], 0x306010   # desc[2]: status byte
  mov dword ptr [0x303028], 1
  mov dword ptr [0x30302c], 2          # WRITE
  mov word ptr [0x304002], 1           # avail.idx = 1
  mov dword ptr [rbx+0x50], 0          # QueueNotify = 0
  mov esi, 0x305002
  call wait_used
  stosd
  mov eax, [0x305008]                  # used.ring[0].len
  stosd
  movzx eax, byte ptr [0x306010]       # status byte
  stosd
  mov esi, 0x307000                    # first 16 bytes of sector 0
  mov ecx, 16
  rep movsb

  mov esi, 0x308000                    # 80-byte record to COM2
  mov ecx, 80
  mov dx, 0x2f8
  rep outsb
  mov dx, 0x604                        # exit status 0
  xor eax, eax
  out dx, al
  hlt

# probe: RBX = window, RDI = record: magic, version, device ID.
probe:
  mov eax, [rbx]
  stosd
  mov eax, [rbx+4]
  stosd
  mov eax, [rbx+8]
  stosd
  ret

# wait_used: spins until the used.idx at [RSI] is non-zero (or about 2^28 tries); EAX = it.
# The device serves a notification on the I/O thread, not during the MMIO write.
wait_used:
  mov ecx, 0x10000000
1:
  movzx eax, word ptr [rsi]
  test eax, eax
  jnz 2f
  pause
  dec ecx
  jnz 1b
2:
  ret

data_msg: .ascii "hi from virtio"
