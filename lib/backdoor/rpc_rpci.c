/* GuestRPC: the RPCI reply builder (vmwkvm_rpc_out) and running an RPCI handler outside the
 * lock. */
#include "backdoor/rpc_rpci.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int out_reserve(struct vmwkvm_rpc_out *out, size_t extra)
{
	size_t used = out->msg->len;
	if (extra > out->limit - used)
		return -E2BIG;
	size_t need = used + extra;
	if (need <= out->cap)
		return 0;
	size_t cap = out->cap * 2;
	if (cap < need)
		cap = need;
	if (cap > out->limit)
		cap = out->limit;
	struct rpc_msg *m = vk_rpc_msg_new(out->rpc, cap);
	if (!m) {
		out->oom = true;
		return -ENOMEM;
	}
	memcpy(m->data, out->msg->data, used);
	m->len = used;
	vk_rpc_msg_free(out->rpc, out->msg);
	out->msg = m;
	out->cap = cap;
	return 0;
}

int vmwkvm_rpc_out_append(vmwkvm_rpc_out *out, const void *data, size_t len)
{
	if (!out || (!data && len))
		return -EINVAL;
	int r = out_reserve(out, len);
	if (r)
		return r;
	if (len)
		memcpy(out->msg->data + out->msg->len, data, len);
	out->msg->len += len;
	out->msg->data[out->msg->len] = '\0';
	return 0;
}

int vmwkvm_rpc_out_printf(vmwkvm_rpc_out *out, const char *fmt, ...)
{
	if (!out || !fmt)
		return -EINVAL;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	int r = out_reserve(out, (size_t)n);
	if (r)
		return r;
	/* vsnprintf writes a NUL: the buffer has cap + 1 bytes */
	va_start(ap, fmt);
	vsnprintf(out->msg->data + out->msg->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	out->msg->len += (size_t)n;
	return 0;
}

/* Append library text, truncated to what fits. */
static void out_text(struct vmwkvm_rpc_out *out, const char *text)
{
	size_t len = strlen(text);
	size_t room = out->limit - out->msg->len;
	if (len > room)
		len = room;
	vmwkvm_rpc_out_append(out, text, len);
}

static int out_init(struct vmwkvm_rpc_out *out, struct vmwkvm_rpc *rpc)
{
	out->rpc = rpc;
	out->limit = rpc->max_message;
	out->cap = out->limit < 64 ? out->limit : 64;
	out->oom = false;
	out->msg = vk_rpc_msg_new(rpc, out->cap);
	if (!out->msg)
		return -ENOMEM;
	out->msg->len = 2; /* prefix */
	return 0;
}

/* Final reply: "1 " / "0 " + text. */
static struct rpc_msg *out_finish(struct vmwkvm_rpc_out *out, bool ok)
{
	out->msg->data[0] = ok ? '1' : '0';
	out->msg->data[1] = ' ';
	out->msg->data[out->msg->len] = '\0';
	struct rpc_msg *m = out->msg;
	out->msg = NULL;
	return m;
}

/* Run an RPCI request (no lock held) and return the reply, or NULL on ENOMEM. */
struct rpc_msg *vk_rpc_run_rpci(struct vmwkvm_rpc *rpc, const struct rpc_work *w)
{
	struct vmwkvm_rpc_out out;
	if (out_init(&out, rpc))
		return NULL;
	bool ok = false;
	if (w->fn) {
		size_t wlen = vk_rpc_command_word_len(w->msg, w->len);
		struct vmwkvm_rpci_request req = {
			.message = w->msg,
			.message_len = w->len,
			.command = w->msg,
			.command_len = wlen,
			.args = wlen < w->len ? w->msg + wlen + 1 : w->msg + w->len,
			.args_len = wlen < w->len ? w->len - wlen - 1 : 0,
			.channel = w->id,
			.cpl = w->cpl,
			.origin = w->origin,
		};
		int r = w->fn(&req, &out, w->ctx);
		if (!out.msg)
			return NULL;
		if (r >= 0 && !out.oom) {
			ok = true;
		} else {
			if (out.oom)
				r = -ENOMEM;
			if (out.msg->len == 2)
				out_text(&out, vmwkvm_strerror(r));
		}
	} else {
		out_text(&out, "Unknown command");
	}
	return out_finish(&out, ok);
}
