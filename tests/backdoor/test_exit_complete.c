/* vmwkvm_exit_decode / vmwkvm_exit_complete / vmwkvm_exit_complete_invalid on a vCPU handle,
 * without /dev/kvm: a tiny fake sys layer answers CHECK_EXTENSION and the register ioctls
 * and counts them. Covers sync-regs and ioctl modes, the LB IN/OUT register and data
 * rules (zero extension, EFLAGS untouched, EAX in data + regs), HB pieces, hypercall
 * completion, refusals and every -EINVAL case. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define RUN_SIZE 12288u
#define DATA_OFF 4096u
#define MAGIC VMWKVM_BDOOR_MAGIC
#define VM_FD 100
#define VCPU_FD 101

/* ------------------------------------------------------------------ fake kernel */

static struct {
	long sync_regs_cap;
	struct kvm_regs regs;   /* the "kernel's" registers (ioctl mode) */
	struct kvm_sregs sregs;
	unsigned n_ioctl, n_get_regs, n_set_regs, n_get_sregs;
	int fail_set_regs;      /* negative errno for the next KVM_SET_REGS */
} fk;

static int fake_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx;
	fk.n_ioctl++;
	if (req == KVM_CHECK_EXTENSION) {
		unsigned long cap = (unsigned long)(uintptr_t)arg;
		if (cap == KVM_CAP_SYNC_REGS)
			return (int)fk.sync_regs_cap;
		if (cap == VMWKVM_UAPI_CAP_X86_GUEST_MODE)
			return 1;
		return 0;
	}
	if (fd != VCPU_FD)
		return -EBADF;
	switch (req) {
	case KVM_GET_REGS:
		fk.n_get_regs++;
		memcpy(arg, &fk.regs, sizeof(fk.regs));
		return 0;
	case KVM_SET_REGS:
		fk.n_set_regs++;
		if (fk.fail_set_regs) {
			int e = fk.fail_set_regs;
			fk.fail_set_regs = 0;
			return e;
		}
		memcpy(&fk.regs, arg, sizeof(fk.regs));
		return 0;
	case KVM_GET_SREGS:
		fk.n_get_sregs++;
		memcpy(arg, &fk.sregs, sizeof(fk.sregs));
		return 0;
	default:
		return -ENOTTY;
	}
}

static int fake_open(void *c, const char *p, int f)
{
	(void)c, (void)p, (void)f;
	return -ENOENT;
}
static int fake_close(void *c, int fd)
{
	(void)c, (void)fd;
	return 0;
}
static int fake_mmap(void *c, void **o, size_t l, int p, int f, int fd, off_t off)
{
	(void)c, (void)o, (void)l, (void)p, (void)f, (void)fd, (void)off;
	return -ENODEV;
}
static int fake_munmap(void *c, void *a, size_t l)
{
	(void)c, (void)a, (void)l;
	return 0;
}
static int fake_mprotect(void *c, void *a, size_t l, int p)
{
	(void)c, (void)a, (void)l, (void)p;
	return -ENOSYS;
}
static int fake_uffd(void *c, int f)
{
	(void)c, (void)f;
	return -ENOSYS;
}
static ssize_t fake_read(void *c, int fd, void *b, size_t l)
{
	(void)c, (void)fd, (void)b, (void)l;
	return -ENOSYS;
}
static int fake_read_file(void *c, const char *p, char *b, size_t l)
{
	(void)c, (void)p, (void)b, (void)l;
	return -ENOENT;
}

static const struct vmwkvm_sys_ops fake_ops = {
	.ioctl = fake_ioctl,
	.open = fake_open,
	.close = fake_close,
	.mmap = fake_mmap,
	.munmap = fake_munmap,
	.mprotect = fake_mprotect,
	.userfaultfd = fake_uffd,
	.read = fake_read,
	.read_file = fake_read_file,
};

/* ------------------------------------------------------------------ fixture */

static _Alignas(4096) uint8_t runbuf[RUN_SIZE];
static struct kvm_run *const run = (struct kvm_run *)(void *)runbuf;
static vmwkvm_vm *vm;
static vmwkvm_vcpu *vcpu;
static struct vmwkvm_call call;

/* Protected mode, 32-bit code, the given CPL. */
static void prot32_sregs(struct kvm_sregs *s, unsigned cpl)
{
	memset(s, 0, sizeof(*s));
	s->cr0 = 1;
	s->cs.db = 1;
	s->cs.dpl = (uint8_t)cpl;
	s->ss.dpl = (uint8_t)cpl;
}

/* Registers with garbage in every high half, as a 64-bit guest might leave them. */
static void guest_regs(struct kvm_regs *r)
{
	memset(r, 0, sizeof(*r));
	r->rax = 0xA0A0A0A000000000ull | MAGIC;
	r->rbx = 0xB0B0B0B000000000ull | (uint32_t)~MAGIC;
	r->rcx = 0xC0C0C0C0FFFF000Aull;
	r->rdx = 0xD0D0D0D000005658ull;
	r->rsi = 0x5151515111111111ull;
	r->rdi = 0xD1D1D1D122222222ull;
	r->rbp = 0xBBBBBBBB33333333ull;
	r->rsp = 0x7000;
	r->r8 = 8, r->r15 = 15;
	r->rip = 0x1000;
	r->rflags = 0x246;
}

static void make_vcpu(int mode)
{
	memset(&fk, 0, sizeof(fk));
	fk.sync_regs_cap = 7;
	vmwkvm_sys_set_ops(&fake_ops);
	memset(runbuf, 0, sizeof(runbuf));
	ck_assert_int_eq(vmwkvm_vm_new(VM_FD, NULL, &vm), 0);
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.regs_mode = mode;
	ck_assert_int_eq(vmwkvm_vcpu_new(vm, VCPU_FD, run, RUN_SIZE, &o, &vcpu), 0);
	ck_assert_int_eq(vmwkvm_vcpu_regs_mode(vcpu), mode);
	/* what KVM reports at the exit, in both places */
	guest_regs(&fk.regs);
	prot32_sregs(&fk.sregs, 3);
	run->s.regs.regs = fk.regs;
	run->s.regs.sregs = fk.sregs;
	fk.n_ioctl = 0;
}

static void setup_sync(void)
{
	make_vcpu(VMWKVM_REGS_SYNC);
}

static void setup_ioctl(void)
{
	make_vcpu(VMWKVM_REGS_IOCTL);
}

static void teardown(void)
{
	vmwkvm_vcpu_free(vcpu);
	vmwkvm_vm_free(vm);
	vcpu = NULL;
	vm = NULL;
	vmwkvm_sys_set_ops(NULL);
}

/* the registers the guest will see (sync mode: kvm_run; ioctl mode: the fake kernel) */
static struct kvm_regs *out_regs(void)
{
	return vmwkvm_vcpu_regs_mode(vcpu) == VMWKVM_REGS_SYNC ? &run->s.regs.regs : &fk.regs;
}

static void set_io(uint8_t dir, uint8_t size, uint16_t port, uint32_t count)
{
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = dir;
	run->io.size = size;
	run->io.port = port;
	run->io.count = count;
	run->io.data_offset = DATA_OFF;
}

static uint32_t data32(void)
{
	uint32_t v;
	memcpy(&v, runbuf + DATA_OFF, 4);
	return v;
}

static struct vmwkvm_reply reply_of(uint32_t set)
{
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	r.set = set;
	return r;
}

/* ------------------------------------------------------------------ LB */

static void check_getversion_answer(bool in)
{
	struct kvm_regs before = *out_regs();
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX);
	r.eax = 6;
	r.ebx = MAGIC;
	r.ecx = 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	if (in)
		ck_assert_uint_eq(data32(), 6);
	struct kvm_regs *o = out_regs();
	ck_assert_uint_eq(o->rax, 6); /* EAX in the registers too */
	ck_assert_uint_eq(o->rbx, MAGIC);
	ck_assert_uint_eq(o->rcx, 2);
	/* untouched: all 64 bits of the others, RIP, RFLAGS */
	ck_assert_uint_eq(o->rdx, before.rdx);
	ck_assert_uint_eq(o->rsi, before.rsi);
	ck_assert_uint_eq(o->rdi, before.rdi);
	ck_assert_uint_eq(o->rbp, before.rbp);
	ck_assert_uint_eq(o->rsp, before.rsp);
	ck_assert_uint_eq(o->r8, 8);
	ck_assert_uint_eq(o->r15, 15);
	ck_assert_uint_eq(o->rip, before.rip);
	ck_assert_uint_eq(o->rflags, 0x246);
}

START_TEST(sync_lb_in_getversion)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(call.subcommand, 0xFFFF);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.mode, VMWKVM_MODE_PROT32);
	ck_assert_uint_eq(call.origin, VMWKVM_ORIGIN_L1); /* the fake answers cap 238 */
	check_getversion_answer(true);
	ck_assert_uint_eq(run->kvm_dirty_regs & KVM_SYNC_X86_REGS, KVM_SYNC_X86_REGS);
	ck_assert_uint_eq(fk.n_ioctl, 0); /* no ioctl on the sync path */
}
END_TEST

/* The VMM cleared the sync bits: kvm_run holds a stale copy (here: CPL0 garbage); the
 * library must read the registers by ioctl, answer from them and re-arm the bits. */
START_TEST(sync_valid_bits_cleared_falls_back_to_ioctl)
{
	run->kvm_valid_regs = 0;
	memset(&run->s.regs.regs, 0x5A, sizeof(run->s.regs.regs));
	prot32_sregs(&run->s.regs.sregs, 0);
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(fk.n_get_regs, 1);
	ck_assert_uint_eq(fk.n_get_sregs, 1);
	ck_assert_uint_eq(call.cpl, 3); /* the kernel's CPL, not the stale copy's */
	ck_assert_uint_eq(call.command, 10);
	ck_assert_uint_eq(run->kvm_valid_regs & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS),
			  KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS);
	check_getversion_answer(true); /* every other register is the kernel's, not 0x5A.. */
	ck_assert_uint_eq(fk.n_set_regs, 0);
}
END_TEST

START_TEST(sync_lb_in_eax_only_writes_data_only)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX);
	r.eax = 0x12345678;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(data32(), 0x12345678);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	ck_assert_uint_eq(run->s.regs.regs.rax, fk.regs.rax);
	ck_assert_uint_eq(fk.n_ioctl, 0);
}
END_TEST

START_TEST(sync_lb_in_no_register_keeps_eax)
{
	/* GETTIMEFULL-style success: EAX stays the magic, the IN still needs its data */
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	memset(runbuf + DATA_OFF, 0xEE, 4);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(0);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(data32(), MAGIC);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	/* other registers but not EAX: the data and RAX keep the magic */
	r = reply_of(VMWKVM_REPLY_ESI | VMWKVM_REPLY_EDX);
	r.esi = 0xFFFFFFFF;
	r.edx = 0;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(data32(), MAGIC);
	ck_assert_uint_eq(run->s.regs.regs.rax, MAGIC); /* zero-extended, as the IN would */
	ck_assert_uint_eq(run->s.regs.regs.rsi, 0xFFFFFFFFull);
	ck_assert_uint_eq(run->s.regs.regs.rdx, 0);
	ck_assert_uint_eq(run->kvm_dirty_regs, KVM_SYNC_X86_REGS);
}
END_TEST

START_TEST(sync_lb_unsupported)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	struct kvm_regs before = run->s.regs.regs;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
	ck_assert_uint_eq(data32(), 0xFFFFFFFFu);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	ck_assert_mem_eq(&before, &run->s.regs.regs, sizeof(before));
	/* OUT: EAX = 0xFFFFFFFF through the registers, nothing else */
	set_io(KVM_EXIT_IO_OUT, 4, 0x5658, 1);
	memcpy(runbuf + DATA_OFF, &(uint32_t){ MAGIC }, 4);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
	ck_assert_uint_eq(run->s.regs.regs.rax, 0xFFFFFFFFull);
	ck_assert_uint_eq(run->s.regs.regs.rbx, before.rbx);
	ck_assert_uint_eq(run->s.regs.regs.rcx, before.rcx);
	ck_assert_uint_eq(data32(), MAGIC); /* an OUT's data is the guest's, left alone */
}
END_TEST

START_TEST(sync_lb_out)
{
	set_io(KVM_EXIT_IO_OUT, 4, 0x5658, 1);
	memcpy(runbuf + DATA_OFF, &(uint32_t){ MAGIC }, 4);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.direction, VMWKVM_DIR_OUT);
	check_getversion_answer(false);
	ck_assert_uint_eq(data32(), MAGIC);
	ck_assert_uint_eq(fk.n_ioctl, 0);
	/* OUT with no register: nothing at all */
	run->kvm_dirty_regs = 0;
	run->s.regs.regs.rax = MAGIC;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(0);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
}
END_TEST

START_TEST(ioctl_lb_in_getversion)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(fk.n_get_regs, 1);
	ck_assert_uint_eq(fk.n_get_sregs, 1);
	ck_assert_uint_eq(call.cpl, 3);
	ck_assert_uint_eq(call.rcx, fk.regs.rcx);
	unsigned before = fk.n_ioctl;
	check_getversion_answer(true);
	ck_assert_uint_eq(fk.n_ioctl - before, 1);
	ck_assert_uint_eq(fk.n_set_regs, 1);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
}
END_TEST

START_TEST(ioctl_lb_eax_only_no_set_regs)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX);
	r.eax = 6;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(fk.n_set_regs, 0);
	ck_assert_uint_eq(data32(), 6);
}
END_TEST

START_TEST(ioctl_not_backdoor_reads_nothing)
{
	run->exit_reason = KVM_EXIT_HLT;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	set_io(KVM_EXIT_IO_OUT, 1, 0x3F8, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	run->exit_reason = 40; /* KVM_EXIT_TDX: no hypercall exit enabled */
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_NOT_BACKDOOR);
	ck_assert_uint_eq(fk.n_ioctl, 0);
	/* completing a non-backdoor exit is refused */
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), -EINVAL);
}
END_TEST

START_TEST(ioctl_set_regs_failure_and_late_read)
{
	set_io(KVM_EXIT_IO_OUT, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	fk.fail_set_regs = -EINTR;
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX);
	r.eax = 6;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINTR);
	/* completing again (registers no longer cached) reads them first */
	unsigned g = fk.n_get_regs;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(fk.n_get_regs, g + 1);
	ck_assert_uint_eq(fk.regs.rax, 6);
	ck_assert_uint_eq(fk.regs.rflags, 0x246);
}
END_TEST

START_TEST(complete_rejects_mismatch)
{
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX);
	ck_assert_int_eq(vmwkvm_exit_complete(NULL, &call, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, NULL, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(NULL, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode(NULL, &call), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, NULL), -EINVAL);
	/* unknown reply bits, exception on a port exit */
	r.set = 1u << 8;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	r.set = VMWKVM_REPLY_INJECT;
	r.vector = 13;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	r.set = VMWKVM_REPLY_EAX;
	/* the exit changed under the call */
	run->io.port = 0x5659;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->io.port = 0x5658;
	run->io.direction = KVM_EXIT_IO_OUT;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->io.direction = KVM_EXIT_IO_IN;
	run->io.size = 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->io.size = 4;
	run->exit_reason = KVM_EXIT_MMIO;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->exit_reason = KVM_EXIT_IO;
	/* a forged call: hypercall transport on a port exit */
	struct vmwkvm_call forged = call;
	forged.transport = VMWKVM_TRANSPORT_HYPERCALL;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &forged, &r), -EINVAL);
	forged = call;
	forged.transport = 77;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &forged, &r), -EINVAL);
	/* the data area moved outside the mapping: nothing written */
	run->io.data_offset = RUN_SIZE - 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->io.data_offset = DATA_OFF;
	/* an invalid call goes to complete_invalid, not complete */
	run->s.regs.regs.rax = 0;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
}
END_TEST

START_TEST(invalid_lb_in_returns_all_ones)
{
	struct kvm_regs before = run->s.regs.regs;
	/* bad magic */
	run->s.regs.regs.rax = 0x11111111;
	before.rax = 0x11111111;
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	memset(runbuf + DATA_OFF, 0, 16);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_MAGIC);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(data32(), 0xFFFFFFFFu);
	ck_assert_uint_eq(runbuf[DATA_OFF + 4], 0);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	ck_assert_mem_eq(&before, &run->s.regs.regs, sizeof(before));
	/* IN AL,DX on the LB port: one byte of ones */
	run->s.regs.regs.rax = MAGIC;
	set_io(KVM_EXIT_IO_IN, 1, 0x5658, 1);
	memset(runbuf + DATA_OFF, 0, 16);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_SIZE);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(runbuf[DATA_OFF], 0xFF);
	ck_assert_uint_eq(runbuf[DATA_OFF + 1], 0);
	/* IN AX,DX: two bytes */
	set_io(KVM_EXIT_IO_IN, 2, 0x5658, 1);
	memset(runbuf + DATA_OFF, 0, 16);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(runbuf[DATA_OFF + 1], 0xFF);
	ck_assert_uint_eq(runbuf[DATA_OFF + 2], 0);
	/* OUT with bad magic: dropped */
	run->s.regs.regs.rax = 0;
	set_io(KVM_EXIT_IO_OUT, 4, 0x5658, 1);
	memset(runbuf + DATA_OFF, 0x5A, 4);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(data32(), 0x5A5A5A5Au);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	/* out of bounds: nothing written anywhere */
	set_io(KVM_EXIT_IO_IN, 4, 0x5658, 1);
	run->io.data_offset = 8;
	static uint8_t copy[RUN_SIZE];
	memcpy(copy, runbuf, RUN_SIZE);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_BOUNDS);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_mem_eq(copy, runbuf, RUN_SIZE);
}
END_TEST

/* ------------------------------------------------------------------ HB */

#define REP_RIP 0x3000u

static uint8_t src_byte(uint64_t i)
{
	return (uint8_t)(i ^ (i >> 8) ^ 0x5A);
}

/* REP INSB of n bytes to rdi0, answered piece by piece; the guest "memory" collects what
 * KVM would copy. in_place: the service writes into call.hb_data itself. */
static void hb_in_transfer(uint64_t n, uint64_t rdi0, bool in_place)
{
	uint8_t *src = malloc(n), *guest = calloc(1, n);
	ck_assert_ptr_nonnull(src);
	ck_assert_ptr_nonnull(guest);
	for (uint64_t i = 0; i < n; i++)
		src[i] = src_byte(i);
	uint64_t rcx = n, rdi = rdi0;
	run->s.regs.regs.rax = fk.regs.rax = MAGIC;
	run->s.regs.regs.rbx = fk.regs.rbx = 0xFFFFFFFF00010000ull;
	while (rcx) {
		uint64_t in_page = 4096 - (rdi & 4095);
		uint32_t cnt = (uint32_t)(in_page < 1024 ? in_page : 1024);
		if (cnt > rcx)
			cnt = (uint32_t)rcx;
		set_io(KVM_EXIT_IO_IN, 1, 0x5659, cnt);
		run->s.regs.regs.rcx = fk.regs.rcx = rcx;
		run->s.regs.regs.rdi = fk.regs.rdi = rdi;
		run->s.regs.regs.rip = fk.regs.rip = REP_RIP;
		run->kvm_dirty_regs = 0;
		unsigned sets = fk.n_set_regs;
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
		struct vmwkvm_reply r = reply_of(0);
		if (in_place) {
			memcpy(call.hb_data, src + call.hb_offset, call.hb_count);
			r.hb_data = call.hb_data;
		} else {
			r.hb_data = src + call.hb_offset;
		}
		bool last = call.hb_flags & VMWKVM_HB_LAST;
		if (last) {
			r.set = VMWKVM_REPLY_EBX;
			r.ebx = 0x00010000; /* status SUCCESS */
		}
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
		memcpy(guest + call.hb_offset, runbuf + DATA_OFF, cnt); /* what KVM does on re-entry */
		if (!last) {
			ck_assert_uint_eq(run->kvm_dirty_regs, 0);
			ck_assert_uint_eq(fk.n_set_regs, sets);
		} else {
			ck_assert_uint_eq(out_regs()->rbx, 0x00010000);
			ck_assert_uint_eq(out_regs()->rcx, rcx); /* RCX left for KVM */
			ck_assert_uint_eq(out_regs()->rdi, rdi);
			ck_assert_uint_eq(out_regs()->rip, REP_RIP);
		}
		rcx -= cnt;
		rdi += cnt;
	}
	ck_assert_mem_eq(guest, src, n);
	free(src);
	free(guest);
}

START_TEST(hb_in_pieces_sync)
{
	hb_in_transfer(4097, 0x10F00, false);
	hb_in_transfer(65536, 0x20000, false);
	hb_in_transfer(4095, 0x30001, true);
	ck_assert_uint_eq(fk.n_ioctl, 0);
}
END_TEST

START_TEST(hb_in_pieces_ioctl)
{
	hb_in_transfer(4097, 0x10F00, false);
	hb_in_transfer(1, 0x10000, true);
	ck_assert_uint_eq(fk.n_set_regs, 2); /* only at the two last pieces */
}
END_TEST

START_TEST(hb_out_pieces)
{
	const uint64_t n = 300;
	uint8_t got[300];
	run->s.regs.regs.rax = fk.regs.rax = MAGIC;
	run->s.regs.regs.rbx = fk.regs.rbx = 0x00010000;
	for (uint64_t i = 0; i < n; i++) {
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		runbuf[DATA_OFF] = src_byte(i);
		run->s.regs.regs.rcx = fk.regs.rcx = n - 1 - i;
		run->s.regs.regs.rip = fk.regs.rip = (i == n - 1) ? REP_RIP + 2 : REP_RIP;
		run->kvm_dirty_regs = 0;
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
		got[call.hb_offset] = call.hb_data[0];
		struct vmwkvm_reply r = reply_of(0);
		if (call.hb_flags & VMWKVM_HB_LAST) {
			r.set = VMWKVM_REPLY_EBX;
			r.ebx = 0x00010000;
		}
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
		ck_assert_uint_eq(runbuf[DATA_OFF], src_byte(i)); /* OUT data untouched */
		if (i < n - 1)
			ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	}
	ck_assert_uint_eq(run->kvm_dirty_regs, KVM_SYNC_X86_REGS);
	ck_assert_uint_eq(run->s.regs.regs.rip, REP_RIP + 2);
	for (uint64_t i = 0; i < n; i++)
		ck_assert_uint_eq(got[i], src_byte(i));
}
END_TEST

/* Refuse an HB IN transfer at its first piece; every later piece is abandoned; the last
 * one clears the status. refuse_with_null: vmwkvm_exit_complete(NULL) instead. */
static void hb_refused(bool refuse_with_null)
{
	const uint64_t n = 2500;
	uint64_t rcx = n, rdi = 0x40000;
	run->s.regs.regs.rax = fk.regs.rax = MAGIC;
	run->s.regs.regs.rbx = fk.regs.rbx = 0xABCD000000010000ull;
	bool first = true;
	while (rcx) {
		uint32_t cnt = rcx < 1024 ? (uint32_t)rcx : 1024;
		set_io(KVM_EXIT_IO_IN, 1, 0x5659, cnt);
		run->s.regs.regs.rcx = fk.regs.rcx = rcx;
		run->s.regs.regs.rdi = fk.regs.rdi = rdi;
		run->s.regs.regs.rip = fk.regs.rip = REP_RIP;
		run->kvm_dirty_regs = 0;
		memset(runbuf + DATA_OFF, 0, 1024);
		int d = vmwkvm_exit_decode(vcpu, &call);
		if (first) {
			ck_assert_int_eq(d, VMWKVM_EXIT_CALL);
			if (refuse_with_null)
				ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
			else
				ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
			first = false;
		} else {
			ck_assert_int_eq(d, VMWKVM_EXIT_INVALID);
			ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_ABANDONED);
			ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
		}
		for (uint32_t i = 0; i < cnt; i++)
			ck_assert_uint_eq(runbuf[DATA_OFF + i], 0xFF);
		ck_assert_uint_eq(runbuf[DATA_OFF + cnt], 0);
		if (call.hb_flags & VMWKVM_HB_LAST) {
			ck_assert_uint_eq(out_regs()->rbx, 0); /* status 0, command 0, zero-extended */
			ck_assert_uint_eq(out_regs()->rflags, 0x246);
		} else if (vmwkvm_vcpu_regs_mode(vcpu) == VMWKVM_REGS_SYNC) {
			ck_assert_uint_eq(run->kvm_dirty_regs, 0);
		}
		rcx -= cnt;
		rdi += cnt;
	}
	/* the next transfer is accepted again */
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 4);
	run->s.regs.regs.rcx = fk.regs.rcx = 4;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
}

START_TEST(hb_refused_by_vmm)
{
	hb_refused(false);
}
END_TEST

START_TEST(hb_refused_by_null_reply)
{
	hb_refused(true);
}
END_TEST

START_TEST(hb_too_long_fails_status)
{
	vm->hb_max = 8;
	run->s.regs.regs.rax = MAGIC;
	run->s.regs.regs.rbx = 0x00010000;
	for (uint64_t left = 8;; left--) { /* 9 bytes */
		set_io(KVM_EXIT_IO_OUT, 1, 0x5659, 1);
		run->s.regs.regs.rcx = left;
		run->s.regs.regs.rip = left ? REP_RIP : REP_RIP + 2;
		run->kvm_dirty_regs = 0;
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
		ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
		ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
		if (!left)
			break;
		ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	}
	ck_assert_uint_eq(run->kvm_dirty_regs, KVM_SYNC_X86_REGS);
	ck_assert_uint_eq(run->s.regs.regs.rbx, 0);
}
END_TEST

START_TEST(hb_piece_mismatch)
{
	set_io(KVM_EXIT_IO_IN, 1, 0x5659, 16);
	run->s.regs.regs.rax = MAGIC;
	run->s.regs.regs.rcx = 32;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(0);
	run->io.count = 17;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
	run->io.count = 16;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	for (int i = 0; i < 16; i++)
		ck_assert_uint_eq(runbuf[DATA_OFF + i], 0); /* NULL hb_data: zeroes */
}
END_TEST

/* ------------------------------------------------------------------ hypercall */

static struct vmwkvm_proposed_vmware_exit *hcall_exit(uint32_t longmode, uint32_t cpl)
{
	vm->hypercall_exit = 40;
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
	memset(x, 0, sizeof(*x));
	run->exit_reason = 40;
	x->type = 1;
	x->hcall.longmode = longmode;
	x->hcall.cpl = cpl;
	x->hcall.rax = MAGIC;
	x->hcall.rbx = (uint32_t)run->s.regs.regs.rbx;
	x->hcall.rcx = 10;
	run->s.regs.regs.rax = MAGIC;
	return x;
}

START_TEST(hypercall_complete)
{
	struct vmwkvm_proposed_vmware_exit *x = hcall_exit(0, 3);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_uint_eq(call.transport, VMWKVM_TRANSPORT_HYPERCALL);
	ck_assert_uint_eq(call.cpl, 3);
	struct kvm_regs before = *out_regs();
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX);
	r.eax = 6, r.ebx = MAGIC, r.ecx = 2;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(x->hcall.result, 6);
	ck_assert_uint_eq(x->hcall.exception.inject, 0);
	ck_assert_uint_eq(out_regs()->rbx, MAGIC);
	ck_assert_uint_eq(out_regs()->rcx, 2);
	ck_assert_uint_eq(out_regs()->rax, 6);
	ck_assert_uint_eq(out_regs()->rdx, before.rdx);
	ck_assert_uint_eq(out_regs()->rip, before.rip);
	ck_assert_uint_eq(out_regs()->rflags, before.rflags);
	/* no EAX in the reply: KVM still writes result, so it must be the guest's RAX */
	x = hcall_exit(1, 0);
	x->hcall.rax = 0xFFFFFFFF00000000ull | MAGIC;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	r = reply_of(VMWKVM_REPLY_EDI);
	r.edi = 7;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(x->hcall.result, 0xFFFFFFFF00000000ull | MAGIC);
	ck_assert_uint_eq(out_regs()->rdi, 7);
	/* unsupported */
	x = hcall_exit(0, 3);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
	ck_assert_uint_eq(x->hcall.result, 0xFFFFFFFFu);
}
END_TEST

START_TEST(hypercall_inject)
{
	struct vmwkvm_proposed_vmware_exit *x = hcall_exit(1, 3);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	struct vmwkvm_reply r = reply_of(VMWKVM_REPLY_INJECT);
	r.vector = 14;
	r.error_code = 0x5;
	r.address = 0xFFFF800012345000ull;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
	ck_assert_uint_eq(x->hcall.exception.inject, 1);
	ck_assert_uint_eq(x->hcall.exception.vector, 14);
	ck_assert_uint_eq(x->hcall.exception.error_code, 5);
	ck_assert_uint_eq(x->hcall.exception.address, 0xFFFF800012345000ull);
	ck_assert_uint_eq(x->hcall.result, MAGIC); /* RAX unchanged */
	/* refused vectors: NMI, reserved, out of range; the exit is left as it was */
	static const uint8_t bad[] = { 2, 15, 22, 23, 27, 31, 32, 255 };
	for (size_t i = 0; i < sizeof(bad); i++) {
		x = hcall_exit(1, 3);
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
		r.vector = bad[i];
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), -EINVAL);
		ck_assert_uint_eq(x->hcall.exception.inject, 0);
		ck_assert_uint_eq(x->hcall.result, 0);
	}
	static const uint8_t good[] = { 0, 1, 3, 6, 8, 12, 13, 14, 17, 18, 21, 28, 29, 30 };
	for (size_t i = 0; i < sizeof(good); i++) {
		x = hcall_exit(1, 3);
		ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
		r.vector = good[i];
		ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, &r), 0);
		ck_assert_uint_eq(x->hcall.exception.vector, good[i]);
	}
}
END_TEST

START_TEST(hypercall_invalid_completion)
{
	struct vmwkvm_proposed_vmware_exit *x = hcall_exit(0, 3);
	x->hcall.rax = 1; /* a KVM PV hypercall number, forwarded by rusin-v2 */
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(x->hcall.result, 0xFFFFFFFFu);
	ck_assert_uint_eq(run->kvm_dirty_regs, 0);
	x = hcall_exit(0, 3);
	x->type = 9;
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_INVALID);
	ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HYPERCALL);
	ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
	ck_assert_uint_eq(x->hcall.result, 0); /* unknown layout: untouched */
	/* the VM's hypercall exit was switched off: the call no longer matches */
	x = hcall_exit(0, 3);
	ck_assert_int_eq(vmwkvm_exit_decode(vcpu, &call), VMWKVM_EXIT_CALL);
	vm->hypercall_exit = 0;
	ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), -EINVAL);
}
END_TEST

/* A refused HB request by hypercall (EDX flags HB): the guest reads its status in EBX
 * bits 31:16 and preloaded SUCCESS there, so the refusal clears it, as on port 0x5659. */
START_TEST(hypercall_hb_refusal_clears_status)
{
	for (int how = 0; how < 3; how++) {
		struct vmwkvm_proposed_vmware_exit *x = hcall_exit(1, 3);
		x->hcall.rbx = 0x00010000u;             /* HB MESSAGE, SUCCESS preloaded */
		x->hcall.rdx = 0x0003u | (5u << 16);    /* HB | WRITE, channel 5 */
		x->hcall.rcx = how == 2 ? 0 : 26;       /* 0: invalid length */
		run->s.regs.regs.rbx = fk.regs.rbx = x->hcall.rbx;
		run->s.regs.regs.rdx = fk.regs.rdx = x->hcall.rdx;
		run->s.regs.regs.rcx = fk.regs.rcx = x->hcall.rcx;
		struct kvm_regs before = *out_regs();
		int d = vmwkvm_exit_decode(vcpu, &call);
		if (how == 2) {
			ck_assert_int_eq(d, VMWKVM_EXIT_INVALID);
			ck_assert_uint_eq(call.invalid, VMWKVM_INVALID_HB_LENGTH);
			ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
		} else {
			ck_assert_int_eq(d, VMWKVM_EXIT_CALL);
			if (how == 0)
				ck_assert_int_eq(vmwkvm_exit_complete(vcpu, &call, NULL), 0);
			else
				ck_assert_int_eq(vmwkvm_exit_complete_invalid(vcpu, &call), 0);
		}
		ck_assert_uint_eq(x->hcall.result, 0xFFFFFFFFu);
		ck_assert_uint_eq(x->hcall.exception.inject, 0);
		ck_assert_uint_eq(out_regs()->rbx, 0); /* status without SUCCESS, command 0 kept */
		ck_assert_uint_eq(out_regs()->rcx, before.rcx);
		ck_assert_uint_eq(out_regs()->rdx, before.rdx);
		ck_assert_uint_eq(out_regs()->rbp, before.rbp);
		ck_assert_uint_eq(out_regs()->rip, before.rip);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("exit_complete");
	TCase *sy = tcase_create("sync");
	tcase_add_checked_fixture(sy, setup_sync, teardown);
	tcase_add_test(sy, sync_lb_in_getversion);
	tcase_add_test(sy, sync_valid_bits_cleared_falls_back_to_ioctl);
	tcase_add_test(sy, sync_lb_in_eax_only_writes_data_only);
	tcase_add_test(sy, sync_lb_in_no_register_keeps_eax);
	tcase_add_test(sy, sync_lb_unsupported);
	tcase_add_test(sy, sync_lb_out);
	tcase_add_test(sy, complete_rejects_mismatch);
	tcase_add_test(sy, invalid_lb_in_returns_all_ones);
	tcase_add_test(sy, hb_in_pieces_sync);
	tcase_add_test(sy, hb_out_pieces);
	tcase_add_test(sy, hb_refused_by_vmm);
	tcase_add_test(sy, hb_refused_by_null_reply);
	tcase_add_test(sy, hb_too_long_fails_status);
	tcase_add_test(sy, hb_piece_mismatch);
	tcase_add_test(sy, hypercall_complete);
	tcase_add_test(sy, hypercall_inject);
	tcase_add_test(sy, hypercall_invalid_completion);
	tcase_add_test(sy, hypercall_hb_refusal_clears_status);
	suite_add_tcase(s, sy);

	TCase *io = tcase_create("ioctl");
	tcase_add_checked_fixture(io, setup_ioctl, teardown);
	tcase_add_test(io, ioctl_lb_in_getversion);
	tcase_add_test(io, ioctl_lb_eax_only_no_set_regs);
	tcase_add_test(io, ioctl_not_backdoor_reads_nothing);
	tcase_add_test(io, ioctl_set_regs_failure_and_late_read);
	tcase_add_test(io, hb_in_pieces_ioctl);
	tcase_add_test(io, hb_refused_by_vmm);
	tcase_add_test(io, hypercall_complete);
	tcase_add_test(io, hypercall_hb_refusal_clears_status);
	suite_add_tcase(s, io);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
