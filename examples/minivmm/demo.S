// load: 0x1000
/*
 * vmwkvm-minivmm demo guest: 16-bit real mode, loaded and entered at 0x1000 with all
 * segments 0 (the defaults of vmwkvm-minivmm). It talks to the VMware backdoor the way
 * VMware Tools does and exits with status 0 only when every answer was right:
 *
 *   1. GETVERSION, open-vm-tools style: EBX = ~magic, ECX = 0xFFFF000A; requires
 *      EBX = magic and EAX = 6.
 *   2. OPEN an RPCI channel with cookies (EBX = 0xC9435052); every later call carries
 *      the channel id in EDX bits 31:16 and the cookies in ESI/EDI (EBP/EDI, ESI/EBP on HB).
 *   3. info-set / info-get of guestinfo.demo.lb over the low-bandwidth port
 *      (SENDPAYLOAD / RECVPAYLOAD, 4 bytes per call).
 *   4. info-set / info-get of guestinfo.demo.hb over the high-bandwidth port
 *      (REP OUTSB / REP INSB on 0x5659), and the LB key read back over HB.
 *   5. info-get of a key nobody set: the reply must start with "0 ".
 *   6. tools.set.version 12345 (LB) and a log line (HB): both "1 ".
 *   7. CLOSE, then OUT 0 to port 0xF4.
 *
 * Exit status: 0 = every check passed. Otherwise the check that failed:
 *   1 GETVERSION EBX is not the magic     2 GETVERSION EAX is not 6
 *   20..34 a channel step failed (E_* in guests/guest.h: 20 OPEN, 21 SENDSIZE,
 *          22 no HB bit, 23 SENDPAYLOAD, 24 HB send, 25 RECVSIZE, 26 no reply,
 *          27 RECVSIZE type, 28 reply too long, 29 RECVPAYLOAD, 30 RECVPAYLOAD type,
 *          31 HB receive, 32 RECVSTATUS, 33 CLOSE, 34 EBP not preserved)
 *   40 info-set demo.lb reply     41 info-get demo.lb reply
 *   42 info-set demo.hb reply     43 info-get demo.hb reply
 *   44 info-get demo.lb over HB   45 info-get of an unset key
 *   46 tools.set.version reply    47 log reply
 * The console shows every message and reply, and "FAIL <n>: ..." for a failed check.
 * vCPUs other than the first halt at once (the demo is single-threaded).
 */
#include "guests/guest.h"

#define REPLY_MAX 256

/* EXPECT label, code, "text": the reply must equal the string at label. */
.macro EXPECT name, code, msg
	movl	$\name, %esi
	movl	$\name\()_len, %ecx
	call	rpc_expect
	je	.Lexp\@
	movl	$\code, %ebx
	movl	$.Lm\@, %esi
	jmp	bad_reply
	.pushsection .rodata
.Lm\@:
	.asciz	"\msg"
	.popsection
.Lexp\@:
.endm

	.code16
	.text
	.globl	start
start:
	testl	%edi, %edi
	jnz	halt_forever
	cld
	PRINT	"vmwkvm-minivmm demo: 16-bit real-mode guest\n"

	/* 1. GETVERSION as open-vm-tools issues it */
	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$(0xFFFF0000 | CMD_GETVERSION), %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 1, "GETVERSION: EBX is not the magic", %ebx
	cmpl	$6, %eax
	ENSURE	je, 2, "GETVERSION: EAX is not 6", %eax
	PRINT	"GETVERSION: version 6, product type "
	movl	%ecx, %eax
	call	putdec
	PRINT	"\n"

	/* 2. OPEN RPCI with cookies */
	movl	$ctx, %ebp
	call	rpc_open
	PRINT	"RPCI channel "
	movl	CTX_CHAN(%ebp), %eax
	shrl	$16, %eax
	call	putdec
	PRINT	" open, with cookies\n"
	movl	$reply, CTX_BUF(%ebp)
	movl	$REPLY_MAX, CTX_BUFSZ(%ebp)

	/* 3. low bandwidth */
	movl	$0, CTX_HB(%ebp)
	SEND	m_set_lb
	call	exchange
	EXPECT	r_ok, 40, "info-set guestinfo.demo.lb"
	SEND	m_get_lb
	call	exchange
	EXPECT	r_get_lb, 41, "info-get guestinfo.demo.lb"

	/* 4. high bandwidth */
	movl	$1, CTX_HB(%ebp)
	SEND	m_set_hb
	call	exchange
	EXPECT	r_ok, 42, "info-set guestinfo.demo.hb"
	SEND	m_get_hb
	call	exchange
	EXPECT	r_get_hb, 43, "info-get guestinfo.demo.hb"
	SEND	m_get_lb
	call	exchange
	EXPECT	r_get_lb, 44, "info-get guestinfo.demo.lb over HB"

	/* 5. a key nobody set: failure reply "0 ..." */
	movl	$0, CTX_HB(%ebp)
	SEND	m_get_unset
	call	exchange
	movl	$r_fail, %esi
	movl	$2, %ecx
	cmpl	%ecx, CTX_RLEN(%ebp)
	jb	1f
	movl	%ecx, CTX_RLEN(%ebp)	/* compare the first two bytes only */
	call	rpc_expect
	je	2f
1:	movl	$45, %ebx
	movl	$s_unset, %esi
	jmp	bad_reply
2:
	/* 6. tools version (LB) and a log line (HB) */
	SEND	m_version
	call	exchange
	EXPECT	r_ok, 46, "tools.set.version"
	movl	$1, CTX_HB(%ebp)
	SEND	m_log
	call	exchange
	EXPECT	r_ok, 47, "log"

	/* 7. close and report success */
	call	rpc_close
	PRINT	"RPCI channel closed\n"
	PRINT	"demo: all checks passed\n"
	EXIT	0

/* exchange: send the message, fetch the reply, and show both on the console. */
exchange:
	call	rpc_send
	call	rpc_recv
	cmpl	$0, CTX_HB(%ebp)
	jne	1f
	PRINT	"LB> "
	jmp	2f
1:	PRINT	"HB> "
2:	movl	CTX_MSG(%ebp), %esi
	call	puts
	PRINT	"\n   < "
	call	put_reply
	PRINT	"\n"
	ret

/* bad_reply: EBX = code, ESI = text. Prints the reply, then fails. */
bad_reply:
	PRINT	"unexpected reply ["
	call	put_reply
	PRINT	"]\n"
	movl	CTX_RLEN(%ebp), %eax
	jmp	fail

#include "guests/guestlib.inc"

	STRING	m_set_lb, "info-set guestinfo.demo.lb sent over port 0x5658"
	STRING	m_get_lb, "info-get guestinfo.demo.lb"
	STRING	m_set_hb, "info-set guestinfo.demo.hb sent over port 0x5659 with REP OUTSB"
	STRING	m_get_hb, "info-get guestinfo.demo.hb"
	STRING	m_get_unset, "info-get guestinfo.demo.unset"
	STRING	m_version, "tools.set.version 12345"
	STRING	m_log, "log vmwkvm-minivmm demo: hello from the guest"
	STRING	r_ok, "1 "
	STRING	r_fail, "0 "
	STRING	r_get_lb, "1 sent over port 0x5658"
	STRING	r_get_hb, "1 sent over port 0x5659 with REP OUTSB"
	STRING	s_unset, "info-get of an unset key"

	.bss
	.balign	16
ctx:	.skip	CTX_SIZE
reply:	.skip	REPLY_MAX
