/*
 * Shared definitions for the vmwkvm-minivmm guests (GNU as, AT&T syntax, preprocessed by
 * cpp). Include at the top of a guest; include "guestlib.inc" once in its text section.
 *
 * Every routine here is written with 32-bit registers and 32-bit addressing only, so the
 * same source assembles for .code16 (real mode: the assembler adds the 0x66/0x67 prefixes;
 * every address must stay below 64 KiB) and for .code32 (flat protected mode).
 *
 * What the VMM provides (see vmwkvm-minivmm(1)):
 *   port 0x3F8  console: OUT AL prints a byte; IN from 0x3FD (line status) has bit 5 set
 *   port 0xF4   exit device: OUT AL ends the VM, AL becomes the process exit status
 *   ports 0x5658/0x5659  the VMware backdoor (LB/HB), answered through libvmwkvm
 *   at entry    EDI = vCPU index (0 = the first vCPU), ESI = number of vCPUs, a private stack
 */
#ifndef MINIVMM_GUEST_H
#define MINIVMM_GUEST_H

#define BDOOR_MAGIC 0x564D5868
#define BDOOR_PORT 0x5658
#define BDOORHB_PORT 0x5659

#define CMD_GETVERSION 10
#define CMD_MESSAGE 0x1E

/* MESSAGE: ECX = subcommand << 16 | 0x1E */
#define MSG_OPEN 0x0000001E
#define MSG_SENDSIZE 0x0001001E
#define MSG_SENDPAYLOAD 0x0002001E
#define MSG_RECVSIZE 0x0003001E
#define MSG_RECVPAYLOAD 0x0004001E
#define MSG_RECVSTATUS 0x0005001E
#define MSG_CLOSE 0x0006001E

#define RPCI_PROTO 0x49435052          /* "RPCI" */
#define RPCI_PROTO_COOKIE 0xC9435052   /* "RPCI" | GUESTMSG_FLAG_COOKIE */
#define TCLO_PROTO_COOKIE 0xCF4C4354   /* "TCLO" | GUESTMSG_FLAG_COOKIE */

/* status bits, as they sit in ECX (LB) or EBX (HB): bits 31:16 */
#define ST_SUCCESS 0x00010000
#define ST_DORECV 0x00020000
#define ST_HB 0x00800000

#define COM1 0x3F8
#define COM1_LSR 0x3FD
#define EXIT_PORT 0xF4

/*
 * Channel context, addressed through EBP by the rpc_* routines of guestlib.inc (EBP is
 * not a backdoor register on LB calls, so it survives them; the HB calls borrow it for a
 * cookie and restore it).
 */
#define CTX_CHAN 0    /* channel id << 16, ready to be OR-ed with the port */
#define CTX_CKH 4     /* cookie-high (ESI after OPEN) */
#define CTX_CKL 8     /* cookie-low (EDI after OPEN) */
#define CTX_HB 12     /* non-zero: move payloads over port 0x5659 (requires the HB status bit) */
#define CTX_MSG 16    /* message to send: address */
#define CTX_LEN 20    /* message to send: length */
#define CTX_BUF 24    /* reply buffer: address */
#define CTX_BUFSZ 28  /* reply buffer: size */
#define CTX_RLEN 32   /* reply length received */
#define CTX_PTR 36    /* scratch: cursor */
#define CTX_LEFT 40   /* scratch: bytes left */
#define CTX_SIZE 48

/*
 * Failure codes of the shared routines. Each is also the exit status the guest reports
 * through port 0xF4 (guest-specific checks use other codes, listed in each guest).
 */
#define E_OPEN 20         /* OPEN: no SUCCESS in ECX */
#define E_SENDSIZE 21     /* SENDSIZE: no SUCCESS */
#define E_NO_HB 22        /* HB asked for, but the status has no HB bit */
#define E_SENDPAYLOAD 23  /* SENDPAYLOAD: no SUCCESS */
#define E_HB_SEND 24      /* REP OUTSB: EBX status without SUCCESS */
#define E_RECVSIZE 25     /* RECVSIZE: no SUCCESS */
#define E_NO_REPLY 26     /* RECVSIZE: no DORECV (no reply waiting) */
#define E_RECV_TYPE 27    /* RECVSIZE: EDX high16 != 1 */
#define E_REPLY_BIG 28    /* RECVSIZE: reply longer than the buffer */
#define E_RECVPAYLOAD 29  /* RECVPAYLOAD: no SUCCESS */
#define E_PAYLOAD_TYPE 30 /* RECVPAYLOAD: EDX high16 != 2 */
#define E_HB_RECV 31      /* REP INSB: EBX status without SUCCESS */
#define E_RECVSTATUS 32   /* RECVSTATUS: no SUCCESS */
#define E_CLOSE 33        /* CLOSE: no SUCCESS */
#define E_EBP 34          /* EBP changed across an LB call */

/*
 * ENSURE jcc, code, "text", value
 * Continue when the condition jcc holds (for example `jz` after a test); otherwise print
 * "FAIL <code>: <text> (got 0x<value>)" on the console and exit with status <code>.
 */
.macro ENSURE jok, code, msg, val=%eax
	\jok	.Lok\@
	movl	\val, %eax
	movl	$\code, %ebx
	movl	$.Lmsg\@, %esi
	jmp	fail
	.pushsection .rodata
.Lmsg\@:
	.asciz	"\msg"
	.popsection
.Lok\@:
.endm

/* PRINT "text": print a constant string on the console (all registers preserved). */
.macro PRINT msg
	pushl	%esi
	movl	$.Lstr\@, %esi
	call	puts
	popl	%esi
	.pushsection .rodata
.Lstr\@:
	.asciz	"\msg"
	.popsection
.endm

/* SEND label: make the STRING at label the message rpc_send sends. */
.macro SEND name
	movl	$\name, CTX_MSG(%ebp)
	movl	$\name\()_len, CTX_LEN(%ebp)
.endm

/* STRING label, "text": a constant with label and label_len (no NUL counted). */
.macro STRING name, text
	.pushsection .rodata
\name:
	.ascii	"\text"
	.set	\name\()_len, . - \name
	.byte	0
	.popsection
.endm

/* EXIT code: write the exit status to port 0xF4 (and stop if the VMM did not). */
.macro EXIT code
	movb	$\code, %al
	outb	%al, $EXIT_PORT
	jmp	halt_forever
.endm

#endif
