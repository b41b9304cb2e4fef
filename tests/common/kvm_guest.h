/*
 * kvm_guest: the host side of the backdoor test guests (tests/common/guests/bd_*.S) for
 * real-KVM tests. Built on kvmh (VM, RAM, register set-up, watchdog) and the library
 * (vmwkvm_vm_new, vmwkvm_vcpu_new, vmwkvm_exit_decode/complete), it runs a guest until it
 * reports on port 0xF4 (done) or 0xF5 (a failed check) and answers its backdoor calls:
 *
 *   GETVERSION (10)   EAX = 6, EBX = magic, ECX = 2
 *   BD_TEST_CMD       EAX..EDI = 0x11111111 .. 0x66666666
 *   other commands    unsupported (vmwkvm_exit_complete(..., NULL))
 *   invalid accesses  vmwkvm_exit_complete_invalid()
 *   HB REP OUTSB      bytes collected into out_buf; EBX = 0x00010000 at the last piece
 *   HB REP INSB       bytes from in_src; EBX = 0x00010000 at the last piece
 *
 * Every LB call, invalid access and first HB piece is recorded (command, transport,
 * direction, CPL, mode, origin, invalid reason) so the test can check the origin of each.
 */
#ifndef VMWKVM_TESTS_KVM_GUEST_H
#define VMWKVM_TESTS_KVM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmwkvm/vmwkvm.h>

#include "kvmh.h"

/* guest memory layout shared with bd_common.inc */
#define BD_ENTRY 0x1000u
#define BD_PARAM_OUT_LEN 0x700u  /* u32 */
#define BD_PARAM_IN_LEN 0x704u   /* u32 */
#define BD_PARAM_IN_FIRST 0x710u /* u8 */
#define BD_PARAM_IN_LAST 0x711u  /* u8 */
#define BD_RES_PASS0 0x800u      /* results of the (first / only) pass */
#define BD_RES_PASS1 0x900u      /* results of the CPL3 pass (bd_prot32) */
/* result offsets inside a pass */
#define BD_RES_T1_EAX 0
#define BD_RES_T1_EBX 4
#define BD_RES_T1_ECX 8
#define BD_RES_T2_EAX 12
#define BD_RES_HBOUT_EBX 16
#define BD_RES_HBOUT_ECX 20
#define BD_RES_HBOUT_ESI 24
#define BD_RES_HBIN_EBX 28
#define BD_RES_HBIN_ECX 32
#define BD_RES_HBIN_EDI 36
#define BD_RES_DONE 40 /* 0x600D when the pass completed */
/* buffers */
#define BD_REAL_OUT_GPA 0x10000u
#define BD_REAL_IN_GPA 0x20123u
#define BD_REAL_IN_OFF 0x123u
#define BD_REAL_ECX_HIGH 0xABCD0000u
#define BD_P32_OUT_GPA 0x10000u
#define BD_P32_IN_GPA 0x30123u
#define BD_PORT_DONE 0xF4u
#define BD_PORT_FAIL 0xF5u
#define BD_DONE_CODE 0x600Du
#define BD_TEST_CMD 0x4242u
#define BD_HB_MAX_LEN 65537u /* largest transfer a test asks for (one over the bound) */

/* LB calls per pass in bd_common.inc, in order: GETVERSION IN, GETVERSION OUT, test
 * command, unknown 0x0FFF, 0x010A, bad magic (invalid), IN AX,DX (invalid) */
#define BD_LB_CALLS_PER_PASS 7

/* What the library should decode for each of those calls. */
struct bd_lb_expect {
	uint16_t command;
	uint8_t direction; /* enum vmwkvm_direction */
	uint8_t invalid;   /* enum vmwkvm_invalid_reason, 0 for a valid call */
};
extern const struct bd_lb_expect bd_lb_pass[BD_LB_CALLS_PER_PASS];

struct bd_rec {
	uint16_t command;
	uint8_t transport, direction, cpl, mode, origin, invalid;
	uint8_t hb_flags;
	uint64_t hb_total;
};

struct bd_server {
	vmwkvm_vcpu *vcpu;
	/* HB send: collected bytes (capacity BD_HB_MAX_LEN) */
	uint8_t *out_buf;
	uint64_t out_total;     /* hb_total of the last send */
	uint64_t out_got;       /* bytes received over all sends */
	unsigned out_transfers; /* FIRST pieces seen */
	unsigned out_pieces;
	/* HB receive: bytes handed out */
	const uint8_t *in_src;
	uint64_t in_len;
	uint64_t in_given;
	unsigned in_transfers;
	unsigned in_pieces;
	uint32_t in_max_piece;
	/* records */
	struct bd_rec recs[64];
	unsigned nrec;
	unsigned n_invalid;
	unsigned n_exits;
	uint32_t fail_code; /* port 0xF5 value */
	char err[256];
};

/* A VM through kvmh plus the library's handles. */
struct bd_vm {
	struct kvmh h;
	vmwkvm_vm *vm;
	vmwkvm_vcpu *vcpu;
};

/* Create the VM (1 MiB RAM), load guest `name` at BD_ENTRY, create vCPU 0 through the
 * library, wrap it (regs_mode = enum vmwkvm_regs_mode) and set the CPU up for real mode
 * (prot32 false) or flat 32-bit protected mode. Returns 0 or -errno; on failure everything
 * is released. */
int bd_vm_up(struct bd_vm *b, const char *name, bool prot32, int regs_mode);
void bd_vm_down(struct bd_vm *b);

/* Write the parameter block and the IN byte expectations (in_src must hold in_len bytes). */
void bd_set_params(struct bd_vm *b, uint32_t out_len, const uint8_t *in_src, uint32_t in_len);

/* Pattern bytes used by the tests. */
uint8_t bd_pattern(uint64_t i, unsigned seed);

/* Initialise a server for b's vCPU (allocates out_buf; free with bd_server_fini). */
int bd_server_init(struct bd_server *s, struct bd_vm *b, const uint8_t *in_src, uint64_t in_len);
void bd_server_fini(struct bd_server *s);

/* Run the guest until it reports. Returns 0 when it reported BD_DONE_CODE on port 0xF4,
 * 1 when it reported a failed check (s->fail_code), or -errno for a host-side problem or
 * an unexpected exit (s->err says what). Arms no watchdog: the caller does. */
int bd_serve(struct bd_vm *b, struct bd_server *s, unsigned max_exits);

/* The origin every call of b should have: L1 when the kernel reports guest mode, else unknown. */
uint8_t bd_expected_origin(const struct bd_vm *b);

/* Count the library's ioctls: wraps vmwkvm_sys_default_ops() with vmwkvm_sys_set_ops(). */
struct bd_ioctl_counts {
	unsigned long run, get_regs, set_regs, get_sregs, other;
};
void bd_count_install(void);
void bd_count_reset(void);
void bd_count_get(struct bd_ioctl_counts *out);
void bd_count_uninstall(void);

/* bd_serve() under a watchdog of watchdog_s seconds, with the library's ioctls counted
 * into *ioc (bd_count_install() .. bd_count_uninstall() around it). Returns bd_serve's result. */
int bd_serve_counted(struct bd_vm *b, struct bd_server *s, unsigned max_exits, unsigned watchdog_s,
		     struct bd_ioctl_counts *ioc);

/* u32 at a guest-physical address (0xFFFFFFFF when out of range). */
uint32_t bd_peek32(struct bd_vm *b, uint64_t gpa);

#endif
