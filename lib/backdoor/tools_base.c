/* Tools host component: the helpers every part uses (clock, change notification, byte
 * helpers); the bottom of lib/backdoor/tools*.c, calling nothing of the others. */
#include "backdoor/tools_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t vk_tools_now_ns(const struct vmwkvm_tools *t)
{
	if (t->clock)
		return t->clock(t->clock_ctx);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* lock held: record a change; the caller calls vk_tools_notify_out() after unlocking */
void vk_tools_changed(struct vmwkvm_tools *t, uint32_t what)
{
	t->changes |= what;
	t->generation++;
	uint64_t one = 1;
	ssize_t r = write(t->efd, &one, sizeof(one));
	(void)r; /* EAGAIN: the counter is saturated, the fd is readable anyway */
}

void vk_tools_notify_out(struct vmwkvm_tools *t, uint32_t what)
{
	if (what && t->notify)
		t->notify(t, what, t->notify_ctx);
}

/* args without trailing NULs (ovt sends most requests with strlen + 1 bytes) */
size_t vk_tools_trim_nul(const char *s, size_t len)
{
	while (len && s[len - 1] == '\0')
		len--;
	return len;
}

char *vk_tools_dup_bytes(const char *s, size_t len)
{
	char *p = malloc(len + 1);
	if (p) {
		if (len)
			memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}
