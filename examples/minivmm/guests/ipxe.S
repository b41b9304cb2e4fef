// load: 0x1000
/*
 * iPXE-style GuestRPC guest (run with --mode prot32; ring 0). It repeats what iPXE's
 * guestrpc.c does, including its strictness and its sloppiness:
 *   - GETVERSION with EBX = 0 and ECX = 10 (vmware_present); only EBX == magic counts;
 *   - OPEN with EBX = 0x49435052 (RPCI, no cookie flag); ESI and EDI are never set, so
 *     they hold garbage on every call (this guest puts changing junk there on purpose);
 *   - every status compared as a whole 32-bit ECX: OPEN 0x00010000, COMMAND_LEN (SENDSIZE)
 *     0x00810000, COMMAND_DATA 0x00010000, REPLY_LEN (RECVSIZE) 0x00830000, REPLY_DATA
 *     0x00010000, REPLY_FINISH (RECVSTATUS) 0x00010000, CLOSE 0x00010000;
 *   - the last COMMAND_DATA chunk carries junk in its unused bytes (the bytes after the
 *     command in memory), which the host must ignore;
 *   - RECVSIZE's EDX high16 ("reply id") is passed back as EBX on REPLY_DATA and
 *     REPLY_FINISH, so it must be exactly 1;
 *   - the reply is judged by its first two bytes ("1 ").
 * EBP holds live data across every call (0xA5A5A5A5), as it does in iPXE.
 *
 * Exit status: 0 all right; 1 GETVERSION EBX; 2 OPEN status; 3 EBP changed;
 * 11 COMMAND_LEN status; 12 COMMAND_DATA status; 13 REPLY_LEN status; 14 reply id != 1;
 * 15 REPLY_DATA status; 16 REPLY_FINISH status; 17 reply too long; 19 CLOSE status;
 * 40 info-set reply; 41 info-get reply; 42 unknown command not refused with "0 ".
 */
#include "guest.h"

#define EBP_CANARY 0xA5A5A5A5
#define REPLY_MAX 128

/* IPXE_CALL subcmd: EAX = magic, ECX = subcmd << 16 | 0x1E, EDX = channel << 16 | port,
 * EBX as the caller set it, ESI/EDI = junk; then check EBP. */
.macro IPXE_CALL subcmd
	movl	$BDOOR_MAGIC, %eax
	movl	$\subcmd, %ecx
	movl	channel, %edx
	shll	$16, %edx
	movw	$BDOOR_PORT, %dx
	call	junk
	inl	%dx, %eax
	cmpl	$EBP_CANARY, %ebp
	ENSURE	je, 3, "EBP changed by a backdoor call", %ebp
.endm

/* COMMAND label: run one command; the reply lands in reply/reply_len. */
.macro COMMAND name
	movl	$\name, cmd_ptr
	movl	$\name\()_len, cmd_len
	call	guestrpc_command
.endm

	.code32
	.text
	.globl	start
start:
	testl	%edi, %edi
	jnz	halt_forever
	cld
	movl	$EBP_CANARY, %ebp
	PRINT	"ipxe guest: GuestRPC without cookies, exact status values\n"

	/* vmware_present() */
	movl	$BDOOR_MAGIC, %eax
	xorl	%ebx, %ebx
	movl	$CMD_GETVERSION, %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 1, "GETVERSION: EBX is not the magic", %ebx

	/* guestrpc_open() */
	movl	$RPCI_PROTO, %ebx
	IPXE_CALL MSG_OPEN
	cmpl	$0x00010000, %ecx
	ENSURE	je, 2, "OPEN: ECX is not 0x00010000", %ecx
	shrl	$16, %edx
	movl	%edx, channel
	PRINT	"GuestRPC channel "
	movl	channel, %eax
	call	putdec
	PRINT	" open, no cookies\n"

	COMMAND	m_set
	movl	$r_ok, %esi
	movl	$2, %ecx
	call	reply_starts
	ENSURE	je, 40, "info-set reply does not start with \"1 \"", reply_len

	COMMAND	m_get
	movl	reply_len, %eax
	cmpl	$r_get_len, %eax
	ENSURE	je, 41, "info-get reply length", %eax
	movl	$r_get, %esi
	movl	$r_get_len, %ecx
	call	reply_starts
	ENSURE	je, 41, "info-get reply text", reply_len

	COMMAND	m_unknown
	movl	$r_fail, %esi
	movl	$2, %ecx
	call	reply_starts
	ENSURE	je, 42, "unknown command: reply does not start with \"0 \"", reply_len
	PRINT	"unknown command refused: "
	call	put_ipxe_reply
	PRINT	"\n"

	/* guestrpc_close() */
	IPXE_CALL MSG_CLOSE
	cmpl	$0x00010000, %ecx
	ENSURE	je, 19, "CLOSE: ECX is not 0x00010000", %ecx
	PRINT	"ipxe guest: all checks passed\n"
	EXIT	0

/* junk: different garbage in ESI and EDI for every call (iPXE never sets them). */
junk:
	addl	$0x01020304, junk_state
	movl	junk_state, %esi
	movl	%esi, %edi
	notl	%edi
	ret

/* guestrpc_command(): send cmd_ptr/cmd_len, receive into reply/reply_len. */
guestrpc_command:
	/* COMMAND_LEN */
	movl	cmd_len, %ebx
	IPXE_CALL MSG_SENDSIZE
	cmpl	$0x00810000, %ecx
	ENSURE	je, 11, "COMMAND_LEN: ECX is not 0x00810000", %ecx
	/* COMMAND_DATA: 4 bytes at a time, junk in the unused bytes of the last chunk */
	movl	cmd_ptr, %eax
	movl	%eax, cursor
	movl	cmd_len, %eax
	movl	%eax, left
1:	movl	cursor, %ebx
	movl	(%ebx), %ebx
	IPXE_CALL MSG_SENDPAYLOAD
	cmpl	$0x00010000, %ecx
	ENSURE	je, 12, "COMMAND_DATA: ECX is not 0x00010000", %ecx
	addl	$4, cursor
	subl	$4, left
	ja	1b
	/* REPLY_LEN */
	xorl	%ebx, %ebx
	IPXE_CALL MSG_RECVSIZE
	cmpl	$0x00830000, %ecx
	ENSURE	je, 13, "REPLY_LEN: ECX is not 0x00830000", %ecx
	shrl	$16, %edx
	movl	%edx, reply_id
	cmpl	$1, %edx
	ENSURE	je, 14, "REPLY_LEN: reply id (EDX high16) is not 1", %edx
	cmpl	$REPLY_MAX, %ebx
	ENSURE	jbe, 17, "REPLY_LEN: reply longer than the buffer", %ebx
	movl	%ebx, reply_len
	movl	$reply, cursor
	movl	%ebx, left
	testl	%ebx, %ebx
	jz	3f
	/* REPLY_DATA, with the reply id in EBX */
2:	movl	reply_id, %ebx
	IPXE_CALL MSG_RECVPAYLOAD
	cmpl	$0x00010000, %ecx
	ENSURE	je, 15, "REPLY_DATA: ECX is not 0x00010000", %ecx
	movl	cursor, %edi
	movl	%ebx, (%edi)		/* reply has 3 bytes of slack */
	addl	$4, cursor
	subl	$4, left
	ja	2b
	/* REPLY_FINISH, with the reply id in EBX */
3:	movl	reply_id, %ebx
	IPXE_CALL MSG_RECVSTATUS
	cmpl	$0x00010000, %ecx
	ENSURE	je, 16, "REPLY_FINISH: ECX is not 0x00010000", %ecx
	ret

/* reply_starts: ZF set when the reply is at least ECX bytes and starts with ESI[0..ECX). */
reply_starts:
	cmpl	reply_len, %ecx
	ja	2f
	movl	$reply, %edi
	testl	%ecx, %ecx
	jz	2f
1:	movb	(%esi), %al
	cmpb	(%edi), %al
	jne	2f
	incl	%esi
	incl	%edi
	decl	%ecx
	jnz	1b
	ret
2:	orl	$1, %eax		/* ZF clear (EAX is scratch) */
	ret

put_ipxe_reply:
	movl	$reply, %esi
	movl	reply_len, %ecx
1:	testl	%ecx, %ecx
	jz	2f
	movb	(%esi), %al
	call	putc
	incl	%esi
	decl	%ecx
	jmp	1b
2:	ret

#include "guestlib.inc"

	STRING	m_set, "info-set guestinfo.ipxe.test iPXE style"
	STRING	m_get, "info-get guestinfo.ipxe.test"
	STRING	m_unknown, "ipxe.no-such-command"
	STRING	r_ok, "1 "
	STRING	r_fail, "0 "
	STRING	r_get, "1 iPXE style"

	.data
	.balign	4
channel:	.long	0
junk_state:	.long	0x5EED0000
cmd_ptr:	.long	0
cmd_len:	.long	0
cursor:		.long	0
left:		.long	0
reply_id:	.long	0
reply_len:	.long	0
	.bss
	.balign	4
reply:	.skip	REPLY_MAX + 4
