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
 *     (vmwkvm_rpc), with the Tools host side (vmwkvm_tools) on it: the RPCI commands Tools
 *     send (tools.set.version, log, info-set / info-get with the guestinfo store, ...),
 *     host-to-guest commands over TCLO (--tools-cmd) and the Tools state (-v);
 *   - the main thread waits on the watchdog, signals and the Tools' eventfd (poll);
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
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
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
	vmwkvm_tools *tools;

	/* --tools-cmd, sent one after the other once the guest has a TCLO channel open; under
	 * lock (the result arrives on a vCPU thread) */
	size_t tools_next;  /* index of the next command to send */
	bool tools_waiting; /* tools_next was sent, no result yet */
	int wake_fd;        /* eventfd: a result arrived, the main thread sends the next one */
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
static void guest_text(const char *what, uint8_t origin, uint8_t cpl, const char *text, size_t len)
{
	const size_t max = 512;
	flockfile(stderr);
	fprintf(stderr, PROG ": %s (%s, CPL %u): ", what, origin_name(origin), cpl);
	mvm_escape(stderr, text, len < max ? len : max);
	fputs(len > max ? "...\n" : "\n", stderr);
	funlockfile(stderr);
}

/* ------------------------------------------------------------------ Tools */

static const char k_guestinfo[] = "guestinfo.";
#define K_GUESTINFO_LEN (sizeof(k_guestinfo) - 1)

/* The Tools component's change callback (vCPU thread): what the guest's Tools reported. */
static void on_tools_change(vmwkvm_tools *tools, uint32_t what, void *ctx)
{
	(void)ctx;
	if (!(what & (VMWKVM_TOOLS_CHANGED_VERSION | VMWKVM_TOOLS_CHANGED_LOG)))
		return;
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	if (vmwkvm_tools_get_state(tools, &st) < 0)
		return;
	if (what & VMWKVM_TOOLS_CHANGED_VERSION) {
		char num[16];
		int n = snprintf(num, sizeof(num), "%u", st.version);
		guest_text("guest tools version", st.version_origin, st.version_cpl, num, (size_t)n);
	}
	if (what & VMWKVM_TOOLS_CHANGED_LOG)
		guest_text("guest log", st.log_origin, st.log_cpl, st.last_log, strlen(st.last_log));
}

/* --tools-cmd: a command finished (vCPU thread for an answer, main thread for a timeout). */
static void on_tools_result(vmwkvm_tools *tools, const struct vmwkvm_tools_result *res, void *ctx)
{
	(void)tools;
	struct vmm *m = ctx;
	pthread_mutex_lock(&m->lock);
	const char *cmd = m->opt.tools_cmds[m->tools_next];
	m->tools_waiting = false;
	m->tools_next++;
	pthread_mutex_unlock(&m->lock);
	uint64_t one = 1;
	ssize_t wr = write(m->wake_fd, &one, sizeof(one)); /* the Tools' eventfd may have woken the
							     main thread before this ran */
	(void)wr;
	static const char *const what[] = {"pending", "OK", "ERROR", "unexpected reply:", "no reply (timed out)",
					   "cancelled (the Tools' TCLO channel closed)"};
	const char *w = res->status < sizeof(what) / sizeof(what[0]) ? what[res->status] : "?";
	bool text = res->status >= VMWKVM_TOOLS_OK && res->status <= VMWKVM_TOOLS_BADREPLY;
	flockfile(stderr);
	fprintf(stderr, PROG ": tools-cmd \"%s\": %s", cmd, w);
	if (text && res->reply_len) {
		fputc(' ', stderr);
		mvm_escape(stderr, res->reply, res->reply_len < 512 ? res->reply_len : 512);
	}
	fputc('\n', stderr);
	funlockfile(stderr);
}

/* Main thread: the Tools' timeouts, and the next --tools-cmd once a TCLO channel is open.
 * Returns the milliseconds until the component's next deadline. */
static int tools_step(struct vmm *m)
{
	uint64_t ev;
	ssize_t rd = read(vmwkvm_tools_event_fd(m->tools), &ev, sizeof(ev)); /* clear them */
	rd = read(m->wake_fd, &ev, sizeof(ev));
	(void)rd;
	int next = vmwkvm_tools_process(m->tools);
	uint16_t id;
	pthread_mutex_lock(&m->lock);
	bool send = m->tools_next < m->opt.n_tools_cmds && !m->tools_waiting &&
		    vmwkvm_rpc_tclo_channels(m->rpc, &id, 1) > 0;
	const char *cmd = send ? m->opt.tools_cmds[m->tools_next] : NULL;
	if (send)
		m->tools_waiting = true;
	pthread_mutex_unlock(&m->lock);
	if (send) {
		int r = vmwkvm_tools_command(m->tools, -1, cmd, 0, on_tools_result, m, NULL);
		if (r < 0) {
			msg("tools-cmd \"%s\": not sent: %s", cmd, vmwkvm_strerror(r));
			pthread_mutex_lock(&m->lock);
			m->tools_waiting = false;
			m->tools_next++;
			pthread_mutex_unlock(&m->lock);
			next = 0; /* the next one at once */
		}
	}
	/* no event tells that the guest opened its TCLO channel: while commands wait for one,
	 * look again every 50 ms */
	pthread_mutex_lock(&m->lock);
	bool waiting_for_tools = m->tools_next < m->opt.n_tools_cmds && !m->tools_waiting;
	pthread_mutex_unlock(&m->lock);
	if (next < 0 || (waiting_for_tools && next > 50))
		next = waiting_for_tools ? 50 : 1000;
	return next;
}

/* At exit: the --tools-cmd commands that got no result, and with -v the Tools state. */
static void tools_report(struct vmm *m)
{
	for (size_t i = m->tools_next; i < m->opt.n_tools_cmds; i++)
		msg("tools-cmd \"%s\": %s", m->opt.tools_cmds[i],
		    i == m->tools_next && m->tools_waiting ? "no reply (the VM ended first)"
							     : "not sent (the guest's Tools never opened a TCLO channel)");
	if (!m->opt.verbose)
		return;
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	vmwkvm_tools_process(m->tools);
	if (vmwkvm_tools_get_state(m->tools, &st) < 0)
		return;
	char age[32] = "never";
	if (st.last_answer_age_ns != UINT64_MAX)
		snprintf(age, sizeof(age), "%.1f s ago", (double)st.last_answer_age_ns / 1e9);
	if (st.version_set)
		msg("Tools state: version %u (type %u), %s, last TCLO answer %s", st.version, st.version_type,
		    st.running ? "running" : "not running", age);
	else
		msg("Tools state: no version reported, %s, last TCLO answer %s", st.running ? "running" : "not running",
		    age);
	msg("Tools state: %u capabilities, %u guest info values, %u guestinfo keys, %llu answers, %llu dropped, "
	    "%llu timeouts, %llu log lines%s%s", st.caps, st.guestinfo, st.keys, (unsigned long long)st.answers,
	    (unsigned long long)st.dropped, (unsigned long long)st.timeouts, (unsigned long long)st.logs,
	    st.app[0] ? ", unified loop " : "", st.app);
	for (uint32_t i = 0; i < st.caps; i++) {
		char name[128], value[128];
		if (vmwkvm_tools_capability(m->tools, i, name, sizeof(name), value, sizeof(value)) == 0)
			msg("Tools capability: %s%s%s", name, value[0] ? " = " : "", value);
	}
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
	m->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (m->wake_fd < 0)
		return -errno;
	struct vmwkvm_tools_opts to;
	memset(&to, 0, sizeof(to));
	to.sz = sizeof(to);
	to.cpu_mhz = tsc_khz / 1000u; /* GETMHZ (vmware-toolbox-cmd stat speed) */
	to.notify = on_tools_change;
	if ((r = vmwkvm_tools_new(m->rpc, &to, &m->tools)) < 0)
		return r;
	char key[K_GUESTINFO_LEN + MVM_STORE_MAX_KEY + 1];
	for (size_t i = 0; i < m->opt.n_presets; i++) {
		const struct mvm_preset *p = &m->opt.presets[i];
		snprintf(key, sizeof(key), "%s%.*s", k_guestinfo, (int)p->key_len, p->key);
		if ((r = vmwkvm_tools_info_set(m->tools, key, p->value, strlen(p->value))) < 0) {
			msg("--guestinfo %.*s: %s", (int)p->key_len, p->key, r == -E2BIG ? "value too long" : strerror(-r));
			return r;
		}
	}

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
	if ((r = vmwkvm_backdoor_enable_all_builtins(m->bd)) < 0 ||
	    (r = vmwkvm_tools_bind_backdoor(m->tools, m->bd)) < 0)
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
	vmwkvm_tools_free(m->tools);
	vmwkvm_rpc_free(m->rpc);
	vmwkvm_vm_free(m->vm);
	free(m->cpuid);
	if (m->mem)
		munmap(m->mem, m->mem_size);
	if (m->vm_fd >= 0)
		close(m->vm_fd);
	if (m->kvm_fd >= 0)
		close(m->kvm_fd);
	if (m->wake_fd >= 0)
		close(m->wake_fd);
}

/* The guestinfo.* store of the Tools component in the dump format (store.h). 0 or -errno. */
static int dump_tools_store(vmwkvm_tools *tools, FILE *f)
{
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	int r = tools ? vmwkvm_tools_get_state(tools, &st) : 0;
	if (r < 0 || !tools || !st.keys)
		return r;
	struct mvm_kv *e = calloc(st.keys, sizeof(*e));
	if (!e)
		return -ENOMEM;
	size_t n = 0;
	char key[VMWKVM_TOOLS_MAX_VALUE + 1];
	for (uint32_t i = 0; i < st.keys && r == 0; i++) {
		int klen = vmwkvm_tools_info_key(tools, i, key, sizeof(key));
		if (klen < (int)K_GUESTINFO_LEN)
			break; /* the store changed under us: dump what was read */
		int vlen = vmwkvm_tools_info_get(tools, key, NULL, 0);
		if (vlen < 0)
			continue;
		e[n].key = strdup(key + K_GUESTINFO_LEN);
		e[n].value = malloc((size_t)vlen + 1);
		if (!e[n].key || !e[n].value) {
			r = -ENOMEM;
		} else {
			e[n].value_len = (size_t)vmwkvm_tools_info_get(tools, key, e[n].value, (size_t)vlen);
			if (e[n].value_len > (size_t)vlen)
				e[n].value_len = (size_t)vlen;
		}
		n++;
	}
	if (r == 0)
		r = mvm_store_dump(e, n, f);
	for (size_t i = 0; i < n; i++) {
		free(e[i].key);
		free(e[i].value);
	}
	free(e);
	return r;
}

static int write_dump(struct vmm *m)
{
	FILE *f = fopen(m->opt.dump, "w");
	if (!f) {
		msg("--guestinfo-dump %s: %s", m->opt.dump, strerror(errno));
		return -1;
	}
	int r = dump_tools_store(m->tools, f);
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0) {
		msg("--guestinfo-dump %s: %s", m->opt.dump, strerror(-r));
		return -1;
	}
	return 0;
}

/* Wait until a vCPU ends the VM, a signal arrives, or the watchdog expires; meanwhile
 * serve the Tools component (its eventfd, its timeouts) and send the --tools-cmd commands. */
static void wait_for_end(struct vmm *m)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		finish(m, MVM_EXIT_VM_ERROR, "signalfd: %s", strerror(errno));
		return;
	}
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (!atomic_load(&m->stopping)) {
		long long wait_ms = tools_step(m);
		if (m->opt.timeout) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long long left = (long long)m->opt.timeout * 1000 - ((now.tv_sec - start.tv_sec) * 1000LL +
									   (now.tv_nsec - start.tv_nsec) / 1000000);
			if (left <= 0) {
				finish(m, MVM_EXIT_TIMEOUT, "watchdog: the guest did not finish within %u s (--timeout)",
				       m->opt.timeout);
				break;
			}
			if (left < wait_ms)
				wait_ms = left;
		}
		struct pollfd p[3] = {
			{.fd = sfd, .events = POLLIN},
			{.fd = vmwkvm_tools_event_fd(m->tools), .events = POLLIN},
			{.fd = m->wake_fd, .events = POLLIN},
		};
		if (poll(p, 3, (int)(wait_ms > 60000 ? 60000 : wait_ms)) <= 0 || !(p[0].revents & POLLIN))
			continue; /* a deadline, or the Tools changed: next pass */
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
			continue;
		int s = (int)si.ssi_signo;
		if (s == SIGINT || s == SIGTERM || s == SIGHUP)
			finish(m, 128 + s, "stopped by signal %d (%s)", s, strsignal(s));
		/* SIGUSR2: a vCPU ended the VM (checked by the loop) */
	}
	close(sfd);
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

	m->kvm_fd = m->vm_fd = m->wake_fd = -1;
	for (unsigned i = 0; i < MVM_MAX_VCPUS; i++)
		m->vcpus[i].fd = -1;
	m->main_thread = pthread_self();
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->console_lock, NULL);
	atomic_init(&m->stopping, false);
	/* presets: checked now, stored once the Tools component exists (setup_backdoor); a value
	 * must fit an info-get reply ("1 " + value) within the 64 KiB message cap */
	for (size_t i = 0; i < m->opt.n_presets; i++) {
		const struct mvm_preset *p = &m->opt.presets[i];
		bool key_ok = mvm_store_key_ok(p->key, p->key_len);
		if (!key_ok || strlen(p->value) > VMWKVM_RPC_DEFAULT_MESSAGE - 2) {
			msg("--guestinfo %.*s: %s", (int)p->key_len, p->key, key_ok ? "value too long" : "invalid key");
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
		return MVM_EXIT_NOINPUT;
	}
	struct mvm_vcpu_start start[MVM_MAX_VCPUS];
	for (unsigned i = 0; i < m->opt.vcpus; i++) {
		if (mvm_layout(&m->opt, image_size, i, &start[i], err, sizeof(err)) < 0) {
			msg("--guest %s: %s", m->opt.guest, err);
			free(image);
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
	tools_report(m);

out:
	fflush(stdout);
	if (m->opt.dump && m->vm && write_dump(m) < 0 && status == 0)
		status = MVM_EXIT_IOERR;
	teardown(m);
	free(image);
	pthread_mutex_destroy(&m->console_lock);
	pthread_mutex_destroy(&m->lock);
	return status;
}
