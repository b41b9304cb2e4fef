/* The host side of VMware Tools on top of the GuestRPC channel table: the object, its life
 * cycle and the state a VMM reads (the RPCI commands are in tools_rpci.c, the TCLO command
 * API in tools_tclo.c; internals in tools_int.h). Protocol findings: docs/tools-protocol.md. */
#include "backdoor/tools_int.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* ---- backdoor ---- */

static int h_getmhz(const struct vmwkvm_call *call, struct vmwkvm_reply *reply, void *ctx)
{
	(void)call;
	const struct vmwkvm_tools *t = ctx;
	reply->eax = t->cpu_mhz;
	reply->ebx = VMWKVM_BDOOR_MAGIC;
	reply->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
	return 0;
}

int vmwkvm_tools_bind_backdoor(vmwkvm_tools *t, vmwkvm_backdoor *bd)
{
	if (!t || !bd)
		return -EINVAL;
	if (t->cpu_mhz)
		return vmwkvm_backdoor_set_handler(bd, VMWKVM_BDOOR_CMD_GETMHZ, h_getmhz, t);
	return 0;
}

/* ---- life cycle ---- */

int vmwkvm_tools_new(vmwkvm_rpc *rpc, const struct vmwkvm_tools_opts *opts, vmwkvm_tools **out)
{
	if (!rpc || !out || !VK_OPTS_VALID(opts, struct vmwkvm_tools_opts))
		return -EINVAL;
	struct vmwkvm_tools_opts o = {0};
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	uint32_t pend = o.max_pending ? o.max_pending : VMWKVM_TOOLS_DEFAULT_PENDING;
	uint32_t perch = o.max_per_channel ? o.max_per_channel : VMWKVM_TOOLS_DEFAULT_PER_CHANNEL;
	if (!o.max_per_channel && perch > pend)
		perch = pend;
	uint32_t rep = o.max_reply ? o.max_reply : VMWKVM_TOOLS_DEFAULT_REPLY;
	uint32_t keys = o.max_keys ? o.max_keys : VMWKVM_TOOLS_DEFAULT_KEYS;
	uint32_t store = o.max_store_bytes ? o.max_store_bytes : VMWKVM_TOOLS_DEFAULT_STORE;
	uint32_t caps = o.max_caps ? o.max_caps : VMWKVM_TOOLS_DEFAULT_CAPS;
	if (pend > TOOLS_MAX_PENDING || perch > pend || rep > TOOLS_MAX_REPLY || keys > TOOLS_MAX_KEYS ||
	    store > TOOLS_MAX_STORE || caps > TOOLS_MAX_CAPS)
		return -EINVAL;
	struct vmwkvm_tools *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->caps = calloc(caps, sizeof(*t->caps));
	if (!t->caps) {
		free(t);
		return -ENOMEM;
	}
	t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->efd < 0) {
		int e = -errno;
		free(t->caps);
		free(t);
		return e;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->rpc = rpc;
	t->max_pending = pend;
	t->max_per_channel = perch;
	t->max_reply = rep;
	t->default_timeout_ms = o.default_timeout_ms ? o.default_timeout_ms : VMWKVM_TOOLS_DEFAULT_TIMEOUT_MS;
	t->max_keys = keys;
	t->max_store = store;
	t->max_caps = caps;
	t->heartbeat_ms = o.heartbeat_ms;
	t->running_ms = o.running_ms ? o.running_ms
				     : (o.heartbeat_ms ? 3 * o.heartbeat_ms : TOOLS_DEFAULT_RUNNING_MS);
	t->cpu_mhz = o.cpu_mhz;
	t->clock = o.clock;
	t->clock_ctx = o.clock_ctx;
	t->notify = o.notify;
	t->notify_ctx = o.notify_ctx;
	t->state_change = -1;
	t->state_change_ok = -1;
	int r = vk_tools_register_rpci(t);
	if (r) {
		close(t->efd);
		pthread_mutex_destroy(&t->lock);
		free(t->caps);
		free(t);
		return r;
	}
	vmwkvm_rpc_set_tclo_handler(rpc, vk_tools_on_tclo, t);
	*out = t;
	return 0;
}

void vmwkvm_tools_free(vmwkvm_tools *t)
{
	if (!t)
		return;
	vmwkvm_rpc_set_tclo_handler(t->rpc, NULL, NULL);
	vk_tools_unregister_rpci(t);
	while (t->cmds) {
		struct tcmd *c = t->cmds;
		t->cmds = c->next;
		vk_tools_cmd_free(c);
	}
	while (t->store) {
		struct kv *e = t->store;
		t->store = e->next;
		free(e->key);
		free(e->val);
		free(e);
	}
	for (uint32_t i = 0; i < t->ncaps; i++) {
		free(t->caps[i].name);
		free(t->caps[i].value);
	}
	for (size_t i = 0; i <= VMWKVM_TOOLS_MAX_GUESTINFO_TYPE; i++)
		free(t->ginfo[i].val);
	free(t->caps);
	free(t->fetched);
	close(t->efd);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int vmwkvm_tools_event_fd(const vmwkvm_tools *t)
{
	return t ? t->efd : -EINVAL;
}

/* ---- state ---- */

int vmwkvm_tools_get_state(vmwkvm_tools *t, struct vmwkvm_tools_state *st)
{
	if (!t || !st || st->sz < offsetof(struct vmwkvm_tools_state, last_answer_age_ns))
		return -EINVAL;
	size_t sz = st->sz;
	struct vmwkvm_tools_state s = {.sz = sz};
	pthread_mutex_lock(&t->lock);
	uint64_t now = vk_tools_now_ns(t);
	s.version = t->version;
	s.version_type = t->version_type;
	s.version_set = t->version_set;
	s.running = vk_tools_running_now(t, now);
	s.unified_loop = t->unified_loop;
	s.changes = t->changes;
	t->changes = 0;
	s.last_answer_age_ns = t->answered ? now - t->last_answer_ns : UINT64_MAX;
	s.generation = t->generation;
	s.caps = t->ncaps;
	s.guestinfo = t->nginfo;
	s.keys = t->nkeys;
	for (struct tcmd *c = t->cmds; c; c = c->next)
		s.pending += c->status == VMWKVM_TOOLS_PENDING;
	s.answers = t->answers;
	s.dropped = t->dropped;
	s.timeouts = t->timeouts;
	s.logs = t->logs;
	s.state_change = t->state_change;
	s.state_change_ok = t->state_change_ok;
	memcpy(s.app, t->app, sizeof(s.app));
	memcpy(s.last_log, t->last_log, sizeof(s.last_log));
	pthread_mutex_unlock(&t->lock);
	memcpy(st, &s, sz < sizeof(s) ? sz : sizeof(s));
	return 0;
}

static void copy_out(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

int vmwkvm_tools_capability(vmwkvm_tools *t, uint32_t index, char *name, size_t name_cap, char *value,
			    size_t value_cap)
{
	if (!t || !name || !value || !name_cap || !value_cap)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	if (index < t->ncaps) {
		copy_out(name, name_cap, t->caps[index].name);
		copy_out(value, value_cap, t->caps[index].value);
		r = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_capability_get(vmwkvm_tools *t, const char *name, char *value, size_t cap)
{
	if (!t || !name || !value || !cap)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	for (uint32_t i = 0; i < t->ncaps; i++)
		if (!strcmp(t->caps[i].name, name)) {
			copy_out(value, cap, t->caps[i].value);
			r = (int)strlen(t->caps[i].value);
			break;
		}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_guest_info(vmwkvm_tools *t, uint32_t type, void *buf, size_t cap)
{
	if (!t || (!buf && cap) || type > VMWKVM_TOOLS_MAX_GUESTINFO_TYPE)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int r = -ENOENT;
	if (t->ginfo[type].val) {
		size_t len = t->ginfo[type].len;
		if (cap)
			memcpy(buf, t->ginfo[type].val, len < cap ? len : cap);
		r = (int)len;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_info_get(vmwkvm_tools *t, const char *key, void *buf, size_t cap)
{
	if (!t || !key || (!buf && cap))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct kv *e = vk_tools_store_find(t, key, strlen(key));
	int r = -ENOENT;
	if (e) {
		if (cap)
			memcpy(buf, e->val, e->len < cap ? e->len : cap);
		r = e->len > INT_MAX ? INT_MAX : (int)e->len;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int vmwkvm_tools_info_set(vmwkvm_tools *t, const char *key, const void *value, size_t len)
{
	if (!t || !key || !vk_tools_key_ok(key, strlen(key)))
		return -EINVAL;
	if (value && len > VMWKVM_RPC_MAX_MESSAGE - 2)
		return -E2BIG;
	pthread_mutex_lock(&t->lock);
	int r = vk_tools_store_set(t, key, strlen(key), value ? value : NULL, value ? len : 0);
	pthread_mutex_unlock(&t->lock);
	return r;
}
