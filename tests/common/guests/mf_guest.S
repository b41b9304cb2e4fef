// load: 0x1000
/*
 * Memory-fault test guest (tests/memfault/test_memfault_kvm*.c). Entered by the host in flat 32-bit
 * protected mode (kvmh_setup_flat32 layout: CS 0x08, DS/ES/SS 0x10, no paging) with:
 *   EDX  mode: 0 write pass, 1 sum pass, 2 stress
 *   ESI  GPA of the first data page      ECX  number of pages
 *   EBX  vCPU id (0..7)                   EDI  iterations (stress)
 *   ESP  a stack in low memory
 * Modes:
 *   0  for each page i: store (id << 24 | i) at page_i + id*4, read it back; a mismatch
 *      reports OUT 0xF5 with EAX = i; then OUT 0xF4 with EAX = 0x600D
 *   1  sum (32-bit, wrapping) of the dwords at page_i + id*4 for every page; OUT 0xF4 with
 *      EAX = the sum
 *   2  for k = 1..EDI: store k at page_(k mod ECX) + id*8 and read it back (OUT 0xF5 with
 *      EAX = k on a mismatch); then OUT 0xF4 with EAX = EDI
 * Then HLT. Every store is a plain MOV, so a protected page is hit by exactly one access
 * kind per instruction.
 */
	.code32
	.text
	.globl	_start
_start:
	cmpl	$1, %edx
	je	sum_pass
	cmpl	$2, %edx
	je	stress

write_pass:
	xorl	%ebp, %ebp
1:	movl	%ebp, %eax
	shll	$12, %eax
	addl	%esi, %eax
	leal	(%eax,%ebx,4), %edi
	movl	%ebx, %eax
	shll	$24, %eax
	orl	%ebp, %eax
	movl	%eax, (%edi)
	cmpl	(%edi), %eax
	jne	fail_ebp
	incl	%ebp
	cmpl	%ecx, %ebp
	jb	1b
	movl	$0x600d, %eax
	outl	%eax, $0xf4
	hlt
fail_ebp:
	movl	%ebp, %eax
	outl	%eax, $0xf5
	hlt

sum_pass:
	xorl	%ebp, %ebp
	xorl	%edi, %edi
2:	movl	%ebp, %eax
	shll	$12, %eax
	addl	%esi, %eax
	addl	(%eax,%ebx,4), %edi
	incl	%ebp
	cmpl	%ecx, %ebp
	jb	2b
	movl	%edi, %eax
	outl	%eax, $0xf4
	hlt

stress:
	pushl	%edi
	xorl	%edi, %edi
3:	incl	%edi
	movl	%edi, %eax
	xorl	%edx, %edx
	divl	%ecx
	movl	%edx, %eax
	shll	$12, %eax
	addl	%esi, %eax
	leal	(%eax,%ebx,8), %eax
	movl	%edi, (%eax)
	cmpl	(%eax), %edi
	jne	fail_edi
	cmpl	(%esp), %edi
	jb	3b
	movl	%edi, %eax
	outl	%eax, $0xf4
	hlt
fail_edi:
	movl	%edi, %eax
	outl	%eax, $0xf5
	hlt
