/* vmwhost: a user-mode "VMware host" for the ovt tests (a test fixture, never installed).
 *
 * It runs one program (vmware-checkvm, vmware-rpctool, vmware-toolbox-cmd, vmtoolsd) under
 * ptrace on this Linux host, with no hypervisor involved, and answers its VMware backdoor
 * accesses with libvmwkvm:
 * - CPUID faults (arch_prctl(ARCH_SET_CPUID, 0), re-armed after every execve by injecting
 *   the syscall at the exec stop); the tracer answers with the real CPUID except the
 *   hypervisor leaves 0x40000000.., which come from vmwkvm_cpuid_vmware() ("VMwareVMware",
 *   leaf 0x40000010 without hypercall bits, so ovt uses the I/O ports).
 * - IN/OUT EAX,DX on 0x5658 and REP INSB/OUTSB on 0x5659 fault at CPL3 (#GP -> SIGSEGV);
 *   the tracer decodes the instruction, builds a synthetic kvm_run exit, decodes it with
 *   vmwkvm_exit_decode_raw(), answers it with vmwkvm_backdoor_handle() (built-ins, the
 *   GuestRPC channel table and the Tools component) and applies the reply to the
 *   registers (and the memory of REP INSB) before skipping the instruction.
 * - Every other signal is delivered normally (ovt probes with faulting instructions).
 *
 * Safety (tests run as root): before exec the child sets PR_SET_NO_NEW_PRIVS and a seccomp
 * filter: reboot, clock/time setting, module loading, kexec, mount, swap, hostname,
 * iopl/ioperm and ptrace fail with EPERM, AF_VSOCK sockets with EAFNOSUPPORT (so Tools use
 * the backdoor), and execve/execveat stop in the tracer, which lets through only the
 * program given on the command line (the first exec) and --allow-exec paths. Tracees die
 * with the tracer (PTRACE_O_EXITKILL); a watchdog (--timeout) ends everything.
 *
 * Usage: vmwhost --probe    (exit 0 if this machine can run the fixture: ptrace, seccomp
 *                            filters and CPUID faulting; 77 and the reason if not)
 *        vmwhost [options] -- PROGRAM [ARGS...]
 *   --mhz N            GETMHZ answer (default 2000; 0 = GETMHZ unanswered) and TSC frequency
 *   --tools-cmd CMD    once a TCLO channel is open, send CMD (repeatable; in order, each
 *                      after the previous one's answer); results go to the report
 *   --term-after-cmds  after the last command's answer, send SIGTERM to the program
 *   --wait-version     with --term-after-cmds: also wait for tools.set.version
 *   --allow-exec PATH  let the program exec PATH too (repeatable)
 *   --report FILE      write the command results, denied execs and the Tools state here
 *   --cmd-timeout MS   per-command timeout (default 20000)
 *   --timeout S        watchdog (default 120)
 *   --guestinfo K=V    preset guestinfo.K for the guest's info-get (repeatable)
 *   --wait-guestinfo N with --term-after-cmds: also wait for SetGuestInfo type N (repeatable)
 *   --trace            write every HB transfer (the GuestRPC messages) to the report
 * Exit status: the program's (128 + signal if killed), 125 on a harness failure,
 * 124 on the watchdog.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cpuid.h>

#include <vmwkvm/vmwkvm.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

#define MAX_CMDS 32
#define MAX_ALLOW 8
#define MAX_PIDS 256
#define HB_MAX 65536u
#define DATA_OFF 4096u

static struct {
	unsigned mhz;
	const char *cmds[MAX_CMDS];
	int ncmds;
	bool term_after;
	bool wait_version;
	const char *allow[MAX_ALLOW];
	int nallow;
	FILE *report;
	unsigned cmd_timeout_ms;
	unsigned timeout_s;
	bool trace;
	unsigned wait_ginfo[8];
	int nwait_ginfo;
} opt = {.mhz = 2000, .cmd_timeout_ms = 20000, .timeout_s = 120};

static vmwkvm_rpc *rpc;
static vmwkvm_backdoor *bd;
static vmwkvm_tools *tools;
static struct kvm_cpuid_entry2 hv_leaves[64];
static int n_hv;
static unsigned char *runbuf;
static size_t runbuf_size;
static pid_t main_pid;
static bool debug;
#define DBG(...) do { if (debug) fprintf(stderr, "vmwhost: " __VA_ARGS__); } while (0)
static pid_t known[MAX_PIDS];
static int nknown;
static bool main_execed; /* the program itself is running (execs from now on are checked) */

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "vmwhost: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	_exit(125);
}

static void report(const char *fmt, ...)
{
	if (!opt.report)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(opt.report, fmt, ap);
	va_end(ap);
	fflush(opt.report);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "vmwhost: watchdog expired, killing the program\n";
	ssize_t r = write(2, m, sizeof(m) - 1);
	(void)r;
	if (main_pid > 0)
		kill(main_pid, SIGKILL);
	_exit(124); /* PTRACE_O_EXITKILL takes the rest */
}

/* ---------------------------------------------------------------- seccomp (child) */

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

static void install_seccomp(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		/* the x32 ABI is not for us */
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		DENY(__NR_reboot), DENY(__NR_settimeofday), DENY(__NR_clock_settime), DENY(__NR_clock_adjtime),
		DENY(__NR_adjtimex), DENY(__NR_kexec_load), DENY(__NR_kexec_file_load), DENY(__NR_init_module),
		DENY(__NR_finit_module), DENY(__NR_delete_module), DENY(__NR_mount), DENY(__NR_umount2),
		DENY(__NR_swapon), DENY(__NR_swapoff), DENY(__NR_sethostname), DENY(__NR_setdomainname),
		DENY(__NR_iopl), DENY(__NR_ioperm), DENY(__NR_ptrace), DENY(__NR_pivot_root),
		/* socket(AF_VSOCK, ...) */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execve, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_execveat, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		die("seccomp: %s", strerror(errno));
}

/* ---------------------------------------------------------------- CPUID */

static void build_cpuid(void)
{
	struct kvm_cpuid_entry2 e[66];
	memset(e, 0, sizeof(e));
	unsigned a, b, c, d;
	__cpuid_count(1, 0, a, b, c, d);
	e[0] = (struct kvm_cpuid_entry2){.function = 1, .eax = a, .ebx = b, .ecx = c | (1u << 31), .edx = d};
	int n = 1;
	struct vmwkvm_cpuid_opts o = {.sz = sizeof(o), .tsc_khz = opt.mhz ? opt.mhz * 1000u : 1000000u};
	int r = vmwkvm_cpuid_vmware(NULL, e, (uint32_t)n, 66, &o);
	if (r < 0)
		die("vmwkvm_cpuid_vmware: %s", vmwkvm_strerror(r));
	for (int i = 0; i < r; i++)
		if ((e[i].function & 0xFFFFFF00u) == 0x40000000u && n_hv < 64)
			hv_leaves[n_hv++] = e[i];
}

static void emulate_cpuid(struct user_regs_struct *regs)
{
	uint32_t leaf = (uint32_t)regs->rax, sub = (uint32_t)regs->rcx;
	unsigned a = 0, b = 0, c = 0, d = 0;
	if ((leaf & 0xF0000000u) == 0x40000000u) {
		for (int i = 0; i < n_hv; i++)
			if (hv_leaves[i].function == leaf) {
				a = hv_leaves[i].eax;
				b = hv_leaves[i].ebx;
				c = hv_leaves[i].ecx;
				d = hv_leaves[i].edx;
			}
	} else {
		__cpuid_count(leaf, sub, a, b, c, d);
		if (leaf == 1)
			c |= 1u << 31;
	}
	regs->rax = a;
	regs->rbx = b;
	regs->rcx = c;
	regs->rdx = d;
}

/* ---------------------------------------------------------------- tracee helpers */

static bool known_pid(pid_t p)
{
	for (int i = 0; i < nknown; i++)
		if (known[i] == p)
			return true;
	return false;
}

static void add_pid(pid_t p)
{
	if (!known_pid(p) && nknown < MAX_PIDS)
		known[nknown++] = p;
}

static void del_pid(pid_t p)
{
	for (int i = 0; i < nknown; i++)
		if (known[i] == p) {
			known[i] = known[--nknown];
			return;
		}
}

static int peek_bytes(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	struct iovec l = {buf, len}, r = {(void *)(uintptr_t)addr, len};
	return process_vm_readv(pid, &l, 1, &r, 1, 0) == (ssize_t)len ? 0 : -1;
}

static int poke_bytes(pid_t pid, uint64_t addr, const void *buf, size_t len)
{
	struct iovec l = {(void *)(uintptr_t)buf, len}, r = {(void *)(uintptr_t)addr, len};
	return process_vm_writev(pid, &l, 1, &r, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* Run arch_prctl(ARCH_SET_CPUID, 0) in a tracee stopped at its exec event. */
static void arm_cpuid_fault(pid_t pid)
{
	struct user_regs_struct saved, r;
	if (ptrace(PTRACE_GETREGS, pid, 0, &saved))
		die("GETREGS: %s", strerror(errno));
	errno = 0;
	long word = ptrace(PTRACE_PEEKTEXT, pid, (void *)saved.rip, 0);
	if (errno)
		die("PEEKTEXT: %s", strerror(errno));
	long patched = (word & ~0xFFFFL) | 0x050F; /* syscall */
	if (ptrace(PTRACE_POKETEXT, pid, (void *)saved.rip, (void *)patched))
		die("POKETEXT: %s", strerror(errno));
	/* At the exec stop the tracee is still inside execve: the first step may only return
	 * from it (the kernel then writes execve's result into RAX), so step until the
	 * injected instruction has really run. */
	for (int attempt = 0;; attempt++) {
		if (attempt == 3)
			die("inject: the syscall instruction did not run");
		r = saved;
		r.rax = SYS_arch_prctl;
		r.rdi = ARCH_SET_CPUID;
		r.rsi = 0;
		if (ptrace(PTRACE_SETREGS, pid, 0, &r) || ptrace(PTRACE_SINGLESTEP, pid, 0, 0))
			die("inject: %s", strerror(errno));
		int st;
		if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP)
			die("inject: unexpected stop 0x%x", st);
		if (ptrace(PTRACE_GETREGS, pid, 0, &r))
			die("GETREGS: %s", strerror(errno));
		if (r.rip == saved.rip + 2)
			break;
	}
	if ((long)r.rax != 0)
		die("arch_prctl(ARCH_SET_CPUID, 0) failed in the tracee: %ld (no CPUID faulting on this CPU?)",
		    (long)r.rax);
	if (ptrace(PTRACE_POKETEXT, pid, (void *)saved.rip, (void *)word) ||
	    ptrace(PTRACE_SETREGS, pid, 0, &saved))
		die("restore: %s", strerror(errno));
}

/* ---------------------------------------------------------------- backdoor */

static void trace_bytes(const char *dir, const unsigned char *p, size_t n)
{
	if (!opt.report)
		return;
	fprintf(opt.report, "trace %s %zu: ", dir, n);
	for (size_t i = 0; i < n && i < 160; i++)
		if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\')
			fputc(p[i], opt.report);
		else
			fprintf(opt.report, "\\x%02x", p[i]);
	fprintf(opt.report, n > 160 ? "...\n" : "\n");
	fflush(opt.report);
}

static void apply_reply(struct user_regs_struct *r, const struct vmwkvm_reply *rep)
{
	if (rep->set & VMWKVM_REPLY_EAX)
		r->rax = rep->eax;
	if (rep->set & VMWKVM_REPLY_EBX)
		r->rbx = rep->ebx;
	if (rep->set & VMWKVM_REPLY_ECX)
		r->rcx = rep->ecx;
	if (rep->set & VMWKVM_REPLY_EDX)
		r->rdx = rep->edx;
	if (rep->set & VMWKVM_REPLY_ESI)
		r->rsi = rep->esi;
	if (rep->set & VMWKVM_REPLY_EDI)
		r->rdi = rep->edi;
	if (rep->set & VMWKVM_REPLY_EBP)
		r->rbp = rep->ebp;
}

/* Returns true if the fault was a backdoor access (handled), false to deliver the signal. */
static bool handle_segv(pid_t pid)
{
	siginfo_t si;
	if (ptrace(PTRACE_GETSIGINFO, pid, 0, &si) || si.si_code != SI_KERNEL)
		return false;
	struct user_regs_struct r;
	if (ptrace(PTRACE_GETREGS, pid, 0, &r))
		return false;
	unsigned char ins[4];
	if (peek_bytes(pid, r.rip, ins, sizeof(ins)))
		return false;
	DBG("pid %d SIGSEGV at %llx: %02x %02x rax=%llx\n", pid, r.rip, ins[0], ins[1], r.rax);
	if (ins[0] == 0x0F && ins[1] == 0xA2) { /* CPUID */
		emulate_cpuid(&r);
		r.rip += 2;
		return ptrace(PTRACE_SETREGS, pid, 0, &r) == 0;
	}
	uint16_t port = (uint16_t)r.rdx;
	bool lb_in = ins[0] == 0xED, lb_out = ins[0] == 0xEF;
	bool hb_in = ins[0] == 0xF3 && ins[1] == 0x6C, hb_out = ins[0] == 0xF3 && ins[1] == 0x6E;
	if (!((lb_in || lb_out) && port == VMWKVM_BDOOR_PORT) && !((hb_in || hb_out) && port == VMWKVM_BDOORHB_PORT))
		return false;
	if ((hb_in || hb_out) && (r.eflags & (1u << 10)))
		return false; /* DF set: not what ovt does */

	struct kvm_run *run = (struct kvm_run *)runbuf;
	memset(runbuf, 0, DATA_OFF);
	run->exit_reason = KVM_EXIT_IO;
	run->io.port = port;
	run->io.data_offset = DATA_OFF;
	struct vmwkvm_cpu_state cpu;
	memset(&cpu, 0, sizeof(cpu));
	cpu.regs = (struct vmwkvm_regs){r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9,
					r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.eflags};
	cpu.cpl = 3;
	cpu.mode = r.cs == 0x33 ? VMWKVM_MODE_LONG64 : VMWKVM_MODE_PROT32;
	cpu.addr_bits = r.cs == 0x33 ? 64 : 32;
	uint64_t count = 0;
	if (lb_in || lb_out) {
		run->io.direction = lb_in ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT;
		run->io.size = 4;
		run->io.count = 1;
		uint32_t eax = (uint32_t)r.rax;
		memcpy(runbuf + DATA_OFF, &eax, 4);
	} else {
		count = r.rcx;
		if (cpu.addr_bits == 32)
			count &= 0xFFFFFFFFu;
		if (count == 0 || count > HB_MAX)
			count = count > HB_MAX ? HB_MAX + 1 : 0;
		run->io.size = 1;
		run->io.count = (uint32_t)(count > HB_MAX ? 1 : count);
		if (hb_out) {
			run->io.direction = KVM_EXIT_IO_OUT;
			cpu.regs.rcx = count > HB_MAX ? count - 1 : 0; /* KVM has counted the piece */
			if (count <= HB_MAX && peek_bytes(pid, r.rsi, runbuf + DATA_OFF, count))
				return false;
			if (opt.trace && count <= HB_MAX)
				trace_bytes("guest->host", runbuf + DATA_OFF, count);
		} else {
			run->io.direction = KVM_EXIT_IO_IN;
		}
	}
	struct vmwkvm_decode_env env = {.sz = sizeof(env), .run_size = runbuf_size, .hb_max = HB_MAX};
	struct vmwkvm_hb_state hb;
	memset(&hb, 0, sizeof(hb));
	struct vmwkvm_call call;
	struct vmwkvm_reply rep;
	memset(&rep, 0, sizeof(rep));
	int d = vmwkvm_exit_decode_raw(run, &cpu, &env, &hb, &call);
	if (d == VMWKVM_EXIT_CALL) {
		vmwkvm_backdoor_handle(bd, &call, &rep);
		apply_reply(&r, &rep);
		if (hb_in && count <= HB_MAX) {
			const void *src = rep.hb_data;
			if (!src) {
				memset(runbuf + DATA_OFF, 0, count);
				src = runbuf + DATA_OFF;
			}
			if (poke_bytes(pid, r.rdi, src, count))
				return false;
			if (opt.trace)
				trace_bytes("host->guest", src, count);
		}
	} else {
		/* refused the way the protocol says: IN reads all ones, the HB status loses SUCCESS */
		if (lb_in)
			r.rax = 0xFFFFFFFFu;
		if ((hb_in || hb_out) && d == VMWKVM_EXIT_INVALID && call.magic_ok)
			r.rbx &= 0xFFFFu;
	}
	if (hb_in || hb_out) {
		if (hb_in)
			r.rdi += r.rcx;
		else
			r.rsi += r.rcx;
		r.rcx = 0;
		r.rip += 2;
	} else {
		r.rip += 1;
	}
	return ptrace(PTRACE_SETREGS, pid, 0, &r) == 0;
}

/* ---------------------------------------------------------------- exec control */

static void read_string(pid_t pid, uint64_t addr, char *buf, size_t cap)
{
	size_t i = 0;
	buf[0] = '\0';
	while (i + 1 < cap) {
		char c;
		if (peek_bytes(pid, addr + i, &c, 1) || !c)
			break;
		buf[i++] = c;
	}
	buf[i] = '\0';
}

static void handle_seccomp(pid_t pid)
{
	struct user_regs_struct r;
	if (ptrace(PTRACE_GETREGS, pid, 0, &r))
		return;
	char path[512];
	read_string(pid, r.orig_rax == __NR_execveat ? r.rsi : r.rdi, path, sizeof(path));
	bool ok = false;
	if (pid == main_pid && !main_execed)
		ok = true; /* the child's own exec of the program (execvp may try several paths) */
	for (int i = 0; !ok && i < opt.nallow; i++)
		ok = !strcmp(path, opt.allow[i]);
	if (ok)
		return;
	report("denied exec: %s\n", path);
	r.orig_rax = (unsigned long long)-1; /* skip the system call */
	r.rax = (unsigned long long)-EPERM;
	ptrace(PTRACE_SETREGS, pid, 0, &r);
}

/* ---------------------------------------------------------------- Tools script */

static int next_cmd;
static uint64_t cur_id;
static bool cmd_busy, cmds_done, term_sent;

static const char *status_name(uint32_t s)
{
	static const char *n[] = {"PENDING", "OK", "ERROR", "BADREPLY", "TIMEOUT", "CANCELLED"};
	return s < 6 ? n[s] : "?";
}

static void on_result(vmwkvm_tools *t, const struct vmwkvm_tools_result *res, void *ctx)
{
	(void)t;
	const char *cmd = ctx;
	report("tclo: %s -> %s \"%.*s\"\n", cmd, status_name(res->status), (int)res->reply_len, res->reply);
	cmd_busy = false;
}

static void script_step(void)
{
	if (cmd_busy || cmds_done)
		return;
	if (next_cmd >= opt.ncmds) {
		cmds_done = true;
		return;
	}
	int r = vmwkvm_tools_command(tools, -1, opt.cmds[next_cmd], opt.cmd_timeout_ms, on_result,
				     (void *)opt.cmds[next_cmd], &cur_id);
	if (r == -ENOENT)
		return; /* no TCLO channel yet */
	if (r) {
		report("tclo: %s -> queue failed: %s\n", opt.cmds[next_cmd], vmwkvm_strerror(r));
		next_cmd++;
		return;
	}
	cmd_busy = true;
	next_cmd++;
}

static void maybe_term(void)
{
	if (!opt.term_after || term_sent || !cmds_done || main_pid <= 0)
		return;
	for (int k = 0; k < opt.nwait_ginfo; k++)
		if (vmwkvm_tools_guest_info(tools, opt.wait_ginfo[k], NULL, 0) < 0)
			return;
	if (opt.wait_version) {
		struct vmwkvm_tools_state st = {.sz = sizeof(st)};
		vmwkvm_tools_get_state(tools, &st);
		if (!st.version_set)
			return;
	}
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	vmwkvm_tools_get_state(tools, &st);
	report("running before SIGTERM: %u\n", st.running);
	kill(main_pid, SIGTERM);
	term_sent = true;
}

static void print_state(void)
{
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	if (vmwkvm_tools_get_state(tools, &st))
		return;
	report("state: version=%u type=%u version_set=%u unified_loop=%u app=\"%s\" caps=%u guestinfo=%u keys=%u "
	       "answers=%llu dropped=%llu timeouts=%llu logs=%llu running=%u\n",
	       st.version, st.version_type, st.version_set, st.unified_loop, st.app, st.caps, st.guestinfo, st.keys,
	       (unsigned long long)st.answers, (unsigned long long)st.dropped, (unsigned long long)st.timeouts,
	       (unsigned long long)st.logs, st.running);
	for (uint32_t i = 0; i < st.caps; i++) {
		char name[128], value[256];
		if (!vmwkvm_tools_capability(tools, i, name, sizeof(name), value, sizeof(value)))
			report("cap: %s=%s\n", name, value);
	}
	for (uint32_t ty = 0; ty <= VMWKVM_TOOLS_MAX_GUESTINFO_TYPE; ty++) {
		char buf[256];
		int n = vmwkvm_tools_guest_info(tools, ty, buf, sizeof(buf) - 1);
		if (n < 0)
			continue;
		bool text = true;
		for (int i = 0; i < n && i < (int)sizeof(buf) - 1; i++)
			text &= buf[i] >= 0x20 && buf[i] < 0x7F;
		if (text) {
			buf[n < (int)sizeof(buf) - 1 ? n : (int)sizeof(buf) - 1] = '\0';
			report("guestinfo: %u=%s\n", ty, buf);
		} else {
			report("guestinfo: %u=<%d bytes>\n", ty, n);
		}
	}
	static const char *keys[] = {"guestinfo.ip", "guestinfo.vmtools.description", "guestinfo.vmtools.versionString",
				     "guestinfo.vmtools.versionNumber", "guestinfo.vmtools.buildNumber"};
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		char v[256];
		int n = vmwkvm_tools_info_get(tools, keys[k], v, sizeof(v) - 1);
		if (n >= 0) {
			v[n < (int)sizeof(v) - 1 ? n : (int)sizeof(v) - 1] = '\0';
			report("key: %s=%s\n", keys[k], v);
		}
	}
	report("statechange: ok=%d state=%d\n", st.state_change_ok, st.state_change);
	report("last_log: %s\n", st.last_log);
}

/* ---------------------------------------------------------------- probe */

/* Can this machine run the fixture? A traced child must be able to install the seccomp
 * filter and switch on CPUID faulting (Intel, or AMD with CpuidUserDis). 0 yes, 77 no. */
static int probe(void)
{
	int p[2];
	if (pipe(p))
		return 125;
	pid_t pid = fork();
	if (pid < 0)
		return 125;
	if (pid == 0) {
		const char *why = NULL;
		if (ptrace(PTRACE_TRACEME, 0, 0, 0))
			why = "ptrace(PTRACE_TRACEME) refused";
		else if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0))
			why = "no CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0) fails)";
		else {
			struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
			struct sock_fprog prog = {.len = 1, .filter = f};
			if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
				why = "no seccomp filters";
		}
		if (why) {
			ssize_t r = write(p[1], why, strlen(why));
			(void)r;
		}
		_exit(why ? 1 : 0);
	}
	close(p[1]);
	char why[128] = "";
	ssize_t n = read(p[0], why, sizeof(why) - 1);
	why[n > 0 ? n : 0] = '\0';
	int st;
	waitpid(pid, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("ptrace, seccomp and CPUID faulting available\n");
		return 0;
	}
	printf("%s\n", why[0] ? why : "the probe child failed");
	return 77;
}

/* ---------------------------------------------------------------- main loop */

static void usage(void)
{
	fprintf(stderr, "usage: vmwhost [--mhz N] [--tools-cmd CMD]... [--term-after-cmds] [--wait-version] "
			"[--allow-exec PATH]... [--report FILE] [--cmd-timeout MS] [--timeout S] "
			"[--guestinfo K=V]... -- PROGRAM [ARGS...]\n");
	exit(125);
}

int main(int argc, char **argv)
{
	debug = getenv("VMWHOST_DEBUG") != NULL;
	if (argc == 2 && !strcmp(argv[1], "--probe"))
		return probe();
	const char *presets[16];
	int npre = 0;
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (i + 1 >= argc && strcmp(a, "--term-after-cmds") && strcmp(a, "--wait-version") && strcmp(a, "--trace"))
			usage();
		if (!strcmp(a, "--trace"))
			opt.trace = true;
		else if (!strcmp(a, "--mhz"))
			opt.mhz = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--tools-cmd") && opt.ncmds < MAX_CMDS)
			opt.cmds[opt.ncmds++] = argv[++i];
		else if (!strcmp(a, "--term-after-cmds"))
			opt.term_after = true;
		else if (!strcmp(a, "--wait-version"))
			opt.wait_version = true;
		else if (!strcmp(a, "--allow-exec") && opt.nallow < MAX_ALLOW)
			opt.allow[opt.nallow++] = argv[++i];
		else if (!strcmp(a, "--report")) {
			opt.report = fopen(argv[++i], "w");
			if (!opt.report)
				die("%s: %s", argv[i], strerror(errno));
		} else if (!strcmp(a, "--cmd-timeout"))
			opt.cmd_timeout_ms = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--timeout"))
			opt.timeout_s = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--wait-guestinfo") && opt.nwait_ginfo < 8)
			opt.wait_ginfo[opt.nwait_ginfo++] = (unsigned)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--guestinfo") && npre < 16)
			presets[npre++] = argv[++i];
		else
			usage();
	}
	if (i >= argc)
		usage();

	/* the host: channel table, backdoor, Tools component */
	struct vmwkvm_rpc_opts ro = {.sz = sizeof(ro)};
	struct vmwkvm_backdoor_opts bo = {.sz = sizeof(bo), .tsc_hz = (uint64_t)opt.mhz * 1000000u};
	struct vmwkvm_tools_opts to = {.sz = sizeof(to), .cpu_mhz = opt.mhz};
	int r;
	if ((r = vmwkvm_rpc_new(&ro, &rpc)) || (r = vmwkvm_backdoor_new(&bo, &bd)) ||
	    (r = vmwkvm_backdoor_enable_all_builtins(bd)) || (r = vmwkvm_backdoor_set_rpc(bd, rpc)) ||
	    (r = vmwkvm_tools_new(rpc, &to, &tools)) || (r = vmwkvm_tools_bind_backdoor(tools, bd)))
		die("library set-up: %s", vmwkvm_strerror(r));
	for (int k = 0; k < npre; k++) {
		char key[256];
		const char *eq = strchr(presets[k], '=');
		if (!eq || (size_t)(eq - presets[k]) + 11 > sizeof(key))
			usage();
		snprintf(key, sizeof(key), "guestinfo.%.*s", (int)(eq - presets[k]), presets[k]);
		if ((r = vmwkvm_tools_info_set(tools, key, eq + 1, strlen(eq + 1))))
			die("preset %s: %s", key, vmwkvm_strerror(r));
	}
	build_cpuid();
	runbuf_size = DATA_OFF + HB_MAX + 4096;
	runbuf = calloc(1, runbuf_size);
	if (!runbuf)
		die("out of memory");

	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	signal(SIGALRM, on_alarm);
	alarm(opt.timeout_s);

	main_pid = fork();
	if (main_pid < 0)
		die("fork: %s", strerror(errno));
	if (main_pid == 0) {
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		alarm(0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (ptrace(PTRACE_TRACEME, 0, 0, 0))
			die("PTRACE_TRACEME: %s", strerror(errno));
		raise(SIGSTOP);
		install_seccomp();
		execvp(argv[i], argv + i);
		fprintf(stderr, "vmwhost: exec %s: %s\n", argv[i], strerror(errno));
		_exit(127);
	}
	int st;
	if (waitpid(main_pid, &st, __WALL) != main_pid || !WIFSTOPPED(st))
		die("child did not stop");
	if (ptrace(PTRACE_SETOPTIONS, main_pid, 0,
		   (void *)(long)(PTRACE_O_EXITKILL | PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEEXEC |
				  PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK)))
		die("PTRACE_SETOPTIONS: %s", strerror(errno));
	add_pid(main_pid);
	ptrace(PTRACE_CONT, main_pid, 0, 0);

	int exit_code = 125;
	bool main_done = false, leftovers_killed = false;
	int wait_ms = 10;
	while (nknown > 0) {
		struct timespec ts = {0, (long)wait_ms * 1000000L};
		sigtimedwait(&chld, NULL, &ts);
		pid_t pid;
		while ((pid = waitpid(-1, &st, __WALL | WNOHANG)) > 0) {
			if (WIFEXITED(st) || WIFSIGNALED(st)) {
				if (pid == main_pid) {
					exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
					main_done = true;
				}
				del_pid(pid);
				continue;
			}
			if (!WIFSTOPPED(st))
				continue;
			int sig = WSTOPSIG(st), ev = st >> 16, deliver = 0;
			DBG("pid %d stop sig %d ev %d\n", pid, sig, ev);
			if (!known_pid(pid)) {
				add_pid(pid); /* new thread or child: its first stop is SIGSTOP */
				if (sig == SIGSTOP) {
					ptrace(PTRACE_CONT, pid, 0, 0);
					continue;
				}
			}
			if (sig == SIGTRAP && ev) {
				if (ev == PTRACE_EVENT_EXEC) {
					if (pid == main_pid)
						main_execed = true;
					arm_cpuid_fault(pid);
				}
				else if (ev == PTRACE_EVENT_SECCOMP)
					handle_seccomp(pid);
				else if (ev == PTRACE_EVENT_CLONE || ev == PTRACE_EVENT_FORK || ev == PTRACE_EVENT_VFORK) {
					unsigned long np;
					if (!ptrace(PTRACE_GETEVENTMSG, pid, 0, &np))
						add_pid((pid_t)np);
				}
			} else if (sig == SIGSEGV) {
				deliver = handle_segv(pid) ? 0 : sig;
			} else if (sig == SIGSTOP && known_pid(pid)) {
				deliver = 0; /* late initial stop of an auto-attached tracee */
			} else {
				deliver = sig;
			}
			ptrace(PTRACE_CONT, pid, 0, (void *)(long)deliver);
		}
		int next = vmwkvm_tools_process(tools);
		script_step();
		maybe_term();
		wait_ms = next < 10 ? (next < 1 ? 1 : next) : 10;
		if (main_done && !leftovers_killed) {
			/* the program is gone: whatever it left behind (all traced by us) goes too */
			for (int k = 0; k < nknown; k++)
				kill(known[k], SIGKILL);
			leftovers_killed = true;
		}
	}
	alarm(0);
	for (; next_cmd < opt.ncmds; next_cmd++)
		report("tclo: %s -> not sent\n", opt.cmds[next_cmd]);
	vmwkvm_tools_process(tools); /* notices the closed TCLO channel */
	print_state();
	vmwkvm_tools_free(tools);
	vmwkvm_backdoor_free(bd);
	vmwkvm_rpc_free(rpc);
	free(runbuf);
	if (opt.report)
		fclose(opt.report);
	return exit_code;
}
