/*
 * Backdoor exits, decoding: recognise a VMware backdoor access in a KVM exit (the pure
 * decoder vmwkvm_exit_decode_raw() and the per-vCPU vmwkvm_exit_decode()), and the names of
 * commands and invalid reasons. Completion: exit_complete.c; the protocol facts used:
 * exit.h.
 */
#include "backdoor/exit.h"

#include <errno.h>
#include <string.h>

#define HB_MAX_DEFAULT 65536u
#define MAX_INSN_LEN 15u

/* Zeroing by copying from these compiles to vector stores; a memset of a struct this
 * size is inlined as `rep stos`, which costs tens of ns per call on the exit path. */
static const struct vmwkvm_call zero_call;
static const struct vmwkvm_hb_state zero_hb;
static const struct vmwkvm_decode_env zero_env;
static const struct vmwkvm_cpu_state zero_cpu;

/* ------------------------------------------------------------------ names */

static const char *const command_names[] = {
	[1] = "GETMHZ",
	[2] = "APMFUNCTION",
	[3] = "GETDISKGEO",
	[4] = "GETPTRLOCATION",
	[5] = "SETPTRLOCATION",
	[6] = "GETSELLENGTH",
	[7] = "GETNEXTPIECE",
	[8] = "SETSELLENGTH",
	[9] = "SETNEXTPIECE",
	[10] = "GETVERSION",
	[11] = "GETDEVICELISTELEMENT",
	[12] = "TOGGLEDEVICE",
	[13] = "GETGUIOPTIONS",
	[14] = "SETGUIOPTIONS",
	[15] = "GETSCREENSIZE",
	[16] = "MONITOR_CONTROL",
	[17] = "GETHWVERSION",
	[18] = "OSNOTFOUND",
	[19] = "GETUUID",
	[20] = "GETMEMSIZE",
	[23] = "GETTIME",
	[24] = "STOPCATCHUP",
	[25] = "PUTCHR",
	[26] = "ENABLE_MSG",
	[28] = "INITPCIOPROM",
	[30] = "MESSAGE",
	[31] = "SIDT",
	[32] = "SGDT",
	[33] = "SLDT_STR",
	[34] = "ISACPIDISABLED",
	[36] = "ISMOUSEABSOLUTE",
	[37] = "PATCH_SMBIOS_STRUCTS",
	[38] = "MAPMEM",
	[39] = "ABSPOINTER_DATA",
	[40] = "ABSPOINTER_STATUS",
	[41] = "ABSPOINTER_COMMAND",
	[45] = "GETHZ",
	[46] = "GETTIMEFULL",
	[48] = "CHECKFORCEBIOSSETUP",
	[49] = "LAZYTIMEREMULATION",
	[50] = "BIOSBBS",
	[52] = "ISGOSDARWIN",
	[53] = "DEBUGEVENT",
	[54] = "OSNOTMACOSXSERVER",
	[55] = "GETTIMEFULL_WITH_LAG",
	[62] = "XPMODE",
	[63] = "NESTING_CONTROL",
	[64] = "FIRMWARE_INIT",
	[65] = "FIRMWARE_ACPI_SERVICES",
	[67] = "ENABLE_USB_MOUSE",
	[68] = "GET_VCPU_INFO",
	[69] = "EFI_SERIALCON_CONFIG",
	[70] = "BUG328986",
	[71] = "FIRMWARE_ERROR",
	[72] = "VMK_INFO",
	[73] = "EFI_BOOT_CONFIG",
	[74] = "GET_HW_MODEL",
	[75] = "GET_SVGA_CAPABILITIES",
	[76] = "GET_FORCE_X2APIC",
	[77] = "SET_PCI_HOLE",
	[78] = "GET_PCI_HOLE",
	[79] = "GET_PCI_BAR",
	[80] = "SHOULD_GENERATE_SYSTEMID",
	[85] = "MKS_GUEST_STATS",
	[86] = "ABSPOINTER_RESTRICT",
	[87] = "GUEST_INTEGRITY",
	[89] = "SECUREBOOT",
	[91] = "STEALCLOCK",
	[92] = "GUEST_PAGE_HINTS",
	[93] = "FIRMWARE_UPDATE",
	[95] = "PUTCHR12",
	[97] = "PRECISIONCLOCK",
	[99] = "APPLE_GPU_RES_SET",
	[100] = "GETBUILDNUM",
	[101] = "GETENTROPY",
	[102] = "REPORTGUESTCRASH",
	[103] = "PK_UPDATE",
	[104] = "GET_FWTRCLOG_MASK",
};

const char *vmwkvm_command_name(uint16_t command)
{
	if (command >= sizeof(command_names) / sizeof(command_names[0]))
		return NULL;
	return command_names[command];
}

const char *vmwkvm_invalid_reason_name(uint32_t reason)
{
	switch (reason) {
	case VMWKVM_INVALID_NONE: return "none";
	case VMWKVM_INVALID_MAGIC: return "bad magic";
	case VMWKVM_INVALID_SIZE: return "wrong access size";
	case VMWKVM_INVALID_DIRECTION: return "wrong direction";
	case VMWKVM_INVALID_STRING: return "wrong kind of I/O instruction";
	case VMWKVM_INVALID_BOUNDS: return "I/O data outside kvm_run";
	case VMWKVM_INVALID_HB_SEQUENCE: return "HB piece out of sequence";
	case VMWKVM_INVALID_HB_LENGTH: return "HB transfer too long or empty";
	case VMWKVM_INVALID_HYPERCALL: return "malformed hypercall exit";
	case VMWKVM_INVALID_HB_ABANDONED: return "HB transfer abandoned";
	default: return "unknown";
	}
}

/* ------------------------------------------------------------------ helpers */

static inline uint64_t addr_mask(uint8_t bits)
{
	return bits == 16 ? 0xFFFFull : bits == 32 ? 0xFFFFFFFFull : ~0ull;
}

static inline const struct vmwkvm_proposed_vmware_exit *hcall_payload(const struct kvm_run *run)
{
	return (const struct vmwkvm_proposed_vmware_exit *)(const void *)((const char *)run +
									   VMWKVM_UAPI_RUN_UNION_OFFSET);
}

static void hb_reset(struct vmwkvm_hb_state *hb)
{
	*hb = zero_hb;
}

/* ------------------------------------------------------------------ pure decoder */

static int decode_invalid(struct vmwkvm_call *call, uint32_t reason)
{
	call->invalid = reason;
	return VMWKVM_EXIT_INVALID;
}

/* Does the piece continue the transfer in @p hb? */
static bool hb_continues(const struct vmwkvm_hb_state *hb, uint32_t dir, uint64_t rip, uint64_t count,
			 uint64_t after, uint64_t mask)
{
	if (hb->direction != dir)
		return false;
	uint64_t remaining = hb->total - hb->done;
	if (count > remaining || remaining - count != after)
		return false;
	if (rip == hb->rip)
		return true;
	/* REP OUTSB: on the last byte the emulator has already moved RIP past the instruction */
	if (dir == VMWKVM_DIR_OUT && after == 0) {
		uint64_t d = (rip - hb->rip) & mask;
		return d >= 1 && d <= MAX_INSN_LEN;
	}
	return false;
}

/* A new HB transfer: it starts with this piece (count bytes, after more to come), or broke
 * into the one in progress. Returns the invalid reason (VMWKVM_INVALID_NONE: valid). */
static uint32_t hb_start(struct vmwkvm_hb_state *hb, struct vmwkvm_call *call, uint32_t dir, uint64_t count,
			 uint64_t after, uint32_t hb_max)
{
	const bool broke = hb->total != 0;
	const bool too_long = after > hb_max || count > hb_max - after;
	hb->total = too_long && after > UINT64_MAX - count ? UINT64_MAX : after + count;
	hb->done = count;
	hb->direction = (uint8_t)dir;
	hb->rip = call->rip;
	uint32_t reason = broke ? VMWKVM_INVALID_HB_SEQUENCE
			  : !call->magic_ok ? VMWKVM_INVALID_MAGIC
			  : too_long ? VMWKVM_INVALID_HB_LENGTH
				      : VMWKVM_INVALID_NONE;
	hb->rejected = (uint8_t)reason;
	call->hb_offset = 0;
	call->hb_total = hb->total;
	call->hb_flags |= VMWKVM_HB_FIRST;
	return reason;
}

static int decode_hb(const struct kvm_run *run, const struct vmwkvm_cpu_state *cpu, uint32_t hb_max,
		     struct vmwkvm_hb_state *hb, struct vmwkvm_call *call, uint64_t data_off)
{
	const uint32_t dir = call->direction;
	const uint64_t count = run->io.count;
	const uint64_t mask = addr_mask(cpu->addr_bits);
	const uint64_t rcx = cpu->regs.rcx & mask;

	call->hb_count = (uint32_t)count;
	call->hb_data = (uint8_t *)(uintptr_t)run + data_off;

	if (run->io.size != 1) {
		hb_reset(hb);
		return decode_invalid(call, VMWKVM_INVALID_SIZE);
	}
	if (count == 0) {
		hb_reset(hb);
		return decode_invalid(call, VMWKVM_INVALID_HB_LENGTH);
	}
	uint64_t after;
	if (dir == VMWKVM_DIR_IN) {
		/* REP INSB exits before counting the piece: RCX covers it, else it is no REP INSB */
		if (rcx < count) {
			hb_reset(hb);
			return decode_invalid(call, VMWKVM_INVALID_STRING);
		}
		after = rcx - count;
	} else {
		after = rcx;
	}

	uint32_t reason;
	if (hb->total != 0 && hb_continues(hb, dir, call->rip, count, after, mask)) {
		call->hb_offset = hb->done;
		call->hb_total = hb->total;
		hb->done += count;
		reason = hb->rejected;
		if (!reason && !call->magic_ok)
			reason = hb->rejected = VMWKVM_INVALID_HB_SEQUENCE;
	} else {
		reason = hb_start(hb, call, dir, count, after, hb_max);
	}
	if (after == 0) {
		call->hb_flags |= VMWKVM_HB_LAST;
		hb_reset(hb);
	}
	if (reason)
		return decode_invalid(call, reason);
	return VMWKVM_EXIT_CALL;
}

static int decode_io(const struct kvm_run *run, const struct vmwkvm_cpu_state *cpu,
		     const struct vmwkvm_decode_env *env, struct vmwkvm_hb_state *hb, struct vmwkvm_call *call)
{
	const uint16_t port = run->io.port;
	const bool is_hb = port == VMWKVM_BDOORHB_PORT;
	call->port = port;
	call->io_size = run->io.size;
	call->transport = is_hb ? VMWKVM_TRANSPORT_HB : VMWKVM_TRANSPORT_LB;
	call->direction = run->io.direction == KVM_EXIT_IO_IN    ? VMWKVM_DIR_IN
			  : run->io.direction == KVM_EXIT_IO_OUT ? VMWKVM_DIR_OUT
								 : VMWKVM_DIR_NONE;
	const uint32_t word = (uint32_t)(is_hb ? cpu->regs.rbx : cpu->regs.rcx);
	call->command = (uint16_t)word;
	call->subcommand = (uint16_t)(word >> 16);

	uint64_t off, len;
	if (!io_data_bounds(run, env->run_size, &off, &len)) {
		if (is_hb)
			hb_reset(hb);
		return decode_invalid(call, VMWKVM_INVALID_BOUNDS);
	}
	if (call->direction == VMWKVM_DIR_NONE) {
		if (is_hb)
			hb_reset(hb);
		return decode_invalid(call, VMWKVM_INVALID_DIRECTION);
	}
	if (is_hb) {
		uint32_t hb_max = env->hb_max ? env->hb_max : HB_MAX_DEFAULT;
		return decode_hb(run, cpu, hb_max, hb, call, off);
	}
	if (run->io.count != 1)
		return decode_invalid(call, VMWKVM_INVALID_STRING);
	if (run->io.size != 4)
		return decode_invalid(call, VMWKVM_INVALID_SIZE);
	if (!call->magic_ok)
		return decode_invalid(call, VMWKVM_INVALID_MAGIC);
	return VMWKVM_EXIT_CALL;
}

static int decode_hypercall(const struct kvm_run *run, const struct vmwkvm_decode_env *env,
			    struct vmwkvm_call *call)
{
	const struct vmwkvm_proposed_vmware_exit *x = hcall_payload(run);
	call->transport = VMWKVM_TRANSPORT_HYPERCALL;
	call->direction = VMWKVM_DIR_NONE;
	if (x->type != VMWKVM_PROPOSED_VMWARE_EXIT_HCALL || x->hcall.cpl > 3)
		return decode_invalid(call, VMWKVM_INVALID_HYPERCALL);

	call->rax = x->hcall.rax;
	call->rbx = x->hcall.rbx;
	call->rcx = x->hcall.rcx;
	call->rdx = x->hcall.rdx;
	call->rsi = x->hcall.rsi;
	call->rdi = x->hcall.rdi;
	call->rbp = x->hcall.rbp;
	call->cpl = (uint8_t)x->hcall.cpl;
	if (x->hcall.longmode)
		call->mode = VMWKVM_MODE_LONG64;
	else if (call->mode == VMWKVM_MODE_LONG64)
		call->mode = VMWKVM_MODE_PROT32; /* compatibility mode */
	call->magic_ok = (uint32_t)call->rax == VMWKVM_BDOOR_MAGIC;
	call->hypercall_flags = (uint16_t)call->rdx;

	const bool hbf = call->hypercall_flags & VMWKVM_HCALL_FLAG_HB;
	const bool wr = call->hypercall_flags & VMWKVM_HCALL_FLAG_WRITE;
	if (hbf) {
		call->command = (uint16_t)call->rbx;
		call->subcommand = (uint16_t)(call->rbx >> 16);
		call->direction = wr ? VMWKVM_DIR_OUT : VMWKVM_DIR_IN;
		call->hb_total = x->hcall.longmode ? call->rcx : (uint32_t)call->rcx;
	} else {
		call->command = (uint16_t)call->rcx;
		call->subcommand = (uint16_t)(call->rcx >> 16);
	}
	if (!call->magic_ok)
		return decode_invalid(call, VMWKVM_INVALID_MAGIC);
	if (wr && !hbf)
		return decode_invalid(call, VMWKVM_INVALID_DIRECTION);
	if (hbf) {
		uint32_t hb_max = env->hb_max ? env->hb_max : HB_MAX_DEFAULT;
		if (call->hb_total == 0 || call->hb_total > hb_max)
			return decode_invalid(call, VMWKVM_INVALID_HB_LENGTH);
	}
	return VMWKVM_EXIT_CALL;
}

/* The decoder proper; env is complete and validated (run_size >= the fixed part). */
static int decode_core(const struct kvm_run *run, const struct vmwkvm_cpu_state *cpu,
		       const struct vmwkvm_decode_env *env, struct vmwkvm_hb_state *hb, struct vmwkvm_call *call)
{
	*call = zero_call;
	call->exit_reason = run->exit_reason;
	call->cpl = cpu->cpl & 3;
	call->mode = cpu->mode <= VMWKVM_MODE_LONG64 ? cpu->mode : VMWKVM_MODE_UNKNOWN;
	if (env->guest_mode_valid)
		call->origin = (run->flags & VMWKVM_UAPI_RUN_X86_GUEST_MODE) ? VMWKVM_ORIGIN_L2 : VMWKVM_ORIGIN_L1;
	else
		call->origin = VMWKVM_ORIGIN_UNKNOWN;
	call->rax = cpu->regs.rax;
	call->rbx = cpu->regs.rbx;
	call->rcx = cpu->regs.rcx;
	call->rdx = cpu->regs.rdx;
	call->rsi = cpu->regs.rsi;
	call->rdi = cpu->regs.rdi;
	call->rbp = cpu->regs.rbp;
	call->rip = cpu->regs.rip;
	call->magic_ok = (uint32_t)cpu->regs.rax == VMWKVM_BDOOR_MAGIC;

	if (run->exit_reason == KVM_EXIT_IO) {
		if (run->io.port == VMWKVM_BDOOR_PORT || run->io.port == VMWKVM_BDOORHB_PORT)
			return decode_io(run, cpu, env, hb, call);
	} else if (env->hypercall_exit != 0 && run->exit_reason == env->hypercall_exit) {
		return decode_hypercall(run, env, call);
	}
	call->magic_ok = 0;
	return VMWKVM_EXIT_NOT_BACKDOOR;
}

int vmwkvm_exit_decode_raw(const struct kvm_run *run, const struct vmwkvm_cpu_state *cpu,
			   const struct vmwkvm_decode_env *env_in, struct vmwkvm_hb_state *hb,
			   struct vmwkvm_call *call)
{
	if (!run || !cpu || !env_in || !hb || !call)
		return -EINVAL;
	/* size-prefixed: at least sz and run_size; unknown trailing bytes must be zero */
	const size_t need = offsetof(struct vmwkvm_decode_env, run_size) + sizeof(env_in->run_size);
	if (env_in->sz < need || !vk_opts_valid(env_in, env_in->sz, sizeof(*env_in)))
		return -EINVAL;
	struct vmwkvm_decode_env env_copy;
	const struct vmwkvm_decode_env *env = env_in;
	if (env_in->sz < sizeof(env_copy)) {
		/* an older caller: the fields it does not know are zero */
		env_copy = zero_env;
		memcpy(&env_copy, env_in, env_in->sz);
		env = &env_copy;
	}
	if (env->run_size < RUN_FIXED)
		return -EINVAL;
	return decode_core(run, cpu, env, hb, call);
}

/* ------------------------------------------------------------------ vCPU decode */

static inline bool maybe_backdoor(const struct vmwkvm_vcpu *vcpu)
{
	const struct kvm_run *run = vcpu->run;
	if (run->exit_reason == KVM_EXIT_IO)
		return run->io.port == VMWKVM_BDOOR_PORT || run->io.port == VMWKVM_BDOORHB_PORT;
	return vcpu->vm->hypercall_exit != 0 && run->exit_reason == vcpu->vm->hypercall_exit;
}

int vmwkvm_exit_decode(vmwkvm_vcpu *vcpu, struct vmwkvm_call *call)
{
	if (!vcpu || !call)
		return -EINVAL;
	vcpu->io_regs_valid = false;
	struct vmwkvm_cpu_state cpu;
	if (!maybe_backdoor(vcpu)) {
		/* not ours: read no registers (no ioctl in ioctl mode) */
		cpu = zero_cpu;
	} else if (vcpu->regs_mode == VMWKVM_REGS_SYNC) {
		/* fast path: straight from kvm_run (what vk_vcpu_read_cpu does, without
		 * zeroing the whole struct first) */
		const struct kvm_run *run = vcpu->run;
		if ((run->kvm_valid_regs & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) !=
		    (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) {
			/* the VMM cleared the bits: the synced copy is stale */
			int r = vk_vcpu_refresh_sync(vcpu);
			if (r < 0)
				return r;
		}
		memcpy(&cpu.regs, &run->s.regs.regs, sizeof(cpu.regs));
		memset(cpu.pad, 0, sizeof(cpu.pad));
		vk_cpu_mode_from_sregs(&run->s.regs.sregs, cpu.regs.rflags, &cpu);
	} else {
		int r = vk_vcpu_read_cpu(vcpu, &cpu);
		if (r < 0)
			return r;
	}
	const struct vmwkvm_vm *vm = vcpu->vm;
	struct vmwkvm_decode_env env;
	env.sz = sizeof(env);
	env.run_size = vcpu->run_size;
	env.hypercall_exit = vm->hypercall_exit;
	env.hypercall_dialect = (uint32_t)vm->dialect;
	env.hb_max = vm->hb_max;
	env.guest_mode_valid = vm->cap_guest_mode > 0;
	int r = vcpu->run_size >= RUN_FIXED ? decode_core(vcpu->run, &cpu, &env, &vcpu->hb, call) : -EINVAL;
	if (r == VMWKVM_EXIT_INVALID && vk_log_enabled(VMWKVM_LOG_DEBUG))
		vk_debug("vCPU fd %d: invalid backdoor access (%s), transport %u port 0x%x rip 0x%llx", vcpu->fd,
			 vmwkvm_invalid_reason_name(call->invalid), call->transport, call->port,
			 (unsigned long long)call->rip);
	return r;
}
