/* The raw system-call layer: see sys.h. */
#include "core/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int real_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	(void)ctx;
	int r = ioctl(fd, req, arg);
	return r < 0 ? -errno : r;
}

static int real_open(void *ctx, const char *path, int flags)
{
	(void)ctx;
	int r = open(path, flags | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

static int real_close(void *ctx, int fd)
{
	(void)ctx;
	return close(fd) < 0 ? -errno : 0;
}

static int real_mmap(void *ctx, void **out, size_t len, int prot, int flags, int fd, off_t off)
{
	(void)ctx;
	void *p = mmap(NULL, len, prot, flags, fd, off);
	if (p == MAP_FAILED)
		return -errno;
	*out = p;
	return 0;
}

static int real_munmap(void *ctx, void *addr, size_t len)
{
	(void)ctx;
	return munmap(addr, len) < 0 ? -errno : 0;
}

static int real_mprotect(void *ctx, void *addr, size_t len, int prot)
{
	(void)ctx;
	return mprotect(addr, len, prot) < 0 ? -errno : 0;
}

static int real_userfaultfd(void *ctx, int flags)
{
	(void)ctx;
#ifdef SYS_userfaultfd
	long r = syscall(SYS_userfaultfd, flags);
	return r < 0 ? -errno : (int)r;
#else
	(void)flags;
	return -ENOSYS;
#endif
}

static ssize_t real_read(void *ctx, int fd, void *buf, size_t len)
{
	(void)ctx;
	ssize_t r = read(fd, buf, len);
	return r < 0 ? -errno : r;
}

static int real_read_file(void *ctx, const char *path, char *buf, size_t len)
{
	(void)ctx;
	if (len == 0)
		return -EINVAL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	while (got + 1 < len) {
		ssize_t r = read(fd, buf + got, len - 1 - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	return (int)got;
}

static const struct vmwkvm_sys_ops real_ops = {
	.ioctl = real_ioctl,
	.open = real_open,
	.close = real_close,
	.mmap = real_mmap,
	.munmap = real_munmap,
	.mprotect = real_mprotect,
	.userfaultfd = real_userfaultfd,
	.read = real_read,
	.read_file = real_read_file,
	.ctx = NULL,
};

static _Atomic(const struct vmwkvm_sys_ops *) cur_ops = &real_ops;

const struct vmwkvm_sys_ops *vmwkvm_sys_default_ops(void)
{
	return &real_ops;
}

void vmwkvm_sys_set_ops(const struct vmwkvm_sys_ops *ops)
{
	atomic_store_explicit(&cur_ops, ops ? ops : &real_ops, memory_order_release);
}

const struct vmwkvm_sys_ops *vmwkvm_sys_ops_current(void)
{
	return atomic_load_explicit(&cur_ops, memory_order_acquire);
}

#define OPS() vmwkvm_sys_ops_current()

int vk_ioctl(int fd, unsigned long req, void *arg)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->ioctl(o->ctx, fd, req, arg);
}

int vk_open(const char *path, int flags)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->open(o->ctx, path, flags);
}

int vk_close(int fd)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->close(o->ctx, fd);
}

int vk_mmap(void **out, size_t len, int prot, int flags, int fd, off_t off)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->mmap(o->ctx, out, len, prot, flags, fd, off);
}

int vk_munmap(void *addr, size_t len)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->munmap(o->ctx, addr, len);
}

int vk_mprotect(void *addr, size_t len, int prot)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->mprotect(o->ctx, addr, len, prot);
}

int vk_userfaultfd(int flags)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->userfaultfd(o->ctx, flags);
}

ssize_t vk_read(int fd, void *buf, size_t len)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->read(o->ctx, fd, buf, len);
}

int vk_read_file(const char *path, char *buf, size_t len)
{
	const struct vmwkvm_sys_ops *o = OPS();
	return o->read_file(o->ctx, path, buf, len);
}
