/* Tools host component: host-to-guest commands over TCLO (queue, results by callback or
 * poll, timeouts, cancel, heartbeat, VM reset). */
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

/* ---- commands ---- */

bool vk_tools_running_now(const struct vmwkvm_tools *t, uint64_t now)
{
	return t->answered && t->tclo_open && now - t->last_answer_ns <= (uint64_t)t->running_ms * NS_PER_MS;
}

/* lock held: unlink a command */
static void cmd_unlink(struct vmwkvm_tools *t, struct tcmd *c)
{
	for (struct tcmd **pp = &t->cmds; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			t->ncmds--;
			return;
		}
}

void vk_tools_cmd_free(struct tcmd *c)
{
	if (c) {
		free(c->reply);
		free(c);
	}
}

static void fill_result(const struct tcmd *c, struct vmwkvm_tools_result *res)
{
	size_t sz = res->sz;
	struct vmwkvm_tools_result r = {
		.sz = sz,
		.id = c->id,
		.status = c->status,
		.channel = c->channel,
		.truncated = c->truncated,
		.reply = c->reply ? c->reply : "",
		.reply_len = c->reply_len,
		.elapsed_ns = c->done_ns - c->queued_ns,
	};
	memcpy(res, &r, sz < sizeof(r) ? sz : sizeof(r));
}

/* lock held: finish a pending command. Returns the command when its callback must run
 * (the caller runs it after unlocking, then frees it); NULL when it stays for polling or
 * was internal (then freed here). */
static struct tcmd *cmd_finish(struct vmwkvm_tools *t, struct tcmd *c, uint8_t status, uint64_t now)
{
	c->status = status;
	c->done_ns = now;
	if (status == VMWKVM_TOOLS_TIMEOUT || status == VMWKVM_TOOLS_CANCELLED)
		vmwkvm_rpc_tclo_cancel(t->rpc, c->channel, c->seq); /* not delivered later */
	if (c->internal) {
		cmd_unlink(t, c);
		vk_tools_cmd_free(c);
		return NULL;
	}
	vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_COMMAND);
	if (c->fn) {
		cmd_unlink(t, c);
		return c;
	}
	return NULL;
}

static void run_callbacks(struct vmwkvm_tools *t, struct tcmd *list)
{
	while (list) {
		struct tcmd *c = list;
		list = c->next;
		struct vmwkvm_tools_result r = {.sz = sizeof(r)};
		fill_result(c, &r);
		c->fn(t, &r, c->ctx);
		vk_tools_cmd_free(c);
	}
}

void vk_tools_on_tclo(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx)
{
	struct vmwkvm_tools *t = ctx;
	uint32_t what = 0;
	struct tcmd *cb = NULL;
	pthread_mutex_lock(&t->lock);
	uint64_t now = vk_tools_now_ns(t);
	bool was = vk_tools_running_now(t, now);
	t->answered = true;
	t->last_answer_ns = now;
	t->tclo_open = true; /* it just spoke on one */
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->channel == channel && p->seq == seq && seq && p->status == VMWKVM_TOOLS_PENDING) {
			c = p;
			break;
		}
	if (!c) {
		t->dropped++;
	} else {
		t->answers++;
		uint8_t st = VMWKVM_TOOLS_BADREPLY;
		size_t skip = 0;
		if (len >= 2 && !memcmp(data, "OK", 2) && (len == 2 || data[2] == ' ')) {
			st = VMWKVM_TOOLS_OK;
			skip = len == 2 ? 2 : 3;
		} else if (len >= 5 && !memcmp(data, "ERROR", 5) && (len == 5 || data[5] == ' ')) {
			st = VMWKVM_TOOLS_ERROR;
			skip = len == 5 ? 5 : 6;
		}
		size_t rlen = len - skip;
		if (rlen > t->max_reply) {
			rlen = t->max_reply;
			c->truncated = true;
		}
		c->reply = vk_tools_dup_bytes(data + skip, rlen);
		c->reply_len = c->reply ? rlen : 0;
		c->truncated |= !c->reply && rlen;
		bool internal = c->internal;
		cb = cmd_finish(t, c, st, now);
		if (!internal)
			what |= VMWKVM_TOOLS_CHANGED_COMMAND;
	}
	if (!was) {
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_RUNNING);
		what |= VMWKVM_TOOLS_CHANGED_RUNNING;
	}
	t->running = true;
	pthread_mutex_unlock(&t->lock);
	if (cb) {
		cb->next = NULL;
		run_callbacks(t, cb);
	}
	vk_tools_notify_out(t, what);
}

int vmwkvm_tools_command(vmwkvm_tools *t, int channel, const char *cmd, uint32_t timeout_ms,
			 vmwkvm_tools_result_fn fn, void *ctx, uint64_t *id)
{
	if (!t || !cmd || !*cmd)
		return -EINVAL;
	size_t len = strlen(cmd);
	if (len > VMWKVM_RPC_MAX_MESSAGE)
		return -E2BIG;
	struct tcmd *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	int r = 0;
	uint16_t ids[1];
	int ch = channel;
	if (channel == -1) {
		int n = vmwkvm_rpc_tclo_channels(t->rpc, ids, 1);
		if (n < 0)
			r = n;
		else if (n == 0)
			r = -ENOENT;
		else
			ch = ids[0];
	} else if (channel < 0 || channel > 0xFFFF) {
		r = -EINVAL;
	}
	unsigned on_ch = 0;
	for (struct tcmd *p = t->cmds; !r && p; p = p->next)
		on_ch += p->channel == ch && p->status == VMWKVM_TOOLS_PENDING;
	if (!r && (t->ncmds >= t->max_pending || on_ch >= t->max_per_channel))
		r = -ENOSPC;
	uint64_t seq = 0;
	if (!r)
		r = vmwkvm_rpc_tclo_queue(t->rpc, ch, cmd, len, &seq);
	if (r) {
		pthread_mutex_unlock(&t->lock);
		free(c);
		return r;
	}
	uint64_t now = vk_tools_now_ns(t);
	c->id = ++t->next_id;
	c->seq = seq;
	c->channel = (uint16_t)ch;
	c->fn = fn;
	c->ctx = ctx;
	c->queued_ns = now;
	c->deadline_ns = now + (uint64_t)(timeout_ms ? timeout_ms : t->default_timeout_ms) * NS_PER_MS;
	c->next = t->cmds;
	t->cmds = c;
	t->ncmds++;
	if (id)
		*id = c->id;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int vmwkvm_tools_command_result(vmwkvm_tools *t, uint64_t id, struct vmwkvm_tools_result *res)
{
	if (!t || !res || res->sz < offsetof(struct vmwkvm_tools_result, reply))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->id == id && !p->fn && !p->internal)
			c = p;
	if (!c) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	if (c->status == VMWKVM_TOOLS_PENDING) {
		c->done_ns = vk_tools_now_ns(t);
		fill_result(c, res);
		pthread_mutex_unlock(&t->lock);
		return -EAGAIN;
	}
	cmd_unlink(t, c);
	free(t->fetched);
	t->fetched = c->reply;
	fill_result(c, res);
	c->reply = NULL;
	free(c);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int vmwkvm_tools_cancel(vmwkvm_tools *t, uint64_t id)
{
	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	struct tcmd *c = NULL;
	for (struct tcmd *p = t->cmds; p; p = p->next)
		if (p->id == id && p->status == VMWKVM_TOOLS_PENDING && !p->internal)
			c = p;
	if (!c) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	struct tcmd *cb = cmd_finish(t, c, VMWKVM_TOOLS_CANCELLED, vk_tools_now_ns(t));
	pthread_mutex_unlock(&t->lock);
	if (cb) {
		cb->next = NULL;
		run_callbacks(t, cb);
	}
	vk_tools_notify_out(t, VMWKVM_TOOLS_CHANGED_COMMAND);
	return 0;
}

/* Lock held: time out commands past their deadline and cancel those whose TCLO channel
 * closed (ids[0..n) are the open TCLO channels; n < 0 or too many to tell: no cancel). Their
 * callbacks are appended to *tail; *next gets the earliest remaining deadline. */
static uint32_t expire_commands(struct vmwkvm_tools *t, const uint16_t *ids, int n, int cap, uint64_t now,
				struct tcmd ***tail, uint64_t *next)
{
	uint32_t what = 0;
	bool again;
	do {
		again = false;
		for (struct tcmd *c = t->cmds; c; c = c->next) {
			if (c->status != VMWKVM_TOOLS_PENDING)
				continue;
			uint8_t st = 0;
			if (now >= c->deadline_ns) {
				st = VMWKVM_TOOLS_TIMEOUT;
				t->timeouts++;
			} else if (n >= 0 && n <= cap) {
				bool open = false;
				for (int i = 0; i < n; i++)
					open |= ids[i] == c->channel;
				if (!open)
					st = VMWKVM_TOOLS_CANCELLED;
			}
			if (!st) {
				if (c->deadline_ns < *next)
					*next = c->deadline_ns;
				continue;
			}
			if (!c->internal)
				what |= VMWKVM_TOOLS_CHANGED_COMMAND;
			struct tcmd *cb = cmd_finish(t, c, st, now);
			if (cb) {
				cb->next = NULL;
				**tail = cb;
				*tail = &cb->next;
			}
			again = true; /* the list changed under the iterator */
			break;
		}
	} while (again);
	return what;
}

/* Lock held: "running" from the age of the last answer. */
static uint32_t update_running(struct vmwkvm_tools *t, uint64_t now, uint64_t *next)
{
	uint32_t what = 0;
	bool run = vk_tools_running_now(t, now);
	if (run != t->running) {
		t->running = run;
		vk_tools_changed(t, VMWKVM_TOOLS_CHANGED_RUNNING);
		what = VMWKVM_TOOLS_CHANGED_RUNNING;
	}
	if (run) {
		uint64_t end = t->last_answer_ns + (uint64_t)t->running_ms * NS_PER_MS + 1;
		if (end < *next)
			*next = end;
	}
	return what;
}

/* Lock held: queue the heartbeat "ping" on channel ch when nothing is in flight and nothing
 * was heard for heartbeat_ms. */
static void heartbeat(struct vmwkvm_tools *t, uint16_t ch, uint64_t now, uint64_t *next)
{
	uint64_t hb = (uint64_t)t->heartbeat_ms * NS_PER_MS;
	bool busy = false;
	for (struct tcmd *c = t->cmds; c; c = c->next)
		busy |= c->status == VMWKVM_TOOLS_PENDING;
	uint64_t la = t->answered ? t->last_answer_ns : 0, lp = t->pinged ? t->last_ping_ns : 0;
	uint64_t last = la > lp ? la : lp;
	bool any = t->answered || t->pinged;
	if (!busy && (!any || now - last >= hb) && t->ncmds < t->max_pending) {
		struct tcmd *c = calloc(1, sizeof(*c));
		uint64_t seq;
		if (c && !vmwkvm_rpc_tclo_queue(t->rpc, ch, "ping", 4, &seq)) {
			c->id = ++t->next_id;
			c->seq = seq;
			c->channel = ch;
			c->internal = true;
			c->queued_ns = now;
			c->deadline_ns = now + (uint64_t)t->default_timeout_ms * NS_PER_MS;
			c->next = t->cmds;
			t->cmds = c;
			t->ncmds++;
			t->last_ping_ns = now;
			t->pinged = true;
			last = now;
			any = true;
			if (c->deadline_ns < *next)
				*next = c->deadline_ns;
		} else {
			free(c);
		}
	}
	uint64_t due = any ? last + hb : now;
	if (due > now && due < *next)
		*next = due;
}

int vmwkvm_tools_process(vmwkvm_tools *t)
{
	if (!t)
		return -EINVAL;
	uint16_t ids[64];
	const int cap = (int)(sizeof(ids) / sizeof(ids[0]));
	pthread_mutex_lock(&t->lock);
	int n = vmwkvm_rpc_tclo_channels(t->rpc, ids, sizeof(ids) / sizeof(ids[0]));
	uint64_t now = vk_tools_now_ns(t);
	if (n >= 0)
		t->tclo_open = n > 0;
	struct tcmd *cbs = NULL, **tail = &cbs;
	uint64_t next = UINT64_MAX;
	uint32_t what = expire_commands(t, ids, n, cap, now, &tail, &next);
	what |= update_running(t, now, &next);
	if (t->heartbeat_ms && n > 0)
		heartbeat(t, ids[0], now, &next);
	pthread_mutex_unlock(&t->lock);
	run_callbacks(t, cbs);
	vk_tools_notify_out(t, what);
	if (next == UINT64_MAX)
		return INT32_MAX;
	uint64_t ms = next > now ? (next - now + NS_PER_MS - 1) / NS_PER_MS : 0;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

int vmwkvm_tools_reset(vmwkvm_tools *t, uint32_t flags)
{
	if (!t || (flags & ~VMWKVM_TOOLS_RESET_STORE))
		return -EINVAL;
	struct tcmd *cbs = NULL, **tail = &cbs;
	pthread_mutex_lock(&t->lock);
	uint64_t now = vk_tools_now_ns(t);
	bool again;
	do {
		again = false;
		for (struct tcmd *c = t->cmds; c; c = c->next) {
			if (c->status != VMWKVM_TOOLS_PENDING)
				continue;
			struct tcmd *cb = cmd_finish(t, c, VMWKVM_TOOLS_CANCELLED, now);
			if (cb) {
				cb->next = NULL;
				*tail = cb;
				tail = &cb->next;
			}
			again = true;
			break;
		}
	} while (again);
	t->version = t->version_type = 0;
	t->version_set = t->running = t->unified_loop = t->answered = t->pinged = t->tclo_open = false;
	t->state_change = t->state_change_ok = -1;
	t->app[0] = t->last_log[0] = '\0';
	for (uint32_t i = 0; i < t->ncaps; i++) {
		free(t->caps[i].name);
		free(t->caps[i].value);
	}
	t->ncaps = 0;
	for (size_t i = 0; i <= VMWKVM_TOOLS_MAX_GUESTINFO_TYPE; i++) {
		free(t->ginfo[i].val);
		t->ginfo[i].val = NULL;
		t->ginfo[i].len = 0;
	}
	t->nginfo = 0;
	uint32_t what = VMWKVM_TOOLS_CHANGED_VERSION | VMWKVM_TOOLS_CHANGED_CAPS | VMWKVM_TOOLS_CHANGED_GUESTINFO |
			VMWKVM_TOOLS_CHANGED_RUNNING | VMWKVM_TOOLS_CHANGED_STATE;
	if (cbs)
		what |= VMWKVM_TOOLS_CHANGED_COMMAND;
	if (flags & VMWKVM_TOOLS_RESET_STORE) {
		while (t->store) {
			struct kv *e = t->store;
			t->store = e->next;
			free(e->key);
			free(e->val);
			free(e);
		}
		t->nkeys = 0;
		t->store_bytes = 0;
		what |= VMWKVM_TOOLS_CHANGED_STORE;
	}
	vk_tools_changed(t, what);
	pthread_mutex_unlock(&t->lock);
	run_callbacks(t, cbs);
	vk_tools_notify_out(t, what);
	return 0;
}
