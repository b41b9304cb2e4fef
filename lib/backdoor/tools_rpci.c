/* Tools host component: the RPCI commands open-vm-tools sends in normal operation (run on
 * vCPU threads, without the channel table's lock) and the guestinfo.* store. */
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

static bool parse_u32(const char *s, size_t len, uint32_t *out, size_t *used)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			return false;
		i++;
	}
	if (!i)
		return false;
	*out = (uint32_t)v;
	if (used)
		*used = i;
	return true;
}

static bool parse_i32(const char *s, size_t len, int32_t *out, size_t *used)
{
	bool neg = len && s[0] == '-';
	uint32_t v;
	size_t u;
	if (!parse_u32(s + neg, len - neg, &v, &u) || v > (uint32_t)INT32_MAX)
		return false;
	*out = neg ? -(int32_t)v : (int32_t)v;
	*used = u + neg;
	return true;
}


static void copy_text(char *dst, size_t cap, const char *s, size_t len)
{
	size_t n = len < cap - 1 ? len : cap - 1;
	for (size_t i = 0; i < n; i++)
		dst[i] = (s[i] >= 0x20 && s[i] != 0x7F) || s[i] == '\t' ? s[i] : '?';
	dst[n] = '\0';
}

static int reply_text(vmwkvm_rpc_out *out, const char *text)
{
	vmwkvm_rpc_out_append(out, text, strlen(text));
	return -EINVAL;
}

struct kv *vk_tools_store_find(struct vmwkvm_tools *t, const char *key, size_t klen)
{
	for (struct kv *e = t->store; e; e = e->next)
		if (strlen(e->key) == klen && !memcmp(e->key, key, klen))
			return e;
	return NULL;
}

bool vk_tools_key_ok(const char *key, size_t klen)
{
	static const char pfx[] = "guestinfo.";
	if (klen <= sizeof(pfx) - 1 || klen > VMWKVM_TOOLS_MAX_VALUE || memcmp(key, pfx, sizeof(pfx) - 1))
		return false;
	for (size_t i = 0; i < klen; i++)
		if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7F)
			return false;
	return true;
}

/* lock held. 0, -ENOSPC (key bound), -E2BIG (byte bound), -ENOMEM, -ENOENT (remove of an absent key) */
int vk_tools_store_set(struct vmwkvm_tools *t, const char *key, size_t klen, const char *val, size_t len)
{
	struct kv *e = vk_tools_store_find(t, key, klen);
	if (!val) {
		if (!e)
			return -ENOENT;
		for (struct kv **pp = &t->store; *pp; pp = &(*pp)->next)
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		t->store_bytes -= e->len;
		t->nkeys--;
		free(e->key);
		free(e->val);
		free(e);
		return 0;
	}
	size_t old = e ? e->len : 0;
	if (!e && t->nkeys >= t->max_keys)
		return -ENOSPC;
	if (t->store_bytes - old + len > t->max_store)
		return -E2BIG;
	char *v = vk_tools_dup_bytes(val, len);
	if (!v)
		return -ENOMEM;
	if (!e) {
		e = calloc(1, sizeof(*e));
		char *k = e ? vk_tools_dup_bytes(key, klen) : NULL;
		if (!k) {
			free(e);
			free(v);
			return -ENOMEM;
		}
		e->key = k;
		e->next = t->store;
		t->store = e;
		t->nkeys++;
	}
	free(e->val);
	e->val = v;
	e->len = len;
	t->store_bytes = t->store_bytes - old + len;
	return 0;
}

/* ---- RPCI handlers (run on vCPU threads, without the channel table's lock) ---- */

static int h_version(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t len = vk_tools_trim_nul(req->args, req->args_len), u = 0;
	uint32_t v, type = 0;
	bool typed = req->command_len == sizeof("tools.set.versiontype") - 1;
	if (!parse_u32(req->args, len, &v, &u))
		return reply_text(out, "Invalid version");
	if (typed) {
		size_t u2;
		if (u >= len || req->args[u] != ' ' || !parse_u32(req->args + u + 1, len - u - 1, &type, &u2))
			return reply_text(out, "Invalid version");
	}
	pthread_mutex_lock(&t->lock);
	bool diff = !t->version_set || t->version != v || (typed && t->version_type != type);
	t->version = v;
	if (typed)
		t->version_type = type;
	t->version_set = true;
	if (diff)
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_VERSION);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_VERSION : 0);
	return 0;
}

static int h_capability(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	static const char pfx[] = "tools.capability.";
	const char *name = req->command + sizeof(pfx) - 1;
	size_t nlen = req->command_len - (sizeof(pfx) - 1);
	size_t vlen = vk_tools_trim_nul(req->args, req->args_len);
	if (!nlen || nlen >= VMWKVM_TOOLS_MAX_VALUE || memchr(name, '\0', nlen))
		return reply_text(out, "Invalid capability");
	if (vlen >= VMWKVM_TOOLS_MAX_VALUE)
		vlen = VMWKVM_TOOLS_MAX_VALUE - 1;
	int r = 0;
	bool diff = false;
	pthread_mutex_lock(&t->lock);
	struct cap *c = NULL;
	for (uint32_t i = 0; i < t->ncaps; i++)
		if (strlen(t->caps[i].name) == nlen && !memcmp(t->caps[i].name, name, nlen))
			c = &t->caps[i];
	char *v = vk_tools_dup_bytes(req->args, vlen);
	if (!v) {
		r = -ENOMEM;
	} else if (c) {
		diff = strcmp(c->value, v) != 0 || strlen(c->value) != vlen;
		free(c->value);
		c->value = v;
	} else if (t->ncaps >= t->max_caps) {
		free(v);
		r = -ENOSPC;
	} else {
		char *n = vk_tools_dup_bytes(name, nlen);
		if (!n) {
			free(v);
			r = -ENOMEM;
		} else {
			t->caps[t->ncaps++] = (struct cap){.name = n, .value = v};
			diff = true;
		}
	}
	if (diff)
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_CAPS);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_CAPS : 0);
	if (r == -ENOSPC)
		return reply_text(out, "Too many capabilities");
	return r;
}

static int h_unified_loop(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t len = vk_tools_trim_nul(req->args, req->args_len);
	pthread_mutex_lock(&t->lock);
	t->unified_loop = true;
	copy_text(t->app, sizeof(t->app), req->args, len);
	vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_STATE);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, VMWKVM_TOOLS_CHANGED_STATE);
	return 0;
}

static int h_log(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t len = vk_tools_trim_nul(req->args, req->args_len);
	pthread_mutex_lock(&t->lock);
	t->logs++;
	copy_text(t->last_log, sizeof(t->last_log), req->args, len);
	vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_LOG);
	pthread_mutex_unlock(&t->lock);
	vk_debug("tools: guest log: %.*s", (int)(len < 200 ? len : 200), req->args);
	vk_tools_notify_out(t, VMWKVM_TOOLS_CHANGED_LOG);
	return 0;
}

static int h_setguestinfo(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	const char *a = req->args;
	size_t len = req->args_len, i = 0, u;
	while (i < len && a[i] == ' ')
		i++;
	uint32_t type;
	if (!parse_u32(a + i, len - i, &type, &u) || type == 0 || type > VMWKVM_TOOLS_MAX_GUESTINFO_TYPE)
		return reply_text(out, "Invalid key");
	i += u;
	if (i < len && a[i] == ' ')
		i++;
	const char *val = a + i;
	size_t vlen = len - i;
	if (type <= 8) /* text types arrive with a trailing NUL */
		vlen = vk_tools_trim_nul(val, vlen);
	if (vlen > VMWKVM_TOOLS_MAX_GUESTINFO)
		vlen = VMWKVM_TOOLS_MAX_GUESTINFO;
	char *v = vk_tools_dup_bytes(val, vlen);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	bool diff = !t->ginfo[type].val || t->ginfo[type].len != vlen || memcmp(t->ginfo[type].val, v, vlen);
	if (!t->ginfo[type].val)
		t->nginfo++;
	free(t->ginfo[type].val);
	t->ginfo[type].val = v;
	t->ginfo[type].len = vlen;
	if (diff)
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_GUESTINFO);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_GUESTINFO : 0);
	return 0;
}

/* "SetGuestDiskInfo JSON": kept as guest info type 0 (ovt's unused INFO_ERROR) */
static int h_diskinfo(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	(void)out;
	size_t vlen = vk_tools_trim_nul(req->args, req->args_len);
	if (vlen > VMWKVM_TOOLS_MAX_GUESTINFO)
		vlen = VMWKVM_TOOLS_MAX_GUESTINFO;
	char *v = vk_tools_dup_bytes(req->args, vlen);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	bool diff = !t->ginfo[0].val || t->ginfo[0].len != vlen || memcmp(t->ginfo[0].val, v, vlen);
	if (!t->ginfo[0].val)
		t->nginfo++;
	free(t->ginfo[0].val);
	t->ginfo[0].val = v;
	t->ginfo[0].len = vlen;
	if (diff)
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_GUESTINFO);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, diff ? VMWKVM_TOOLS_CHANGED_GUESTINFO : 0);
	return 0;
}

static int h_info_set(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	const char *a = req->args;
	size_t len = req->args_len;
	const char *sp = memchr(a, ' ', len);
	if (!sp)
		return reply_text(out, MSG_TWO_ARGS);
	size_t klen = (size_t)(sp - a);
	if (klen > VMWKVM_TOOLS_MAX_VALUE)
		return reply_text(out, MSG_KEY_LONG);
	if (!vk_tools_key_ok(a, klen))
		return reply_text(out, "Invalid key");
	const char *val = sp + 1;
	size_t vlen = len - klen - 1;
	if (vlen && val[vlen - 1] == '\0')
		vlen--; /* vmtoolsd sends strlen + 1 bytes */
	pthread_mutex_lock(&t->lock);
	int r = vk_tools_store_set(t, a, klen, val, vlen);
	if (!r)
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_STORE);
	pthread_mutex_unlock(&t->lock);
	if (r == -ENOSPC)
		return reply_text(out, MSG_TOO_MANY);
	if (r == -E2BIG)
		return reply_text(out, MSG_VAL_LONG);
	if (r)
		return r;
	vk_tools_notify_out(t, VMWKVM_TOOLS_CHANGED_STORE);
	return 0;
}

static int h_info_get(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t klen = vk_tools_trim_nul(req->args, req->args_len);
	while (klen && req->args[klen - 1] == ' ')
		klen--;
	pthread_mutex_lock(&t->lock);
	struct kv *e = vk_tools_key_ok(req->args, klen) ? vk_tools_store_find(t, req->args, klen) : NULL;
	int r = e ? vmwkvm_rpc_out_append(out, e->val, e->len) : -ENOENT;
	pthread_mutex_unlock(&t->lock);
	if (r == -ENOENT)
		return reply_text(out, MSG_NO_VALUE);
	if (r == -E2BIG)
		return reply_text(out, MSG_VAL_LONG);
	return r;
}

static int h_statechange(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	size_t len = vk_tools_trim_nul(req->args, req->args_len), u1, u2;
	int32_t ok, st;
	if (!parse_i32(req->args, len, &ok, &u1) || u1 >= len || req->args[u1] != ' ' ||
	    !parse_i32(req->args + u1 + 1, len - u1 - 1, &st, &u2))
		return reply_text(out, "Invalid arguments");
	pthread_mutex_lock(&t->lock);
	t->state_change_ok = ok;
	t->state_change = st;
	vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_STATE);
	pthread_mutex_unlock(&t->lock);
	vk_tools_notify_out(t, VMWKVM_TOOLS_CHANGED_STATE);
	return 0;
}

static const struct {
	const char *name;
	vmwkvm_rpci_handler_fn fn;
} handlers[] = {
	{"tools.set.version", h_version},
	{"tools.set.versiontype", h_version},
	{"tools.capability.", h_capability},
	{"vmx.capability.unified_loop", h_unified_loop},
	{"log", h_log},
	{"SetGuestInfo", h_setguestinfo},
	{"SetGuestDiskInfo", h_diskinfo},
	{"info-set", h_info_set},
	{"info-get", h_info_get},
	{"tools.os.statechange.status", h_statechange},
};
#define NHANDLERS (sizeof(handlers) / sizeof(handlers[0]))


int vk_tools_register_rpci(struct vmwkvm_tools *t)
{
	for (size_t i = 0; i < NHANDLERS; i++) {
		int r = vmwkvm_rpc_register(t->rpc, handlers[i].name, handlers[i].fn, t);
		if (r) {
			while (i--)
				vmwkvm_rpc_register(t->rpc, handlers[i].name, NULL, NULL);
			return r;
		}
	}
	return 0;
}

void vk_tools_unregister_rpci(struct vmwkvm_tools *t)
{
	for (size_t i = 0; i < NHANDLERS; i++)
		vmwkvm_rpc_register(t->rpc, handlers[i].name, NULL, NULL);
}
