/* Core internals every capability may use: logging, option-struct validation, dialect
 * numbers, the VM and vCPU handles, the sys layer (sys.h) and our uAPI copies (uapi.h).
 * Not installed. Nothing here knows a capability (lib/README.md). */
#ifndef VMWKVM_LIB_INTERNAL_H
#define VMWKVM_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <vmwkvm/vmwkvm.h>

#include "core/sys.h"
#include "core/uapi.h"

/* ---- logging (log.c) ---- */
#if defined(__GNUC__)
#define VK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VK_PRINTF(a, b)
#endif
bool vk_log_enabled(int level);
void vk_log(int level, const char *fmt, ...) VK_PRINTF(2, 3);
#define vk_err(...) vk_log(VMWKVM_LOG_ERROR, __VA_ARGS__)
#define vk_warn(...) vk_log(VMWKVM_LOG_WARN, __VA_ARGS__)
#define vk_info(...) vk_log(VMWKVM_LOG_INFO, __VA_ARGS__)
#define vk_debug(...) vk_log(VMWKVM_LOG_DEBUG, __VA_ARGS__)

/* ---- option-struct validation (libbpf style) ---- */
/* true if opts is NULL, or opts->sz covers at least the first field and every byte the
 * library does not know (beyond known_sz) is zero */
bool vk_opts_valid(const void *opts, size_t opts_sz, size_t known_sz);
#define VK_OPTS_VALID(opts, type) \
	vk_opts_valid((opts), (opts) ? *(const size_t *)(const void *)(opts) : 0, sizeof(type))

/* ---- dialect (dialect.c) ---- */
void vk_proposed_snapshot(struct vmwkvm_proposed_numbers *out);
int vk_dialect_default_resolved_name(void);

/* ---- VM and vCPU (vm.c) ---- */
struct vmwkvm_vm {
	int vm_fd;
	int kvm_fd;          /* -1 when none */
	bool kvm_fd_owned;
	int dialect_requested; /* may be AUTO */
	int dialect;          /* resolved */
	struct vmwkvm_proposed_numbers numbers;
	/* capabilities read at creation (raw KVM_CHECK_EXTENSION values on the VM fd, <0 = error) */
	int cap_sync_regs;
	int cap_guest_mode;
	int cap_memory_fault_info;
	int cap_user_memory2;
	pthread_mutex_t lock; /* serialises vCPU creation and policy changes */
	atomic_int vcpu_count;
	/* VMware policy (policy.c) */
	uint32_t policy_flags;     /* in force */
	uint32_t policy_confirmed; /* confirmed by the kernel */
	/* exit decoding environment shared by the VM's vCPUs */
	uint32_t hypercall_exit;   /* 0 unless hypercalls were enabled through a dialect */
	uint32_t hb_max;
};

struct vmwkvm_vcpu {
	struct vmwkvm_vm *vm;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	bool run_owned;
	int regs_mode; /* VMWKVM_REGS_SYNC or VMWKVM_REGS_IOCTL */
	struct vmwkvm_hb_state hb;
	/* ioctl mode: registers read at decode, written at complete */
	struct vmwkvm_regs io_regs;
	bool io_regs_valid;
};

/* Fill the decode environment of a vCPU's VM. */
void vk_vm_decode_env(const struct vmwkvm_vm *vm, size_t run_size, struct vmwkvm_decode_env *env);

/* Register access for the exit path (backdoor/exit_decode.c, exit_complete.c use these) */
int vk_vcpu_read_cpu(struct vmwkvm_vcpu *vcpu, struct vmwkvm_cpu_state *cpu);
int vk_vcpu_write_regs(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_regs *regs);
/* Sync mode, when the VMM cleared REGS/SREGS from kvm_valid_regs: read them by ioctl into
 * kvm_run (so the in-place completion stays right) and set the bits again. */
int vk_vcpu_refresh_sync(struct vmwkvm_vcpu *vcpu);
/* CPL/mode from segment registers (pure) */
void vk_cpu_mode_from_sregs(const struct kvm_sregs *s, uint64_t rflags, struct vmwkvm_cpu_state *cpu);

/* ---- KVM_CHECK_EXTENSION / KVM_ENABLE_CAP (args[0] only) through the sys layer; -errno on failure ---- */
static inline int vk_check_extension(int fd, uint32_t cap)
{
	return vk_ioctl(fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)cap);
}

static inline int vk_enable_cap(int fd, uint32_t cap, uint64_t arg0)
{
	struct kvm_enable_cap ec = { .cap = cap, .args = { arg0 } }; /* every other field zero */
	return vk_ioctl(fd, KVM_ENABLE_CAP, &ec);
}

#endif
