// load: 0x1000
// Guest of vmwkvm-bench-memfault (guest-write variant). Entered in flat 32-bit protected
// mode (set up by the host through KVM_SET_SREGS) with ESI = first data page, ECX = page
// count. Writes one dword per page, then reports on port 0xF4 and halts; the host runs it
// again by resetting EIP/ESI/ECX.
	.code32
	.globl _start
_start:
	movl	$0x600d, %eax
1:	movl	%eax, (%esi)
	addl	$4096, %esi
	decl	%ecx
	jnz	1b
	outb	%al, $0xf4
	hlt
	jmp	_start
