/* Process-wide log callback, version and error strings. */
#include "core/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct log_sink {
	vmwkvm_log_fn fn;
	void *ctx;
};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_sink log_sink;
static atomic_int log_max = -1; /* -1: no callback */

int vmwkvm_set_log(vmwkvm_log_fn fn, void *ctx, int max_level)
{
	if (max_level < VMWKVM_LOG_ERROR || max_level > VMWKVM_LOG_DEBUG)
		return -EINVAL;
	pthread_mutex_lock(&log_lock);
	log_sink.fn = fn;
	log_sink.ctx = ctx;
	atomic_store(&log_max, fn ? max_level : -1);
	pthread_mutex_unlock(&log_lock);
	return 0;
}

bool vk_log_enabled(int level)
{
	return level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

void vk_log(int level, const char *fmt, ...)
{
	if (!vk_log_enabled(level))
		return;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_lock);
	struct log_sink s = log_sink;
	pthread_mutex_unlock(&log_lock);
	if (s.fn)
		s.fn(level, buf, s.ctx);
}

bool vk_opts_valid(const void *opts, size_t opts_sz, size_t known_sz)
{
	if (!opts)
		return true;
	if (opts_sz < sizeof(size_t))
		return false;
	const unsigned char *p = opts;
	for (size_t i = known_sz; i < opts_sz; i++)
		if (p[i])
			return false;
	return true;
}

uint32_t vmwkvm_version(void)
{
	return VMWKVM_VERSION_HEX;
}

const char *vmwkvm_version_string(void)
{
	return VMWKVM_VERSION_STRING;
}

const char *vmwkvm_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0: return "success";
	case EINVAL: return "invalid argument";
	case ENOMEM: return "out of memory";
	case EBADF: return "bad file descriptor";
	case EFAULT: return "bad address";
	case EINTR: return "interrupted";
	case EAGAIN: return "try again";
	case EBUSY: return "busy: a vCPU already exists or the object is in use";
	case EEXIST: return "already exists or overlaps an existing range";
	case ENOENT: return "not found";
	case ENODEV: return "no such device (is /dev/kvm present?)";
	case EACCES: return "permission denied";
	case EPERM: return "operation not permitted";
	case ENOSPC: return "not enough space in the caller's buffer";
	case ENOTTY: return "inappropriate ioctl for this file descriptor";
	case EOPNOTSUPP: return "not supported by this kernel or dialect";
	case ENOSYS: return "system call not available";
	case ERANGE: return "value out of range";
	case E2BIG: return "too large";
	case EPROTO: return "protocol error";
	case EHWPOISON: return "memory poisoned";
	default: return "unknown error";
	}
}
