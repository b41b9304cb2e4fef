/**
 * @file vmwkvm/vm.h
 * @brief Handles for a VMM's VM and vCPUs: the library borrows the VMM's file descriptors.
 *
 * The VMM keeps ownership of its `/dev/kvm`, VM and vCPU file descriptors and of its run
 * loop. A ::vmwkvm_vm remembers what the library needs per VM (dialect, capabilities,
 * how many vCPUs exist, the VMware policy); a ::vmwkvm_vcpu remembers per-vCPU exit state
 * (the mapped `struct kvm_run`, how registers are read and written, a high-bandwidth
 * transfer in progress). Neither closes the borrowed descriptors.
 */
#ifndef VMWKVM_VM_H
#define VMWKVM_VM_H

#include <vmwkvm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kvm_run;

/** Opaque per-VM state. */
typedef struct vmwkvm_vm vmwkvm_vm;
/** Opaque per-vCPU state. */
typedef struct vmwkvm_vcpu vmwkvm_vcpu;

/** Options for vmwkvm_vm_new(). Zero-fill, then set @ref sz. */
struct vmwkvm_vm_opts {
	size_t sz;           /**< sizeof(struct vmwkvm_vm_opts) */
	int kvm_fd;          /**< the VMM's /dev/kvm fd, or -1 to let the library open /dev/kvm when it must */
	int kvm_fd_set;      /**< non-zero when @ref kvm_fd is meaningful (so a zero-filled struct means "none") */
	const char *dialect; /**< "auto", "none", "rusin-v2", "single-cap", or NULL for vmwkvm_dialect_get_default() */
	uint64_t reserved[6]; /**< must be zero */
};

/**
 * Wrap a VM the VMM created with KVM_CREATE_VM.
 *
 * Queries the capabilities the library needs (on the VM fd) and resolves the dialect.
 * Must be called before the VM's first vCPU exists if the VMware policy is to be set.
 * @param vm_fd the VM file descriptor (borrowed: not closed by vmwkvm_vm_free())
 * @param opts  options, or NULL for defaults
 * @param out   receives the new handle
 * @return 0; -EINVAL (bad fd, bad @p opts, unknown dialect name), -ENOMEM, or the
 *         negative errno of a failed KVM ioctl (-EBADF, -ENOTTY for a non-VM fd).
 * @par Thread-safety
 * Safe; the returned handle's functions state their own rules.
 */
VMWKVM_API int vmwkvm_vm_new(int vm_fd, const struct vmwkvm_vm_opts *opts, vmwkvm_vm **out);

/**
 * Free a VM handle. The VM fd stays open. All ::vmwkvm_vcpu of this VM must be freed first.
 * @param vm handle, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p vm.
 */
VMWKVM_API void vmwkvm_vm_free(vmwkvm_vm *vm);

/**
 * The borrowed VM file descriptor.
 * @param vm handle
 * @return the fd, or -EINVAL if @p vm is NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_vm_fd(const vmwkvm_vm *vm);

/**
 * The dialect this VM uses after resolution (never ::VMWKVM_DIALECT_AUTO).
 * @param vm handle
 * @return an enum vmwkvm_dialect value, or -EINVAL if @p vm is NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_vm_dialect(const vmwkvm_vm *vm);

/**
 * Create a vCPU through the library (KVM_CREATE_VCPU), so that it knows a vCPU exists:
 * from then on, changes to the VMware policy fail with -EBUSY, as the kernel would.
 * @param vm      handle
 * @param vcpu_id the vCPU id passed to KVM_CREATE_VCPU
 * @return the new vCPU fd (owned by the caller), or -EINVAL, or the negative errno of
 *         KVM_CREATE_VCPU (-EEXIST, -EINVAL, -ENOMEM, -EMFILE ...).
 * @par Thread-safety
 * Safe (serialised per VM).
 */
VMWKVM_API int vmwkvm_vm_create_vcpu(vmwkvm_vm *vm, unsigned long vcpu_id);

/**
 * Tell the library that the VMM created a vCPU itself (with its own KVM_CREATE_VCPU).
 * @param vm handle
 * @return the number of vCPUs the library now knows of, or -EINVAL.
 * @par Thread-safety
 * Safe (serialised per VM).
 */
VMWKVM_API int vmwkvm_vm_note_vcpu_created(vmwkvm_vm *vm);

/**
 * How many vCPUs the library knows exist in this VM.
 * @param vm handle
 * @return the count, or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_vm_vcpu_count(const vmwkvm_vm *vm);

/** How the library reads and writes guest registers on the exit path. */
enum vmwkvm_regs_mode {
	VMWKVM_REGS_AUTO = 0,  /**< sync regs when KVM_CAP_SYNC_REGS offers REGS and SREGS, else ioctls */
	VMWKVM_REGS_SYNC = 1,  /**< through kvm_run (KVM_CAP_SYNC_REGS): no ioctl per call */
	VMWKVM_REGS_IOCTL = 2, /**< KVM_GET_REGS/KVM_GET_SREGS/KVM_SET_REGS per call */
};

/** Options for vmwkvm_vcpu_new(). Zero-fill, then set @ref sz. */
struct vmwkvm_vcpu_opts {
	size_t sz;            /**< sizeof(struct vmwkvm_vcpu_opts) */
	int regs_mode;        /**< enum vmwkvm_regs_mode */
	uint32_t reserved0;   /**< must be zero */
	uint64_t reserved[6]; /**< must be zero */
};

/**
 * Wrap a vCPU.
 *
 * In sync-regs mode this sets KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS in
 * `run->kvm_valid_regs`, so that every exit carries the registers (the VMM must not
 * clear those bits).
 * @param vm       the VM handle
 * @param vcpu_fd  the vCPU fd (borrowed)
 * @param run      the VMM's mapping of the vCPU's `struct kvm_run`, or NULL to let the
 *                 library map it (and unmap it in vmwkvm_vcpu_free())
 * @param run_size size of that mapping (KVM_GET_VCPU_MMAP_SIZE); ignored when @p run is NULL
 * @param opts     options, or NULL for defaults
 * @param out      receives the handle
 * @return 0; -EINVAL (bad arguments, run_size too small), -EOPNOTSUPP (sync regs asked
 *         for but not offered), -ENOMEM, or the negative errno of a failed ioctl/mmap.
 * @par Thread-safety
 * Safe. The handle belongs to the thread that runs the vCPU.
 */
VMWKVM_API int vmwkvm_vcpu_new(vmwkvm_vm *vm, int vcpu_fd, struct kvm_run *run, size_t run_size,
			       const struct vmwkvm_vcpu_opts *opts, vmwkvm_vcpu **out);

/**
 * Free a vCPU handle (the fd stays open; a mapping the library made is unmapped).
 * @param vcpu handle, or NULL (no-op)
 * @par Thread-safety
 * Not safe against concurrent use of @p vcpu.
 */
VMWKVM_API void vmwkvm_vcpu_free(vmwkvm_vcpu *vcpu);

/**
 * The vCPU's `struct kvm_run`.
 * @param vcpu handle
 * @return the mapping, or NULL (errno EINVAL) if @p vcpu is NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API struct kvm_run *vmwkvm_vcpu_kvm_run(const vmwkvm_vcpu *vcpu);

/**
 * The register mode in force (never ::VMWKVM_REGS_AUTO).
 * @param vcpu handle
 * @return ::VMWKVM_REGS_SYNC or ::VMWKVM_REGS_IOCTL, or -EINVAL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API int vmwkvm_vcpu_regs_mode(const vmwkvm_vcpu *vcpu);

/** vmwkvm_vcpu_run() result: `KVM_RUN` returned -1 with EFAULT/EHWPOISON and a KVM_EXIT_MEMORY_FAULT. */
#define VMWKVM_RUN_MEMORY_FAULT 1

/**
 * Enter the guest once (KVM_RUN on the vCPU fd) through the library's ioctl layer.
 *
 * Optional: a VMM may call KVM_RUN itself. This helper applies the one special case of
 * KVM's return convention: `KVM_RUN` failing with EFAULT or EHWPOISON while
 * `exit_reason` is KVM_EXIT_MEMORY_FAULT is an exit, not an error.
 * @param vcpu handle
 * @return 0 for an ordinary exit (see `exit_reason`), ::VMWKVM_RUN_MEMORY_FAULT for a
 *         memory-fault exit, or a negative errno (-EINTR and -EAGAIN are normal: re-enter).
 * @par Thread-safety
 * Call only from the thread that owns @p vcpu.
 */
VMWKVM_API int vmwkvm_vcpu_run(vmwkvm_vcpu *vcpu);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_VM_H */
