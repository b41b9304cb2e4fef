/* Backdoor command dispatch: handler table, built-in commands, CPL0 rule, origin filter.
 * Register semantics: facts sheet sections 2 and 6. */
#include "core/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BD_DIRECT 256u            /* commands below this have a slot in the direct table */
#define BD_FROM_CLASSES 6u
#define BD_LOG_FIRST 16u          /* refusals logged one by one, then every BD_LOG_EVERY-th */
#define BD_LOG_EVERY 1024u
#define BD_HCALL_FLAG_HB 0x0001u  /* EDX bit 0 of a hypercall: high bandwidth */

struct bd_entry {
	vmwkvm_backdoor_handler_fn fn;
	void *ctx;
};

struct bd_sparse {
	uint16_t command;
	struct bd_entry e;
};

struct vmwkvm_backdoor {
	pthread_rwlock_t lock;
	struct bd_entry direct[BD_DIRECT];
	struct bd_sparse *sparse; /* commands >= BD_DIRECT, unsorted */
	size_t nsparse, sparse_cap;
	struct bd_entry dflt;
	uint8_t *deny;            /* 65536 masks of refused origin classes; NULL = all allowed */
	vmwkvm_rpc *rpc;
	atomic_uint refused;
	/* built-in configuration (immutable after creation) */
	uint32_t version, product_type, apic_hz, vcpu_info, max_lag_us;
	uint64_t tsc_hz, ram_bytes;
	bool uuid_set;
	uint8_t uuid[16];
	vmwkvm_bdoor_clock_fn clock;
	void *clock_ctx;
};

/* ---- command facts ---- */

bool vmwkvm_backdoor_cpl0_only(uint16_t command)
{
	switch (command) {
	case 2: case 18: case 28: case 37: case 48: case 49: case 50: case 54: case 62:
	case 64: case 65: case 69: case 70: case 71: case 73: case 74: case 75: case 76:
	case 77: case 78: case 79: case 80: case 85: case 91: case 92: case 93: case 103:
		return true;
	default:
		return false;
	}
}

uint32_t vmwkvm_backdoor_from(uint8_t origin, uint8_t cpl)
{
	unsigned user = cpl != 0;
	switch (origin) {
	case VMWKVM_ORIGIN_L1: return VMWKVM_BDOOR_FROM_L1_CPL0 << user;
	case VMWKVM_ORIGIN_L2: return VMWKVM_BDOOR_FROM_L2_CPL0 << user;
	default: return VMWKVM_BDOOR_FROM_UNKNOWN_CPL0 << user;
	}
}

static const char *from_name(uint32_t from)
{
	switch (from) {
	case VMWKVM_BDOOR_FROM_L1_CPL0: return "L1 CPL0";
	case VMWKVM_BDOOR_FROM_L1_USER: return "L1 user";
	case VMWKVM_BDOOR_FROM_L2_CPL0: return "L2 CPL0";
	case VMWKVM_BDOOR_FROM_L2_USER: return "L2 user";
	case VMWKVM_BDOOR_FROM_UNKNOWN_CPL0: return "unknown-level CPL0";
	default: return "unknown-level user";
	}
}

int vmwkvm_backdoor_command_from_name(const char *name)
{
	if (!name)
		return -EINVAL;
	if (isdigit((unsigned char)name[0])) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(name, &end, 0);
		if (errno || *end || v > 0xFFFFu)
			return -ENOENT;
		return (int)v;
	}
	for (unsigned i = 0; i <= 0xFFFFu; i++) {
		const char *n = vmwkvm_command_name((uint16_t)i);
		if (n && !strcasecmp(n, name))
			return (int)i;
		if (!n && i >= BD_DIRECT)
			break; /* the name table is dense enough below 256 and ends there */
	}
	return -ENOENT;
}

/* ---- lifecycle and configuration ---- */

int vmwkvm_backdoor_new(const struct vmwkvm_backdoor_opts *opts, vmwkvm_backdoor **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!VK_OPTS_VALID(opts, struct vmwkvm_backdoor_opts))
		return -EINVAL;
	/* an older caller's shorter struct: the fields it does not know are zero */
	struct vmwkvm_backdoor_opts o = {0};
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	for (size_t i = 0; i < sizeof(o.reserved) / sizeof(o.reserved[0]); i++)
		if (o.reserved[i])
			return -EINVAL;
	if (o.pad0[0] | o.pad0[1])
		return -EINVAL;
	struct vmwkvm_backdoor *bd = calloc(1, sizeof(*bd));
	if (!bd)
		return -ENOMEM;
	int r = pthread_rwlock_init(&bd->lock, NULL);
	if (r) {
		free(bd);
		return -r;
	}
	atomic_init(&bd->refused, 0);
	bd->version = o.version ? o.version : VMWKVM_BDOOR_VERSION;
	bd->product_type = o.product_type_set ? o.product_type : VMWKVM_BDOOR_PRODUCT_ESX;
	bd->max_lag_us = o.max_lag_us ? o.max_lag_us : VMWKVM_BDOOR_DEFAULT_MAX_LAG_US;
	bd->apic_hz = o.apic_hz;
	bd->tsc_hz = o.tsc_hz;
	bd->ram_bytes = o.ram_bytes;
	bd->vcpu_info = o.vcpu_info & ~VMWKVM_VCPU_INFO_RESERVED;
	bd->uuid_set = o.uuid_set != 0;
	memcpy(bd->uuid, o.uuid, sizeof(bd->uuid));
	bd->clock = o.clock;
	bd->clock_ctx = o.clock_ctx;
	bd->rpc = o.rpc;
	*out = bd;
	return 0;
}

void vmwkvm_backdoor_free(vmwkvm_backdoor *bd)
{
	if (!bd)
		return;
	free(bd->sparse);
	free(bd->deny);
	pthread_rwlock_destroy(&bd->lock);
	free(bd);
}

/* Write lock held. */
static int set_entry(struct vmwkvm_backdoor *bd, uint16_t command, vmwkvm_backdoor_handler_fn fn, void *ctx)
{
	if (command < BD_DIRECT) {
		bd->direct[command] = (struct bd_entry){.fn = fn, .ctx = fn ? ctx : NULL};
		return 0;
	}
	for (size_t i = 0; i < bd->nsparse; i++) {
		if (bd->sparse[i].command == command) {
			if (fn)
				bd->sparse[i].e = (struct bd_entry){.fn = fn, .ctx = ctx};
			else
				bd->sparse[i] = bd->sparse[--bd->nsparse];
			return 0;
		}
	}
	if (!fn)
		return 0;
	if (bd->nsparse == bd->sparse_cap) {
		size_t cap = bd->sparse_cap ? bd->sparse_cap * 2 : 8;
		struct bd_sparse *s = realloc(bd->sparse, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		bd->sparse = s;
		bd->sparse_cap = cap;
	}
	bd->sparse[bd->nsparse++] = (struct bd_sparse){.command = command, .e = {.fn = fn, .ctx = ctx}};
	return 0;
}

/* Read lock held. */
static struct bd_entry get_entry(const struct vmwkvm_backdoor *bd, uint16_t command)
{
	if (command < BD_DIRECT)
		return bd->direct[command];
	for (size_t i = 0; i < bd->nsparse; i++)
		if (bd->sparse[i].command == command)
			return bd->sparse[i].e;
	return (struct bd_entry){0};
}

int vmwkvm_backdoor_set_handler(vmwkvm_backdoor *bd, uint16_t command, vmwkvm_backdoor_handler_fn fn, void *ctx)
{
	if (!bd)
		return -EINVAL;
	pthread_rwlock_wrlock(&bd->lock);
	int r = set_entry(bd, command, fn, ctx);
	pthread_rwlock_unlock(&bd->lock);
	return r;
}

int vmwkvm_backdoor_set_default(vmwkvm_backdoor *bd, vmwkvm_backdoor_handler_fn fn, void *ctx)
{
	if (!bd)
		return -EINVAL;
	pthread_rwlock_wrlock(&bd->lock);
	bd->dflt = (struct bd_entry){.fn = fn, .ctx = fn ? ctx : NULL};
	pthread_rwlock_unlock(&bd->lock);
	return 0;
}

int vmwkvm_backdoor_set_rpc(vmwkvm_backdoor *bd, vmwkvm_rpc *rpc)
{
	if (!bd)
		return -EINVAL;
	pthread_rwlock_wrlock(&bd->lock);
	bd->rpc = rpc;
	pthread_rwlock_unlock(&bd->lock);
	return 0;
}

/* ---- built-ins (ctx = the dispatcher) ---- */

static int bi_getversion(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	const struct vmwkvm_backdoor *bd = ctx;
	(void)call;
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	r->eax = bd->version;
	r->ebx = VMWKVM_BDOOR_MAGIC;
	r->ecx = bd->product_type;
	return 0;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int bi_getuuid(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	const struct vmwkvm_backdoor *bd = ctx;
	(void)call;
	if (!bd->uuid_set)
		return -ENOENT;
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX | VMWKVM_REPLY_EDX;
	r->eax = le32(bd->uuid);
	r->ebx = le32(bd->uuid + 4);
	r->ecx = le32(bd->uuid + 8);
	r->edx = le32(bd->uuid + 12);
	return 0;
}

static int bi_getmemsize(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	const struct vmwkvm_backdoor *bd = ctx;
	(void)call;
	if (!bd->ram_bytes)
		return -ENOENT;
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
	r->eax = (uint32_t)bd->ram_bytes; /* QEMU: bytes, truncated to 32 bits */
	r->ebx = VMWKVM_BDOOR_MEMSIZE_EBX;
	return 0;
}

static int bi_gethz(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	const struct vmwkvm_backdoor *bd = ctx;
	(void)call;
	if (!bd->tsc_hz) {
		/* "unsupported": guests test EBX == 0xFFFFFFFF; set it whatever they preloaded */
		r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX;
		r->eax = 0xFFFFFFFFu;
		r->ebx = 0xFFFFFFFFu;
		return 0;
	}
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
	r->eax = (uint32_t)bd->tsc_hz;
	r->ebx = (uint32_t)(bd->tsc_hz >> 32);
	r->ecx = bd->apic_hz ? bd->apic_hz : 0xFFFFFFFFu;
	return 0;
}

static int default_clock(struct vmwkvm_bdoor_time *t, void *ctx)
{
	(void)ctx;
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) || ts.tv_sec < 0)
		return -EIO;
	t->sec = (uint64_t)ts.tv_sec;
	t->usec = (uint32_t)(ts.tv_nsec / 1000);
	return 0;
}

static int gettimefull(const struct vmwkvm_backdoor *bd, struct vmwkvm_reply *r, bool with_lag)
{
	struct vmwkvm_bdoor_time t = {.max_lag_us = bd->max_lag_us};
	int e = bd->clock ? bd->clock(&t, bd->clock_ctx) : default_clock(&t, NULL);
	if (e < 0)
		return e;
	t.sec += t.usec / 1000000u;
	t.usec %= 1000000u;
	/* success = EAX keeps the magic: written explicitly so an IN returns it */
	r->set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX | VMWKVM_REPLY_EDX | VMWKVM_REPLY_ESI;
	r->eax = VMWKVM_BDOOR_MAGIC;
	r->ebx = t.usec;
	r->ecx = t.max_lag_us;
	r->edx = (uint32_t)t.sec;
	r->esi = (uint32_t)(t.sec >> 32);
	if (with_lag) {
		r->set |= VMWKVM_REPLY_EDI;
		r->edi = t.interrupt_lag_us;
	}
	return 0;
}

static int bi_gettimefull(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	(void)call;
	return gettimefull(ctx, r, false);
}

static int bi_gettimefull_lag(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	(void)call;
	return gettimefull(ctx, r, true);
}

static int bi_get_vcpu_info(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	const struct vmwkvm_backdoor *bd = ctx;
	(void)call;
	r->set = VMWKVM_REPLY_EAX;
	r->eax = bd->vcpu_info;
	return 0;
}

static int bi_message(const struct vmwkvm_call *call, struct vmwkvm_reply *r, void *ctx)
{
	struct vmwkvm_backdoor *bd = ctx;
	pthread_rwlock_rdlock(&bd->lock);
	vmwkvm_rpc *rpc = bd->rpc;
	pthread_rwlock_unlock(&bd->lock);
	if (!rpc)
		return -ENODEV;
	return vmwkvm_rpc_handle(rpc, call, r);
}

static const struct {
	uint16_t command;
	vmwkvm_backdoor_handler_fn fn;
} builtins[] = {
	{VMWKVM_BDOOR_CMD_GETVERSION, bi_getversion},
	{VMWKVM_BDOOR_CMD_GETUUID, bi_getuuid},
	{VMWKVM_BDOOR_CMD_GETMEMSIZE, bi_getmemsize},
	{VMWKVM_BDOOR_CMD_MESSAGE, bi_message},
	{VMWKVM_BDOOR_CMD_GETHZ, bi_gethz},
	{VMWKVM_BDOOR_CMD_GETTIMEFULL, bi_gettimefull},
	{VMWKVM_BDOOR_CMD_GETTIMEFULL_WITH_LAG, bi_gettimefull_lag},
	{VMWKVM_BDOOR_CMD_GET_VCPU_INFO, bi_get_vcpu_info},
};

int vmwkvm_backdoor_enable_builtin(vmwkvm_backdoor *bd, uint16_t command)
{
	if (!bd)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
		if (builtins[i].command == command)
			return vmwkvm_backdoor_set_handler(bd, command, builtins[i].fn, bd);
	return -ENOENT;
}

int vmwkvm_backdoor_enable_all_builtins(vmwkvm_backdoor *bd)
{
	if (!bd)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		int r = vmwkvm_backdoor_set_handler(bd, builtins[i].command, builtins[i].fn, bd);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- origin filter ---- */

static bool from_valid(uint32_t from)
{
	return (from & ~(uint32_t)VMWKVM_BDOOR_FROM_ALL) == 0;
}

/* Write lock held. */
static int deny_table(struct vmwkvm_backdoor *bd)
{
	if (!bd->deny) {
		bd->deny = calloc(0x10000, 1);
		if (!bd->deny)
			return -ENOMEM;
	}
	return 0;
}

int vmwkvm_backdoor_filter_set(vmwkvm_backdoor *bd, uint32_t from, uint16_t command, bool allow)
{
	if (!bd || !from_valid(from))
		return -EINVAL;
	pthread_rwlock_wrlock(&bd->lock);
	int r = 0;
	if (!allow)
		r = deny_table(bd);
	if (!r && bd->deny) {
		if (allow)
			bd->deny[command] &= (uint8_t)~from;
		else
			bd->deny[command] |= (uint8_t)from;
	}
	pthread_rwlock_unlock(&bd->lock);
	return r;
}

int vmwkvm_backdoor_filter_allow_only(vmwkvm_backdoor *bd, uint32_t from, const uint16_t *commands, size_t n)
{
	if (!bd || !from_valid(from) || (!commands && n))
		return -EINVAL;
	pthread_rwlock_wrlock(&bd->lock);
	int r = deny_table(bd);
	if (!r) {
		for (size_t c = 0; c <= 0xFFFFu; c++)
			bd->deny[c] |= (uint8_t)from;
		for (size_t i = 0; i < n; i++)
			bd->deny[commands[i]] &= (uint8_t)~from;
	}
	pthread_rwlock_unlock(&bd->lock);
	return r;
}

int vmwkvm_backdoor_filter_allowed(const vmwkvm_backdoor *bd, uint32_t from, uint16_t command)
{
	if (!bd || !from || !from_valid(from) || (from & (from - 1)))
		return -EINVAL;
	struct vmwkvm_backdoor *b = (struct vmwkvm_backdoor *)bd;
	pthread_rwlock_rdlock(&b->lock);
	int allowed = !(b->deny && (b->deny[command] & from));
	pthread_rwlock_unlock(&b->lock);
	return allowed;
}

/* ---- dispatch ---- */

static bool call_is_hb(const struct vmwkvm_call *call)
{
	return call->transport == VMWKVM_TRANSPORT_HB ||
	       (call->transport == VMWKVM_TRANSPORT_HYPERCALL && (call->rdx & BD_HCALL_FLAG_HB));
}

/* The protocol's failure answer (see backdoor.h). */
static void failure_answer(const struct vmwkvm_call *call, struct vmwkvm_reply *r)
{
	memset(r, 0, sizeof(*r));
	if (call && call_is_hb(call)) {
		/* HB: status in EBX bits 31:16, answered at the last piece; IN pieces get zeroes */
		if (call->transport == VMWKVM_TRANSPORT_HB && !(call->hb_flags & VMWKVM_HB_LAST))
			return;
		r->set = VMWKVM_REPLY_EBX;
		r->ebx = (uint32_t)call->rbx & 0xFFFFu;
		return;
	}
	r->set = VMWKVM_REPLY_EAX;
	r->eax = 0xFFFFFFFFu;
	if (call && call->command == VMWKVM_BDOOR_CMD_MESSAGE) {
		/* MESSAGE guests read their status from ECX bits 31:16, where their own
		 * sub-command still stands (SENDSIZE = 1 would read as SUCCESS): status 0 */
		r->set |= VMWKVM_REPLY_ECX;
		r->ecx = 0;
	}
}

static void log_refusal(struct vmwkvm_backdoor *bd, const struct vmwkvm_call *call, uint16_t command,
			const char *why)
{
	unsigned n = atomic_fetch_add(&bd->refused, 1) + 1;
	if (n > BD_LOG_FIRST && n % BD_LOG_EVERY)
		return;
	const char *name = vmwkvm_command_name(command);
	vk_warn("backdoor: command %u (%s) from %s (CPL%u) refused: %s (%u refusals so far)", command,
		name ? name : "unknown", from_name(vmwkvm_backdoor_from(call->origin, call->cpl)), call->cpl, why, n);
}

int vmwkvm_backdoor_handle(vmwkvm_backdoor *bd, const struct vmwkvm_call *call, struct vmwkvm_reply *reply)
{
	if (!reply)
		return -EINVAL;
	failure_answer(call, reply);
	if (!bd || !call)
		return -EINVAL;
	if (call->invalid || !call->magic_ok || call->transport == VMWKVM_TRANSPORT_NONE ||
	    call->transport > VMWKVM_TRANSPORT_HYPERCALL)
		return VMWKVM_BACKDOOR_REFUSED;
	/* HB pieces (port or hypercall flag) are MESSAGE traffic */
	uint16_t command = call_is_hb(call) ? (uint16_t)VMWKVM_BDOOR_CMD_MESSAGE : call->command;
	uint32_t from = vmwkvm_backdoor_from(call->origin, call->cpl);

	pthread_rwlock_rdlock(&bd->lock);
	bool denied = bd->deny && (bd->deny[command] & from);
	struct bd_entry e = get_entry(bd, command);
	if (!e.fn)
		e = bd->dflt;
	pthread_rwlock_unlock(&bd->lock);

	if (denied) {
		log_refusal(bd, call, command, "origin filter");
		return VMWKVM_BACKDOOR_REFUSED;
	}
	if (call->cpl != 0 && vmwkvm_backdoor_cpl0_only(command)) {
		log_refusal(bd, call, command, "CPL0-only command");
		return VMWKVM_BACKDOOR_REFUSED;
	}
	if (!e.fn)
		return VMWKVM_BACKDOOR_UNSUPPORTED;
	memset(reply, 0, sizeof(*reply));
	if (e.fn(call, reply, e.ctx) < 0) {
		failure_answer(call, reply);
		return VMWKVM_BACKDOOR_UNSUPPORTED;
	}
	return VMWKVM_BACKDOOR_ANSWERED;
}

int vmwkvm_backdoor_handle_exit(vmwkvm_backdoor *bd, vmwkvm_vcpu *vcpu)
{
	if (!bd || !vcpu)
		return -EINVAL;
	struct vmwkvm_call call;
	int r = vmwkvm_exit_decode(vcpu, &call);
	if (r < 0)
		return r;
	if (r == VMWKVM_EXIT_NOT_BACKDOOR)
		return 0;
	if (r == VMWKVM_EXIT_INVALID) {
		r = vmwkvm_exit_complete_invalid(vcpu, &call);
		return r < 0 ? r : 1;
	}
	struct vmwkvm_reply reply;
	vmwkvm_backdoor_handle(bd, &call, &reply);
	r = vmwkvm_exit_complete(vcpu, &call, &reply);
	return r < 0 ? r : 1;
}
