/*
 * The raw system-call layer: every ioctl, mmap and syscall the library makes on KVM
 * and userfaultfd file descriptors goes through here and comes back as a negative
 * errno on failure. It is the one seam where tests inject faults (EINTR, ENOMEM,
 * EBADF, EFAULT ...) or put the kernel model (tests/common/kmodel.h) in place of the kernel.
 * Internal: not exported from libvmwkvm.so.
 */
#ifndef VMWKVM_LIB_SYS_H
#define VMWKVM_LIB_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vmwkvm_sys_ops {
	/* each returns >= 0 on success, a negative errno on failure */
	int (*ioctl)(void *ctx, int fd, unsigned long req, void *arg);
	int (*open)(void *ctx, const char *path, int flags);
	int (*close)(void *ctx, int fd);
	/* *out receives the mapping */
	int (*mmap)(void *ctx, void **out, size_t len, int prot, int flags, int fd, off_t off);
	int (*munmap)(void *ctx, void *addr, size_t len);
	int (*mprotect)(void *ctx, void *addr, size_t len, int prot);
	int (*userfaultfd)(void *ctx, int flags);
	/* returns bytes read */
	ssize_t (*read)(void *ctx, int fd, void *buf, size_t len);
	/* reads a small text file (sysfs, procfs) into buf, NUL-terminated; returns length */
	int (*read_file)(void *ctx, const char *path, char *buf, size_t len);
	void *ctx;
};

/* The operations of the real kernel. */
const struct vmwkvm_sys_ops *vmwkvm_sys_default_ops(void);
/* Replace the operations (tests only); NULL restores the real kernel. Not thread-safe
 * against concurrent library calls. */
void vmwkvm_sys_set_ops(const struct vmwkvm_sys_ops *ops);
const struct vmwkvm_sys_ops *vmwkvm_sys_ops_current(void);

/* Wrappers used by the library. */
int vk_ioctl(int fd, unsigned long req, void *arg);
int vk_open(const char *path, int flags);
int vk_close(int fd);
int vk_mmap(void **out, size_t len, int prot, int flags, int fd, off_t off);
int vk_munmap(void *addr, size_t len);
int vk_mprotect(void *addr, size_t len, int prot);
int vk_userfaultfd(int flags);
ssize_t vk_read(int fd, void *buf, size_t len);
int vk_read_file(const char *path, char *buf, size_t len);

#endif
