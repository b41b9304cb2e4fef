/*
 * Helpers for the tests that run against the reference KVM (refkvm/, label "refkvm"):
 * detection, the library's number overrides for it, and a tiny 32-bit guest built from
 * the host (no assembler files), the same layout as refkvm/refkvm-smoke.c:
 *
 *   0x1000 GDT: 0x08 code DPL0, 0x10 data DPL0, 0x18 code DPL3, 0x20 data DPL3, 0x28 TSS
 *   0x2000 IDT: 32 interrupt gates -> 0x2800 + 8*v: "mov al, v; out 0x80, al; hlt"
 *   0x3000 TSS: ESP0 0x8000, SS0 0x10, no I/O bitmap (CPL3 port I/O faults)
 *   0x4000 code; CPL3 stack below 0x6000, CPL0 stack below 0x7000 / 0x8000
 *   0x9000 L2 code, 0xc000 VMCB, 0xd000 host save area, 0xe000 page directory (nested)
 *   0x10000 one page in its own slot (permission-fault tests)
 *
 * Detection: VMWKVM_REFKVM=1 in the environment (set by refkvm/run-tests.sh inside the
 * nested guest) means "the reference KVM must be here": its absence fails the test.
 * Without it, a test exits 77 with a reason unless the running kernel answers refkvm's
 * caps (so the label can run anywhere without a false failure).
 */
#ifndef VMWKVM_TESTS_REFKVM_ENV_H
#define VMWKVM_TESTS_REFKVM_ENV_H

#include <vmwkvm/vmwkvm.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* refkvm's build-time defaults (refkvm/README.md) */
#define RK_CAP_BACKDOOR 900u
#define RK_CAP_HYPERCALL 901u
#define RK_CAP_NESTED 902u
#define RK_EXIT_RUSIN 90u
#define RK_CAP_SINGLE 903u
#define RK_EXIT_SINGLE 91u
#define RK_CAP_PERM 904u

#define RK_MAGIC 0x564D5868u
#define RK_MEM_SIZE 0x10000u
#define RK_PERM_GPA 0x10000u
#define RK_REPORT_PORT 0x80
#define RK_L1_PORT 0x81
#define RK_RUN_X86_GUEST_MODE (1u << 2)
/* 6.8+ (the build host's linux/kvm.h may be older) */
#define RK_EXIT_MEMORY_FAULT 39u
struct rk_memory_fault {
	uint64_t flags, gpa, size;
};
#define RK_MEMORY_FAULT(run) ((const struct rk_memory_fault *)(const void *)((const uint8_t *)(run) + 32))

static inline int rk_check_ext(int fd, unsigned cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? -errno : r;
}

static inline int rk_enable_cap(int vm_fd, unsigned cap, uint64_t arg)
{
	struct kvm_enable_cap c;
	memset(&c, 0, sizeof(c));
	c.cap = cap;
	c.args[0] = arg;
	return ioctl(vm_fd, KVM_ENABLE_CAP, &c) < 0 ? -errno : 0;
}

/* exit 77 (or fail, under VMWKVM_REFKVM=1) unless the reference KVM is loaded */
static inline void rk_require(const char *test)
{
	const char *want = getenv("VMWKVM_REFKVM");
	bool required = want && !strcmp(want, "1");
	const char *why = NULL;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		why = "no usable /dev/kvm";
	} else {
		if (rk_check_ext(fd, RK_CAP_SINGLE) != 7 || rk_check_ext(fd, RK_CAP_PERM) != 1 ||
		    rk_check_ext(fd, RK_CAP_BACKDOOR) != 1)
			why = "the running KVM is not the reference KVM (caps 900/903/904 do not answer)";
		close(fd);
	}
	if (!why)
		return;
	if (required) {
		fprintf(stderr, "FAIL: %s: VMWKVM_REFKVM=1 but %s\n", test, why);
		exit(1);
	}
	fprintf(stderr, "SKIP: %s: %s (run refkvm/run-tests.sh)\n", test, why);
	exit(77);
}

/* the library's proposed numbers = refkvm's */
static inline void rk_numbers(struct vmwkvm_proposed_numbers *n)
{
	memset(n, 0, sizeof(*n));
	n->sz = sizeof(*n);
	n->rusin_cap_backdoor = RK_CAP_BACKDOOR;
	n->rusin_cap_hypercall = RK_CAP_HYPERCALL;
	n->rusin_cap_nested = RK_CAP_NESTED;
	n->rusin_exit_vmware = RK_EXIT_RUSIN;
	n->single_cap = RK_CAP_SINGLE;
	n->single_exit = RK_EXIT_SINGLE;
}

static inline void rk_use_refkvm_numbers(void)
{
	struct vmwkvm_proposed_numbers n;
	rk_numbers(&n);
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
}

/* ------------------------------------------------------------------ VM + guest */
struct rk_vm {
	int kvm_fd, vm_fd, vcpu_fd;
	uint8_t *mem, *perm;
	struct kvm_run *run;
	size_t run_size;
	vmwkvm_vm *lvm;
	vmwkvm_vcpu *lvcpu;
};

static inline void rk_put32(uint8_t *m, uint32_t at, uint32_t v) { memcpy(m + at, &v, 4); }
static inline uint32_t rk_get32(const uint8_t *m, uint32_t at) { uint32_t v; memcpy(&v, m + at, 4); return v; }
static inline void rk_put64(uint8_t *m, uint32_t at, uint64_t v) { memcpy(m + at, &v, 8); }
static inline uint64_t rk_get64(const uint8_t *m, uint32_t at) { uint64_t v; memcpy(&v, m + at, 8); return v; }

static inline uint64_t rk_gdt_entry(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	return (uint64_t)(limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) | ((uint64_t)access << 40) |
	       ((uint64_t)((limit >> 16) & 0xf) << 48) | ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

/* KVM_CREATE_VM, RAM, the perm page, and the library's VM handle with @dialect (NULL: default) */
static inline void rk_vm_create(struct rk_vm *v, const char *dialect)
{
	memset(v, 0, sizeof(*v));
	v->vcpu_fd = -1;
	v->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(v->kvm_fd, 0);
	v->vm_fd = ioctl(v->kvm_fd, KVM_CREATE_VM, 0);
	ck_assert_int_ge(v->vm_fd, 0);
	v->mem = mmap(NULL, RK_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	v->perm = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(v->mem != MAP_FAILED && v->perm != MAP_FAILED);
	struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = RK_MEM_SIZE,
						 .userspace_addr = (uintptr_t)v->mem };
	ck_assert_int_eq(ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &r), 0);
	struct kvm_userspace_memory_region r2 = { .slot = 1, .guest_phys_addr = RK_PERM_GPA, .memory_size = 0x1000,
						  .userspace_addr = (uintptr_t)v->perm };
	ck_assert_int_eq(ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &r2), 0);
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = v->kvm_fd;
	vo.kvm_fd_set = 1;
	vo.dialect = dialect;
	ck_assert_int_eq(vmwkvm_vm_new(v->vm_fd, &vo, &v->lvm), 0);
}

static inline void rk_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, unsigned dpl)
{
	memset(s, 0, sizeof(*s));
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = (uint8_t)dpl;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

/* tables + @code at 0x4000; the vCPU is created through the library; it starts at CPL @cpl */
static inline void rk_vcpu_setup(struct rk_vm *v, unsigned cpl, const uint8_t *code, size_t len)
{
	uint8_t *m = v->mem;
	rk_put64(m, 0x1000, 0);
	rk_put64(m, 0x1008, rk_gdt_entry(0, 0xfffff, 0x9b, 0xc));
	rk_put64(m, 0x1010, rk_gdt_entry(0, 0xfffff, 0x93, 0xc));
	rk_put64(m, 0x1018, rk_gdt_entry(0, 0xfffff, 0xfb, 0xc));
	rk_put64(m, 0x1020, rk_gdt_entry(0, 0xfffff, 0xf3, 0xc));
	rk_put64(m, 0x1028, rk_gdt_entry(0x3000, 103, 0x89, 0));
	for (unsigned i = 0; i < 32; i++) {
		uint32_t h = 0x2800 + 8 * i;
		rk_put64(m, 0x2000 + 8 * i,
			 (uint64_t)(h & 0xffff) | (0x08ull << 16) | (0xeeull << 40) | ((uint64_t)(h >> 16) << 48));
		uint8_t stub[8] = { 0xb0, (uint8_t)i, 0xe6, RK_REPORT_PORT, 0xf4, 0x90, 0x90, 0x90 };
		memcpy(m + h, stub, 8);
	}
	memset(m + 0x3000, 0, 104);
	rk_put32(m, 0x3004, 0x8000);
	rk_put32(m, 0x3008, 0x10);
	m[0x3066] = 104;
	memcpy(m + 0x4000, code, len);

	v->vcpu_fd = vmwkvm_vm_create_vcpu(v->lvm, 0);
	ck_assert_int_ge(v->vcpu_fd, 0);
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	ck_assert_int_eq(vmwkvm_vcpu_new(v->lvm, v->vcpu_fd, NULL, 0, &o, &v->lvcpu), 0);
	v->run = vmwkvm_vcpu_kvm_run(v->lvcpu);
	ck_assert_ptr_nonnull(v->run);
	struct kvm_sregs s;
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_GET_SREGS, &s), 0);
	rk_seg(&s.cs, cpl ? 0x1b : 0x08, 0xb, cpl);
	rk_seg(&s.ds, cpl ? 0x23 : 0x10, 0x3, cpl);
	s.es = s.fs = s.gs = s.ss = s.ds;
	memset(&s.tr, 0, sizeof(s.tr));
	s.tr.base = 0x3000;
	s.tr.limit = 103;
	s.tr.selector = 0x28;
	s.tr.type = 0x9; /* QEMU's TCG aborts on a busy-TSS type here; KVM does not care */
	s.tr.present = 1;
	s.gdt.base = 0x1000;
	s.gdt.limit = 0x2f;
	s.idt.base = 0x2000;
	s.idt.limit = 32 * 8 - 1;
	s.cr0 = 0x11;
	s.cr4 = 0;
	s.efer = 0;
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_SET_SREGS, &s), 0);
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rflags = 2;
	r.rip = 0x4000;
	r.rsp = cpl ? 0x6000 : 0x7000;
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_SET_REGS, &r), 0);
}

static inline void rk_vm_destroy(struct rk_vm *v)
{
	vmwkvm_vcpu_free(v->lvcpu);
	vmwkvm_vm_free(v->lvm);
	if (v->vcpu_fd >= 0)
		close(v->vcpu_fd);
	close(v->vm_fd);
	close(v->kvm_fd);
	munmap(v->mem, RK_MEM_SIZE);
	munmap(v->perm, 0x1000);
	memset(v, 0, sizeof(*v));
}

static inline struct kvm_regs rk_regs(struct rk_vm *v)
{
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	ck_assert_int_eq(ioctl(v->vcpu_fd, KVM_GET_REGS, &r), 0);
	return r;
}

static inline uint8_t *rk_io_data(struct rk_vm *v)
{
	return (uint8_t *)v->run + v->run->io.data_offset;
}

/* the vector a guest handler reported on port 0x80, or -1 */
static inline int rk_reported_vector(struct rk_vm *v)
{
	if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != RK_REPORT_PORT ||
	    v->run->io.direction != KVM_EXIT_IO_OUT)
		return -1;
	return *rk_io_data(v);
}

/* EIP and error code of the exception a handler (CPL0) reported */
static inline void rk_fault_frame(struct rk_vm *v, int vector, uint32_t *eip, uint32_t *err)
{
	struct kvm_regs r = rk_regs(v);
	bool has_err = vector == 8 || (vector >= 10 && vector <= 14) || vector == 17;
	uint32_t sp = (uint32_t)r.rsp;
	*err = has_err ? rk_get32(v->mem, sp) : 0;
	*eip = rk_get32(v->mem, sp + (has_err ? 4 : 0));
}

/* One run through the library with a watchdog of a few seconds against a stuck guest. */
static inline int rk_run(struct rk_vm *v)
{
	alarm(60);
	int r = vmwkvm_vcpu_run(v->lvcpu);
	alarm(0);
	return r;
}

/* ------------------------------------------------------------------ guest code */
/* CPL3: mov eax,MAGIC; mov ecx,10 (GETVERSION); mov edx,0x5658; in eax,dx (0x400f); ud2 */
static const uint8_t rk_code_backdoor_in[] = { 0xb8, 0x68, 0x58, 0x4d, 0x56, 0xb9, 10, 0, 0, 0,
					       0xba, 0x58, 0x56, 0, 0, 0xed, 0x0f, 0x0b };
#define RK_BACKDOOR_IN_EIP 0x400fu
/* mov eax,MAGIC; mov ebx,0x11; mov ecx,0x22 (command 0x22); mov edx,0x330000 (no hypercall flags); mov esi,0x44; mov edi,0x55;
   mov ebp,0x66; vmmcall (0x4023); ud2 (0x4026) */
static const uint8_t rk_code_hcall[] = { 0xb8, 0x68, 0x58, 0x4d, 0x56, 0xbb, 0x11, 0, 0, 0, 0xb9, 0x22, 0, 0, 0,
					 0xba, 0, 0, 0x33, 0, 0xbe, 0x44, 0, 0, 0, 0xbf, 0x55, 0, 0, 0, 0xbd, 0x66, 0, 0, 0,
					 0x0f, 0x01, 0xd9, 0x0f, 0x0b };
#define RK_HCALL_EIP 0x4023u
#define RK_HCALL_NEXT_EIP 0x4026u
/* mov dword [0x10010], 0xcafef00d (0x4000); mov eax,[0x10010]; ud2 */
static const uint8_t rk_code_perm_write[] = { 0xc7, 0x05, 0x10, 0x00, 0x01, 0x00, 0x0d, 0xf0, 0xfe, 0xca,
					      0xa1, 0x10, 0x00, 0x01, 0x00, 0x0f, 0x0b };

#endif
