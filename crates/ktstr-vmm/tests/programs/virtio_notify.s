# Notification round trips on a virtio-console (window V000): 20,000 times, makes one 1-byte
# buffer available on the transmitq, writes QueueNotify and spins until the device used it;
# then exits with status 0 (1 if a round trip took over about 2^28 spins). Rings: transmitq
# 0x300000 (descriptors) / 0x301000 (avail) / 0x302000 (used).
.intel_syntax noprefix
.code64
start:
  mov ebx, 0xc0000000
  mov dword ptr [rbx+0x70], 3          # ACKNOWLEDGE | DRIVER
  mov dword ptr [rbx+0x24], 1
  mov dword ptr [rbx+0x20], 1          # VERSION_1
  mov dword ptr [rbx+0x70], 0xb        # FEATURES_OK
  mov dword ptr [rbx+0x30], 1          # transmitq
  mov dword ptr [rbx+0x38], 8
  mov dword ptr [rbx+0x80], 0x300000
  mov dword ptr [rbx+0x90], 0x301000
  mov dword ptr [rbx+0xa0], 0x302000
  mov dword ptr [rbx+0x44], 1
  mov dword ptr [rbx+0x70], 0xf        # DRIVER_OK
  lea rax, [rip+data_byte]
  mov qword ptr [0x300000], rax        # desc[0]: one byte
  mov dword ptr [0x300008], 1
  xor r8d, r8d                         # round trips done
next:
  mov eax, r8d
  and eax, 7
  mov word ptr [0x301004+rax*2], 0     # avail.ring[i % 8] = desc 0
  inc r8d
  mov word ptr [0x301002], r8w         # avail.idx = i + 1
  mov dword ptr [rbx+0x50], 1          # QueueNotify = 1
  mov ecx, 0x10000000
1:
  cmp word ptr [0x302002], r8w         # used.idx = i + 1?
  je 2f
  pause
  dec ecx
  jnz 1b
  mov al, 1                            # lost round trip
  jmp done
2:
  cmp r8d, 20000
  jne next
  xor eax, eax
done:
  mov dx, 0x604
  out dx, al
  hlt

data_byte: .ascii "x"
