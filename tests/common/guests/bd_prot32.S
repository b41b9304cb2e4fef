// load: 0x1000
/*
 * 32-bit protected-mode backdoor guest (kvmh_setup_flat32(0x1000): flat segments, CPL0,
 * GDT 0x08 code0, 0x10 data0, 0x18 code3, 0x20 data3, no paging).
 * Runs the BD_TESTS body of bd_common.inc at CPL0 (results at 0x800), then sets IOPL=3
 * (so that IN/OUT work at CPL3: the kvm.enable_vmware_backdoor bypass is off here),
 * writes IA32_SYSENTER_CS/ESP/EIP (MSRs 0x174-0x176) and enters ring 3 with SYSEXIT
 * (IRET to ring 3 is not emulated on this host), reloads DS/ES with the DPL3 data
 * selector and runs the body again at CPL3 (results at 0x900). Reports OUT EAX=0x600D to
 * port 0xF4. HB buffers: linear 0x10000 (REP OUTSB) and 0x30123 (REP INSB, not page
 * aligned), up to 65536 bytes.
 */
#define OUT_OFF 0x10000
#define IN_OFF 0x30123
#define HB_ECX_HIGH 0

.macro SET_OUT_SEG
.endm
.macro RESTORE_DS
.endm
.macro SET_IN_SEG
.endm

#include "bd_common.inc"

	.code32
	.text
start:
	movl	$0x7000, %esp
	BD_TESTS 0x800

	/* IOPL = 3 */
	pushfl
	orl	$0x3000, (%esp)
	popfl
	/* SYSENTER MSRs: CS 0x08 (SYSEXIT: CS 0x1b, SS 0x23), ESP, EIP */
	movl	$0x174, %ecx
	movl	$0x08, %eax
	xorl	%edx, %edx
	wrmsr
	movl	$0x175, %ecx
	movl	$0x6800, %eax
	wrmsr
	movl	$0x176, %ecx
	movl	$sysenter_entry, %eax
	wrmsr
	movl	$ring3, %edx
	movl	$0x6000, %ecx
	sysexit

ring3:
	movw	$0x23, %ax
	movw	%ax, %ds
	movw	%ax, %es
	/* prove the privilege level: CS.RPL must be 3 */
	movw	%cs, %ax
	andl	$3, %eax
	cmpl	$3, %eax
	je	1f
	movl	$0xC3, %eax
	outl	%eax, $0xF5
2:	jmp	2b
1:
	BD_TESTS 0x900
	movl	$0x600D, %eax
	outl	%eax, $0xF4
3:	jmp	3b

sysenter_entry:
	movl	$0xEE, %eax
	outl	%eax, $0xF5
4:	jmp	4b
