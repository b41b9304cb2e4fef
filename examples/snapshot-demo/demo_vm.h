/*
 * demo_vm: the small VMM shared by vmwkvm-snapshot-demo and vmwkvm-restore-demo.
 *
 * It owns what a real VMM owns (its /dev/kvm, VM and vCPU fds, guest RAM, vCPU threads) and
 * uses only libvmwkvm's public API for memory faults: every exit first goes to
 * vmwkvm_memfault_handle_exit(), the rest is the demo's. Guest RAM is one memslot at GPA 0;
 * vCPUs start in flat 32-bit protected mode at 0x1000 (GDT at 0x500: the demo writes it, or
 * provides it through a fault handler). A vCPU can be paused (it leaves KVM_RUN through
 * immediate_exit and a signal, and waits) and resumed.
 *
 * Without KVM (--no-kvm) the same threads run a C function instead of a guest ("host
 * vCPUs"): the library sees their faults exactly as it sees KVM's on their behalf.
 */
#ifndef VMWKVM_DEMO_VM_H
#define VMWKVM_DEMO_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmwkvm/vmwkvm.h>

#define DEMO_PG 4096ull
#define DEMO_MAX_VCPUS 8
#define DEMO_ENTRY 0x1000u
#define DEMO_GDT 0x500u
#define DEMO_DATA_GPA 0x100000ull /* the pattern area starts at 1 MiB */

struct demo_vm;

/* An exit the library did not take: return 0 to re-enter, 1 to stop this vCPU, <0 on error. */
typedef int (*demo_exit_fn)(struct demo_vm *d, int cpu, struct kvm_run *run, void *ctx);
/* A host vCPU body (--no-kvm): runs until demo_should_stop(); calls demo_pause_point() often. */
typedef int (*demo_host_fn)(struct demo_vm *d, int cpu, void *ctx);

struct demo_vcpu {
	int fd;
	struct kvm_run *run;
	size_t run_size;
	vmwkvm_vcpu *lib;
	pthread_t th;
	int result;
	atomic_int paused;
	atomic_int done;
	unsigned long mf_exits;
};

struct demo_vm {
	bool kvm;      /* false: host vCPUs */
	int kvm_fd, vm_fd;
	uint8_t *ram;
	size_t ram_size;
	int memfd;     /* -1: private anonymous RAM */
	int nvcpu;
	struct demo_vcpu vcpu[DEMO_MAX_VCPUS];
	vmwkvm_vm *lib_vm;
	vmwkvm_memfault *mf;
	demo_exit_fn on_exit;
	demo_host_fn host_fn;
	void *ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_int pause_req, stop_req;
	char err[256];
};

/* Map RAM (never touched here: restore relies on untouched pages) and, with kvm, create
 * the VM, its memslot and the vCPUs (and the library's handles for them). */
int demo_vm_create(struct demo_vm *d, size_t ram_size, bool use_memfd, int nvcpu, bool kvm);
/* The library region describing the RAM. */
struct vmwkvm_mf_region demo_vm_region(const struct demo_vm *d);
/* Write the flat GDT the vCPUs use into a page image (the page holding DEMO_GDT). */
void demo_gdt_page(uint8_t *page);
/* Set vCPU cpu's registers: EIP = DEMO_ENTRY, the given EBX/ECX/ESI/EDI, its own stack. */
int demo_vcpu_regs(struct demo_vm *d, int cpu, uint32_t ebx, uint32_t ecx, uint32_t esi, uint32_t edi);
/* Start every vCPU thread. */
int demo_vm_start(struct demo_vm *d);
/* Pause every running vCPU and wait until all are out of the guest / at a pause point. */
void demo_pause_all(struct demo_vm *d);
void demo_resume_all(struct demo_vm *d);
/* Stop every vCPU and join the threads; returns the first non-zero vCPU result. */
int demo_stop_all(struct demo_vm *d);
/* Wait until every vCPU finished by itself; returns the first non-zero vCPU result. */
int demo_join_all(struct demo_vm *d);
void demo_vm_destroy(struct demo_vm *d);

/* For host vCPUs. */
bool demo_should_stop(struct demo_vm *d);
void demo_pause_point(struct demo_vm *d, int cpu);

/* Console output: demo_say() prints to stdout unless demo_quiet (--quiet) is set;
 * demo_on_log() is the vmwkvm log callback, printing to stderr. */
extern bool demo_quiet;
void demo_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void demo_on_log(int level, const char *msg, void *ctx);

double demo_now_ms(void);
/* Read a whole file (a guest binary) into buf (at most len bytes); returns its size or -errno. */
long demo_read_file(const char *path, uint8_t *buf, size_t len);

#endif
