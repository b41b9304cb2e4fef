/*
 * Our own definitions of the KVM and userfaultfd uAPI that the system headers
 * (linux-libc-dev 6.1) lack, plus the proposed (unmerged) VMware uAPI in its own
 * VMWKVM_PROPOSED_* / vmwkvm_proposed_* namespace. Numbers and layouts come from
 * shared/uapi/kvm-uapi-notes.md; every layout is pinned with _Static_assert.
 *
 * The base definitions (struct kvm_run, kvm_regs, ioctl numbers up to 6.1) come from
 * the system's <linux/kvm.h>; everything newer is spelled VMWKVM_UAPI_* so that it can
 * never clash with a newer system header.
 */
#ifndef VMWKVM_LIB_UAPI_H
#define VMWKVM_LIB_UAPI_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>

/* ---- capabilities newer than 6.1 (mainline numbers, x86 unless noted) ---- */
#define VMWKVM_UAPI_CAP_SYNC_REGS 74u
#define VMWKVM_UAPI_CAP_X86_USER_SPACE_MSR 188u
#define VMWKVM_UAPI_CAP_X86_MSR_FILTER 189u
#define VMWKVM_UAPI_CAP_EXIT_HYPERCALL 201u
#define VMWKVM_UAPI_CAP_XEN_HVM 38u
#define VMWKVM_UAPI_CAP_USER_MEMORY2 231u
#define VMWKVM_UAPI_CAP_MEMORY_FAULT_INFO 232u
#define VMWKVM_UAPI_CAP_MEMORY_ATTRIBUTES 233u
#define VMWKVM_UAPI_CAP_GUEST_MEMFD 234u
#define VMWKVM_UAPI_CAP_VM_TYPES 235u
#define VMWKVM_UAPI_CAP_PRE_FAULT_MEMORY 236u
#define VMWKVM_UAPI_CAP_X86_APIC_BUS_CYCLES_NS 237u
#define VMWKVM_UAPI_CAP_X86_GUEST_MODE 238u
#define VMWKVM_UAPI_CAP_ARM_WRITABLE_IMP_ID_REGS 239u
#define VMWKVM_UAPI_CAP_ARM_EL2 240u
#define VMWKVM_UAPI_CAP_ARM_EL2_E2H0 241u
#define VMWKVM_UAPI_CAP_RISCV_MP_STATE_RESET 242u
#define VMWKVM_UAPI_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED 243u
#define VMWKVM_UAPI_CAP_GUEST_MEMFD_FLAGS 244u
#define VMWKVM_UAPI_CAP_ARM_SEA_TO_USER 245u
#define VMWKVM_UAPI_CAP_S390_USER_OPEREXEC 246u

/* ---- exit reasons newer than 6.1 ---- */
#define VMWKVM_UAPI_EXIT_LOONGARCH_IOCSR 38u
#define VMWKVM_UAPI_EXIT_MEMORY_FAULT 39u
#define VMWKVM_UAPI_EXIT_TDX 40u
#define VMWKVM_UAPI_EXIT_ARM_SEA 41u

/* kvm_run.flags (u16 at offset 14), x86 */
#define VMWKVM_UAPI_RUN_X86_SMM (1u << 0)
#define VMWKVM_UAPI_RUN_X86_BUS_LOCK (1u << 1)
#define VMWKVM_UAPI_RUN_X86_GUEST_MODE (1u << 2)

/* KVM_EXIT_MEMORY_FAULT payload, at kvm_run offset 32 */
struct vmwkvm_uapi_memory_fault {
	uint64_t flags;
	uint64_t gpa;
	uint64_t size;
};
#define VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE (1ull << 3)

/* KVM_SET_USER_MEMORY_REGION2 (6.8) */
struct vmwkvm_uapi_userspace_memory_region2 {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t guest_memfd_offset;
	uint32_t guest_memfd;
	uint32_t pad1;
	uint64_t pad2[14];
};
#define VMWKVM_UAPI_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct vmwkvm_uapi_userspace_memory_region2)
#define VMWKVM_UAPI_MEM_LOG_DIRTY_PAGES (1u << 0)
#define VMWKVM_UAPI_MEM_READONLY (1u << 1)
#define VMWKVM_UAPI_MEM_GUEST_MEMFD (1u << 2)

/* ---- userfaultfd additions newer than 6.1 ---- */
#define VMWKVM_UAPI_UFFD_FEATURE_WP_UNPOPULATED (1ull << 13)
#define VMWKVM_UAPI_UFFD_FEATURE_POISON (1ull << 14)
#define VMWKVM_UAPI_UFFD_FEATURE_WP_ASYNC (1ull << 15)
#define VMWKVM_UAPI_UFFD_FEATURE_MOVE (1ull << 16)
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* ======================= proposed, unmerged: VMware ======================= */

/* rusin-v2 exit payload type (struct vmwkvm_proposed_vmware_exit::type) */
#define VMWKVM_PROPOSED_VMWARE_EXIT_HCALL 1u

/* struct kvm_vmware_exit as posted in the v2 series (lives in the kvm_run exit union) */
struct vmwkvm_proposed_vmware_exit {
	uint32_t type;
	uint32_t pad1;
	struct {
		uint32_t longmode;
		uint32_t cpl;
		uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
		uint64_t result;
		struct {
			uint32_t inject;
			uint32_t pad2;
			uint32_t vector;
			uint32_t error_code;
			uint64_t address;
		} exception;
	} hcall;
};

/* ================================ layout checks ================================ */
#define VMWKVM_UAPI_RUN_UNION_OFFSET 32u

_Static_assert(sizeof(struct kvm_run) == 2352, "kvm_run size");
_Static_assert(offsetof(struct kvm_run, request_interrupt_window) == 0, "kvm_run.request_interrupt_window");
_Static_assert(offsetof(struct kvm_run, immediate_exit) == 1, "kvm_run.immediate_exit");
_Static_assert(offsetof(struct kvm_run, exit_reason) == 8, "kvm_run.exit_reason");
_Static_assert(offsetof(struct kvm_run, flags) == 14, "kvm_run.flags");
_Static_assert(offsetof(struct kvm_run, cr8) == 16, "kvm_run.cr8");
_Static_assert(offsetof(struct kvm_run, apic_base) == 24, "kvm_run.apic_base");
_Static_assert(offsetof(struct kvm_run, io) == VMWKVM_UAPI_RUN_UNION_OFFSET, "kvm_run exit union");
_Static_assert(offsetof(struct kvm_run, kvm_valid_regs) == 288, "kvm_run.kvm_valid_regs");
_Static_assert(offsetof(struct kvm_run, kvm_dirty_regs) == 296, "kvm_run.kvm_dirty_regs");
_Static_assert(offsetof(struct kvm_run, s) == 304, "kvm_run.s");
_Static_assert(offsetof(struct kvm_run, s.regs.regs) == 304, "kvm_run.s.regs.regs");
_Static_assert(offsetof(struct kvm_run, s.regs.sregs) == 448, "kvm_run.s.regs.sregs");
_Static_assert(offsetof(struct kvm_run, s.regs.events) == 760, "kvm_run.s.regs.events");
_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs");
_Static_assert(sizeof(struct kvm_vcpu_events) == 64, "kvm_vcpu_events");
_Static_assert(sizeof(struct kvm_sync_regs) == 520, "kvm_sync_regs");
/* io exit */
_Static_assert(offsetof(struct kvm_run, io.direction) == 32, "io.direction");
_Static_assert(offsetof(struct kvm_run, io.size) == 33, "io.size");
_Static_assert(offsetof(struct kvm_run, io.port) == 34, "io.port");
_Static_assert(offsetof(struct kvm_run, io.count) == 36, "io.count");
_Static_assert(offsetof(struct kvm_run, io.data_offset) == 40, "io.data_offset");
/* mmio exit */
_Static_assert(offsetof(struct kvm_run, mmio.phys_addr) == 32, "mmio.phys_addr");
_Static_assert(offsetof(struct kvm_run, mmio.data) == 40, "mmio.data");
_Static_assert(offsetof(struct kvm_run, mmio.len) == 48, "mmio.len");
_Static_assert(offsetof(struct kvm_run, mmio.is_write) == 52, "mmio.is_write");
/* hypercall exit (KVM_CAP_EXIT_HYPERCALL) */
_Static_assert(offsetof(struct kvm_run, hypercall.nr) == 32, "hypercall.nr");
_Static_assert(offsetof(struct kvm_run, hypercall.args) == 40, "hypercall.args");
_Static_assert(offsetof(struct kvm_run, hypercall.ret) == 88, "hypercall.ret");
/* memory fault */
_Static_assert(sizeof(struct vmwkvm_uapi_memory_fault) == 24, "memory_fault size");
_Static_assert(offsetof(struct vmwkvm_uapi_memory_fault, gpa) == 8, "memory_fault.gpa");
_Static_assert(offsetof(struct vmwkvm_uapi_memory_fault, size) == 16, "memory_fault.size");
/* region2 */
_Static_assert(sizeof(struct vmwkvm_uapi_userspace_memory_region2) == 160, "region2 size");
_Static_assert(offsetof(struct vmwkvm_uapi_userspace_memory_region2, guest_memfd_offset) == 32, "region2.guest_memfd_offset");
_Static_assert(offsetof(struct vmwkvm_uapi_userspace_memory_region2, guest_memfd) == 40, "region2.guest_memfd");
_Static_assert(offsetof(struct vmwkvm_uapi_userspace_memory_region2, pad2) == 48, "region2.pad2");
_Static_assert(VMWKVM_UAPI_SET_USER_MEMORY_REGION2 == 0x40a0ae49, "KVM_SET_USER_MEMORY_REGION2 number");
/* proposed VMware exit */
_Static_assert(sizeof(struct vmwkvm_proposed_vmware_exit) == 104, "kvm_vmware_exit size");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.longmode) == 8, "vmware_exit.hcall.longmode");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.cpl) == 12, "vmware_exit.hcall.cpl");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.rax) == 16, "vmware_exit.hcall.rax");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.rbp) == 64, "vmware_exit.hcall.rbp");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.result) == 72, "vmware_exit.hcall.result");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.exception.inject) == 80, "vmware_exit.exception.inject");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.exception.vector) == 88, "vmware_exit.exception.vector");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.exception.error_code) == 92, "vmware_exit.exception.error_code");
_Static_assert(offsetof(struct vmwkvm_proposed_vmware_exit, hcall.exception.address) == 96, "vmware_exit.exception.address");
_Static_assert(VMWKVM_UAPI_RUN_UNION_OFFSET + sizeof(struct vmwkvm_proposed_vmware_exit) <= 288, "vmware exit fits the union");
/* userfaultfd */
_Static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg");
_Static_assert(sizeof(struct uffdio_api) == 24, "uffdio_api");
_Static_assert(sizeof(struct uffdio_register) == 32, "uffdio_register");
_Static_assert(sizeof(struct uffdio_writeprotect) == 24, "uffdio_writeprotect");
_Static_assert(sizeof(struct uffdio_copy) == 40, "uffdio_copy");
_Static_assert(_UFFDIO_WRITEPROTECT == 0x06 && _UFFDIO_CONTINUE == 0x07, "uffd ioctl numbers");

/* Pointers into the kvm_run exit union for payloads the system header lacks. */
static inline struct vmwkvm_uapi_memory_fault *vmwkvm_uapi_run_memory_fault(struct kvm_run *run)
{
	return (struct vmwkvm_uapi_memory_fault *)(void *)((char *)run + VMWKVM_UAPI_RUN_UNION_OFFSET);
}
static inline struct vmwkvm_proposed_vmware_exit *vmwkvm_proposed_run_vmware(struct kvm_run *run)
{
	return (struct vmwkvm_proposed_vmware_exit *)(void *)((char *)run + VMWKVM_UAPI_RUN_UNION_OFFSET);
}

/* ============== memory-fault exits: proposed (unmerged) forms (memfault) ============== */
/* KVM Userfault (James Houghton v1-v3): memory_fault.flags bit for a userfault-bitmap hit */
#define VMWKVM_PROPOSED_MEMORY_EXIT_FLAG_USERFAULT (1ull << 4)
/* Access flags of Anish Moorthy's memory-fault series (bits mainline left free below PRIVATE),
 * used by the modelled permission-fault form of the Feb-2025 discussion */
#define VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_READ (1ull << 0)
#define VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_WRITE (1ull << 1)
#define VMWKVM_PROPOSED_MEMORY_FAULT_FLAG_EXEC (1ull << 2)
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
/* UFFDIO_CONTINUE mode bit newer than 6.1: map the page write-protected (6.5) */
#define VMWKVM_UAPI_UFFDIO_CONTINUE_MODE_WP (1ull << 1)
_Static_assert(USERFAULTFD_IOC_NEW == 0xaa00, "USERFAULTFD_IOC_NEW number");
_Static_assert(sizeof(struct uffdio_continue) == 32, "uffdio_continue");
_Static_assert(sizeof(struct uffdio_zeropage) == 32, "uffdio_zeropage");

#endif /* VMWKVM_LIB_UAPI_H */
