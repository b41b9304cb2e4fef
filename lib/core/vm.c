/* VM and vCPU handles: borrowed fds, capabilities, register access for the exit path. */
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A proposed number is usable in auto mode only if it is assigned (non-zero) and no
 * mainline feature owns it. */
static bool proposed_cap_trustworthy(uint32_t cap)
{
	return cap != 0 && vmwkvm_mainline_cap_name(cap) == NULL;
}

static int resolve_dialect(const struct vmwkvm_vm *vm)
{
	if (vm->dialect_requested != VMWKVM_DIALECT_AUTO)
		return vm->dialect_requested;
	const struct vmwkvm_proposed_numbers *n = &vm->numbers;
	if (proposed_cap_trustworthy(n->single_cap) && vk_check_extension(vm->vm_fd, n->single_cap) > 0)
		return VMWKVM_DIALECT_SINGLE_CAP;
	if (proposed_cap_trustworthy(n->rusin_cap_backdoor) && vk_check_extension(vm->vm_fd, n->rusin_cap_backdoor) > 0)
		return VMWKVM_DIALECT_RUSIN_V2;
	return VMWKVM_DIALECT_NONE;
}

int vmwkvm_vm_new(int vm_fd, const struct vmwkvm_vm_opts *opts, vmwkvm_vm **out)
{
	if (!out || vm_fd < 0 || !VK_OPTS_VALID(opts, struct vmwkvm_vm_opts))
		return -EINVAL;
	*out = NULL;
	int requested = vmwkvm_dialect_get_default();
	if (opts && opts->dialect) {
		requested = vmwkvm_dialect_from_name(opts->dialect);
		if (requested == -EINVAL)
			return -EINVAL;
	}
	struct vmwkvm_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->vm_fd = vm_fd;
	vm->kvm_fd = (opts && opts->kvm_fd_set) ? opts->kvm_fd : -1;
	vm->dialect_requested = requested;
	vm->numbers.sz = sizeof(vm->numbers);
	vk_proposed_snapshot(&vm->numbers);
	vm->hb_max = 65536;
	atomic_init(&vm->vcpu_count, 0);
	int r = pthread_mutex_init(&vm->lock, NULL);
	if (r) {
		free(vm);
		return -r;
	}
	/* KVM_CHECK_EXTENSION on the VM fd: also proves that vm_fd is a VM */
	vm->cap_sync_regs = vk_check_extension(vm_fd, KVM_CAP_SYNC_REGS);
	if (vm->cap_sync_regs < 0) {
		r = vm->cap_sync_regs;
		pthread_mutex_destroy(&vm->lock);
		free(vm);
		return r;
	}
	vm->cap_guest_mode = vk_check_extension(vm_fd, VMWKVM_UAPI_CAP_X86_GUEST_MODE);
	vm->cap_memory_fault_info = vk_check_extension(vm_fd, VMWKVM_UAPI_CAP_MEMORY_FAULT_INFO);
	vm->cap_user_memory2 = vk_check_extension(vm_fd, VMWKVM_UAPI_CAP_USER_MEMORY2);
	vm->dialect = resolve_dialect(vm);
	vk_info("VM fd %d: dialect %s (requested %s)", vm_fd, vmwkvm_dialect_name(vm->dialect),
		vmwkvm_dialect_name(vm->dialect_requested));
	*out = vm;
	return 0;
}

void vmwkvm_vm_free(vmwkvm_vm *vm)
{
	if (!vm)
		return;
	if (vm->kvm_fd_owned && vm->kvm_fd >= 0)
		vk_close(vm->kvm_fd);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

int vmwkvm_vm_fd(const vmwkvm_vm *vm)
{
	return vm ? vm->vm_fd : -EINVAL;
}

int vmwkvm_vm_dialect(const vmwkvm_vm *vm)
{
	return vm ? vm->dialect : -EINVAL;
}

int vmwkvm_vm_create_vcpu(vmwkvm_vm *vm, unsigned long vcpu_id)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->lock);
	int fd = vk_ioctl(vm->vm_fd, KVM_CREATE_VCPU, (void *)(uintptr_t)vcpu_id);
	if (fd >= 0)
		atomic_fetch_add(&vm->vcpu_count, 1);
	pthread_mutex_unlock(&vm->lock);
	return fd;
}

int vmwkvm_vm_note_vcpu_created(vmwkvm_vm *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->lock);
	int n = atomic_fetch_add(&vm->vcpu_count, 1) + 1;
	pthread_mutex_unlock(&vm->lock);
	return n;
}

int vmwkvm_vm_vcpu_count(const vmwkvm_vm *vm)
{
	return vm ? atomic_load(&((struct vmwkvm_vm *)vm)->vcpu_count) : -EINVAL;
}

void vk_vm_decode_env(const struct vmwkvm_vm *vm, size_t run_size, struct vmwkvm_decode_env *env)
{
	memset(env, 0, sizeof(*env));
	env->sz = sizeof(*env);
	env->run_size = run_size;
	env->hypercall_exit = vm->hypercall_exit;
	env->hypercall_dialect = (uint32_t)vm->dialect;
	env->hb_max = vm->hb_max;
	env->guest_mode_valid = vm->cap_guest_mode > 0;
}

/* ------------------------------------------------------------------ vCPU */

#define SYNC_NEEDED (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)

static int vcpu_mmap_size(struct vmwkvm_vm *vm)
{
	/* under the VM lock: vCPUs may be wrapped from several threads at once, and the
	 * policy code reads vm->kvm_fd under it */
	pthread_mutex_lock(&vm->lock);
	int kfd = vm->kvm_fd;
	if (kfd < 0) {
		kfd = vk_open("/dev/kvm", O_RDWR);
		if (kfd >= 0) {
			vm->kvm_fd = kfd;
			vm->kvm_fd_owned = true;
		}
	}
	pthread_mutex_unlock(&vm->lock);
	if (kfd < 0)
		return kfd;
	return vk_ioctl(kfd, KVM_GET_VCPU_MMAP_SIZE, NULL);
}

int vmwkvm_vcpu_new(vmwkvm_vm *vm, int vcpu_fd, struct kvm_run *run, size_t run_size,
		    const struct vmwkvm_vcpu_opts *opts, vmwkvm_vcpu **out)
{
	if (!vm || !out || vcpu_fd < 0 || !VK_OPTS_VALID(opts, struct vmwkvm_vcpu_opts))
		return -EINVAL;
	*out = NULL;
	int mode = opts ? opts->regs_mode : VMWKVM_REGS_AUTO;
	if (mode < VMWKVM_REGS_AUTO || mode > VMWKVM_REGS_IOCTL)
		return -EINVAL;
	bool sync_ok = vm->cap_sync_regs > 0 && ((unsigned)vm->cap_sync_regs & SYNC_NEEDED) == SYNC_NEEDED;
	if (mode == VMWKVM_REGS_SYNC && !sync_ok)
		return -EOPNOTSUPP;
	if (mode == VMWKVM_REGS_AUTO)
		mode = sync_ok ? VMWKVM_REGS_SYNC : VMWKVM_REGS_IOCTL;

	bool owned = false;
	if (!run) {
		int sz = vcpu_mmap_size(vm);
		if (sz < 0)
			return sz;
		if ((size_t)sz < sizeof(struct kvm_run))
			return -EINVAL;
		void *p = NULL;
		int r = vk_mmap(&p, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
		if (r < 0)
			return r;
		run = p;
		run_size = (size_t)sz;
		owned = true;
	} else if (run_size < sizeof(struct kvm_run)) {
		return -EINVAL;
	}
	struct vmwkvm_vcpu *v = calloc(1, sizeof(*v));
	if (!v) {
		if (owned)
			vk_munmap(run, run_size);
		return -ENOMEM;
	}
	v->vm = vm;
	v->fd = vcpu_fd;
	v->run = run;
	v->run_size = run_size;
	v->run_owned = owned;
	v->regs_mode = mode;
	if (mode == VMWKVM_REGS_SYNC)
		run->kvm_valid_regs |= SYNC_NEEDED;
	*out = v;
	return 0;
}

void vmwkvm_vcpu_free(vmwkvm_vcpu *vcpu)
{
	if (!vcpu)
		return;
	if (vcpu->run_owned)
		vk_munmap(vcpu->run, vcpu->run_size);
	free(vcpu);
}

struct kvm_run *vmwkvm_vcpu_kvm_run(const vmwkvm_vcpu *vcpu)
{
	if (!vcpu) {
		errno = EINVAL;
		return NULL;
	}
	return vcpu->run;
}

int vmwkvm_vcpu_regs_mode(const vmwkvm_vcpu *vcpu)
{
	return vcpu ? vcpu->regs_mode : -EINVAL;
}

int vmwkvm_vcpu_run(vmwkvm_vcpu *vcpu)
{
	if (!vcpu)
		return -EINVAL;
	int r = vk_ioctl(vcpu->fd, KVM_RUN, NULL);
	if (r >= 0)
		return 0;
	if ((r == -EFAULT || r == -EHWPOISON) && vcpu->run->exit_reason == VMWKVM_UAPI_EXIT_MEMORY_FAULT)
		return VMWKVM_RUN_MEMORY_FAULT;
	return r;
}

void vk_cpu_mode_from_sregs(const struct kvm_sregs *s, uint64_t rflags, struct vmwkvm_cpu_state *cpu)
{
	bool pe = s->cr0 & 1u;
	bool lma = s->efer & (1u << 10);
	if (!pe) {
		cpu->mode = VMWKVM_MODE_REAL;
		cpu->cpl = 0;
		cpu->addr_bits = 16;
		return;
	}
	if (rflags & (1u << 17)) { /* EFLAGS.VM */
		cpu->mode = VMWKVM_MODE_VM86;
		cpu->cpl = 3;
		cpu->addr_bits = 16;
		return;
	}
	cpu->cpl = s->ss.dpl & 3;
	if (lma && s->cs.l) {
		cpu->mode = VMWKVM_MODE_LONG64;
		cpu->addr_bits = 64;
	} else if (s->cs.db) {
		cpu->mode = VMWKVM_MODE_PROT32;
		cpu->addr_bits = 32;
	} else {
		cpu->mode = VMWKVM_MODE_PROT16;
		cpu->addr_bits = 16;
	}
}

/* KVM_GET_REGS then KVM_GET_SREGS; 0 or the first -errno. */
static int get_regs_sregs(int fd, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
	int r = vk_ioctl(fd, KVM_GET_REGS, regs);
	return r < 0 ? r : vk_ioctl(fd, KVM_GET_SREGS, sregs);
}

int vk_vcpu_read_cpu(struct vmwkvm_vcpu *vcpu, struct vmwkvm_cpu_state *cpu)
{
	memset(cpu, 0, sizeof(*cpu));
	if (vcpu->regs_mode == VMWKVM_REGS_SYNC) {
		const struct kvm_run *run = vcpu->run;
		memcpy(&cpu->regs, &run->s.regs.regs, sizeof(cpu->regs));
		vk_cpu_mode_from_sregs(&run->s.regs.sregs, run->s.regs.regs.rflags, cpu);
		return 0;
	}
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	int r = get_regs_sregs(vcpu->fd, &regs, &sregs);
	if (r < 0)
		return r;
	memcpy(&cpu->regs, &regs, sizeof(cpu->regs));
	memcpy(&vcpu->io_regs, &regs, sizeof(vcpu->io_regs));
	vcpu->io_regs_valid = true;
	vk_cpu_mode_from_sregs(&sregs, regs.rflags, cpu);
	return 0;
}

int vk_vcpu_refresh_sync(struct vmwkvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	int r = get_regs_sregs(vcpu->fd, &regs, &sregs);
	if (r < 0)
		return r;
	run->s.regs.regs = regs;
	run->s.regs.sregs = sregs;
	run->kvm_valid_regs |= SYNC_NEEDED;
	vk_warn("vCPU fd %d: kvm_valid_regs lost REGS/SREGS; registers read by ioctl and the bits set again",
		vcpu->fd);
	return 0;
}

int vk_vcpu_write_regs(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_regs *regs)
{
	if (vcpu->regs_mode == VMWKVM_REGS_SYNC) {
		memcpy(&vcpu->run->s.regs.regs, regs, sizeof(*regs));
		vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
		return 0;
	}
	struct kvm_regs kr;
	memcpy(&kr, regs, sizeof(kr));
	return vk_ioctl(vcpu->fd, KVM_SET_REGS, &kr);
}

_Static_assert(sizeof(struct vmwkvm_regs) == sizeof(struct kvm_regs), "vmwkvm_regs mirrors kvm_regs");
_Static_assert(offsetof(struct vmwkvm_regs, rip) == offsetof(struct kvm_regs, rip), "vmwkvm_regs.rip");
_Static_assert(offsetof(struct vmwkvm_regs, rbp) == offsetof(struct kvm_regs, rbp), "vmwkvm_regs.rbp");
