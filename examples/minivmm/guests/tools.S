// load: 0x1000
/*
 * Tools guest (run with --mode prot32): the part of VMware Tools a host talks to, as
 * open-vm-tools' vmtoolsd does it (docs/tools-protocol.md). The entry point selects:
 *   0x1000  tools: RPCI "tools.set.version 12389" (reply "1 "), then a TCLO channel with
 *           cookies and the polling loop: send the previous result (the first one empty),
 *           RECVSIZE, and with a command waiting fetch it and answer it on the next send:
 *             reset                  -> "OK ATR toolbox"
 *             ping, Capabilities_Register, Set_Option ... -> "OK "
 *             OS_Halt                -> "OK ", then (once the answer is sent) exit 0
 *             anything else          -> "ERROR Unknown Command"
 *           Every command is printed on the console ("tools: command <text>").
 *   0x1010  bigvalue: info-set guestinfo.big with a 60000-byte value over HB (the message is
 *           60023 bytes: within the 64 KiB cap), then info-get guestinfo.big over HB must
 *           return "1 " and the same 60000 bytes; exit 0.
 *
 * Exit status: 0 all right (tools: after OS_Halt); 20..34 channel steps (guest.h);
 * 40 tools.set.version reply; 41 info-set reply; 42 info-get reply length;
 * 43 info-get reply bytes.
 */
#include "guest.h"

#define CMD_MAX 4096
#define BIG_LEN 60000
#define BIG_MSG 0x200000   /* "info-set guestinfo.big " + value */
#define BIG_REPLY 0x300000 /* "1 " + value */

/* IS label: ZF set when the received command is the word at label (alone or followed by a space) */
.macro IS name
	movl	$\name, %esi
	movl	$\name\()_len, %ecx
	call	command_is
.endm

	.code32
	.text
	.globl	start
start:
	jmp	tools_main
	.org	0x10
bigvalue_entry:
	jmp	bigvalue

tools_main:
	testl	%edi, %edi
	jnz	halt_forever
	movl	$ctx, %ebp
	movl	$cmd, CTX_BUF(%ebp)
	movl	$CMD_MAX, CTX_BUFSZ(%ebp)
	/* start-up: the version, on an RPCI channel of its own (as rpcout's sendOne does) */
	call	rpc_open
	SEND	m_version
	call	rpc_call
	movl	$r_ok, %esi
	movl	$r_ok_len, %ecx
	call	rpc_expect
	ENSURE	je, 40, "tools.set.version reply", CTX_RLEN(%ebp)
	call	rpc_close
	PRINT	"tools: version sent, TCLO loop\n"
	/* the TCLO channel: the first send is empty (the guest says it is alive) */
	movl	$TCLO_PROTO_COOKIE, %ebx
	call	rpc_open_proto
	movl	$0, CTX_LEN(%ebp)
	movl	$0, halting
poll:
	call	rpc_send
	cmpl	$0, halting
	jne	halted
	movl	$0, CTX_LEN(%ebp)
	call	rpc_poll
	jnz	command
	movl	$2000, %ecx    /* nothing waits: a short pause, then poll again */
1:	pause
	loop	1b
	jmp	poll

command:
	PRINT	"tools: command "
	call	put_reply
	PRINT	"\n"
	IS	c_reset
	jne	1f
	SEND	a_reset
	jmp	poll
1:	IS	c_halt
	jne	2f
	movl	$1, halting
	SEND	a_ok
	jmp	poll
2:	IS	c_ping
	je	3f
	IS	c_caps
	je	3f
	IS	c_option
	je	3f
	SEND	a_unknown
	jmp	poll
3:	SEND	a_ok
	jmp	poll

halted:
	PRINT	"tools: halting\n"
	movb	$0, %al
	outb	%al, $EXIT_PORT
	jmp	halt_forever

/* command_is: ESI, ECX = a word. ZF set when the received command (CTX_BUF, CTX_RLEN) is
 * that word alone or followed by a space. Clobbers EAX, ECX, ESI, EDI. */
command_is:
	cmpl	CTX_RLEN(%ebp), %ecx
	ja	2f
	movl	CTX_BUF(%ebp), %edi
	movl	%ecx, %eax
1:	movb	(%esi), %dl
	cmpb	(%edi), %dl
	jne	2f
	incl	%esi
	incl	%edi
	decl	%ecx
	jnz	1b
	cmpl	CTX_RLEN(%ebp), %eax
	je	2f
	cmpb	$' ', (%edi)
2:	ret

bigvalue:
	testl	%edi, %edi
	jnz	halt_forever
	movl	$ctx, %ebp
	PRINT	"bigvalue: info-set of a 60000-byte value over HB\n"
	/* the message: prefix, then a value byte i = 'A' + i % 26 */
	movl	$BIG_MSG, %edi
	movl	$m_setbig, %esi
	movl	$m_setbig_len, %ecx
	cld
	rep movsb
	xorl	%ecx, %ecx
	movb	$'A', %al
1:	movb	%al, (%edi,%ecx)
	incb	%al
	cmpb	$'Z', %al
	jbe	2f
	movb	$'A', %al
2:	incl	%ecx
	cmpl	$BIG_LEN, %ecx
	jb	1b
	call	rpc_open
	movl	$1, CTX_HB(%ebp)
	movl	$BIG_MSG, CTX_MSG(%ebp)
	movl	$m_setbig_len + BIG_LEN, CTX_LEN(%ebp)
	movl	$cmd, CTX_BUF(%ebp)
	movl	$CMD_MAX, CTX_BUFSZ(%ebp)
	call	rpc_call
	movl	$r_ok, %esi
	movl	$r_ok_len, %ecx
	call	rpc_expect
	ENSURE	je, 41, "info-set of 60000 bytes: reply is not 1 ", CTX_RLEN(%ebp)
	PRINT	"bigvalue: info-get over HB\n"
	SEND	m_getbig
	movl	$BIG_REPLY, CTX_BUF(%ebp)
	movl	$BIG_LEN + 2, CTX_BUFSZ(%ebp)
	call	rpc_call
	cmpl	$BIG_LEN + 2, CTX_RLEN(%ebp)
	ENSURE	je, 42, "info-get: reply length is not 60002", CTX_RLEN(%ebp)
	movl	$BIG_REPLY, %esi
	cmpw	$0x2031, (%esi)
	ENSURE	je, 42, "info-get: reply does not start with 1 ", (%esi)
	addl	$2, %esi
	movl	$BIG_MSG + m_setbig_len, %edi
	movl	$BIG_LEN, %ecx
	repe cmpsb
	ENSURE	je, 43, "info-get: the value differs at offset", %ecx
	call	rpc_close
	PRINT	"bigvalue: 60000 bytes set and read back over HB\n"
	movb	$0, %al
	outb	%al, $EXIT_PORT
	jmp	halt_forever

#include "guestlib.inc"

	STRING	m_version, "tools.set.version 12389"
	STRING	m_setbig, "info-set guestinfo.big "
	STRING	m_getbig, "info-get guestinfo.big"
	STRING	r_ok, "1 "
	STRING	c_reset, "reset"
	STRING	c_halt, "OS_Halt"
	STRING	c_ping, "ping"
	STRING	c_caps, "Capabilities_Register"
	STRING	c_option, "Set_Option"
	STRING	a_reset, "OK ATR toolbox"
	STRING	a_ok, "OK "
	STRING	a_unknown, "ERROR Unknown Command"

	.bss
	.balign	16
ctx:	.skip	CTX_SIZE
halting:	.long	0
cmd:	.skip	CMD_MAX
