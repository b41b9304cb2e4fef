/* kmodel: the kernel model of the proposed VMware uAPIs for tests. See kmodel.h. */
#include "kmodel.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmwkvm/dialect.h>

#include "core/sys.h"
#include "core/uapi.h"

#define MAX_FDS 512
#define MAX_VMS 64
#define MAX_VCPUS 256
#define MAX_CAPS 512
#define MAX_FAULTS 16
#define MAX_FILES 16
#define MAX_VCPU_ID 1023
#define VMWARE_MAGIC 0x564D5868u

struct mfd {
	int kind; /* enum kmodel_fd_kind, 0 = free */
	bool closed;
	int obj;  /* VM, vCPU or file index */
};

struct mvm {
	int fd;
	unsigned vcpus;
	bool rusin_backdoor, rusin_hypercall, rusin_nested;
	uint64_t single_mask;
	unsigned unrelated_enables;
	uint64_t user_space_msr, exit_hypercall;
};

struct mvcpu {
	int fd;
	int vm;
	unsigned long id;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_run *run;
	unsigned long runs;
	bool vmcall_armed;
	bool pending_hcall;  /* exit produced, completion on next KVM_RUN */
	bool pending_long;   /* long mode at the call */
	bool exc_valid;
	struct kmodel_exception exc;
	int cpuid_count;
};

struct mfile {
	char path[128];
	char *content;
};

struct mfault {
	bool used;
	int fd; /* -1 = any */
	unsigned long req;
	long cap;
	unsigned nth; /* 0 = every */
	unsigned seen;
	int err;
};

struct kmodel {
	pthread_mutex_t lock;
	struct kmodel_config cfg;
	struct vmwkvm_sys_ops ops;
	long cap_override[MAX_CAPS]; /* -1 = none */
	struct mfd fds[MAX_FDS];
	struct mvm vms[MAX_VMS];
	int nvms;
	struct mvcpu vcpus[MAX_VCPUS];
	int nvcpus;
	struct mfile files[MAX_FILES];
	struct mfault faults[MAX_FAULTS];
	struct kmodel_call *log;
	size_t nlog, caplog;
	kmodel_run_hook_fn hook;
	void *hook_ctx;
};

static struct kmodel *installed;

/* ------------------------------------------------------------------ helpers */

void kmodel_config_init(struct kmodel_config *c)
{
	memset(c, 0, sizeof(*c));
	c->dialect = KMODEL_DIALECT_NONE;
	c->rusin_cap_backdoor = 239;
	c->rusin_cap_hypercall = 240;
	c->rusin_cap_nested = 241;
	c->rusin_exit = 40;
	c->single_cap = 250;
	c->single_exit = 43;
	c->single_valid_mask = 7;
	c->backdoor_param = 'N';
	c->uffd_result = -ENOSYS;
	c->no_dev_kvm = false;
	c->tsc_khz = 2500000;
}

static void log_call(struct kmodel *m, unsigned long req, int fd, long cap, uint64_t arg0, int result,
		     bool injected, const char *path)
{
	if (m->nlog == m->caplog) {
		size_t n = m->caplog ? m->caplog * 2 : 256;
		struct kmodel_call *p = realloc(m->log, n * sizeof(*p));
		if (!p)
			return; /* the log is best effort; tests check counts */
		m->log = p;
		m->caplog = n;
	}
	struct kmodel_call *c = &m->log[m->nlog++];
	memset(c, 0, sizeof(*c));
	c->req = req;
	c->fd = fd;
	c->fd_kind = KMODEL_FD_OTHER;
	if (fd >= KMODEL_FD_BASE && fd < KMODEL_FD_BASE + MAX_FDS)
		c->fd_kind = m->fds[fd - KMODEL_FD_BASE].kind;
	c->cap = cap;
	c->arg0 = arg0;
	c->result = result;
	c->injected = injected;
	if (path)
		snprintf(c->path, sizeof(c->path), "%s", path);
}

/* Returns the injected -errno, or 0 if no fault applies to this call. */
static int fault_check(struct kmodel *m, int fd, unsigned long req, long cap)
{
	for (int i = 0; i < MAX_FAULTS; i++) {
		struct mfault *f = &m->faults[i];
		if (!f->used || f->req != req)
			continue;
		if (f->fd >= 0 && f->fd != fd)
			continue;
		if (f->cap >= 0 && f->cap != cap)
			continue;
		f->seen++;
		if (f->nth == 0)
			return -f->err;
		if (f->seen == f->nth) {
			f->used = false;
			return -f->err;
		}
	}
	return 0;
}

static struct mfd *fd_get(struct kmodel *m, int fd)
{
	if (fd < KMODEL_FD_BASE || fd >= KMODEL_FD_BASE + MAX_FDS)
		return NULL;
	struct mfd *d = &m->fds[fd - KMODEL_FD_BASE];
	if (!d->kind || d->closed)
		return NULL;
	return d;
}

static int fd_alloc(struct kmodel *m, int kind, int obj)
{
	for (int i = 0; i < MAX_FDS; i++) {
		if (!m->fds[i].kind) {
			m->fds[i].kind = kind;
			m->fds[i].closed = false;
			m->fds[i].obj = obj;
			return KMODEL_FD_BASE + i;
		}
	}
	return -EMFILE;
}

static struct mvcpu *vcpu_of(struct kmodel *m, int fd)
{
	struct mfd *d = fd_get(m, fd);
	if (!d || d->kind != KMODEL_FD_VCPU)
		return NULL;
	return &m->vcpus[d->obj];
}

static struct mvm *vm_of_any(struct kmodel *m, int fd)
{
	/* like fd_get but also finds closed VMs (for state queries) */
	if (fd < KMODEL_FD_BASE || fd >= KMODEL_FD_BASE + MAX_FDS)
		return NULL;
	struct mfd *d = &m->fds[fd - KMODEL_FD_BASE];
	if (d->kind != KMODEL_FD_VM)
		return NULL;
	return &m->vms[d->obj];
}

/* The CHECK_EXTENSION answer for cap. */
static long cap_value(const struct kmodel *m, unsigned long cap)
{
	if (cap < MAX_CAPS && m->cap_override[cap] >= 0)
		return m->cap_override[cap];
	const struct kmodel_config *c = &m->cfg;
	switch (c->dialect) {
	case KMODEL_DIALECT_RUSIN_V2:
		if ((c->rusin_cap_backdoor && cap == c->rusin_cap_backdoor) ||
		    (c->rusin_cap_hypercall && cap == c->rusin_cap_hypercall) ||
		    (c->rusin_cap_nested && cap == c->rusin_cap_nested))
			return 1;
		break;
	case KMODEL_DIALECT_SINGLE_CAP:
		if (c->single_cap && cap == c->single_cap)
			return (long)c->single_valid_mask;
		break;
	case KMODEL_DIALECT_MAINLINE_ARM:
		if (cap == 239 || cap == 240 || cap == 241)
			return 1;
		break;
	default:
		break;
	}
	switch (cap) {
	case 3: return 1;   /* USER_MEMORY */
	case 61: return 1;  /* GET_TSC_KHZ */
	case 74: return 7;  /* SYNC_REGS: REGS|SREGS|EVENTS */
	case 98: return 1;  /* ENABLE_CAP_VM */
	case 105: return 1; /* CHECK_EXTENSION_VM */
	case 136: return 1; /* IMMEDIATE_EXIT */
	case 188: return 1;
	case 189: return 1;
	case 201: return 0x1000;
	case 231: return 1;
	case 232: return 1;
	case 234: return 1;
	case 235: return 1;
	case 237: return 1;
	case 238: return 1;
	case 244: return 3;
	default: return 0;
	}
}

void kmodel_sregs_mode(struct kvm_sregs *s, int mode, unsigned cpl)
{
	memset(s, 0, sizeof(*s));
	struct kvm_segment seg = { .base = 0, .limit = 0xffffffffu, .present = 1, .s = 1, .g = 1 };
	seg.dpl = (uint8_t)(cpl & 3);
	seg.selector = (uint16_t)(cpl & 3);
	switch (mode) {
	case KMODEL_MODE_REAL:
		seg.limit = 0xffff;
		seg.g = 0;
		seg.dpl = 0;
		seg.selector = 0;
		seg.type = 3;
		s->ds = s->es = s->fs = s->gs = s->ss = seg;
		seg.type = 11;
		s->cs = seg;
		s->cr0 = 0x60000010;
		break;
	case KMODEL_MODE_PROT32:
	case KMODEL_MODE_VM86:
		seg.db = 1;
		seg.type = 3;
		s->ds = s->es = s->fs = s->gs = s->ss = seg;
		seg.type = 11;
		s->cs = seg;
		s->cr0 = 0x11;
		break;
	case KMODEL_MODE_LONG64:
	default:
		seg.type = 3;
		seg.db = 1;
		s->ds = s->es = s->fs = s->gs = s->ss = seg;
		seg.type = 11;
		seg.db = 0;
		seg.l = 1;
		s->cs = seg;
		s->cr0 = 0x80000011;
		s->cr4 = 0x20;
		s->efer = 0x500; /* LME | LMA */
		break;
	}
	s->tr.present = 1;
	s->tr.type = 11;
}

static void vcpu_reset(struct mvcpu *v)
{
	memset(&v->regs, 0, sizeof(v->regs));
	v->regs.rflags = 2;
	v->regs.rip = 0xfff0;
	kmodel_sregs_mode(&v->sregs, KMODEL_MODE_REAL, 0);
	v->sregs.cs.selector = 0xf000;
	v->sregs.cs.base = 0xffff0000;
}

static bool vcpu_longmode(const struct mvcpu *v)
{
	return (v->sregs.efer & (1u << 10)) && v->sregs.cs.l;
}

static unsigned vcpu_cpl(const struct mvcpu *v)
{
	if (!(v->sregs.cr0 & 1))
		return 0;
	if (v->regs.rflags & (1u << 17))
		return 3;
	return v->sregs.ss.dpl & 3;
}

static bool vm_forwards(const struct kmodel *m, const struct mvm *vm, const struct mvcpu *v, uint32_t *exit_out)
{
	switch (m->cfg.dialect) {
	case KMODEL_DIALECT_RUSIN_V2:
		if (vm->rusin_hypercall) {
			*exit_out = m->cfg.rusin_exit;
			return true;
		}
		return false;
	case KMODEL_DIALECT_SINGLE_CAP:
		if ((vm->single_mask & VMWKVM_SINGLE_CAP_ENABLE_HYPERCALL) &&
		    (uint32_t)v->regs.rax == VMWARE_MAGIC) {
			*exit_out = m->cfg.single_exit;
			return true;
		}
		return false;
	default:
		return false;
	}
}

/* Guest executes a 3-byte VMCALL now. Returns true if it produced the VMware exit. */
static bool do_vmcall(struct kmodel *m, struct mvcpu *v)
{
	struct mvm *vm = &m->vms[v->vm];
	uint32_t exit_reason = 0;
	bool lm = vcpu_longmode(v);
	unsigned cpl = vcpu_cpl(v);
	if (vm_forwards(m, vm, v, &exit_reason)) {
		struct kvm_run *run = v->run;
		run->exit_reason = exit_reason;
		struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(run);
		memset(x, 0, sizeof(*x));
		x->type = VMWKVM_PROPOSED_VMWARE_EXIT_HCALL;
		x->hcall.longmode = lm;
		x->hcall.cpl = cpl;
		uint64_t mask = lm ? UINT64_MAX : 0xffffffffu;
		x->hcall.rax = v->regs.rax & mask;
		x->hcall.rbx = v->regs.rbx & mask;
		x->hcall.rcx = v->regs.rcx & mask;
		x->hcall.rdx = v->regs.rdx & mask;
		x->hcall.rsi = v->regs.rsi & mask;
		x->hcall.rdi = v->regs.rdi & mask;
		x->hcall.rbp = v->regs.rbp & mask;
		v->pending_hcall = true;
		v->pending_long = lm;
		return true;
	}
	/* mainline KVM: not a KVM hypercall the guest may make */
	uint64_t ret = cpl ? (uint64_t)-1 : (uint64_t)-1000;
	if (!lm)
		ret &= 0xffffffffu;
	v->regs.rax = ret;
	v->regs.rip += 3;
	return false;
}

static void complete_hcall(struct mvcpu *v)
{
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(v->run);
	uint64_t res = x->hcall.result;
	if (!v->pending_long)
		res &= 0xffffffffu;
	v->regs.rax = res;
	if (x->hcall.exception.inject) {
		v->exc_valid = true;
		v->exc.vector = x->hcall.exception.vector;
		v->exc.error_code = x->hcall.exception.error_code;
		v->exc.address = x->hcall.exception.address;
	} else {
		v->regs.rip += 3;
	}
	v->pending_hcall = false;
}

#define SYNC_VALID (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS)

static void store_sync(struct mvcpu *v)
{
	struct kvm_run *run = v->run;
	if (run->kvm_valid_regs & KVM_SYNC_X86_REGS)
		run->s.regs.regs = v->regs;
	if (run->kvm_valid_regs & KVM_SYNC_X86_SREGS)
		run->s.regs.sregs = v->sregs;
	if (run->kvm_valid_regs & KVM_SYNC_X86_EVENTS)
		memset(&run->s.regs.events, 0, sizeof(run->s.regs.events));
}

static int vcpu_run(struct kmodel *m, struct mvcpu *v)
{
	struct kvm_run *run = v->run;
	if ((run->kvm_valid_regs & ~(uint64_t)SYNC_VALID) || (run->kvm_dirty_regs & ~(uint64_t)SYNC_VALID))
		return -EINVAL;
	if (run->kvm_dirty_regs & KVM_SYNC_X86_REGS) {
		v->regs = run->s.regs.regs;
		run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_REGS;
	}
	if (run->kvm_dirty_regs & KVM_SYNC_X86_SREGS) {
		v->sregs = run->s.regs.sregs;
		run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_SREGS;
	}
	run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_EVENTS;
	if (v->pending_hcall)
		complete_hcall(v);
	int r = 0;
	if (run->immediate_exit) {
		run->exit_reason = KVM_EXIT_INTR;
		r = -EINTR;
		goto out;
	}
	v->runs++;
	run->flags = 0;
	if (v->vmcall_armed) {
		v->vmcall_armed = false;
		if (do_vmcall(m, v))
			goto out;
	}
	if (m->hook) {
		struct kmodel_run_ctx rc = {
			.vcpu_fd = v->fd, .vcpu_id = v->id, .runs = v->runs,
			.run = run, .regs = &v->regs, .sregs = &v->sregs,
		};
		r = m->hook(m->hook_ctx, &rc);
		if (r == KMODEL_RUN_VMCALL) {
			r = 0;
			if (!do_vmcall(m, v))
				run->exit_reason = KVM_EXIT_HLT;
		}
		goto out;
	}
	run->exit_reason = KVM_EXIT_HLT;
out:
	store_sync(v);
	return r;
}

static int enable_cap(struct kmodel *m, struct mvm *vm, const struct kvm_enable_cap *ec)
{
	if (ec->flags)
		return -EINVAL;
	const struct kmodel_config *c = &m->cfg;
	uint32_t cap = ec->cap;
	uint64_t a = ec->args[0];
	switch (c->dialect) {
	case KMODEL_DIALECT_RUSIN_V2:
		if (c->rusin_cap_backdoor && cap == c->rusin_cap_backdoor) {
			if (a & ~1ull)
				return -EINVAL;
			if (vm->vcpus)
				return -EINVAL;
			vm->rusin_backdoor = a;
			return 0;
		}
		if (c->rusin_cap_hypercall && cap == c->rusin_cap_hypercall) {
			if (a & ~1ull)
				return -EINVAL;
			vm->rusin_hypercall = a;
			return 0;
		}
		if (c->rusin_cap_nested && cap == c->rusin_cap_nested) {
			if (a & ~1ull)
				return -EINVAL;
			vm->rusin_nested = a;
			return 0;
		}
		break;
	case KMODEL_DIALECT_SINGLE_CAP:
		if (c->single_cap && cap == c->single_cap) {
			if (a & ~c->single_valid_mask)
				return -EINVAL;
			if (vm->vcpus)
				return -EINVAL;
			vm->single_mask = a;
			return 0;
		}
		break;
	case KMODEL_DIALECT_MAINLINE_ARM:
		if (cap == 239) {
			/* an unrelated arm64 VM feature: accepts anything before the VM runs */
			if (vm->vcpus)
				return -EBUSY;
			vm->unrelated_enables++;
			return 0;
		}
		if (cap == 240 || cap == 241)
			return -EINVAL;
		break;
	default:
		break;
	}
	if (cap == VMWKVM_UAPI_CAP_X86_USER_SPACE_MSR) {
		if (a & ~7ull)
			return -EINVAL;
		vm->user_space_msr = a;
		return 0;
	}
	if (cap == VMWKVM_UAPI_CAP_EXIT_HYPERCALL) {
		if (a & ~(uint64_t)cap_value(m, cap))
			return -EINVAL;
		vm->exit_hypercall = a;
		return 0;
	}
	return -EINVAL;
}

static int ioctl_sys(struct kmodel *m, unsigned long req, void *arg)
{
	switch (req) {
	case KVM_GET_API_VERSION:
		return KVM_API_VERSION;
	case KVM_GET_VCPU_MMAP_SIZE:
		return KMODEL_RUN_SIZE;
	case KVM_CHECK_EXTENSION:
		return (int)cap_value(m, (unsigned long)arg);
	case KVM_CREATE_VM: {
		if ((unsigned long)arg != 0)
			return -EINVAL;
		if (m->nvms >= MAX_VMS)
			return -ENOMEM;
		int idx = m->nvms;
		int fd = fd_alloc(m, KMODEL_FD_VM, idx);
		if (fd < 0)
			return fd;
		memset(&m->vms[idx], 0, sizeof(m->vms[idx]));
		m->vms[idx].fd = fd;
		m->nvms++;
		return fd;
	}
	default:
		return -EINVAL;
	}
}

static int ioctl_vm(struct kmodel *m, struct mfd *d, unsigned long req, void *arg)
{
	struct mvm *vm = &m->vms[d->obj];
	switch (req) {
	case KVM_CHECK_EXTENSION:
		return (int)cap_value(m, (unsigned long)arg);
	case KVM_CREATE_VCPU: {
		unsigned long id = (unsigned long)arg;
		if (id > MAX_VCPU_ID)
			return -EINVAL;
		for (int i = 0; i < m->nvcpus; i++)
			if (m->vcpus[i].vm == d->obj && m->vcpus[i].id == id)
				return -EEXIST;
		if (m->nvcpus >= MAX_VCPUS)
			return -ENOMEM;
		struct mvcpu *v = &m->vcpus[m->nvcpus];
		memset(v, 0, sizeof(*v));
		v->run = aligned_alloc(4096, KMODEL_RUN_SIZE);
		if (!v->run)
			return -ENOMEM;
		memset(v->run, 0, KMODEL_RUN_SIZE);
		int fd = fd_alloc(m, KMODEL_FD_VCPU, m->nvcpus);
		if (fd < 0) {
			free(v->run);
			v->run = NULL;
			return fd;
		}
		v->fd = fd;
		v->vm = d->obj;
		v->id = id;
		vcpu_reset(v);
		m->nvcpus++;
		vm->vcpus++;
		return fd;
	}
	case KVM_ENABLE_CAP:
		if (!arg)
			return -EFAULT;
		return enable_cap(m, vm, arg);
	case KVM_GET_TSC_KHZ:
		return (int)m->cfg.tsc_khz;
	case KVM_SET_USER_MEMORY_REGION:
		return arg ? 0 : -EFAULT;
	default:
		return -ENOTTY;
	}
}

static int ioctl_vcpu(struct kmodel *m, struct mfd *d, unsigned long req, void *arg)
{
	struct mvcpu *v = &m->vcpus[d->obj];
	switch (req) {
	case KVM_RUN:
		return vcpu_run(m, v);
	case KVM_GET_REGS:
		if (!arg)
			return -EFAULT;
		memcpy(arg, &v->regs, sizeof(v->regs));
		return 0;
	case KVM_SET_REGS:
		if (!arg)
			return -EFAULT;
		memcpy(&v->regs, arg, sizeof(v->regs));
		return 0;
	case KVM_GET_SREGS:
		if (!arg)
			return -EFAULT;
		memcpy(arg, &v->sregs, sizeof(v->sregs));
		return 0;
	case KVM_SET_SREGS:
		if (!arg)
			return -EFAULT;
		memcpy(&v->sregs, arg, sizeof(v->sregs));
		return 0;
	case KVM_GET_TSC_KHZ:
		return (int)m->cfg.tsc_khz;
	case KVM_SET_CPUID2: {
		if (!arg)
			return -EFAULT;
		const struct kvm_cpuid2 *c = arg;
		if (c->nent > 256)
			return -E2BIG;
		v->cpuid_count = (int)c->nent;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

/* ------------------------------------------------------------------ ops */

static int op_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	long cap = -1;
	uint64_t arg0 = 0;
	if (req == KVM_CHECK_EXTENSION) {
		cap = (long)(unsigned long)arg;
	} else if (req == KVM_ENABLE_CAP && arg) {
		const struct kvm_enable_cap *ec = arg;
		cap = ec->cap;
		arg0 = ec->args[0];
	} else if (req == KVM_CREATE_VCPU || req == KVM_CREATE_VM) {
		arg0 = (unsigned long)arg;
	}
	int r = fault_check(m, fd, req, cap);
	bool injected = r != 0;
	if (!injected) {
		struct mfd *d = fd_get(m, fd);
		if (!d)
			r = -EBADF;
		else if (d->kind == KMODEL_FD_SYS)
			r = ioctl_sys(m, req, arg);
		else if (d->kind == KMODEL_FD_VM)
			r = ioctl_vm(m, d, req, arg);
		else if (d->kind == KMODEL_FD_VCPU)
			r = ioctl_vcpu(m, d, req, arg);
		else
			r = -ENOTTY;
	}
	log_call(m, req, fd, cap, arg0, r, injected, NULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static struct mfile *file_find(struct kmodel *m, const char *path)
{
	for (int i = 0; i < MAX_FILES; i++)
		if (m->files[i].content && strcmp(m->files[i].path, path) == 0)
			return &m->files[i];
	return NULL;
}

#define BACKDOOR_PARAM_PATH "/sys/module/kvm/parameters/enable_vmware_backdoor"

static int op_open(void *ctx, const char *path, int flags)
{
	(void)flags;
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, -1, KMODEL_OP_OPEN, -1);
	bool injected = r != 0;
	if (!injected) {
		if (!path)
			r = -EFAULT;
		else if (strcmp(path, "/dev/kvm") == 0)
			r = m->cfg.no_dev_kvm ? -ENOENT : fd_alloc(m, KMODEL_FD_SYS, 0);
		else {
			struct mfile *f = file_find(m, path);
			r = f ? fd_alloc(m, KMODEL_FD_FILE, (int)(f - m->files)) : -ENOENT;
		}
	}
	log_call(m, KMODEL_OP_OPEN, r >= 0 ? r : -1, -1, 0, r, injected, path);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int op_close(void *ctx, int fd)
{
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, fd, KMODEL_OP_CLOSE, -1);
	bool injected = r != 0;
	if (!injected) {
		struct mfd *d = fd_get(m, fd);
		if (!d) {
			r = -EBADF;
		} else {
			r = 0;
			/* log before marking closed so the kind is still known */
		}
	}
	log_call(m, KMODEL_OP_CLOSE, fd, -1, 0, r, injected, NULL);
	if (!injected && r == 0)
		m->fds[fd - KMODEL_FD_BASE].closed = true;
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int op_mmap(void *ctx, void **out, size_t len, int prot, int flags, int fd, off_t off)
{
	struct kmodel *m = ctx;
	if (fd < 0) /* anonymous memory: the real kernel */
		return vmwkvm_sys_default_ops()->mmap(NULL, out, len, prot, flags, fd, off);
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, fd, KMODEL_OP_MMAP, -1);
	bool injected = r != 0;
	if (!injected) {
		struct mfd *d = fd_get(m, fd);
		if (!d)
			r = -EBADF;
		else if (d->kind != KMODEL_FD_VCPU)
			r = -ENODEV;
		else if (off != 0 || len == 0 || len > KMODEL_RUN_SIZE)
			r = -EINVAL;
		else {
			*out = m->vcpus[d->obj].run;
			r = 0;
		}
	}
	log_call(m, KMODEL_OP_MMAP, fd, -1, len, r, injected, NULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int op_munmap(void *ctx, void *addr, size_t len)
{
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	bool ours = false;
	for (int i = 0; i < m->nvcpus; i++)
		if (m->vcpus[i].run == addr)
			ours = true;
	if (!ours) {
		pthread_mutex_unlock(&m->lock);
		return vmwkvm_sys_default_ops()->munmap(NULL, addr, len);
	}
	int r = fault_check(m, -1, KMODEL_OP_MUNMAP, -1);
	bool injected = r != 0;
	log_call(m, KMODEL_OP_MUNMAP, -1, -1, len, r, injected, NULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int op_mprotect(void *ctx, void *addr, size_t len, int prot)
{
	(void)ctx;
	return vmwkvm_sys_default_ops()->mprotect(NULL, addr, len, prot);
}

static int op_userfaultfd(void *ctx, int flags)
{
	(void)flags;
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, -1, KMODEL_OP_USERFAULTFD, -1);
	bool injected = r != 0;
	if (!injected)
		r = m->cfg.uffd_result < 0 ? m->cfg.uffd_result : fd_alloc(m, KMODEL_FD_UFFD, 0);
	log_call(m, KMODEL_OP_USERFAULTFD, r >= 0 ? r : -1, -1, (uint64_t)(unsigned)flags, r, injected, NULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static ssize_t op_read(void *ctx, int fd, void *buf, size_t len)
{
	(void)buf;
	(void)len;
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, fd, KMODEL_OP_READ, -1);
	bool injected = r != 0;
	if (!injected) {
		struct mfd *d = fd_get(m, fd);
		r = !d ? -EBADF : d->kind == KMODEL_FD_UFFD ? -EAGAIN : -EINVAL;
	}
	log_call(m, KMODEL_OP_READ, fd, -1, len, r, injected, NULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int op_read_file(void *ctx, const char *path, char *buf, size_t len)
{
	struct kmodel *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fault_check(m, -1, KMODEL_OP_READ_FILE, -1);
	bool injected = r != 0;
	if (!injected) {
		const char *content = NULL;
		char tmp[4];
		if (!path || !buf) {
			r = -EFAULT;
		} else if (len == 0) {
			r = -EINVAL;
		} else {
			struct mfile *f = file_find(m, path);
			if (f) {
				content = f->content;
			} else if (strcmp(path, BACKDOOR_PARAM_PATH) == 0 && m->cfg.backdoor_param) {
				tmp[0] = m->cfg.backdoor_param;
				tmp[1] = '\n';
				tmp[2] = '\0';
				content = tmp;
			}
			if (!content) {
				r = -ENOENT;
			} else {
				size_t n = strlen(content);
				if (n > len - 1)
					n = len - 1;
				memcpy(buf, content, n);
				buf[n] = '\0';
				r = (int)n;
			}
		}
	}
	log_call(m, KMODEL_OP_READ_FILE, -1, -1, 0, r, injected, path);
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* ------------------------------------------------------------------ API */

struct kmodel *kmodel_new(const struct kmodel_config *c)
{
	struct kmodel *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	if (c)
		m->cfg = *c;
	else
		kmodel_config_init(&m->cfg);
	for (int i = 0; i < MAX_CAPS; i++)
		m->cap_override[i] = -1;
	pthread_mutex_init(&m->lock, NULL);
	m->ops.ioctl = op_ioctl;
	m->ops.open = op_open;
	m->ops.close = op_close;
	m->ops.mmap = op_mmap;
	m->ops.munmap = op_munmap;
	m->ops.mprotect = op_mprotect;
	m->ops.userfaultfd = op_userfaultfd;
	m->ops.read = op_read;
	m->ops.read_file = op_read_file;
	m->ops.ctx = m;
	return m;
}

void kmodel_free(struct kmodel *m)
{
	if (!m)
		return;
	if (installed == m)
		kmodel_uninstall();
	for (int i = 0; i < m->nvcpus; i++)
		free(m->vcpus[i].run);
	for (int i = 0; i < MAX_FILES; i++)
		free(m->files[i].content);
	free(m->log);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void kmodel_install(struct kmodel *m)
{
	installed = m;
	vmwkvm_sys_set_ops(m ? &m->ops : NULL);
}

void kmodel_uninstall(void)
{
	installed = NULL;
	vmwkvm_sys_set_ops(NULL);
}

void kmodel_set_cap(struct kmodel *m, uint32_t cap, long value)
{
	if (cap >= MAX_CAPS)
		return;
	pthread_mutex_lock(&m->lock);
	m->cap_override[cap] = value < 0 ? -1 : value;
	pthread_mutex_unlock(&m->lock);
}

int kmodel_set_file(struct kmodel *m, const char *path, const char *content)
{
	if (!path || strlen(path) >= sizeof(m->files[0].path))
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	struct mfile *f = file_find(m, path);
	int r = 0;
	if (!content) {
		if (f) {
			free(f->content);
			f->content = NULL;
		}
		goto out;
	}
	if (!f) {
		for (int i = 0; i < MAX_FILES && !f; i++)
			if (!m->files[i].content)
				f = &m->files[i];
		if (!f) {
			r = -ENOSPC;
			goto out;
		}
	}
	char *dup = strdup(content);
	if (!dup) {
		r = -ENOMEM;
		goto out;
	}
	free(f->content);
	f->content = dup;
	snprintf(f->path, sizeof(f->path), "%s", path);
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

void kmodel_set_backdoor_param(struct kmodel *m, char value)
{
	pthread_mutex_lock(&m->lock);
	m->cfg.backdoor_param = value;
	pthread_mutex_unlock(&m->lock);
}

void kmodel_set_run_hook(struct kmodel *m, kmodel_run_hook_fn fn, void *ctx)
{
	pthread_mutex_lock(&m->lock);
	m->hook = fn;
	m->hook_ctx = ctx;
	pthread_mutex_unlock(&m->lock);
}

int kmodel_inject_fault(struct kmodel *m, unsigned long req, long cap, unsigned nth, int err)
{
	return kmodel_inject_fault_fd(m, -1, req, cap, nth, err);
}

int kmodel_inject_fault_fd(struct kmodel *m, int fd, unsigned long req, long cap, unsigned nth, int err)
{
	int r = -ENOSPC;
	pthread_mutex_lock(&m->lock);
	for (int i = 0; i < MAX_FAULTS; i++) {
		if (!m->faults[i].used) {
			m->faults[i] = (struct mfault){ .used = true, .fd = fd, .req = req, .cap = cap, .nth = nth,
							.seen = 0, .err = err < 0 ? -err : err };
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

void kmodel_clear_faults(struct kmodel *m)
{
	pthread_mutex_lock(&m->lock);
	memset(m->faults, 0, sizeof(m->faults));
	pthread_mutex_unlock(&m->lock);
}

size_t kmodel_log_count(struct kmodel *m)
{
	pthread_mutex_lock(&m->lock);
	size_t n = m->nlog;
	pthread_mutex_unlock(&m->lock);
	return n;
}

int kmodel_log_get(struct kmodel *m, size_t i, struct kmodel_call *out)
{
	int r = -ERANGE;
	pthread_mutex_lock(&m->lock);
	if (i < m->nlog) {
		*out = m->log[i];
		r = 0;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

void kmodel_log_clear(struct kmodel *m)
{
	pthread_mutex_lock(&m->lock);
	m->nlog = 0;
	pthread_mutex_unlock(&m->lock);
}

size_t kmodel_log_count_req(struct kmodel *m, size_t from, unsigned long req, long cap)
{
	size_t n = 0;
	pthread_mutex_lock(&m->lock);
	for (size_t i = from; i < m->nlog; i++)
		if (m->log[i].req == req && (cap < 0 || m->log[i].cap == cap))
			n++;
	pthread_mutex_unlock(&m->lock);
	return n;
}

const char *kmodel_req_name(unsigned long req)
{
	switch (req) {
	case KVM_GET_API_VERSION: return "GET_API_VERSION";
	case KVM_CREATE_VM: return "CREATE_VM";
	case KVM_CHECK_EXTENSION: return "CHECK_EXTENSION";
	case KVM_GET_VCPU_MMAP_SIZE: return "GET_VCPU_MMAP_SIZE";
	case KVM_CREATE_VCPU: return "CREATE_VCPU";
	case KVM_ENABLE_CAP: return "ENABLE_CAP";
	case KVM_RUN: return "RUN";
	case KVM_GET_REGS: return "GET_REGS";
	case KVM_SET_REGS: return "SET_REGS";
	case KVM_GET_SREGS: return "GET_SREGS";
	case KVM_SET_SREGS: return "SET_SREGS";
	case KVM_GET_TSC_KHZ: return "GET_TSC_KHZ";
	case KVM_SET_CPUID2: return "SET_CPUID2";
	case KVM_SET_USER_MEMORY_REGION: return "SET_USER_MEMORY_REGION";
	case KMODEL_OP_OPEN: return "open";
	case KMODEL_OP_CLOSE: return "close";
	case KMODEL_OP_MMAP: return "mmap";
	case KMODEL_OP_MUNMAP: return "munmap";
	case KMODEL_OP_READ_FILE: return "read_file";
	case KMODEL_OP_USERFAULTFD: return "userfaultfd";
	case KMODEL_OP_READ: return "read";
	default: return "?";
	}
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case KMODEL_FD_SYS: return "sys";
	case KMODEL_FD_VM: return "vm";
	case KMODEL_FD_VCPU: return "vcpu";
	case KMODEL_FD_UFFD: return "uffd";
	case KMODEL_FD_FILE: return "file";
	default: return "-";
	}
}

static const char *errno_name(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case EMFILE: return "EMFILE";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	default: return NULL;
	}
}

size_t kmodel_log_format(struct kmodel *m, size_t from, const unsigned long *reqs, size_t nreqs, char *buf,
			 size_t len)
{
	return kmodel_log_format_fd(m, from, -1, reqs, nreqs, buf, len);
}

size_t kmodel_log_format_fd(struct kmodel *m, size_t from, int fd, const unsigned long *reqs, size_t nreqs,
			    char *buf, size_t len)
{
	size_t total = 0;
	if (buf && len)
		buf[0] = '\0';
	pthread_mutex_lock(&m->lock);
	for (size_t i = from; i < m->nlog; i++) {
		const struct kmodel_call *c = &m->log[i];
		if (fd >= 0 && c->fd != fd)
			continue;
		if (reqs) {
			size_t k;
			for (k = 0; k < nreqs && reqs[k] != c->req; k++)
				;
			if (k == nreqs)
				continue;
		}
		char line[160];
		int n = snprintf(line, sizeof(line), "%s %s", kind_name(c->fd_kind), kmodel_req_name(c->req));
		if (c->req == KVM_CHECK_EXTENSION)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %ld", c->cap);
		else if (c->req == KVM_ENABLE_CAP)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %ld %llu", c->cap,
				      (unsigned long long)c->arg0);
		else if (c->req == KVM_CREATE_VCPU || c->req == KVM_CREATE_VM)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %llu", (unsigned long long)c->arg0);
		else if (c->req == KMODEL_OP_OPEN || c->req == KMODEL_OP_READ_FILE)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " %s", c->path);
		bool makes_fd = c->req == KVM_CREATE_VM || c->req == KVM_CREATE_VCPU || c->req == KMODEL_OP_OPEN ||
				c->req == KMODEL_OP_USERFAULTFD;
		if (c->result < 0) {
			const char *en = errno_name(-c->result);
			if (en)
				n += snprintf(line + n, sizeof(line) - (size_t)n, " = -%s", en);
			else
				n += snprintf(line + n, sizeof(line) - (size_t)n, " = %d", c->result);
		} else if (makes_fd) {
			n += snprintf(line + n, sizeof(line) - (size_t)n, " = fd");
		} else {
			n += snprintf(line + n, sizeof(line) - (size_t)n, " = %d", c->result);
		}
		if ((size_t)n >= sizeof(line) - 1)
			n = (int)sizeof(line) - 2;
		line[n++] = '\n';
		line[n] = '\0';
		if (buf && total + (size_t)n < len)
			memcpy(buf + total, line, (size_t)n + 1);
		else if (buf && len && total < len)
			buf[total] = '\0';
		total += (size_t)n;
	}
	pthread_mutex_unlock(&m->lock);
	return total;
}

int kmodel_vm_count(struct kmodel *m)
{
	pthread_mutex_lock(&m->lock);
	int n = m->nvms;
	pthread_mutex_unlock(&m->lock);
	return n;
}

int kmodel_vm_fd(struct kmodel *m, int index)
{
	pthread_mutex_lock(&m->lock);
	int r = (index >= 0 && index < m->nvms) ? m->vms[index].fd : -ENOENT;
	pthread_mutex_unlock(&m->lock);
	return r;
}

int kmodel_vm_state(struct kmodel *m, int vm_fd, struct kmodel_vm_state *out)
{
	pthread_mutex_lock(&m->lock);
	struct mvm *vm = vm_of_any(m, vm_fd);
	int r = -EBADF;
	if (vm) {
		memset(out, 0, sizeof(*out));
		out->vcpus = vm->vcpus;
		out->rusin_backdoor = vm->rusin_backdoor;
		out->rusin_hypercall = vm->rusin_hypercall;
		out->rusin_nested = vm->rusin_nested;
		out->single_mask = vm->single_mask;
		out->unrelated_enables = vm->unrelated_enables;
		out->closed = m->fds[vm_fd - KMODEL_FD_BASE].closed;
		r = 0;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

#define WITH_VCPU(m, fd, body)                                  \
	do {                                                    \
		pthread_mutex_lock(&(m)->lock);                 \
		struct mvcpu *v = vcpu_of((m), (fd));           \
		int r_ = -EBADF;                                \
		if (v) {                                        \
			body;                                   \
		}                                               \
		pthread_mutex_unlock(&(m)->lock);               \
		return r_;                                      \
	} while (0)

int kmodel_vcpu_vmcall(struct kmodel *m, int vcpu_fd)
{
	WITH_VCPU(m, vcpu_fd, { v->vmcall_armed = true; r_ = 0; });
}

int kmodel_vcpu_regs(struct kmodel *m, int vcpu_fd, struct kvm_regs *out)
{
	WITH_VCPU(m, vcpu_fd, { *out = v->regs; r_ = 0; });
}

int kmodel_vcpu_set_regs(struct kmodel *m, int vcpu_fd, const struct kvm_regs *regs)
{
	WITH_VCPU(m, vcpu_fd, { v->regs = *regs; r_ = 0; });
}

int kmodel_vcpu_sregs(struct kmodel *m, int vcpu_fd, struct kvm_sregs *out)
{
	WITH_VCPU(m, vcpu_fd, { *out = v->sregs; r_ = 0; });
}

int kmodel_vcpu_set_sregs(struct kmodel *m, int vcpu_fd, const struct kvm_sregs *sregs)
{
	WITH_VCPU(m, vcpu_fd, { v->sregs = *sregs; r_ = 0; });
}

int kmodel_vcpu_take_exception(struct kmodel *m, int vcpu_fd, struct kmodel_exception *out)
{
	WITH_VCPU(m, vcpu_fd, {
		r_ = v->exc_valid ? 1 : 0;
		if (v->exc_valid && out)
			*out = v->exc;
		v->exc_valid = false;
	});
}

int kmodel_vcpu_pending_hypercall(struct kmodel *m, int vcpu_fd)
{
	WITH_VCPU(m, vcpu_fd, { r_ = v->pending_hcall ? 1 : 0; });
}

int kmodel_vcpu_cpuid_count(struct kmodel *m, int vcpu_fd)
{
	WITH_VCPU(m, vcpu_fd, { r_ = v->cpuid_count; });
}

struct kvm_run *kmodel_vcpu_run_buffer(struct kmodel *m, int vcpu_fd)
{
	pthread_mutex_lock(&m->lock);
	struct mvcpu *v = vcpu_of(m, vcpu_fd);
	struct kvm_run *run = v ? v->run : NULL;
	pthread_mutex_unlock(&m->lock);
	return run;
}
