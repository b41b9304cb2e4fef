/* demo_vm: see demo_vm.h. */
#include "demo_vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

bool demo_quiet;

void demo_say(const char *fmt, ...)
{
	if (demo_quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

void demo_on_log(int level, const char *msg, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "libvmwkvm[%d]: %s\n", level, msg);
}

double demo_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

long demo_read_file(const char *path, uint8_t *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		if (r == 0 || (got += (size_t)r) == len)
			break;
	}
	close(fd);
	return (long)got;
}

static void on_kick(int sig)
{
	(void)sig; /* only makes KVM_RUN return EINTR */
}

void demo_gdt_page(uint8_t *page)
{
	static const uint64_t gdt[3] = { 0, 0x00cf9b000000ffffull, 0x00cf93000000ffffull };
	memset(page, 0, DEMO_PG);
	memcpy(page + (DEMO_GDT & (DEMO_PG - 1)), gdt, sizeof(gdt));
}

static int flat32(int fd)
{
	struct kvm_sregs s;
	if (ioctl(fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	struct kvm_segment cs = { .base = 0, .limit = 0xffffffffu, .selector = 0x08, .type = 0xb, .present = 1,
				  .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
	struct kvm_segment ds = cs;
	ds.selector = 0x10;
	ds.type = 0x3;
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.gdt.base = DEMO_GDT;
	s.gdt.limit = 3 * 8 - 1;
	s.cr0 = (s.cr0 | 1u) & ~(1ull << 31);
	return ioctl(fd, KVM_SET_SREGS, &s) < 0 ? -errno : 0;
}

int demo_vm_create(struct demo_vm *d, size_t ram_size, bool use_memfd, int nvcpu, bool kvm)
{
	memset(d, 0, sizeof(*d));
	d->kvm_fd = d->vm_fd = d->memfd = -1;
	d->kvm = kvm;
	d->nvcpu = nvcpu;
	d->ram_size = ram_size;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	if (nvcpu < 1 || nvcpu > DEMO_MAX_VCPUS || ram_size < 2 * DEMO_DATA_GPA || ram_size % DEMO_PG)
		return -EINVAL;
	void *p;
	if (use_memfd) {
		d->memfd = memfd_create("demo-ram", MFD_CLOEXEC);
		if (d->memfd < 0 || ftruncate(d->memfd, (off_t)ram_size) < 0)
			return -errno;
		p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
	} else {
		p = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	if (p == MAP_FAILED)
		return -errno;
	d->ram = p;
	for (int i = 0; i < nvcpu; i++)
		d->vcpu[i].fd = -1;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick; /* no SA_RESTART: KVM_RUN must return */
	sigaction(SIGUSR1, &sa, NULL);
	if (!kvm)
		return 0;

	d->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (d->kvm_fd < 0)
		return -errno;
	d->vm_fd = ioctl(d->kvm_fd, KVM_CREATE_VM, 0);
	if (d->vm_fd < 0)
		return -errno;
	struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = ram_size,
						 .userspace_addr = (uintptr_t)d->ram };
	if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return -errno;
	struct vmwkvm_vm_opts vo = { .sz = sizeof(vo), .kvm_fd = d->kvm_fd, .kvm_fd_set = 1 };
	int e = vmwkvm_vm_new(d->vm_fd, &vo, &d->lib_vm);
	if (e < 0)
		return e;
	for (int i = 0; i < nvcpu; i++) {
		int fd = vmwkvm_vm_create_vcpu(d->lib_vm, (unsigned long)i);
		if (fd < 0)
			return fd;
		d->vcpu[i].fd = fd;
		if ((e = vmwkvm_vcpu_new(d->lib_vm, fd, NULL, 0, NULL, &d->vcpu[i].lib)) < 0)
			return e;
		d->vcpu[i].run = vmwkvm_vcpu_kvm_run(d->vcpu[i].lib);
		if ((e = flat32(fd)) < 0)
			return e;
	}
	return 0;
}

struct vmwkvm_mf_region demo_vm_region(const struct demo_vm *d)
{
	struct vmwkvm_mf_region r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	r.gpa = 0;
	r.size = d->ram_size;
	r.host = d->ram;
	r.kind = d->memfd >= 0 ? VMWKVM_MF_MEM_SHMEM : VMWKVM_MF_MEM_ANON;
	if (d->memfd >= 0) {
		r.flags = VMWKVM_MF_REGION_HAS_FD;
		r.fd = d->memfd;
	}
	return r;
}

int demo_vcpu_regs(struct demo_vm *d, int cpu, uint32_t ebx, uint32_t ecx, uint32_t esi, uint32_t edi)
{
	if (!d->kvm)
		return 0;
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = DEMO_ENTRY;
	regs.rflags = 0x2;
	regs.rsp = 0x9000 + (uint64_t)cpu * 0x800;
	regs.rbx = ebx;
	regs.rcx = ecx;
	regs.rsi = esi;
	regs.rdi = edi;
	return ioctl(d->vcpu[cpu].fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

bool demo_should_stop(struct demo_vm *d)
{
	return atomic_load(&d->stop_req) != 0;
}

void demo_pause_point(struct demo_vm *d, int cpu)
{
	if (!atomic_load(&d->pause_req))
		return;
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->vcpu[cpu].paused, 1);
	pthread_cond_broadcast(&d->cond);
	while (atomic_load(&d->pause_req) && !atomic_load(&d->stop_req))
		pthread_cond_wait(&d->cond, &d->lock);
	atomic_store(&d->vcpu[cpu].paused, 0);
	pthread_mutex_unlock(&d->lock);
}

struct thread_arg {
	struct demo_vm *d;
	int cpu;
};

static int kvm_loop(struct demo_vm *d, int cpu)
{
	struct demo_vcpu *v = &d->vcpu[cpu];
	for (;;) {
		if (demo_should_stop(d))
			return 0;
		demo_pause_point(d, cpu);
		/* kvm_run.immediate_exit is shared with kick() on the main thread (and read by KVM):
		 * both sides use atomic accesses */
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (atomic_load(&d->pause_req) || demo_should_stop(d))
			continue;
		int r = vmwkvm_vcpu_run(v->lib);
		if (r == -EINTR || r == -EAGAIN || (r == 0 && v->run->exit_reason == KVM_EXIT_INTR))
			continue;
		struct vmwkvm_mf_record rec;
		int h;
		do {
			h = vmwkvm_memfault_handle_exit(d->mf, v->lib, r, &rec);
			if (h == VMWKVM_MF_EXIT_RETRY)
				sched_yield();
		} while (h == VMWKVM_MF_EXIT_RETRY && !demo_should_stop(d));
		if (h == VMWKVM_MF_EXIT_HANDLED) {
			v->mf_exits++;
			continue;
		}
		if (h < 0 || h == VMWKVM_MF_EXIT_FAILED) {
			snprintf(d->err, sizeof(d->err), "vCPU %d: memory fault at GPA 0x%llx not resolved: %s", cpu,
				 (unsigned long long)rec.gpa, vmwkvm_strerror(h < 0 ? h : rec.error));
			return -EFAULT;
		}
		if (r < 0) {
			snprintf(d->err, sizeof(d->err), "vCPU %d: KVM_RUN: %s%s", cpu, vmwkvm_strerror(r),
				 r == -EFAULT ? " (a bare EFAULT: this host runs guests natively, so writes to "
						"mprotect()ed RAM carry no address; use userfaultfd)"
					      : "");
			return r;
		}
		int e = d->on_exit ? d->on_exit(d, cpu, v->run, d->ctx) : -EPROTO;
		if (e == 1)
			return 0;
		if (e < 0) {
			if (!d->err[0])
				snprintf(d->err, sizeof(d->err), "vCPU %d: unexpected exit %u", cpu, v->run->exit_reason);
			return e;
		}
	}
}

static void *vcpu_thread(void *p)
{
	struct thread_arg *a = p;
	struct demo_vm *d = a->d;
	int cpu = a->cpu;
	free(a);
	d->vcpu[cpu].result = d->kvm ? kvm_loop(d, cpu) : d->host_fn(d, cpu, d->ctx);
	atomic_store(&d->vcpu[cpu].done, 1);
	pthread_mutex_lock(&d->lock);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int demo_vm_start(struct demo_vm *d)
{
	for (int i = 0; i < d->nvcpu; i++) {
		struct thread_arg *a = malloc(sizeof(*a));
		if (!a)
			return -ENOMEM;
		a->d = d;
		a->cpu = i;
		int e = pthread_create(&d->vcpu[i].th, NULL, vcpu_thread, a);
		if (e) {
			free(a);
			return -e;
		}
	}
	return 0;
}

static void kick(struct demo_vm *d, int i)
{
	if (d->kvm && d->vcpu[i].run)
		__atomic_store_n(&d->vcpu[i].run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(d->vcpu[i].th, SIGUSR1);
}

void demo_pause_all(struct demo_vm *d)
{
	atomic_store(&d->pause_req, 1);
	for (int i = 0; i < d->nvcpu; i++)
		kick(d, i);
	pthread_mutex_lock(&d->lock);
	for (;;) {
		bool all = true;
		for (int i = 0; i < d->nvcpu; i++)
			all &= atomic_load(&d->vcpu[i].paused) || atomic_load(&d->vcpu[i].done);
		if (all)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
		pthread_mutex_unlock(&d->lock);
		for (int i = 0; i < d->nvcpu; i++) /* a kick can race with the entry into KVM_RUN */
			if (!atomic_load(&d->vcpu[i].paused) && !atomic_load(&d->vcpu[i].done))
				kick(d, i);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
}

void demo_resume_all(struct demo_vm *d)
{
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->pause_req, 0);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

int demo_join_all(struct demo_vm *d)
{
	int res = 0;
	for (int i = 0; i < d->nvcpu; i++) {
		pthread_join(d->vcpu[i].th, NULL);
		if (!res)
			res = d->vcpu[i].result;
	}
	return res;
}

int demo_stop_all(struct demo_vm *d)
{
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->stop_req, 1);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < d->nvcpu; i++)
		if (!atomic_load(&d->vcpu[i].done))
			kick(d, i);
	return demo_join_all(d);
}

void demo_vm_destroy(struct demo_vm *d)
{
	for (int i = 0; i < d->nvcpu; i++) {
		vmwkvm_vcpu_free(d->vcpu[i].lib);
		if (d->vcpu[i].fd >= 0)
			close(d->vcpu[i].fd);
	}
	vmwkvm_vm_free(d->lib_vm);
	if (d->vm_fd >= 0)
		close(d->vm_fd);
	if (d->kvm_fd >= 0)
		close(d->kvm_fd);
	if (d->ram)
		munmap(d->ram, d->ram_size);
	if (d->memfd >= 0)
		close(d->memfd);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	memset(d, 0, sizeof(*d));
}
