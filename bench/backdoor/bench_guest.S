// load: 0x1000
/*
 * Benchmark guest (16-bit real mode, all segments 0): N backdoor GETVERSION calls
 * (IN EAX,DX on port 0x5658), N read from 0x700. Each answer is checked (EAX = 6,
 * EBX = magic); a wrong one is reported as OUT EAX=iteration to port 0xF5, the end as
 * OUT EAX=0x600D to port 0xF4.
 */
	.code16
	.text
start:
	movw	$0x7000, %sp
	movl	%ss:0x700, %esi
1:	movl	$0x564D5868, %eax
	movl	$0xA9B2A797, %ebx
	movl	$0xFFFF000A, %ecx
	movl	$0x5658, %edx
	inl	%dx, %eax
	cmpl	$6, %eax
	jne	2f
	cmpl	$0x564D5868, %ebx
	jne	2f
	decl	%esi
	jnz	1b
	movl	$0x600D, %eax
	outl	%eax, $0xF4
3:	hlt
	jmp	3b
2:	movl	%esi, %eax
	outl	%eax, $0xF5
	jmp	3b
