// load: 0x1000
/*
 * CPUID guest (16-bit real mode): finds the hypervisor the way Linux does
 * (arch/x86/kernel/cpu/vmware.c): CPUID.1:ECX[31] (hypervisor bit) set and leaf 0x40000000
 * vendor "VMwareVMware" means VMware, nothing else does. Then, as Linux and open-vm-tools
 * go on to do: max leaf >= 0x40000010, leaf 0x40000010 (TSC and APIC bus kHz, and the
 * hypercall transport in ECX bits 1:0: 0 = I/O port, 1 = VMMCALL, 2 = VMCALL, 3 = invalid),
 * GETHZ (EBX preset to 0xFFFFFFFF) and GETVERSION over the port.
 *
 * Console: "hypervisor vendor: <vendor>", "VMware platform: found" / "not found",
 * "transport: ...", the frequencies.
 * Exit status: 0 VMware found and consistent; 10 hypervisor bit set but not VMware
 * (expected with --cpuid kvm); 11 no hypervisor bit; otherwise:
 *   20 max leaf below 0x40000010    21 TSC kHz is 0          22 APIC bus kHz is 0
 *   23 both hypercall bits set      24 GETHZ unsupported     25 GETHZ TSC Hz != CPUID kHz * 1000
 *   26 GETHZ APIC Hz != CPUID kHz * 1000                     27 GETVERSION EBX is not the magic
 *   28 GETVERSION EAX is 0xFFFFFFFF
 */
#include "guest.h"

#define VMW_SIG_EBX 0x61774D56 /* "VMwa" */
#define VMW_SIG_ECX 0x4D566572 /* "reVM" */
#define VMW_SIG_EDX 0x65726177 /* "ware" */

	.code16
	.text
	.globl	start
start:
	testl	%edi, %edi
	jnz	halt_forever
	PRINT	"cpuid guest: Linux-style hypervisor detection\n"

	movl	$1, %eax
	xorl	%ecx, %ecx
	cpuid
	testl	$0x80000000, %ecx
	jnz	1f
	PRINT	"hypervisor bit: clear\nVMware platform: not found\n"
	EXIT	11
1:	PRINT	"hypervisor bit: set\n"

	movl	$0x40000000, %eax
	xorl	%ecx, %ecx
	cpuid
	movl	%eax, maxleaf
	movl	%ebx, vendor
	movl	%ecx, vendor + 4
	movl	%edx, vendor + 8
	PRINT	"hypervisor vendor: "
	movl	$vendor, %esi
	call	puts
	PRINT	"\nmax hypervisor leaf: 0x"
	movl	maxleaf, %eax
	call	puthex32
	PRINT	"\n"
	cmpl	$VMW_SIG_EBX, vendor
	jne	2f
	cmpl	$VMW_SIG_ECX, vendor + 4
	jne	2f
	cmpl	$VMW_SIG_EDX, vendor + 8
	je	3f
2:	PRINT	"VMware platform: not found\n"
	EXIT	10
3:	PRINT	"VMware platform: found\n"

	cmpl	$0x40000010, maxleaf
	ENSURE	jae, 20, "max hypervisor leaf below 0x40000010", maxleaf
	movl	$0x40000010, %eax
	xorl	%ecx, %ecx
	cpuid
	movl	%eax, tsc_khz
	movl	%ebx, apic_khz
	movl	%ecx, features
	testl	%eax, %eax
	ENSURE	jnz, 21, "leaf 0x40000010 EAX (TSC kHz) is 0", %eax
	testl	%ebx, %ebx
	ENSURE	jnz, 22, "leaf 0x40000010 EBX (APIC bus kHz) is 0", %ebx
	andl	$3, %ecx
	cmpl	$3, %ecx
	ENSURE	jne, 23, "leaf 0x40000010 ECX has both VMCALL and VMMCALL", features
	PRINT	"transport: "
	testl	%ecx, %ecx
	jnz	4f
	PRINT	"I/O port\n"
	jmp	6f
4:	cmpl	$2, %ecx
	jne	5f
	PRINT	"VMCALL\n"
	jmp	6f
5:	PRINT	"VMMCALL\n"
6:	PRINT	"TSC kHz: "
	movl	tsc_khz, %eax
	call	putdec
	PRINT	", APIC bus kHz: "
	movl	apic_khz, %eax
	call	putdec
	PRINT	"\n"

	/* GETHZ as Linux calls it: EBX preset to 0xFFFFFFFF ("unsupported" if it stays) */
	movl	$BDOOR_MAGIC, %eax
	movl	$0xFFFFFFFF, %ebx
	movl	$45, %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$0xFFFFFFFF, %ebx
	ENSURE	jne, 24, "GETHZ unsupported (EBX stayed 0xFFFFFFFF)", %ebx
	movl	%eax, hz_lo
	movl	%ebx, hz_hi
	movl	%ecx, apic_hz
	movl	tsc_khz, %eax
	movl	$1000, %ecx
	mull	%ecx			/* EDX:EAX = TSC kHz * 1000 */
	cmpl	hz_lo, %eax
	ENSURE	je, 25, "GETHZ TSC Hz (low) differs from CPUID TSC kHz * 1000", hz_lo
	cmpl	hz_hi, %edx
	ENSURE	je, 25, "GETHZ TSC Hz (high) differs from CPUID TSC kHz * 1000", hz_hi
	movl	apic_khz, %eax
	mull	%ecx
	cmpl	apic_hz, %eax
	ENSURE	je, 26, "GETHZ APIC Hz differs from CPUID APIC kHz * 1000", apic_hz
	PRINT	"GETHZ: consistent with CPUID\n"

	/* GETVERSION over the port */
	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$(0xFFFF0000 | CMD_GETVERSION), %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 27, "GETVERSION: EBX is not the magic", %ebx
	cmpl	$0xFFFFFFFF, %eax
	ENSURE	jne, 28, "GETVERSION: EAX is 0xFFFFFFFF", %eax
	PRINT	"GETVERSION: backdoor present\n"
	EXIT	0

#include "guestlib.inc"

	.data
	.balign	4
maxleaf:	.long	0
vendor:		.long	0, 0, 0, 0	/* 12 bytes and a NUL */
tsc_khz:	.long	0
apic_khz:	.long	0
features:	.long	0
hz_lo:		.long	0
hz_hi:		.long	0
apic_hz:	.long	0
