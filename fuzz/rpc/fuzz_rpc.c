/* libFuzzer target: the GuestRPC channel (lib/backdoor/rpc*.c) driven by arbitrary sequences of
 * synthetic decoded calls: LB subcommands with right, wrong and swapped cookies, whole and
 * abandoned HB transfers in pieces, raw HB pieces with arbitrary offsets and lengths,
 * checkpoints, TCLO queueing and resets, under small and default bounds.
 *
 * Checked after every step (abort() = a finding): the register answers keep the protocol's
 * shape (LB: ECX low16 = 0, EAX/EBP never written, a failure writes ECX only; HB: nothing
 * before the last piece, EBX at the last one; REP INSB data only into the piece's own
 * buffer), the channel count stays within max_channels, and the bytes the channel table
 * holds (vk_rpc_allocated) stay within what the configured bounds allow (vk_rpc_bound).
 * LeakSanitizer checks that vmwkvm_rpc_free() releases everything. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backdoor/rpc_chan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KNOWN 64
#define PIECE_MAX 1024u /* this host's REP INSB piece bound; OUTSB pieces are smaller */
#define MAX_PIECES 256u /* per transfer, to keep one input fast */

struct in {
	const uint8_t *p;
	size_t n, off;
};

static uint8_t rd8(struct in *in)
{
	return in->off < in->n ? in->p[in->off++] : 0;
}

static uint16_t rd16(struct in *in)
{
	return (uint16_t)(rd8(in) | rd8(in) << 8);
}

static uint32_t rd32(struct in *in)
{
	return (uint32_t)rd16(in) | (uint32_t)rd16(in) << 16;
}

struct known {
	uint16_t id;
	bool ck;
	uint32_t hi, lo;
	uint32_t sendsize; /* last SENDSIZE accepted */
	uint32_t recvsize; /* last RECVSIZE length */
};

static struct {
	vmwkvm_rpc *rpc;
	uint32_t max_channels, max_message;
	struct known k[MAX_KNOWN];
	int nk;
	size_t peak;
} F;

static uint8_t sendbuf[(1u << 16) + 64];
static uint8_t recvbuf[(1u << 16) + 64];

#define CHECK(cond)                                                                         \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_rpc: check failed at line %d: %s\n", __LINE__, #cond); \
			abort();                                                             \
		}                                                                            \
	} while (0)

static void check_bounds(void)
{
	size_t a = vk_rpc_allocated(F.rpc);
	if (a > F.peak)
		F.peak = a;
	CHECK(a <= vk_rpc_bound(F.rpc));
	int n = vmwkvm_rpc_channel_count(F.rpc);
	CHECK(n >= 0 && (uint32_t)n <= F.max_channels);
}

/* ---- handlers ---- */

static int h_echo(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)ctx;
	CHECK(req->message_len <= F.max_message);
	CHECK(req->message[req->message_len] == '\0');
	CHECK(req->command_len <= req->message_len);
	CHECK(req->args + req->args_len <= req->message + req->message_len);
	return vmwkvm_rpc_out_append(out, req->args, req->args_len) == -E2BIG ? -E2BIG : 0;
}

static int h_big(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)ctx;
	/* grow the reply in steps up to and past the bound */
	for (size_t i = 0; i < 70; i++)
		if (vmwkvm_rpc_out_printf(out, "%.*s%04zu", 1000, (const char *)sendbuf, req->message_len + i) < 0)
			break;
	return 0;
}

static int h_fail(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	(void)out;
	(void)ctx;
	return -ENOENT;
}

static void on_tclo(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx)
{
	(void)channel;
	(void)seq;
	(void)ctx;
	CHECK(len > 0 && len <= F.max_message && data[len] == '\0');
}

/* ---- channels the fuzzer knows the cookies of ---- */

static struct known *find_known(uint16_t id)
{
	for (int i = 0; i < F.nk; i++)
		if (F.k[i].id == id)
			return &F.k[i];
	return NULL;
}

static void forget(uint16_t id)
{
	for (int i = 0; i < F.nk; i++)
		if (F.k[i].id == id) {
			F.k[i] = F.k[--F.nk];
			return;
		}
}

/* A channel to address: a known one (right cookies), or a raw id. */
static struct known pick(struct in *in)
{
	uint8_t b = rd8(in);
	if (!(b & 0x80) && F.nk)
		return F.k[b % F.nk];
	struct known r = {.id = (b & 0x40) ? 0xFFFF : (uint16_t)(b & 0x3F), .ck = false};
	return r;
}

/* cookie mode: 0/1 right, 2 wrong, 3 swapped */
static void cookies(struct in *in, const struct known *k, uint32_t *hi, uint32_t *lo)
{
	uint8_t m = rd8(in) & 3;
	*hi = k->ck ? k->hi : 0x5E5E5E5Eu;
	*lo = k->ck ? k->lo : 0xD1D1D1D1u;
	if (m == 2)
		*lo ^= 1u << (rd8(in) & 31);
	if (m == 3) {
		uint32_t t = *hi;
		*hi = *lo;
		*lo = t;
	}
}

/* ---- calls ---- */

static struct vmwkvm_reply lb(uint16_t sub, uint32_t ebx, uint16_t id, uint32_t hi, uint32_t lo)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_LB;
	c.direction = VMWKVM_DIR_IN;
	c.command = 0x1E;
	c.subcommand = sub;
	c.magic_ok = 1;
	c.cpl = 3;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 4;
	c.port = VMWKVM_BDOOR_PORT;
	c.rax = VMWKVM_BDOOR_MAGIC;
	c.rbx = ebx;
	c.rcx = (uint32_t)sub << 16 | 0x1E;
	c.rdx = (uint32_t)id << 16 | VMWKVM_BDOOR_PORT;
	c.rsi = hi;
	c.rdi = lo;
	c.rbp = 0xB0B0B0B0u;
	struct vmwkvm_reply r;
	CHECK(vmwkvm_rpc_handle(F.rpc, &c, &r) == 0);
	CHECK(r.set & VMWKVM_REPLY_ECX);
	CHECK(!(r.set & (VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBP | VMWKVM_REPLY_INJECT)));
	CHECK((r.ecx & 0xFFFF) == 0);
	if (!(r.ecx & 0x00010000u))
		CHECK(r.set == VMWKVM_REPLY_ECX);
	if (r.set & VMWKVM_REPLY_EDX)
		CHECK((r.edx & 0xFFFF) == VMWKVM_BDOOR_PORT);
	check_bounds();
	return r;
}

static struct vmwkvm_reply hb_piece(bool in_dir, uint16_t id, uint32_t hi, uint32_t lo, uint64_t off,
				    uint32_t count, uint64_t total, uint8_t flags, uint8_t *buf)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_HB;
	c.direction = in_dir ? VMWKVM_DIR_IN : VMWKVM_DIR_OUT;
	c.command = 0;
	c.subcommand = 1;
	c.magic_ok = 1;
	c.cpl = 3;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 1;
	c.port = VMWKVM_BDOORHB_PORT;
	c.rax = VMWKVM_BDOOR_MAGIC;
	c.rbx = 0x00010000u;
	c.rdx = (uint32_t)id << 16 | VMWKVM_BDOORHB_PORT;
	if (in_dir) {
		c.rsi = hi;
		c.rbp = lo;
	} else {
		c.rdi = lo;
		c.rbp = hi;
	}
	c.hb_offset = off;
	c.hb_count = count;
	c.hb_total = total;
	c.hb_flags = flags;
	c.hb_data = buf;
	struct vmwkvm_reply r;
	CHECK(vmwkvm_rpc_handle(F.rpc, &c, &r) == 0);
	if (flags & VMWKVM_HB_LAST) {
		CHECK(r.set == VMWKVM_REPLY_EBX);
		CHECK((r.ebx & 0xFFFF) == 0);
	} else {
		CHECK(r.set == 0);
	}
	if (in_dir)
		CHECK(r.hb_data == NULL || r.hb_data == buf);
	else
		CHECK(r.hb_data == NULL);
	check_bounds();
	return r;
}

/* A whole HB transfer (possibly abandoned before its last piece). */
static void hb_transfer(struct in *in, bool in_dir)
{
	struct known k = pick(in);
	uint32_t hi, lo;
	cookies(in, &k, &hi, &lo);
	uint8_t sel = rd8(in);
	uint64_t total;
	switch (sel & 3) {
	case 0: total = in_dir ? k.recvsize : k.sendsize; break;
	case 1: total = rd8(in) + 1u; break;
	case 2: total = rd16(in) + 1u; break;
	default: total = (in_dir ? k.recvsize : k.sendsize) + 1u; break;
	}
	if (total == 0 || total > sizeof(sendbuf) - 64)
		total = 1;
	uint32_t piece = (uint32_t)(rd8(in) % PIECE_MAX) + 1u;
	if (total / piece > MAX_PIECES)
		piece = (uint32_t)(total / MAX_PIECES) + 1u;
	unsigned stop = (sel & 0x80) ? rd8(in) : ~0u; /* abandon after this many pieces */
	uint8_t *buf = in_dir ? recvbuf : sendbuf;
	if (!in_dir)
		for (uint64_t i = 0; i < total; i++)
			buf[i] = in->off < in->n ? in->p[in->off++] : (uint8_t)i; /* the bytes sent */
	unsigned n = 0;
	for (uint64_t off = 0; off < total && n < stop; off += piece, n++) {
		uint32_t cnt = (uint32_t)(total - off < piece ? total - off : piece);
		uint8_t flags = (uint8_t)((off == 0 ? VMWKVM_HB_FIRST : 0) | (off + cnt == total ? VMWKVM_HB_LAST : 0));
		hb_piece(in_dir, k.id, hi, lo, off, cnt, total, flags, buf + off);
		if (n == 0 && (sel & 0x40)) /* a checkpoint in the middle of the REP instruction */
			CHECK(vmwkvm_rpc_checkpoint(F.rpc) >= 0);
	}
}

static void op_open(struct in *in)
{
	uint8_t b = rd8(in);
	uint32_t proto = (b & 1) ? VMWKVM_RPC_PROTO_TCLO : VMWKVM_RPC_PROTO_RPCI;
	if (b & 2)
		proto |= VMWKVM_RPC_FLAG_COOKIE;
	if (b & 4)
		proto ^= rd32(in);
	struct vmwkvm_reply r = lb(VMWKVM_RPC_OPEN, proto, 0, 0, 0);
	if (r.ecx == 0x00010000u) {
		uint16_t id = (uint16_t)(r.edx >> 16);
		CHECK(id < F.max_channels);
		CHECK(find_known(id) == NULL);
		if (F.nk < MAX_KNOWN) {
			struct known *k = &F.k[F.nk++];
			memset(k, 0, sizeof(*k));
			k->id = id;
			k->ck = (proto & VMWKVM_RPC_FLAG_COOKIE) != 0;
			CHECK(k->ck == ((r.set & VMWKVM_REPLY_ESI) != 0));
			k->hi = r.esi;
			k->lo = r.edi;
		}
	}
}

static void op_lb(struct in *in)
{
	uint16_t sub = rd8(in) % 9; /* 7 and 8 are unknown subcommands */
	if (sub == VMWKVM_RPC_OPEN) {
		op_open(in);
		return;
	}
	struct known k = pick(in);
	uint32_t hi, lo;
	cookies(in, &k, &hi, &lo);
	uint32_t ebx;
	uint8_t how = rd8(in);
	if (sub == VMWKVM_RPC_SENDSIZE)
		ebx = (how & 1) ? rd8(in) : (how & 2) ? F.max_message + (how >> 7) : rd32(in);
	else if (sub == VMWKVM_RPC_RECVPAYLOAD || sub == VMWKVM_RPC_RECVSTATUS)
		ebx = (how & 1) ? 1 : rd32(in);
	else
		ebx = rd32(in);
	struct vmwkvm_reply r = lb(sub, ebx, k.id, hi, lo);
	struct known *kk = find_known(k.id);
	bool ok = (r.ecx & 0x00010000u) != 0;
	if (ok && sub == VMWKVM_RPC_CLOSE)
		forget(k.id);
	if (ok && sub == VMWKVM_RPC_SENDSIZE && kk)
		kk->sendsize = ebx;
	if (ok && sub == VMWKVM_RPC_RECVSIZE && kk && (r.ecx & 0x00020000u))
		kk->recvsize = r.ebx;
	if (sub == VMWKVM_RPC_RECVSIZE && (r.ecx & 0x00020000u))
		CHECK(r.ebx <= F.max_message && (r.edx >> 16) == 1);
	if (sub == VMWKVM_RPC_RECVPAYLOAD && ok && (r.set & VMWKVM_REPLY_EDX))
		CHECK((r.edx >> 16) == 2);
}

/* SENDSIZE + every SENDPAYLOAD (maybe stopping early) */
static void op_send_lb(struct in *in)
{
	struct known k = pick(in);
	uint32_t len = rd8(in);
	if (len & 0x80)
		len = rd16(in) % (F.max_message + 2u);
	unsigned stop = rd8(in);
	struct vmwkvm_reply r = lb(VMWKVM_RPC_SENDSIZE, len, k.id, k.hi, k.lo);
	if (!(r.ecx & 0x00010000u))
		return;
	struct known *kk = find_known(k.id);
	if (kk)
		kk->sendsize = len;
	for (uint32_t off = 0; off < len && (stop == 0 || off / 4 < stop); off += 4)
		lb(VMWKVM_RPC_SENDPAYLOAD, rd32(in), k.id, k.hi, k.lo);
}

/* RECVSIZE + every RECVPAYLOAD + RECVSTATUS */
static void op_recv_lb(struct in *in)
{
	struct known k = pick(in);
	uint8_t st = rd8(in);
	struct vmwkvm_reply r = lb(VMWKVM_RPC_RECVSIZE, 0, k.id, k.hi, k.lo);
	if (!(r.ecx & 0x00020000u))
		return;
	uint32_t len = r.ebx;
	CHECK(len <= F.max_message);
	struct known *kk = find_known(k.id);
	if (kk)
		kk->recvsize = len;
	for (uint32_t off = 0; off < len; off += 4)
		lb(VMWKVM_RPC_RECVPAYLOAD, 1, k.id, k.hi, k.lo);
	lb(VMWKVM_RPC_RECVSTATUS, st & 1, k.id, k.hi, k.lo);
}

static void op_raw_hb(struct in *in)
{
	uint8_t b = rd8(in);
	struct known k = pick(in);
	uint32_t hi, lo;
	cookies(in, &k, &hi, &lo);
	uint64_t off = rd16(in);
	uint32_t cnt = rd16(in) % (PIECE_MAX + 1);
	uint64_t total = (b & 4) ? rd32(in) : (b & 8) ? k.sendsize : k.recvsize;
	uint8_t *buf = (b & 1) ? recvbuf : sendbuf;
	/* the decoder never hands out a piece beyond its buffer: keep hb_data valid */
	if (off + cnt > sizeof(sendbuf))
		off = 0;
	hb_piece(b & 1, k.id, hi, lo, off, cnt, total, (uint8_t)(b >> 4 & 3), cnt ? buf + off : NULL);
}

static void op_tclo(struct in *in)
{
	uint8_t b = rd8(in);
	int ch = (b & 1) ? -1 : (int)pick(in).id;
	size_t len = (b & 2) ? rd16(in) % (F.max_message + 2u) : rd8(in);
	uint64_t seq = 0;
	int r = vmwkvm_rpc_tclo_queue(F.rpc, ch, len ? sendbuf : NULL, len, &seq);
	CHECK(r == 0 || r == -EINVAL || r == -ENOENT || r == -E2BIG || r == -ENOSPC);
	if (r == 0)
		CHECK(seq > 0 && len <= F.max_message);
	uint16_t ids[4];
	CHECK(vmwkvm_rpc_tclo_channels(F.rpc, ids, 4) >= 0);
	check_bounds();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = {.p = data, .n = size};
	uint8_t cfg = rd8(&in);
	static const uint32_t chans[4] = {0, 1, 3, 8};
	static const uint32_t msgs[4] = {0, 2, 17, 300};
	static const uint32_t queues[4] = {0, 1, 2, 4};
	struct vmwkvm_rpc_opts o = {
		.sz = sizeof(o),
		.max_channels = chans[cfg & 3],
		.max_message = msgs[cfg >> 2 & 3],
		.max_tclo_queue = queues[cfg >> 4 & 3],
		.no_hb = (cfg >> 6) & 1,
		.cookie_seed = 0x5EED,
	};
	memset(&F, 0, sizeof(F));
	CHECK(vmwkvm_rpc_new(&o, &F.rpc) == 0);
	F.max_channels = o.max_channels ? o.max_channels : VMWKVM_RPC_DEFAULT_CHANNELS;
	F.max_message = o.max_message ? o.max_message : VMWKVM_RPC_DEFAULT_MESSAGE;
	vmwkvm_rpc_register(F.rpc, "log", h_echo, NULL);
	vmwkvm_rpc_register(F.rpc, "info-set", h_echo, NULL);
	vmwkvm_rpc_register(F.rpc, "big", h_big, NULL);
	vmwkvm_rpc_register(F.rpc, "tools.", h_fail, NULL);
	if (cfg & 0x80)
		vmwkvm_rpc_set_tclo_handler(F.rpc, on_tclo, NULL);

	unsigned steps = 0;
	while (in.off < in.n && steps++ < 4096) {
		switch (rd8(&in) % 10) {
		case 0: op_open(&in); break;
		case 1: op_lb(&in); break;
		case 2: op_send_lb(&in); break;
		case 3: op_recv_lb(&in); break;
		case 4: hb_transfer(&in, false); break;
		case 5: hb_transfer(&in, true); break;
		case 6: CHECK(vmwkvm_rpc_checkpoint(F.rpc) >= 0); break;
		case 7: op_tclo(&in); break;
		case 8: op_raw_hb(&in); break;
		default:
			if (rd8(&in) == 0xAA) {
				CHECK(vmwkvm_rpc_reset(F.rpc) >= 0);
				CHECK(vk_rpc_allocated(F.rpc) == 0);
				F.nk = 0;
			} else {
				op_lb(&in);
			}
			break;
		}
	}
	vmwkvm_rpc_free(F.rpc);
	return 0;
}
