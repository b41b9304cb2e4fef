// load: 0x1000
/*
 * Robustness guest (run with --mode prot32). The entry point selects the scenario:
 *   0x1000  checks (default): unknown ports read as all ones and swallow writes, the UART
 *           line status says "transmitter empty", and the backdoor's failure answers:
 *           an unknown command gets EAX = 0xFFFFFFFF and changes no other register; a call
 *           without the magic changes nothing but EAX (all ones); the command is ECX bits
 *           15:0 only; OUT on port 0x5658 is a call answered in the registers; a MESSAGE
 *           with a wrong cookie fails and the channel still works with the right one.
 *           Exit status 0 when all hold, else the number of the failed check.
 *   0x1010  halt: prints a line and executes HLT (the VMM then exits with status 3).
 *   0x1020  fault: loads an empty IDT and executes UD2 (#UD -> #DF -> triple fault;
 *           the VMM reports the shutdown and exits with status 70).
 *   0x1030  spin: loops forever (the VMM's watchdog ends it: status 124).
 *   0x1040  exit16: writes 0x012A to port 0xF4 with OUT AX (the status is the low byte, 42).
 *
 * Check numbers: 1 IN AL from port 0x80; 2 IN AX from 0x1234; 3 IN EAX from 0x4000;
 * 4 UART LSR; 5..11 unknown command (EAX, EBX, ECX, EDX, ESI, EDI, EBP);
 * 12..14 wrong magic (EAX, EBX, ECX); 15 GETVERSION with ECX high16 = 0xABCD;
 * 16 OPEN; 17 SENDSIZE with a wrong cookie succeeded; 18 CLOSE with the right cookie;
 * 19 OUT GETVERSION: EBX; 20 OUT GETVERSION: EAX.
 */
#include "guest.h"

	.code32
	.text
	.globl	start
start:
	jmp	checks
	.org	0x10
halt_entry:
	PRINT	"robust: halting\n"
	hlt
	jmp	halt_entry
	.org	0x20
fault_entry:
	jmp	fault
	.org	0x30
spin_entry:
	jmp	spin_entry
	.org	0x40
exit16_entry:
	movl	$0x012A, %eax
	movl	$EXIT_PORT, %edx
	outw	%ax, %dx
	jmp	halt_forever

fault:
	PRINT	"robust: UD2 with an empty IDT\n"
	lidt	empty_idt
	ud2
	jmp	halt_forever

checks:
	testl	%edi, %edi
	jnz	halt_forever
	PRINT	"robust guest: ports and backdoor failure answers\n"

	/* unknown ports */
	movl	$0x12345678, %eax
	inb	$0x80, %al
	cmpl	$0x123456FF, %eax
	ENSURE	je, 1, "IN AL from port 0x80 is not 0xFF", %eax
	movl	$0x1234, %edx
	movl	$0x12345678, %eax
	inw	%dx, %ax
	cmpl	$0x1234FFFF, %eax
	ENSURE	je, 2, "IN AX from port 0x1234 is not 0xFFFF", %eax
	movl	$0x4000, %edx
	xorl	%eax, %eax
	inl	%dx, %eax
	cmpl	$0xFFFFFFFF, %eax
	ENSURE	je, 3, "IN EAX from port 0x4000 is not 0xFFFFFFFF", %eax
	movb	$0x55, %al
	outb	%al, $0x80
	movl	$0x4000, %edx
	outl	%eax, %dx
	movl	$COM1_LSR, %edx
	inb	%dx, %al
	andl	$0xFF, %eax
	cmpl	$0x60, %eax
	ENSURE	je, 4, "UART line status is not 0x60", %eax
	PRINT	"unknown ports: reads all ones, writes ignored\n"

	/* unknown command 0xFFF: EAX = 0xFFFFFFFF, nothing else changes */
	movl	$BDOOR_MAGIC, %eax
	movl	$0xDEADBEEF, %ebx
	movl	$0x00000FFF, %ecx
	movl	$BDOOR_PORT, %edx
	movl	$0x11111111, %esi
	movl	$0x22222222, %edi
	movl	$0x33333333, %ebp
	inl	%dx, %eax
	cmpl	$0xFFFFFFFF, %eax
	ENSURE	je, 5, "unknown command: EAX is not 0xFFFFFFFF", %eax
	cmpl	$0xDEADBEEF, %ebx
	ENSURE	je, 6, "unknown command: EBX changed", %ebx
	cmpl	$0x00000FFF, %ecx
	ENSURE	je, 7, "unknown command: ECX changed", %ecx
	cmpl	$BDOOR_PORT, %edx
	ENSURE	je, 8, "unknown command: EDX changed", %edx
	cmpl	$0x11111111, %esi
	ENSURE	je, 9, "unknown command: ESI changed", %esi
	cmpl	$0x22222222, %edi
	ENSURE	je, 10, "unknown command: EDI changed", %edi
	cmpl	$0x33333333, %ebp
	ENSURE	je, 11, "unknown command: EBP changed", %ebp

	/* no magic: all ones in EAX, nothing else */
	movl	$0x12345678, %eax
	movl	$0xDEADBEEF, %ebx
	movl	$CMD_GETVERSION, %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$0xFFFFFFFF, %eax
	ENSURE	je, 12, "wrong magic: EAX is not 0xFFFFFFFF", %eax
	cmpl	$0xDEADBEEF, %ebx
	ENSURE	je, 13, "wrong magic: EBX changed", %ebx
	cmpl	$CMD_GETVERSION, %ecx
	ENSURE	je, 14, "wrong magic: ECX changed", %ecx

	/* the command is ECX bits 15:0: garbage above must not matter */
	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$(0xABCD0000 | CMD_GETVERSION), %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 15, "GETVERSION with ECX high16 = 0xABCD: EBX is not the magic", %ebx
	PRINT	"backdoor failure answers: ok\n"

	/* OUT on the LB port is a call too, answered in the registers */
	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$CMD_GETVERSION, %ecx
	movl	$BDOOR_PORT, %edx
	outl	%eax, %dx
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 19, "OUT GETVERSION: EBX is not the magic", %ebx
	cmpl	$6, %eax
	ENSURE	je, 20, "OUT GETVERSION: EAX is not 6", %eax

	/* a wrong cookie is refused; the right one still works */
	movl	$BDOOR_MAGIC, %eax
	movl	$RPCI_PROTO_COOKIE, %ebx
	movl	$MSG_OPEN, %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	testl	$ST_SUCCESS, %ecx
	ENSURE	jnz, 16, "OPEN with cookies", %ecx
	andl	$0xFFFF0000, %edx
	movl	%edx, chan
	movl	%esi, ckh
	movl	%edi, ckl
	movl	$BDOOR_MAGIC, %eax
	movl	$4, %ebx
	movl	$MSG_SENDSIZE, %ecx
	movl	chan, %edx
	movw	$BDOOR_PORT, %dx
	movl	ckh, %esi
	movl	ckl, %edi
	xorl	$1, %edi
	inl	%dx, %eax
	testl	$ST_SUCCESS, %ecx
	ENSURE	jz, 17, "SENDSIZE with a wrong cookie succeeded", %ecx
	movl	$BDOOR_MAGIC, %eax
	movl	$MSG_CLOSE, %ecx
	movl	chan, %edx
	movw	$BDOOR_PORT, %dx
	movl	ckh, %esi
	movl	ckl, %edi
	inl	%dx, %eax
	testl	$ST_SUCCESS, %ecx
	ENSURE	jnz, 18, "CLOSE with the right cookie", %ecx
	PRINT	"cookies: a wrong one is refused\n"
	PRINT	"robust: all checks passed\n"
	EXIT	0

#include "guestlib.inc"

	.data
	.balign	4
chan:	.long	0
ckh:	.long	0
ckl:	.long	0
empty_idt:
	.word	0
	.long	0
