// load: 0x1000
/*
 * Real mode: load distinctive values into the GPRs and exit with OUT AL to port 0x11,
 * so that the host can read them from kvm_run->s.regs (KVM_CAP_SYNC_REGS). The host then
 * writes a new EBX through s.regs + kvm_dirty_regs; the guest copies EBX to EAX and
 * reports it with OUT EAX to port 0x12, then halts.
 * Values: EBX 0x0BADF00D, ECX 0x12345678, EDX 0x00005A5A, ESI 0xDEADBEEF, EDI 0xCAFEF00D,
 * EBP 0x600DF00D, AL 0x42.
 */
	.code16
	.text
start:
	movl	$0x0BADF00D, %ebx
	movl	$0x12345678, %ecx
	movl	$0x00005A5A, %edx
	movl	$0xDEADBEEF, %esi
	movl	$0xCAFEF00D, %edi
	movl	$0x600DF00D, %ebp
	movb	$0x42, %al
	outb	%al, $0x11
	movl	%ebx, %eax
	outl	%eax, $0x12
	hlt
	jmp	start
