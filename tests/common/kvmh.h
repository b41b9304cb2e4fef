/*
 * kvmh: a small harness for tests that run tiny guests on the real /dev/kvm.
 *
 * It talks to the kernel directly (plain ioctl(2), not the library's sys layer), so a
 * test can compare what the library says with what KVM says. Typical use:
 *
 *   kvmh_skip_unless_kvm();                 // in main(): exit 77 only if /dev/kvm is absent
 *   struct kvmh h;
 *   ck_assert_int_eq(kvmh_vm_create(&h, NULL), 0);   // VM + one RAM slot at GPA 0
 *   ck_assert_int_eq(kvmh_load_guest(&h, "realmode_bdoor_in", 0x1000), 0);
 *   ck_assert_int_eq(kvmh_vcpu_create(&h), 0);        // vCPU + kvm_run mapping
 *   ck_assert_int_eq(kvmh_setup_real_mode(&h, 0x1000), 0);
 *   kvmh_watchdog_arm(10);                            // SIGALRM -> KVM_RUN returns EINTR
 *   ck_assert_int_eq(kvmh_run(&h), 0);
 *   ... h.run->exit_reason ...
 *   kvmh_destroy(&h);
 *
 * Guests are flat binaries built from tests/common/guests/<name>.S into VMWKVM_GUEST_DIR.
 * Every function returns 0 (or a value >= 0) on success and a negative errno on failure,
 * and prints nothing except kvmh_skip_unless_kvm() and kvmh_describe_exit().
 */
#ifndef VMWKVM_TESTS_KVMH_H
#define VMWKVM_TESTS_KVMH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

/* Default guest RAM: 1 MiB at GPA 0, slot 0. */
#define KVMH_DEFAULT_MEM_SIZE (1u << 20)

/* GDT written by kvmh_setup_flat32() (at opts.gdt_gpa, default 0x500):
 *   0x00 null, 0x08 code32 DPL0, 0x10 data32 DPL0, 0x18 code32 DPL3, 0x20 data32 DPL3
 * This is the layout SYSEXIT expects with IA32_SYSENTER_CS = 0x08 (ring 3 CS = 0x1b,
 * SS = 0x23). */
#define KVMH_SEL_CODE0 0x08
#define KVMH_SEL_DATA0 0x10
#define KVMH_SEL_CODE3 0x1b
#define KVMH_SEL_DATA3 0x23
#define KVMH_DEFAULT_GDT_GPA 0x500u

struct kvmh_opts {
	size_t mem_size;      /* bytes of RAM at mem_gpa (0: KVMH_DEFAULT_MEM_SIZE), page multiple */
	uint64_t mem_gpa;     /* guest-physical base of the slot (default 0) */
	int mem_fd;           /* back the RAM with this fd (memfd, shmem) instead of anonymous memory; -1 or 0 = anon */
	bool mem_fd_set;      /* mem_fd is meaningful */
	bool no_memory;       /* create no memory slot (the test adds its own) */
	uint64_t gdt_gpa;     /* where kvmh_setup_flat32() writes the GDT (0: KVMH_DEFAULT_GDT_GPA) */
};

struct kvmh {
	int kvm_fd;
	int vm_fd;
	int vcpu_fd;          /* -1 until kvmh_vcpu_create()/kvmh_vcpu_attach() */
	struct kvm_run *run;  /* mapping of the vCPU's kvm_run (run_size bytes) */
	size_t run_size;
	uint8_t *mem;         /* host mapping of guest RAM */
	size_t mem_size;
	uint64_t mem_gpa;
	uint64_t gdt_gpa;
	bool mem_owned;       /* mem was mmap()ed by kvmh */
	bool live;            /* set by kvmh_vm_create(); a zero-filled struct owns nothing */
};

/* If /dev/kvm does not exist, print one line "SKIP: ..." on stderr and exit(77).
 * Any other problem (EACCES, ...) is left to the test, which must then fail. */
void kvmh_skip_unless_kvm(const char *test_name);

/* Open /dev/kvm, create a VM and (unless opts->no_memory) one RAM slot. opts may be NULL.
 * On failure everything created so far is released. */
int kvmh_vm_create(struct kvmh *h, const struct kvmh_opts *opts);

/* Add a memory slot backed by host memory at hva (KVM_SET_USER_MEMORY_REGION). */
int kvmh_add_slot(struct kvmh *h, uint32_t slot, uint64_t gpa, void *hva, size_t size, uint32_t flags);

/* KVM_CREATE_VCPU (id 0) and map its kvm_run. */
int kvmh_vcpu_create(struct kvmh *h);

/* Use a vCPU fd created elsewhere (for example by vmwkvm_vm_create_vcpu()); maps kvm_run.
 * kvmh_destroy() closes it. */
int kvmh_vcpu_attach(struct kvmh *h, int vcpu_fd);

/* Copy VMWKVM_GUEST_DIR/<name>.bin into guest RAM at gpa. Returns its size in bytes. */
int kvmh_load_guest(struct kvmh *h, const char *name, uint64_t gpa);

/* Host pointer for a guest-physical range inside the kvmh RAM slot, or NULL. */
void *kvmh_gpa(struct kvmh *h, uint64_t gpa, size_t len);

/* Real mode, all segments 0 (base 0), IP = entry, SP = entry - 0x10 (change it with
 * kvmh_set_stack()), RFLAGS = 0x2, other GPRs 0. */
int kvmh_setup_real_mode(struct kvmh *h, uint64_t entry);

/* 32-bit protected mode without paging: flat 4 GiB segments, CPL0, CS = 0x08,
 * DS/ES/FS/GS/SS = 0x10, GDT as described above, EIP = entry, ESP = entry - 0x10. */
int kvmh_setup_flat32(struct kvmh *h, uint64_t entry);

/* Set RSP (keeps the other registers). */
int kvmh_set_stack(struct kvmh *h, uint64_t rsp);

/* Register helpers (plain KVM_GET/SET_REGS / SREGS). */
int kvmh_get_regs(struct kvmh *h, struct kvm_regs *regs);
int kvmh_set_regs(struct kvmh *h, const struct kvm_regs *regs);
int kvmh_get_sregs(struct kvmh *h, struct kvm_sregs *sregs);
int kvmh_set_sregs(struct kvmh *h, const struct kvm_sregs *sregs);

/* One KVM_RUN. Returns 0, or -errno (-EINTR when the watchdog fired). */
int kvmh_run(struct kvmh *h);

/* Run until an exit other than KVM_EXIT_INTR / EINTR-without-watchdog, at most max_runs
 * times. Returns 0 or -errno (-EINTR if the watchdog fired, -ETIMEDOUT after max_runs). */
int kvmh_run_until_exit(struct kvmh *h, int max_runs);

/* Watchdog: SIGALRM handler installed without SA_RESTART, so a vCPU stuck in KVM_RUN
 * returns EINTR after `seconds`. kvmh_watchdog_fired() says whether it went off. */
void kvmh_watchdog_arm(unsigned seconds);
/* The factor every test watchdog and timeout is multiplied by: environment variable
 * VMWKVM_TEST_TIMEOUT_SCALE (CTest sets it from the build's cache variable of that name),
 * 1 when unset. kvmh_watchdog_arm() applies it itself. */
unsigned kvmh_timeout_scale(void);
void kvmh_watchdog_disarm(void);
bool kvmh_watchdog_fired(void);

/* Human-readable one-line description of the last exit (for assertion messages). */
const char *kvmh_describe_exit(const struct kvmh *h, char *buf, size_t len);

/* Data of a KVM_EXIT_IO inside the kvm_run mapping (bounds-checked), or NULL. */
void *kvmh_io_data(struct kvmh *h);

/* Release everything kvmh created (and an attached vCPU fd). Safe on a zero-filled
 * struct kvmh, on a partially created one, and when called twice. */
void kvmh_destroy(struct kvmh *h);

#endif
