// load: 0x1000
/*
 * 16-bit real mode backdoor guest (kvmh_setup_real_mode(0x1000): all segments 0).
 * Runs the BD_TESTS body of bd_common.inc once, results at 0x800, then reports
 * OUT EAX=0x600D to port 0xF4. HB buffers: DS = 0x1000 (linear 0x10000) for REP OUTSB,
 * ES = 0x2000 offset 0x123 (linear 0x20123, not page aligned) for REP INSB. ECX carries
 * garbage in bits 31:16 for the HB transfers: at a 16-bit address size only CX counts.
 */
#define OUT_OFF 0
#define IN_OFF 0x123
#define HB_ECX_HIGH 0xABCD0000

.macro SET_OUT_SEG
	pushw	$0x1000
	popw	%ds
.endm
.macro RESTORE_DS
	pushw	%ss
	popw	%ds
.endm
.macro SET_IN_SEG
	pushw	$0x2000
	popw	%es
.endm

#include "bd_common.inc"

	.code16
	.text
start:
	movw	$0x7000, %sp
	BD_TESTS 0x800
	movl	$0x600D, %eax
	outl	%eax, $0xF4
1:	hlt
	jmp	1b
