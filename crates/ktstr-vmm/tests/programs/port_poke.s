# A Linux x86-64 user program (not a bare guest program): asks for ports 0x1230-0x123f with
# ioperm(2), writes 0x5a to port 0x1234 and reads port 0x1235, both claimed by no device,
# and exits with the byte read as its status (255 when unclaimed ports read as all ones);
# status 1 if ioperm failed. Position-independent: wrapped into an ELF by the test.
.intel_syntax noprefix
.code64
start:
  mov eax, 173                         # ioperm(0x1230, 16, 1)
  mov edi, 0x1230
  mov esi, 16
  mov edx, 1
  syscall
  test eax, eax
  jnz failed
  mov dx, 0x1234
  mov al, 0x5a
  out dx, al
  inc dx
  in al, dx
  movzx edi, al
  mov eax, 60                          # exit(byte read)
  syscall
failed:
  mov edi, 1
  mov eax, 60                          # exit(1)
  syscall
