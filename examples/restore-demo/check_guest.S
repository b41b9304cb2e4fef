// load: 0x1000
/*
 * Guest of vmwkvm-restore-demo: checks the RAM it was restored with.
 * Entered in flat 32-bit protected mode with EBX = vCPU id, ECX = vCPU count,
 * ESI = first data page (GPA), EDI = end of RAM, ESP = its own stack.
 * vCPU i reads every dword of pages i, i + n, ... of the data area: each must be 0 (never
 * written before the snapshot) or satisfy (value >> 8) == (address >> 12) (the pattern of
 * ../snapshot-demo/snapfile.h); it also adds all the dwords up (32 bits, wrapping).
 * Reports OUT 0xF4 EAX = number of dwords that break the pattern, then OUT 0xF7
 * EAX = the sum, then halts.
 */
	.code32
	.text
	.globl	_start
_start:
	pushl	%edi			/* 8(%esp): end */
	pushl	%ecx			/* 4(%esp): vCPU count */
	pushl	$0			/* 0(%esp): sum */
	xorl	%ebp, %ebp		/* mismatches */
	movl	%ebx, %edx
	shll	$12, %edx
	addl	%esi, %edx		/* this vCPU's first page */
page:
	cmpl	8(%esp), %edx
	jae	done
	movl	%edx, %edi
	shrl	$12, %edi		/* the page number every dword must carry */
	xorl	%ecx, %ecx
dword:
	movl	(%edx,%ecx,4), %eax
	addl	%eax, (%esp)
	testl	%eax, %eax
	jz	1f
	shrl	$8, %eax
	cmpl	%edi, %eax
	je	1f
	incl	%ebp
1:	incl	%ecx
	cmpl	$1024, %ecx
	jb	dword
	movl	4(%esp), %ecx
	shll	$12, %ecx
	addl	%ecx, %edx
	jmp	page
done:
	movl	%ebp, %eax
	outl	%eax, $0xf4
	movl	(%esp), %eax
	outl	%eax, $0xf7
	hlt
	jmp	done
