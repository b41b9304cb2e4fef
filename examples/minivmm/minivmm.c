/*
 * vmwkvm-minivmm: a small but real VMM that runs a flat binary guest on KVM and answers
 * the VMware backdoor through libvmwkvm's public API only.
 *
 * What it shows a VMM author, in the order main() does it:
 *   - wrap the VM (vmwkvm_vm_new) right after KVM_CREATE_VM;
 *   - set the per-VM VMware policy before any vCPU exists (vmwkvm_vm_set_vmware_policy);
 *   - present the VMware CPUID leaves (vmwkvm_cpuid_vmware) to every vCPU;
 *   - create vCPUs through the library (vmwkvm_vm_create_vcpu) and wrap them (vmwkvm_vcpu_new);
 *   - one command table (vmwkvm_backdoor) with the built-ins and a GuestRPC channel table
 *     (vmwkvm_rpc) serving info-set / info-get / tools.set.version / log;
 *   - in each vCPU thread: KVM_RUN, then vmwkvm_backdoor_handle_exit() first; whatever it
 *     leaves is an ordinary exit for the VMM (console, exit device, HLT, errors).
 *
 * Devices: port 0x3F8 console (stdout), port 0xF4 exit device. See vmwkvm-minivmm(1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <vmwkvm/vmwkvm.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "options.h"
#include "store.h"

#define PROG "vmwkvm-minivmm"

#define COM1 0x3F8u
#define EXIT_PORT 0xF4u

struct vmm;

struct vcpu {
	struct vmm *vmm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	vmwkvm_vcpu *h;
	pthread_t thread;
	atomic_bool started; /* read by other vCPU threads when they end the VM */
};

struct vmm {
	struct mvm_options opt;
	int kvm_fd;
	int vm_fd;
	size_t run_size;
	uint8_t *mem;
	size_t mem_size;
	vmwkvm_vm *vm;
	vmwkvm_rpc *rpc;
	vmwkvm_backdoor *bd;
	struct kvm_cpuid2 *cpuid;
	struct vcpu vcpus[MVM_MAX_VCPUS];
	unsigned nvcpus;
	pthread_t main_thread;

	pthread_mutex_t lock; /* stopping, status, running */
	atomic_bool stopping;
	int status;
	unsigned running;

	pthread_mutex_t console_lock;
	struct mvm_store store;
};

/* ------------------------------------------------------------------ messages */

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr, prefixed with the program name. */
static void msg(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, PROG ": %s\n", line);
}

/* Library log: stderr, except while a policy request runs without -v (then warnings are
 * held back so that a refusal is reported on one line). */
static struct {
	pthread_mutex_t lock;
	bool capture;
	char captured[512];
} g_log = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void log_cb(int level, const char *text, void *ctx)
{
	(void)ctx;
	static const char *const names[] = {"error", "warning", "info", "debug"};
	pthread_mutex_lock(&g_log.lock);
	if (g_log.capture) {
		if (level <= VMWKVM_LOG_WARN)
			snprintf(g_log.captured, sizeof(g_log.captured), "%s", text);
	} else {
		fprintf(stderr, PROG ": libvmwkvm %s: %s\n", (level >= 0 && level <= 3) ? names[level] : "log", text);
	}
	pthread_mutex_unlock(&g_log.lock);
}

/* ------------------------------------------------------------------ stopping */

static void kick_all(struct vmm *m)
{
	for (unsigned i = 0; i < m->nvcpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		if (v->run)
			__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (atomic_load(&v->started))
			pthread_kill(v->thread, SIGUSR1);
	}
	pthread_kill(m->main_thread, SIGUSR2);
}

static void finish(struct vmm *m, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* End the VM with an exit status (the first caller wins) and an optional message. */
static void finish(struct vmm *m, int status, const char *fmt, ...)
{
	pthread_mutex_lock(&m->lock);
	bool first = !atomic_load(&m->stopping);
	if (first) {
		m->status = status;
		atomic_store(&m->stopping, true);
	}
	pthread_mutex_unlock(&m->lock);
	if (!first)
		return;
	if (fmt) {
		char line[768];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		msg("%s", line);
	}
	kick_all(m);
}

static void on_kick(int sig)
{
	(void)sig;
}

/* ------------------------------------------------------------------ GuestRPC handlers */

static const char k_guestinfo[] = "guestinfo.";
#define K_GUESTINFO_LEN (sizeof(k_guestinfo) - 1)

/* "KEY VALUE" after "info-set guestinfo." */
static int rpc_info_set(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmm *m = ctx;
	const char *a = req->args;
	size_t n = req->args_len;
	if (n <= K_GUESTINFO_LEN || memcmp(a, k_guestinfo, K_GUESTINFO_LEN) != 0) {
		vmwkvm_rpc_out_printf(out, "Only guestinfo.* variables can be set");
		return -EPERM;
	}
	a += K_GUESTINFO_LEN;
	n -= K_GUESTINFO_LEN;
	const char *sp = memchr(a, ' ', n);
	size_t klen = sp ? (size_t)(sp - a) : n;
	const char *val = sp ? sp + 1 : "";
	size_t vlen = sp ? n - klen - 1 : 0;
	int r = mvm_store_set(&m->store, a, klen, val, vlen);
	switch (r) {
	case 0:
		return 0;
	case -EINVAL:
		vmwkvm_rpc_out_printf(out, "Invalid key");
		break;
	case -E2BIG:
		vmwkvm_rpc_out_printf(out, "Value too long (at most %d bytes)", MVM_STORE_MAX_VALUE);
		break;
	case -ENOSPC:
		vmwkvm_rpc_out_printf(out, "Too many keys (at most %d)", MVM_STORE_MAX_KEYS);
		break;
	default:
		vmwkvm_rpc_out_printf(out, "%s", strerror(-r));
		break;
	}
	return r;
}

/* "guestinfo.KEY" after "info-get " */
static int rpc_info_get(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmm *m = ctx;
	const char *a = req->args;
	size_t n = req->args_len;
	while (n && (a[n - 1] == ' ' || a[n - 1] == '\0'))
		n--;
	char buf[MVM_STORE_MAX_VALUE];
	long len = -ENOENT;
	if (n > K_GUESTINFO_LEN && memcmp(a, k_guestinfo, K_GUESTINFO_LEN) == 0)
		len = mvm_store_get(&m->store, a + K_GUESTINFO_LEN, n - K_GUESTINFO_LEN, buf, sizeof(buf));
	if (len < 0) {
		vmwkvm_rpc_out_printf(out, "No value found");
		return -ENOENT;
	}
	return vmwkvm_rpc_out_append(out, buf, (size_t)len);
}

static const char *origin_name(uint8_t origin)
{
	switch (origin) {
	case VMWKVM_ORIGIN_L1:
		return "L1";
	case VMWKVM_ORIGIN_L2:
		return "L2";
	default:
		return "origin unknown";
	}
}

/* Print guest text on stderr: bounded, control bytes escaped. */
static void guest_text(const char *what, const struct vmwkvm_rpci_request *req, const char *text, size_t len)
{
	const size_t max = 512;
	flockfile(stderr);
	fprintf(stderr, PROG ": %s (%s, CPL %u): ", what, origin_name(req->origin), req->cpl);
	mvm_escape(stderr, text, len < max ? len : max);
	fputs(len > max ? "...\n" : "\n", stderr);
	funlockfile(stderr);
}

static int rpc_tools_version(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)ctx;
	char num[16];
	size_t n = req->args_len;
	while (n && req->args[n - 1] == ' ')
		n--;
	if (n == 0 || n >= sizeof(num)) {
		vmwkvm_rpc_out_printf(out, "Invalid version");
		return -EINVAL;
	}
	memcpy(num, req->args, n);
	num[n] = '\0';
	char *end = NULL;
	errno = 0;
	unsigned long v = strtoul(num, &end, 10);
	if (errno || *end || num[0] < '0' || num[0] > '9' || v > 0xFFFFFFFFul) {
		vmwkvm_rpc_out_printf(out, "Invalid version");
		return -EINVAL;
	}
	guest_text("guest tools version", req, num, n);
	return 0;
}

static int rpc_log(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)out;
	(void)ctx;
	guest_text("guest log", req, req->args, req->args_len);
	return 0;
}

/* ------------------------------------------------------------------ devices */

static void console_out(struct vmm *m, const uint8_t *data, unsigned size, unsigned count)
{
	pthread_mutex_lock(&m->console_lock);
	for (unsigned i = 0; i < count; i++)
		putchar(data[(size_t)i * size]);
	pthread_mutex_unlock(&m->console_lock);
}

/* A minimal 16550 seen from the guest: nothing to receive, transmitter always empty. */
static uint8_t uart_read(unsigned port)
{
	switch (port - COM1) {
	case 2: /* IIR: no interrupt pending */
		return 0x01;
	case 5: /* LSR: THRE | TEMT */
		return 0x60;
	default:
		return 0x00;
	}
}

static void handle_pio(struct vcpu *v)
{
	struct vmm *m = v->vmm;
	struct kvm_run *run = v->run;
	uint64_t off = run->io.data_offset;
	uint64_t len = (uint64_t)run->io.size * run->io.count;
	if (off < sizeof(*run) || off > m->run_size || len > m->run_size - off) {
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: KVM_EXIT_IO data outside the kvm_run mapping", v->index);
		return;
	}
	uint8_t *data = (uint8_t *)run + off;
	unsigned port = run->io.port, size = run->io.size, count = run->io.count;
	if (run->io.direction == KVM_EXIT_IO_OUT) {
		if (port == COM1) {
			console_out(m, data, size, count);
		} else if (port == EXIT_PORT && count > 0) {
			pthread_mutex_lock(&m->console_lock);
			fflush(stdout);
			pthread_mutex_unlock(&m->console_lock);
			finish(m, data[0], NULL);
		}
		/* other ports: writes are ignored */
		return;
	}
	for (unsigned i = 0; i < count; i++) {
		for (unsigned b = 0; b < size; b++) {
			unsigned p = port + b;
			data[(size_t)i * size + b] = (p >= COM1 && p <= COM1 + 7) ? uart_read(p) : 0xFF;
		}
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	if (!run->mmio.is_write) {
		unsigned len = run->mmio.len <= sizeof(run->mmio.data) ? run->mmio.len : sizeof(run->mmio.data);
		memset(run->mmio.data, 0xFF, len);
	}
}

/* ------------------------------------------------------------------ vCPU threads */

static const char *internal_suberror(uint32_t s)
{
	switch (s) {
	case KVM_INTERNAL_ERROR_EMULATION:
		return "instruction emulation failed";
	case KVM_INTERNAL_ERROR_SIMUL_EX:
		return "exception while delivering an exception";
	case KVM_INTERNAL_ERROR_DELIVERY_EV:
		return "event delivery failed";
	case 4:
		return "unexpected exit reason";
	default:
		return "unknown suberror";
	}
}

/* "CS:RIP 0000:00001234" for messages. */
static const char *where(struct vcpu *v, char *buf, size_t len)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		snprintf(buf, len, "an unknown address");
	else
		snprintf(buf, len, "CS:RIP %04x:%08llx (CPL %u)", sregs.cs.selector, (unsigned long long)regs.rip,
			 sregs.cs.selector & 3u);
	return buf;
}

/* Returns true when the vCPU stops (HLT, error). */
static bool handle_exit(struct vcpu *v)
{
	struct vmm *m = v->vmm;
	struct kvm_run *run = v->run;
	char w[96];

	/* The library first: a backdoor access (LB, HB piece, hypercall) is answered and
	 * completed there; anything else is left untouched for us. */
	int r = vmwkvm_backdoor_handle_exit(m->bd, v->h);
	if (r < 0) {
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: backdoor exit handling failed: %s", v->index, vmwkvm_strerror(r));
		return true;
	}
	if (r == 1)
		return false;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_pio(v);
		return false;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		return false;
	case KVM_EXIT_INTR:
		return false;
	case KVM_EXIT_HLT: {
		pthread_mutex_lock(&m->lock);
		unsigned left = --m->running;
		pthread_mutex_unlock(&m->lock);
		if (left == 0)
			finish(m, MVM_EXIT_ALL_HALTED,
			       "every vCPU halted without writing to port 0xF4 (exit status %d)", MVM_EXIT_ALL_HALTED);
		return true;
	}
	case KVM_EXIT_SHUTDOWN:
		/* AMD resets the vCPU at a shutdown, so the registers may no longer show the fault */
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: the guest shut down (triple fault); registers afterwards: %s",
		       v->index, where(v, w, sizeof(w)));
		return true;
	case KVM_EXIT_INTERNAL_ERROR:
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: KVM internal error %u (%s) at %s", v->index,
		       run->internal.suberror, internal_suberror(run->internal.suberror), where(v, w, sizeof(w)));
		return true;
	case KVM_EXIT_FAIL_ENTRY:
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: VM entry failed (hardware reason 0x%llx)", v->index,
		       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return true;
	case KVM_EXIT_SYSTEM_EVENT:
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: system event %u (shutdown/reset/crash) at %s", v->index,
		       run->system_event.type, where(v, w, sizeof(w)));
		return true;
	default:
		finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: unexpected KVM exit reason %u at %s", v->index, run->exit_reason,
		       where(v, w, sizeof(w)));
		return true;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vmm *m = v->vmm;
	sigset_t kick;
	sigemptyset(&kick);
	sigaddset(&kick, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

	while (!atomic_load(&m->stopping)) {
		int r = vmwkvm_vcpu_run(v->h);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r == VMWKVM_RUN_MEMORY_FAULT) {
			finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: memory fault exit (guest access outside usable RAM)",
			       v->index);
			break;
		}
		if (r < 0) {
			finish(m, MVM_EXIT_VM_ERROR, "vCPU %u: KVM_RUN failed: %s", v->index, strerror(-r));
			break;
		}
		if (handle_exit(v))
			break;
	}
	return NULL;
}

/* ------------------------------------------------------------------ setup */

static int read_image(const char *path, uint8_t **data, size_t *size, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = errno ? -errno : -EINVAL;
		close(fd);
		return S_ISREG(st.st_mode) ? e : -EINVAL;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	size_t n = (size_t)st.st_size;
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? -errno : -EIO;
			free(buf);
			close(fd);
			return e;
		}
		got += (size_t)r;
	}
	close(fd);
	*data = buf;
	*size = n;
	return 0;
}

/* KVM_GET_SUPPORTED_CPUID, growing the array until it fits; room for `spare` more entries. */
static struct kvm_cpuid2 *supported_cpuid(int kvm_fd, unsigned spare, int *err)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (n + spare) * sizeof(c->entries[0]));
		if (!c) {
			*err = -ENOMEM;
			return NULL;
		}
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		*err = -errno;
		free(c);
		if (*err != -E2BIG)
			return NULL;
	}
	*err = -E2BIG;
	return NULL;
}

static struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || c->entries[i].index == idx))
			return &c->entries[i];
	return NULL;
}

#define CPUID_SPARE 8

/* CPU vendor from leaf 0, for the hypercall instruction the library may advertise. */
static uint32_t cpu_vendor(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *l0 = cpuid_find(c, 0, 0);
	char v[13] = "";
	if (l0) {
		memcpy(v, &l0->ebx, 4);
		memcpy(v + 4, &l0->edx, 4);
		memcpy(v + 8, &l0->ecx, 4);
	}
	if (!strcmp(v, "GenuineIntel") || !strcmp(v, "CentaurHauls") || !strcmp(v, "  Shanghai  "))
		return VMWKVM_CPU_VENDOR_INTEL;
	if (!strcmp(v, "AuthenticAMD") || !strcmp(v, "HygonGenuine"))
		return VMWKVM_CPU_VENDOR_AMD;
	return VMWKVM_CPU_VENDOR_UNKNOWN;
}

/*
 * The CPUID table every vCPU gets: what KVM supports, the hypervisor bit (CPUID.1:ECX[31])
 * set, and either the VMware leaves (written by the library) or KVM's own signature leaf.
 */
static int build_cpuid(struct vmm *m, uint32_t tsc_khz)
{
	int err = 0;
	struct kvm_cpuid2 *c = supported_cpuid(m->kvm_fd, CPUID_SPARE, &err);
	if (!c)
		return err;
	struct kvm_cpuid_entry2 *leaf1 = cpuid_find(c, 1, 0);
	if (leaf1)
		leaf1->ecx |= 1u << 31;
	if (m->opt.cpuid == MVM_CPUID_VMWARE) {
		struct vmwkvm_cpuid_opts co;
		memset(&co, 0, sizeof(co));
		co.sz = sizeof(co);
		co.cpu_vendor = cpu_vendor(c);
		co.tsc_khz = tsc_khz; /* the GETHZ built-in reports the same value */
		co.apic_bus_khz = VMWKVM_CPUID_APIC_BUS_KHZ_DEFAULT;
		co.vcpu_fd = m->vcpus[0].fd;
		co.vcpu_fd_set = 1;
		int r = vmwkvm_cpuid_vmware(m->vm, c->entries, c->nent, c->nent + CPUID_SPARE, &co);
		if (r < 0) {
			free(c);
			return r;
		}
		c->nent = (uint32_t)r;
	} else if (!cpuid_find(c, 0x40000000, 0)) {
		/* KVM normally reports its signature leaf; add it if this kernel did not */
		struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
		memset(e, 0, sizeof(*e));
		e->function = 0x40000000;
		e->eax = 0x40000001;
		memcpy(&e->ebx, "KVMK", 4);
		memcpy(&e->ecx, "VMKV", 4);
		memcpy(&e->edx, "M\0\0\0", 4);
	}
	m->cpuid = c;
	return 0;
}

/* Per-vCPU copy of the CPUID table with its APIC id, then KVM_SET_CPUID2. */
static int set_vcpu_cpuid(struct vmm *m, struct vcpu *v)
{
	size_t sz = sizeof(*m->cpuid) + m->cpuid->nent * sizeof(m->cpuid->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return -ENOMEM;
	memcpy(c, m->cpuid, sz);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == 1)
			e->ebx = (e->ebx & 0x00FFFFFFu) | (v->index << 24);
		else if (e->function == 0xB || e->function == 0x1F)
			e->edx = v->index;
	}
	int r = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	free(c);
	return r;
}

static void flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xFFFFFFFFu;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

static int set_vcpu_state(struct vmm *m, struct vcpu *v, const struct mvm_vcpu_start *st)
{
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	if (m->opt.mode == MVM_MODE_REAL) {
		struct kvm_segment *segs[] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss};
		for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++) {
			segs[i]->selector = st->seg;
			segs[i]->base = (uint64_t)st->seg << 4;
		}
	} else {
		flat_seg(&s.cs, MVM_SEL_CODE0, 0xB);
		flat_seg(&s.ds, MVM_SEL_DATA0, 0x3);
		s.es = s.fs = s.gs = s.ss = s.ds;
		s.gdt.base = MVM_GDT_GPA;
		s.gdt.limit = (uint16_t)(sizeof(mvm_gdt) - 1);
		s.cr0 |= 1u;            /* PE */
		s.cr0 &= ~(1ull << 31); /* no paging */
	}
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rip = st->ip;
	r.rsp = st->sp;
	r.rdi = st->edi;
	r.rsi = st->esi;
	r.rflags = st->rflags;
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return -errno;
	return 0;
}

static int cmd_from_name(const char *name)
{
	return vmwkvm_backdoor_command_from_name(name);
}

static uint32_t policy_flags(uint32_t mvm)
{
	uint32_t f = 0;
	if (mvm & MVM_POLICY_BACKDOOR)
		f |= VMWKVM_POLICY_BACKDOOR;
	if (mvm & MVM_POLICY_HYPERCALL)
		f |= VMWKVM_POLICY_HYPERCALL;
	if (mvm & MVM_POLICY_NESTED)
		f |= VMWKVM_POLICY_NESTED_BACKDOOR;
	return f;
}

/*
 * Returns 0, or an exit status after printing one line. The library explains a refusal
 * through the log callback; without -v that text is held back so that the refusal stays
 * one line (with -v it is printed as it comes, before our line).
 */
static int apply_policy(struct vmm *m)
{
	uint32_t flags = policy_flags(m->opt.policy);
	char text[64];
	vmwkvm_policy_flags_format(flags, text, sizeof(text));
	bool quiet = m->opt.verbose == 0;
	if (quiet) {
		pthread_mutex_lock(&g_log.lock);
		g_log.capture = true;
		g_log.captured[0] = '\0';
		pthread_mutex_unlock(&g_log.lock);
	}
	int r = vmwkvm_vm_set_vmware_policy(m->vm, flags);
	bool explained = false;
	if (quiet) {
		pthread_mutex_lock(&g_log.lock);
		g_log.capture = false;
		explained = g_log.captured[0] != '\0';
		pthread_mutex_unlock(&g_log.lock);
	}
	if (r == 0) {
		if (m->opt.verbose)
			msg("VMware policy in force: %s", text);
		return 0;
	}
	struct vmwkvm_vmware_policy p;
	memset(&p, 0, sizeof(p));
	p.sz = sizeof(p);
	vmwkvm_vm_get_vmware_policy(m->vm, &p);
	const char *param = p.module_param == VMWKVM_PARAM_ON ? "Y" : p.module_param == VMWKVM_PARAM_OFF ? "N" : "unreadable";
	const char *more = explained ? "; -v shows the library's reasons" : "";
	if (r == -EOPNOTSUPP)
		msg("--vmware-policy %s: this kernel cannot do it (dialect %s, kvm.enable_vmware_backdoor=%s%s)", text,
		    vmwkvm_dialect_name(p.dialect), param, more);
	else
		msg("--vmware-policy %s: %s (dialect %s%s)", text, vmwkvm_strerror(r), vmwkvm_dialect_name(p.dialect), more);
	return r == -EOPNOTSUPP ? MVM_EXIT_UNAVAILABLE : MVM_EXIT_VM_ERROR;
}

static int setup_backdoor(struct vmm *m, uint32_t tsc_khz)
{
	struct vmwkvm_rpc_opts ro;
	memset(&ro, 0, sizeof(ro));
	ro.sz = sizeof(ro);
	int r = vmwkvm_rpc_new(&ro, &m->rpc);
	if (r < 0)
		return r;
	if ((r = vmwkvm_rpc_register(m->rpc, "info-set", rpc_info_set, m)) < 0 ||
	    (r = vmwkvm_rpc_register(m->rpc, "info-get", rpc_info_get, m)) < 0 ||
	    (r = vmwkvm_rpc_register(m->rpc, "tools.set.version", rpc_tools_version, m)) < 0 ||
	    (r = vmwkvm_rpc_register(m->rpc, "log", rpc_log, m)) < 0)
		return r;

	struct vmwkvm_backdoor_opts bo;
	memset(&bo, 0, sizeof(bo));
	bo.sz = sizeof(bo);
	bo.tsc_hz = (uint64_t)tsc_khz * 1000u;
	bo.apic_hz = VMWKVM_CPUID_APIC_BUS_KHZ_DEFAULT * 1000u; /* as in CPUID 0x40000010 EBX */
	bo.ram_bytes = m->mem_size;
	if (getrandom(bo.uuid, sizeof(bo.uuid), 0) == (ssize_t)sizeof(bo.uuid)) {
		bo.uuid[6] = (uint8_t)((bo.uuid[6] & 0x0F) | 0x40); /* version 4 */
		bo.uuid[8] = (uint8_t)((bo.uuid[8] & 0x3F) | 0x80); /* variant 1 */
		bo.uuid_set = 1;
	}
	bo.rpc = m->rpc;
	if ((r = vmwkvm_backdoor_new(&bo, &m->bd)) < 0)
		return r;
	if ((r = vmwkvm_backdoor_enable_all_builtins(m->bd)) < 0)
		return r;
	if (m->opt.l2_allow_set &&
	    (r = vmwkvm_backdoor_filter_allow_only(m->bd, VMWKVM_BDOOR_FROM_L2, m->opt.l2_allow, m->opt.n_l2_allow)) < 0)
		return r;
	return 0;
}

static void teardown(struct vmm *m)
{
	for (unsigned i = 0; i < m->nvcpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		vmwkvm_vcpu_free(v->h);
		if (v->run)
			munmap(v->run, m->run_size);
		if (v->fd >= 0)
			close(v->fd);
	}
	vmwkvm_backdoor_free(m->bd);
	vmwkvm_rpc_free(m->rpc);
	vmwkvm_vm_free(m->vm);
	free(m->cpuid);
	if (m->mem)
		munmap(m->mem, m->mem_size);
	if (m->vm_fd >= 0)
		close(m->vm_fd);
	if (m->kvm_fd >= 0)
		close(m->kvm_fd);
}

static int write_dump(struct vmm *m)
{
	FILE *f = fopen(m->opt.dump, "w");
	if (!f) {
		msg("--guestinfo-dump %s: %s", m->opt.dump, strerror(errno));
		return -1;
	}
	int r = mvm_store_dump(&m->store, f);
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0) {
		msg("--guestinfo-dump %s: %s", m->opt.dump, strerror(-r));
		return -1;
	}
	return 0;
}

/* Wait until a vCPU ends the VM, a signal arrives, or the watchdog expires. */
static void wait_for_end(struct vmm *m)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += m->opt.timeout;
	while (!atomic_load(&m->stopping)) {
		struct timespec now, left;
		int s;
		if (m->opt.timeout) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			left.tv_sec = deadline.tv_sec - now.tv_sec;
			left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
			if (left.tv_nsec < 0) {
				left.tv_nsec += 1000000000L;
				left.tv_sec--;
			}
			if (left.tv_sec < 0) {
				finish(m, MVM_EXIT_TIMEOUT, "watchdog: the guest did not finish within %u s (--timeout)",
				       m->opt.timeout);
				break;
			}
			s = sigtimedwait(&set, NULL, &left);
		} else {
			s = sigwaitinfo(&set, NULL);
		}
		if (s == SIGINT || s == SIGTERM || s == SIGHUP)
			finish(m, 128 + s, "stopped by signal %d (%s)", s, strsignal(s));
		/* SIGUSR2: a vCPU ended the VM (checked by the loop); EAGAIN: deadline (next pass) */
	}
}

static struct vmm g_vmm;

int main(int argc, char **argv)
{
	struct vmm *m = &g_vmm;
	char err[256];
	int status = 0;

	if (mvm_parse_args(argc, (const char *const *)argv, cmd_from_name, &m->opt, err, sizeof(err)) < 0) {
		msg("%s (try --help)", err);
		return MVM_EXIT_USAGE;
	}
	if (m->opt.help) {
		fputs(mvm_usage, stdout);
		return 0;
	}
	if (m->opt.version) {
		printf(PROG " %s (libvmwkvm %s)\n", VMWKVM_VERSION_STRING, vmwkvm_version_string());
		return 0;
	}
	int level = m->opt.verbose >= 2 ? VMWKVM_LOG_DEBUG : m->opt.verbose == 1 ? VMWKVM_LOG_INFO : VMWKVM_LOG_WARN;
	vmwkvm_set_log(log_cb, NULL, level);
	setvbuf(stdout, NULL, _IOLBF, 0);

	m->kvm_fd = m->vm_fd = -1;
	for (unsigned i = 0; i < MVM_MAX_VCPUS; i++)
		m->vcpus[i].fd = -1;
	m->main_thread = pthread_self();
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->console_lock, NULL);
	atomic_init(&m->stopping, false);
	mvm_store_init(&m->store);
	for (size_t i = 0; i < m->opt.n_presets; i++) {
		const struct mvm_preset *p = &m->opt.presets[i];
		int r = mvm_store_set(&m->store, p->key, p->key_len, p->value, strlen(p->value));
		if (r < 0) {
			msg("--guestinfo %.*s: %s", (int)p->key_len, p->key,
			    r == -EINVAL ? "invalid key" : r == -E2BIG ? "value too long" : strerror(-r));
			mvm_store_destroy(&m->store);
			return MVM_EXIT_USAGE;
		}
	}

	/* The image and its layout first: these errors do not depend on KVM. */
	m->mem_size = (size_t)m->opt.mem_mib << 20;
	uint8_t *image = NULL;
	size_t image_size = 0;
	int r = read_image(m->opt.guest, &image, &image_size, m->mem_size);
	if (r < 0) {
		msg("--guest %s: %s", m->opt.guest, r == -EFBIG ? "larger than guest RAM" : strerror(-r));
		mvm_store_destroy(&m->store);
		return MVM_EXIT_NOINPUT;
	}
	struct mvm_vcpu_start start[MVM_MAX_VCPUS];
	for (unsigned i = 0; i < m->opt.vcpus; i++) {
		if (mvm_layout(&m->opt, image_size, i, &start[i], err, sizeof(err)) < 0) {
			msg("--guest %s: %s", m->opt.guest, err);
			free(image);
			mvm_store_destroy(&m->store);
			return MVM_EXIT_NOINPUT;
		}
	}

	/* KVM */
	m->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (m->kvm_fd < 0) {
		int e = errno;
		msg("cannot open /dev/kvm: %s (KVM is not available here; exit status %d)", strerror(e),
		    MVM_EXIT_NO_KVM);
		free(image);
		mvm_store_destroy(&m->store);
		return MVM_EXIT_NO_KVM;
	}
	int api = ioctl(m->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		msg("/dev/kvm: unsupported KVM API version %d (exit status %d)", api, MVM_EXIT_NO_KVM);
		status = MVM_EXIT_NO_KVM;
		goto out;
	}
	m->vm_fd = ioctl(m->kvm_fd, KVM_CREATE_VM, 0);
	if (m->vm_fd < 0) {
		msg("KVM_CREATE_VM: %s (KVM is not usable here; exit status %d)", strerror(errno), MVM_EXIT_NO_KVM);
		status = MVM_EXIT_NO_KVM;
		goto out;
	}
	int mmap_size = ioctl(m->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(struct kvm_run)) {
		msg("KVM_GET_VCPU_MMAP_SIZE: %s", mmap_size < 0 ? strerror(errno) : "too small");
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}
	m->run_size = (size_t)mmap_size;

	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = m->kvm_fd;
	vo.kvm_fd_set = 1;
	if ((r = vmwkvm_vm_new(m->vm_fd, &vo, &m->vm)) < 0) {
		msg("vmwkvm_vm_new: %s", vmwkvm_strerror(r));
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}

	/* RAM at GPA 0, the image, and (prot32) the GDT */
	void *mem = mmap(NULL, m->mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		msg("cannot allocate %u MiB of guest RAM: %s", m->opt.mem_mib, strerror(errno));
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}
	m->mem = mem;
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = m->mem_size,
		.userspace_addr = (uintptr_t)m->mem,
	};
	if (ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		msg("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}
	memcpy(m->mem + m->opt.load, image, image_size);
	if (m->opt.mode == MVM_MODE_PROT32)
		memcpy(m->mem + MVM_GDT_GPA, mvm_gdt, sizeof(mvm_gdt));

	/* The policy must be set before the first vCPU exists. */
	if (m->opt.policy_set && (status = apply_policy(m)) != 0)
		goto out;

	/* vCPUs */
	for (unsigned i = 0; i < m->opt.vcpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		v->vmm = m;
		v->index = i;
		m->nvcpus = i + 1;
		v->fd = vmwkvm_vm_create_vcpu(m->vm, i);
		if (v->fd < 0) {
			msg("vCPU %u: KVM_CREATE_VCPU: %s", i, vmwkvm_strerror(v->fd));
			status = MVM_EXIT_VM_ERROR;
			goto out;
		}
		void *run = mmap(NULL, m->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (run == MAP_FAILED) {
			msg("vCPU %u: mmap of kvm_run: %s", i, strerror(errno));
			status = MVM_EXIT_VM_ERROR;
			goto out;
		}
		v->run = run;
		if ((r = vmwkvm_vcpu_new(m->vm, v->fd, v->run, m->run_size, NULL, &v->h)) < 0) {
			msg("vCPU %u: vmwkvm_vcpu_new: %s", i, vmwkvm_strerror(r));
			status = MVM_EXIT_VM_ERROR;
			goto out;
		}
	}
	int khz = ioctl(m->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	uint32_t tsc_khz = khz > 0 ? (uint32_t)khz : 0;
	if ((r = build_cpuid(m, tsc_khz)) < 0) {
		msg("CPUID setup (--cpuid %s): %s", m->opt.cpuid == MVM_CPUID_KVM ? "kvm" : "vmware", vmwkvm_strerror(r));
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}
	for (unsigned i = 0; i < m->nvcpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		if ((r = set_vcpu_cpuid(m, v)) < 0 || (r = set_vcpu_state(m, v, &start[i])) < 0) {
			msg("vCPU %u: initial state: %s", i, strerror(-r));
			status = MVM_EXIT_VM_ERROR;
			goto out;
		}
	}
	if ((r = setup_backdoor(m, tsc_khz)) < 0) {
		msg("backdoor setup: %s", vmwkvm_strerror(r));
		status = MVM_EXIT_VM_ERROR;
		goto out;
	}

	/* Signals: SIGUSR1 kicks a vCPU out of KVM_RUN (unblocked only in vCPU threads); the
	 * main thread waits for SIGUSR2 (the VM ended), SIGINT/SIGTERM/SIGHUP and the watchdog. */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, NULL);

	m->running = m->nvcpus;
	for (unsigned i = 0; i < m->nvcpus; i++) {
		struct vcpu *v = &m->vcpus[i];
		int e = pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (e) {
			pthread_mutex_lock(&m->lock);
			m->running -= m->nvcpus - i;
			pthread_mutex_unlock(&m->lock);
			finish(m, MVM_EXIT_VM_ERROR, "cannot start the thread of vCPU %u: %s", i, strerror(e));
			break;
		}
		atomic_store(&v->started, true);
	}
	wait_for_end(m);
	for (unsigned i = 0; i < m->nvcpus; i++)
		if (atomic_load(&m->vcpus[i].started))
			pthread_join(m->vcpus[i].thread, NULL);
	status = m->status;

out:
	fflush(stdout);
	teardown(m);
	free(image);
	if (m->opt.dump && m->vm && write_dump(m) < 0 && status == 0)
		status = MVM_EXIT_IOERR;
	mvm_store_destroy(&m->store);
	pthread_mutex_destroy(&m->console_lock);
	pthread_mutex_destroy(&m->lock);
	return status;
}
