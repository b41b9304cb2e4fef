// load: 0x1000
/*
 * Ring-3 guest (run with --mode prot32): starts at CPL0 in the flat 32-bit protected mode
 * vmwkvm-minivmm sets up (GDT at 0x500: 0x08/0x10 ring 0, 0x18/0x20 ring 3; EFLAGS.IOPL = 3),
 * programs IA32_SYSENTER_CS/ESP/EIP (MSRs 0x174-0x176) and enters ring 3 with SYSEXIT
 * (CS = 0x1B, SS = 0x23). At CPL3 it does what VMware Tools' user-level code does:
 * GETVERSION, an RPCI channel with cookies, info-set over HB, info-get over LB, a log line
 * over HB ("hello from ring 3"; the VMM prints it with the CPL the library reported), CLOSE.
 * Then SYSENTER back to ring 0, which checks CS and exits with status 0.
 *
 * Exit status: 0 all right; 1 not CPL0 at entry; 2 CS after SYSEXIT is not 0x1B;
 * 3 GETVERSION EBX; 4 GETVERSION EAX; 20..34 channel steps (guest.h);
 * 40 info-set reply; 41 info-get reply; 42 log reply; 5 CS after SYSENTER is not 0x08.
 */
#include "guest.h"

#define SEL_CODE0 0x08
#define SEL_CODE3 0x1B
#define SEL_DATA3 0x23
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define REPLY_MAX 128

.macro EXPECT name, code, msg
	movl	$\name, %esi
	movl	$\name\()_len, %ecx
	call	rpc_expect
	ENSURE	je, \code, "\msg", CTX_RLEN(%ebp)
.endm

	.code32
	.text
	.globl	start
start:
	testl	%edi, %edi
	jnz	halt_forever
	cld
	PRINT	"cpl3 guest: 32-bit protected mode\n"
	movl	%cs, %eax
	andl	$3, %eax
	ENSURE	jz, 1, "not at CPL 0 at entry", %eax

	movl	$MSR_SYSENTER_CS, %ecx
	movl	$SEL_CODE0, %eax
	xorl	%edx, %edx
	wrmsr
	movl	$MSR_SYSENTER_ESP, %ecx
	movl	%esp, %eax
	wrmsr
	movl	$MSR_SYSENTER_EIP, %ecx
	movl	$ring0_again, %eax
	wrmsr
	PRINT	"ring 0: SYSEXIT to ring 3\n"
	movl	$user_stack_top, %ecx
	movl	$ring3, %edx
	sysexit

ring3:
	movl	$SEL_DATA3, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%cs, %eax
	andl	$0xFFFF, %eax
	cmpl	$SEL_CODE3, %eax
	ENSURE	je, 2, "CS after SYSEXIT is not 0x1B", %eax
	PRINT	"ring 3: CS=0x1b, using the backdoor\n"

	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$(0xFFFF0000 | CMD_GETVERSION), %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 3, "GETVERSION at CPL3: EBX is not the magic", %ebx
	cmpl	$6, %eax
	ENSURE	je, 4, "GETVERSION at CPL3: EAX is not 6", %eax
	PRINT	"ring 3: GETVERSION ok\n"

	movl	$ctx, %ebp
	call	rpc_open
	movl	$reply, CTX_BUF(%ebp)
	movl	$REPLY_MAX, CTX_BUFSZ(%ebp)
	movl	$1, CTX_HB(%ebp)
	SEND	m_set
	call	rpc_call
	EXPECT	r_ok, 40, "info-set from ring 3 (HB)"
	movl	$0, CTX_HB(%ebp)
	SEND	m_get
	call	rpc_call
	EXPECT	r_get, 41, "info-get from ring 3 (LB)"
	movl	$1, CTX_HB(%ebp)
	SEND	m_log
	call	rpc_call
	EXPECT	r_ok, 42, "log from ring 3 (HB)"
	call	rpc_close
	PRINT	"ring 3: RPCI ok, SYSENTER to ring 0\n"
	sysenter

ring0_again:
	movl	%cs, %eax
	andl	$0xFFFF, %eax
	cmpl	$SEL_CODE0, %eax
	ENSURE	je, 5, "CS after SYSENTER is not 0x08", %eax
	PRINT	"ring 0 again: all checks passed\n"
	EXIT	0

#include "guestlib.inc"

	STRING	m_set, "info-set guestinfo.cpl3.ring 3"
	STRING	m_get, "info-get guestinfo.cpl3.ring"
	STRING	m_log, "log hello from ring 3"
	STRING	r_ok, "1 "
	STRING	r_get, "1 3"

	.bss
	.balign	16
ctx:	.skip	CTX_SIZE
reply:	.skip	REPLY_MAX
	.balign	16
	.skip	1024
user_stack_top:
