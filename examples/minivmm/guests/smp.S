// load: 0x1000
/*
 * Multi-vCPU guest (16-bit real mode; run with --vcpus N, N <= 16). Every vCPU starts
 * here with its index in EDI and the vCPU count in ESI (vmwkvm-minivmm's convention) and,
 * all at the same time, each on its own channel: GETVERSION, OPEN (cookies),
 * info-set guestinfo.smp.cpu<i> <i> and info-get of it (even vCPUs over LB, odd vCPUs
 * over HB), CLOSE. <i> is the index as one hex digit. Each then counts itself done
 * (LOCK INC); the others halt, vCPU 0 waits for all, reads every key back on a new
 * channel and exits with status 0.
 *
 * Exit status: 0 all right; 1 GETVERSION EBX; 20..34 channel steps (guest.h);
 * 40 info-set reply; 41 info-get reply; 42 read-back by vCPU 0 differs.
 * The dump (--guestinfo-dump) then holds smp.cpu0=0 ... one line per vCPU.
 */
#include "guest.h"

#define PERCPU 256     /* per-vCPU block: context, message, reply */
#define P_INDEX 48     /* vCPU index */
#define P_MSG 64       /* message buffer (64 bytes) */
#define P_REPLY 128    /* reply buffer (128 bytes) */
#define REPLY_MAX 128

	.code16
	.text
	.globl	start
start:
	cld
	movl	%esi, ncpus
	movl	%edi, %ebp
	shll	$8, %ebp		/* PERCPU = 256 */
	addl	$percpu, %ebp
	movl	%edi, P_INDEX(%ebp)
	testl	%edi, %edi
	jnz	1f
	PRINT	"smp guest: "
	movl	ncpus, %eax
	call	putdec
	PRINT	" vCPUs start at the same entry\n"
1:
	movl	$BDOOR_MAGIC, %eax
	movl	$~BDOOR_MAGIC, %ebx
	movl	$(0xFFFF0000 | CMD_GETVERSION), %ecx
	movl	$BDOOR_PORT, %edx
	inl	%dx, %eax
	cmpl	$BDOOR_MAGIC, %ebx
	ENSURE	je, 1, "GETVERSION: EBX is not the magic", %ebx

	call	rpc_open
	movl	P_INDEX(%ebp), %eax
	andl	$1, %eax
	movl	%eax, CTX_HB(%ebp)	/* odd vCPUs use HB */
	leal	P_REPLY(%ebp), %eax
	movl	%eax, CTX_BUF(%ebp)
	movl	$REPLY_MAX, CTX_BUFSZ(%ebp)

	/* info-set guestinfo.smp.cpu<i> <i> */
	movl	$t_set, %esi
	movl	$t_set_len, %ecx
	call	build_msg
	call	rpc_call
	movl	CTX_RLEN(%ebp), %eax
	cmpl	$2, %eax
	ENSURE	je, 40, "info-set: reply is not \"1 \"", %eax
	movl	CTX_BUF(%ebp), %esi
	cmpw	$0x2031, (%esi)		/* "1 " */
	ENSURE	je, 40, "info-set: reply is not \"1 \"", %eax

	/* info-get guestinfo.smp.cpu<i> must answer "1 <i>" */
	movl	$t_get, %esi
	movl	$t_get_len, %ecx
	call	build_msg
	call	rpc_call
	call	check_digit_reply
	ENSURE	je, 41, "info-get: reply is not \"1 <index>\"", CTX_RLEN(%ebp)
	call	rpc_close

	lock incl done
	cmpl	$0, P_INDEX(%ebp)
	jne	halt_forever

	/* vCPU 0: wait for everyone, then read every key back on a new channel */
2:	movl	done, %eax
	cmpl	ncpus, %eax
	jae	3f
	pause
	jmp	2b
3:	PRINT	"smp: every vCPU set and read its key\n"
	call	rpc_open
	movl	$0, CTX_HB(%ebp)
	movl	$0, P_INDEX(%ebp)
4:	movl	$t_get, %esi
	movl	$t_get_len, %ecx
	call	build_msg
	call	rpc_call
	call	check_digit_reply
	ENSURE	je, 42, "read-back by vCPU 0 differs", P_INDEX(%ebp)
	incl	P_INDEX(%ebp)
	movl	P_INDEX(%ebp), %eax
	cmpl	ncpus, %eax
	jb	4b
	call	rpc_close
	PRINT	"smp: vCPU 0 read back "
	movl	ncpus, %eax
	call	putdec
	PRINT	" keys, all checks passed\n"
	EXIT	0

/*
 * build_msg: copy the template (ESI, ECX bytes) to the message buffer, replace its '#'
 * with the hex digit of P_INDEX, and make it the message to send.
 */
build_msg:
	movl	%ecx, CTX_LEN(%ebp)
	leal	P_MSG(%ebp), %edi
	movl	%edi, CTX_MSG(%ebp)
	movl	P_INDEX(%ebp), %eax
	movb	hexdigits(%eax), %al
1:	movb	(%esi), %dl
	cmpb	$0x23, %dl		/* '#' */
	jne	2f
	movb	%al, %dl
2:	movb	%dl, (%edi)
	incl	%esi
	incl	%edi
	decl	%ecx
	jnz	1b
	ret

/* check_digit_reply: ZF set when the reply is "1 " followed by the digit of P_INDEX. */
check_digit_reply:
	cmpl	$3, CTX_RLEN(%ebp)
	jne	1f
	movl	CTX_BUF(%ebp), %esi
	cmpw	$0x2031, (%esi)
	jne	1f
	movl	P_INDEX(%ebp), %eax
	movb	hexdigits(%eax), %al
	cmpb	%al, 2(%esi)
1:	ret

#include "guestlib.inc"

	STRING	t_set, "info-set guestinfo.smp.cpu# #"
	STRING	t_get, "info-get guestinfo.smp.cpu#"
	.pushsection .rodata
hexdigits:
	.ascii	"0123456789abcdef"
	.popsection

	.data
	.balign	4
ncpus:	.long	0
done:	.long	0
	.bss
	.balign	16
percpu:	.skip	PERCPU * 16
