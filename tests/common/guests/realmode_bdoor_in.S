// load: 0x1000
/*
 * Real mode: one low-bandwidth backdoor call, IN EAX,DX on port 0x5658 with the magic in
 * EAX and GETVERSION (10) in ECX, exactly as a VMware guest issues it. Then the guest
 * reports the EAX it got back with OUT EAX to port 0x10 and halts.
 * Expected exits: KVM_EXIT_IO (in, size 4, port 0x5658, count 1), KVM_EXIT_IO (out,
 * size 4, port 0x10, data = what the host answered), KVM_EXIT_HLT.
 */
	.code16
	.text
start:
	movl	$0x564D5868, %eax
	movl	$10, %ecx
	movl	$0x5658, %edx
	inl	%dx, %eax
	outl	%eax, $0x10
	hlt
	jmp	start
