// load: 0x1000
/*
 * Guest of vmwkvm-snapshot-demo: each vCPU keeps writing the pattern of snapfile.h over its
 * share of the data area, pass after pass, forever (the host stops it).
 * Entered in flat 32-bit protected mode with EBX = vCPU id, ECX = vCPU count,
 * ESI = first data page (GPA), EDI = end of RAM, ESP = its own stack.
 * vCPU i writes pages i, i + n, i + 2n, ... of the data area; one REP STOSL per page with
 * the value (page GPA >> 12) << 8 | (pass & 0xff).
 */
	.code32
	.text
	.globl	_start
_start:
	pushl	%edi			/* 4(%esp): end */
	pushl	%ecx			/* 0(%esp): vCPU count */
	xorl	%ebp, %ebp		/* pass */
pass:
	incl	%ebp
	movl	%ebx, %edx
	shll	$12, %edx
	addl	%esi, %edx		/* this vCPU's first page */
page:
	cmpl	4(%esp), %edx
	jae	pass
	movl	%edx, %eax
	shrl	$12, %eax
	shll	$8, %eax
	movl	%ebp, %ecx
	andl	$0xff, %ecx
	orl	%ecx, %eax
	movl	%edx, %edi
	movl	$1024, %ecx
	cld
	rep stosl
	movl	(%esp), %ecx
	shll	$12, %ecx
	addl	%ecx, %edx
	jmp	page
