/* Probe items of the userfaultfd group: the syscall and /dev/userfaultfd, the sysctl, the
 * API handshake and each feature bit the memory-fault dispatcher may use. */
#include "probe/probe_uffd.h"

#include "probe/items.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ userfaultfd */

static const struct uffd_feature_def {
	uint32_t id;
	uint32_t bit;
	const char *key;
	const char *what;
} uffd_features[] = {
	{ VMWKVM_PROBE_UFFD_WP, 0, "wp", "write-protect faults on anonymous memory" },
	{ VMWKVM_PROBE_UFFD_WP_HUGETLBFS_SHMEM, 12, "wp_hugetlbfs_shmem", "write-protect on shmem and hugetlbfs" },
	{ VMWKVM_PROBE_UFFD_WP_UNPOPULATED, 13, "wp_unpopulated",
	  "write-protect of never-touched anonymous pages (without it the first write is not reported)" },
	{ VMWKVM_PROBE_UFFD_WP_ASYNC, 15, "wp_async", "asynchronous write-protect (dirty tracking, no trap)" },
	{ VMWKVM_PROBE_UFFD_MINOR_SHMEM, 10, "minor_shmem", "minor faults on shmem (UFFDIO_CONTINUE)" },
	{ VMWKVM_PROBE_UFFD_MINOR_HUGETLBFS, 9, "minor_hugetlbfs", "minor faults on hugetlbfs" },
	{ VMWKVM_PROBE_UFFD_MISSING_SHMEM, 5, "missing_shmem", "missing faults on shmem" },
	{ VMWKVM_PROBE_UFFD_EVENT_REMOVE, 3, "event_remove", "MADV_DONTNEED/MADV_REMOVE events" },
	{ VMWKVM_PROBE_UFFD_MOVE, 16, "move", "UFFDIO_MOVE" },
};

#define UFFD_ADD(p, id, key, state, hv, val, num, err, ...)                                                          \
	vk_probe_add((p), (id), VMWKVM_PROBE_GROUP_USERFAULTFD, VMWKVM_PROBE_SCOPE_HOST, (key), (state), (hv), (val), \
		     (num), (err), __VA_ARGS__)

void vk_probe_uffd_skipped(struct vmwkvm_probe *p, const char *why)
{
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
		 "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0, "%s", why);
	for (size_t i = 0; i < sizeof(uffd_features) / sizeof(uffd_features[0]); i++)
		UFFD_ADD(p, uffd_features[i].id, uffd_features[i].key, VMWKVM_PROBE_UNKNOWN, false, 0,
			 uffd_features[i].bit, 0, "%s", why);
}

/* State of a userfaultfd creation attempt from its errno: which failures are facts. */
static uint32_t uffd_create_state(int r, bool user_only_flag)
{
	if (r >= 0)
		return VMWKVM_PROBE_PRESENT;
	if (r == -ENOSYS || r == -EPERM || (user_only_flag && r == -EINVAL))
		return VMWKVM_PROBE_ABSENT;
	return VMWKVM_PROBE_UNKNOWN;
}

void vk_probe_uffd(struct vmwkvm_probe *p)
{
	char es[80];
	/* the sysctl */
	char buf[32];
	int r = vk_read_file("/proc/sys/vm/unprivileged_userfaultfd", buf, sizeof(buf));
	if (r < 0) {
		vk_probe_errstr(es, sizeof(es), r);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, r,
			 "reading /proc/sys/vm/unprivileged_userfaultfd failed: %s", es);
	} else {
		char *end = NULL;
		long v = strtol(buf, &end, 10);
		if (end == buf || (*end && *end != '\n') || v < 0) {
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
				 "/proc/sys/vm/unprivileged_userfaultfd holds no number");
		} else {
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCTL, "unprivileged_sysctl",
				 v ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true, v, 0, 0,
				 v ? "vm.unprivileged_userfaultfd = %ld: unprivileged processes may trap kernel faults"
				   : "vm.unprivileged_userfaultfd = %ld: without CAP_SYS_PTRACE only user-mode-only "
				     "userfaultfds are allowed",
				 v);
		}
	}

	/* userfaultfd(2) without and with UFFD_USER_MODE_ONLY */
	int fd_full = vk_userfaultfd(O_CLOEXEC | O_NONBLOCK);
	uint32_t st_full = uffd_create_state(fd_full, false);
	if (fd_full >= 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", st_full, false, 0, 0, 0,
			 "userfaultfd(O_CLOEXEC|O_NONBLOCK) succeeded: this process may trap kernel-mode faults");
	} else {
		vk_probe_errstr(es, sizeof(es), fd_full);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL, "syscall", st_full, false, 0, 0, fd_full,
			 "userfaultfd(O_CLOEXEC|O_NONBLOCK) failed: %s%s", es,
			 fd_full == -EPERM ? " (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)"
			 : fd_full == -ENOSYS ? " (kernel built without CONFIG_USERFAULTFD, or blocked by seccomp)"
					      : "");
	}
	int fd_user = vk_userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	uint32_t st_user = uffd_create_state(fd_user, true);
	if (fd_user >= 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", st_user, false, 0, 0, 0,
			 "userfaultfd(UFFD_USER_MODE_ONLY) succeeded (traps user-mode faults only, not faults KVM takes)");
	} else {
		vk_probe_errstr(es, sizeof(es), fd_user);
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_SYSCALL_USER_ONLY, "syscall_user_mode_only", st_user, false, 0, 0, fd_user,
			 "userfaultfd(UFFD_USER_MODE_ONLY) failed: %s%s", es,
			 fd_user == -EINVAL ? " (kernel older than 5.11)" : "");
	}

	/* /dev/userfaultfd + USERFAULTFD_IOC_NEW */
	int fd_dev = -1;
	uint32_t st_dev;
	int dev = vk_open("/dev/userfaultfd", O_RDWR);
	if (dev < 0) {
		vk_probe_errstr(es, sizeof(es), dev);
		bool fact = dev == -ENOENT || dev == -EACCES || dev == -EPERM || dev == -ENODEV || dev == -ENXIO;
		st_dev = fact ? VMWKVM_PROBE_ABSENT : VMWKVM_PROBE_UNKNOWN;
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, dev,
			 "open(/dev/userfaultfd) failed: %s%s", es,
			 dev == -ENOENT ? " (kernel older than 6.1, or no device node)"
			 : (dev == -EACCES || dev == -EPERM) ? " (grant access to the device, e.g. with an ACL)"
							     : "");
	} else {
		fd_dev = vk_ioctl(dev, USERFAULTFD_IOC_NEW, (void *)(uintptr_t)(O_CLOEXEC | O_NONBLOCK));
		vk_close(dev);
		if (fd_dev < 0) {
			vk_probe_errstr(es, sizeof(es), fd_dev);
			st_dev = VMWKVM_PROBE_UNKNOWN;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, fd_dev,
				 "/dev/userfaultfd opened, but USERFAULTFD_IOC_NEW failed: %s", es);
		} else {
			st_dev = VMWKVM_PROBE_PRESENT;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_DEV, "dev_userfaultfd", st_dev, false, 0, 0, 0,
				 "/dev/userfaultfd + USERFAULTFD_IOC_NEW gave a userfaultfd that traps kernel-mode faults");
		}
	}

	/* can faults KVM takes inside the kernel be trapped? */
	if (st_full == VMWKVM_PROBE_PRESENT || st_dev == VMWKVM_PROBE_PRESENT) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_PRESENT, false, 0, 0, 0,
			 "yes: a userfaultfd without UFFD_USER_MODE_ONLY is available through %s",
			 st_full == VMWKVM_PROBE_PRESENT && st_dev == VMWKVM_PROBE_PRESENT ? "userfaultfd(2) and /dev/userfaultfd"
			 : st_full == VMWKVM_PROBE_PRESENT				 ? "userfaultfd(2)"
											 : "/dev/userfaultfd");
	} else if (st_full == VMWKVM_PROBE_ABSENT && st_dev == VMWKVM_PROBE_ABSENT) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_ABSENT, false, 0, 0, 0,
			 "no: neither userfaultfd(2) without UFFD_USER_MODE_ONLY nor /dev/userfaultfd is available%s",
			 st_user == VMWKVM_PROBE_PRESENT ? " (a user-mode-only uffd does not see faults KVM takes)" : "");
	} else {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_KERNEL_FAULTS, "kernel_faults", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
			 "cannot tell: creating a kernel-fault-capable userfaultfd failed for a reason that is not a "
			 "refusal (see syscall and dev_userfaultfd)");
	}

	/* features, from the most capable fd we have */
	int api_fd = fd_full >= 0 ? fd_full : fd_dev >= 0 ? fd_dev : fd_user;
	const char *api_src = fd_full >= 0 ? "userfaultfd(2)" : fd_dev >= 0 ? "/dev/userfaultfd" : "userfaultfd(2) user-mode-only";
	bool have_features = false;
	uint64_t features = 0;
	if (api_fd < 0) {
		UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, 0,
			 "no userfaultfd could be created, so UFFDIO_API was not asked");
		snprintf(es, sizeof(es), "no userfaultfd could be created");
	} else {
		struct uffdio_api api;
		memset(&api, 0, sizeof(api));
		api.api = UFFD_API;
		api.features = 0;
		r = vk_ioctl(api_fd, UFFDIO_API, &api);
		if (r < 0) {
			char e2[80];
			vk_probe_errstr(e2, sizeof(e2), r);
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_UNKNOWN, false, 0, 0, r,
				 "UFFDIO_API on a uffd from %s failed: %s", api_src, e2);
			snprintf(es, sizeof(es), "UFFDIO_API failed: %.50s", e2);
		} else {
			have_features = true;
			features = api.features;
			UFFD_ADD(p, VMWKVM_PROBE_UFFD_API, "api", VMWKVM_PROBE_PRESENT, true, (int64_t)features, 0, 0,
				 "UFFDIO_API (uffd from %s): features 0x%llx, ioctls 0x%llx", api_src,
				 (unsigned long long)api.features, (unsigned long long)api.ioctls);
		}
	}
	for (size_t i = 0; i < sizeof(uffd_features) / sizeof(uffd_features[0]); i++) {
		const struct uffd_feature_def *f = &uffd_features[i];
		if (!have_features) {
			UFFD_ADD(p, f->id, f->key, VMWKVM_PROBE_UNKNOWN, false, 0, f->bit, 0, "not known: %s", es);
			continue;
		}
		bool on = (features >> f->bit) & 1u;
		UFFD_ADD(p, f->id, f->key, on ? VMWKVM_PROBE_PRESENT : VMWKVM_PROBE_ABSENT, true,
			 (int64_t)(features & (1ull << f->bit)), f->bit, 0, "UFFDIO_API feature bit %u %s: %s", f->bit,
			 on ? "set" : "clear", f->what);
	}
	if (fd_full >= 0)
		vk_close(fd_full);
	if (fd_user >= 0)
		vk_close(fd_user);
	if (fd_dev >= 0)
		vk_close(fd_dev);
}

