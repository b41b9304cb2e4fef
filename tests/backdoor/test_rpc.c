/* GuestRPC channel (vmwkvm_rpc_handle) driven with synthetic decoded calls: the RPCI
 * exchange of facts-sheet section 3.4 byte for byte over LB and over HB pieces, cookies,
 * channel ids, bounds, checkpoint, TCLO, out-of-order steps, exact register answers. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backdoor/rpc_chan.h"

#define MAGIC VMWKVM_BDOOR_MAGIC
#define RPCI VMWKVM_RPC_PROTO_RPCI
#define TCLO VMWKVM_RPC_PROTO_TCLO
#define COOKIE VMWKVM_RPC_FLAG_COOKIE
#define R_EAX VMWKVM_REPLY_EAX
#define R_EBX VMWKVM_REPLY_EBX
#define R_ECX VMWKVM_REPLY_ECX
#define R_EDX VMWKVM_REPLY_EDX
#define R_ESI VMWKVM_REPLY_ESI
#define R_EDI VMWKVM_REPLY_EDI
#define R_EBP VMWKVM_REPLY_EBP
#define GARBAGE_ESI 0x5E5E5E5Eu
#define GARBAGE_EDI 0xD1D1D1D1u
#define GUEST_EBP 0xB0B0B0B0u
#define TXT(s) ((void *)(uintptr_t)(s)) /* handler context: the reply text */

static vmwkvm_rpc *rpc;
static struct vmwkvm_reply R;

/* what the handlers saw */
static char seen_cmd[64], seen_args[70000];
static size_t seen_args_len, seen_msg_len;
static int seen_calls;

/* a guest's view of a channel */
struct gch {
	uint16_t id;
	bool ck;
	uint32_t hi, lo;
};

static struct vmwkvm_call lbcall(uint16_t sub, uint32_t ebx, const struct gch *g)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_LB;
	c.direction = VMWKVM_DIR_IN;
	c.command = 0x1E;
	c.subcommand = sub;
	c.magic_ok = 1;
	c.cpl = 3;
	c.mode = VMWKVM_MODE_PROT32;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 4;
	c.port = VMWKVM_BDOOR_PORT;
	c.rax = MAGIC;
	c.rbx = ebx;
	c.rcx = (uint32_t)sub << 16 | 0x1Eu;
	c.rdx = (uint32_t)(g ? g->id : 0) << 16 | VMWKVM_BDOOR_PORT;
	c.rsi = g && g->ck ? g->hi : GARBAGE_ESI;
	c.rdi = g && g->ck ? g->lo : GARBAGE_EDI;
	c.rbp = GUEST_EBP;
	return c;
}

/* One LB call; checks the invariants of every LB answer and returns ECX. */
static uint32_t lbc(struct vmwkvm_call *c)
{
	memset(&R, 0xCC, sizeof(R));
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, c, &R), 0);
	ck_assert(R.set & R_ECX);
	ck_assert_uint_eq(R.set & (R_EAX | R_EBP | VMWKVM_REPLY_INJECT), 0); /* EAX and EBP never touched */
	ck_assert_uint_eq(R.ecx & 0xFFFFu, 0);                                  /* low half 0 (iPXE) */
	if ((R.ecx >> 16 & VMWKVM_RPC_STATUS_SUCCESS) == 0)
		ck_assert_uint_eq(R.set, R_ECX); /* a failure changes nothing else */
	if (R.set & R_EDX)
		ck_assert_uint_eq(R.edx & 0xFFFF, c->rdx & 0xFFFF);
	return R.ecx;
}

static uint32_t lb(uint16_t sub, uint32_t ebx, const struct gch *g)
{
	struct vmwkvm_call c = lbcall(sub, ebx, g);
	return lbc(&c);
}

static struct gch gopen(uint32_t proto, bool ck)
{
	struct gch g = {0};
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, proto | (ck ? COOKIE : 0), NULL), 0x00010000u);
	ck_assert(R.set & R_EDX);
	g.id = (uint16_t)(R.edx >> 16);
	g.ck = ck;
	if (ck) {
		ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_ESI | R_EDI);
		g.hi = R.esi;
		g.lo = R.edi;
	} else {
		ck_assert_uint_eq(R.set, R_ECX | R_EDX);
	}
	return g;
}

static void send_lb(const struct gch *g, const void *msg, size_t len)
{
	const uint8_t *p = msg;
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, (uint32_t)len, g), 0x00810000u);
	ck_assert_uint_eq(R.set, R_ECX);
	for (size_t off = 0; off < len; off += 4) {
		uint32_t v = 0;
		for (size_t i = 0; i < 4 && off + i < len; i++)
			v |= (uint32_t)p[off + i] << (8 * i);
		ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, v, g), 0x00010000u);
		ck_assert_uint_eq(R.set, R_ECX);
	}
}

/* RECVSIZE + RECVPAYLOAD... + RECVSTATUS; returns the length */
static size_t recv_lb(const struct gch *g, char *buf, size_t cap)
{
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, g), 0x00830000u);
	ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_EBX);
	ck_assert_uint_eq(R.edx >> 16, 1);
	size_t len = R.ebx;
	ck_assert_uint_le(len, cap);
	for (size_t off = 0; off < len; off += 4) {
		ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, g), 0x00010000u);
		ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_EBX);
		ck_assert_uint_eq(R.edx >> 16, 2);
		for (size_t i = 0; i < 4 && off + i < len; i++)
			buf[off + i] = (char)(R.ebx >> (8 * i));
		/* bytes past the end are zero */
		for (size_t i = len - off; i < 4; i++)
			ck_assert_uint_eq(R.ebx >> (8 * i) & 0xFF, 0);
	}
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, g), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX);
	return len;
}

static struct vmwkvm_call hbcall(bool in, const struct gch *g, uint64_t off, uint32_t count, uint64_t total,
				 uint8_t *data)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_HB;
	c.direction = in ? VMWKVM_DIR_IN : VMWKVM_DIR_OUT;
	c.command = 0;    /* EBX low16: HB MESSAGE */
	c.subcommand = 1; /* EBX high16: SUCCESS */
	c.magic_ok = 1;
	c.cpl = 3;
	c.mode = VMWKVM_MODE_LONG64;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 1;
	c.port = VMWKVM_BDOORHB_PORT;
	c.rax = MAGIC;
	c.rbx = 0x00010000u;
	c.rcx = total - off;
	c.rdx = (uint32_t)g->id << 16 | VMWKVM_BDOORHB_PORT;
	if (in) {
		c.rsi = g->ck ? g->hi : GARBAGE_ESI;
		c.rdi = 0x7FFF00001000ull + off;
		c.rbp = g->ck ? g->lo : GUEST_EBP;
	} else {
		c.rsi = 0x7FFF00002000ull + off;
		c.rdi = g->ck ? g->lo : GARBAGE_EDI;
		c.rbp = g->ck ? g->hi : GUEST_EBP;
	}
	c.hb_offset = off;
	c.hb_count = count;
	c.hb_total = total;
	c.hb_flags = (uint8_t)((off == 0 ? VMWKVM_HB_FIRST : 0) | (off + count == total ? VMWKVM_HB_LAST : 0));
	c.hb_data = data;
	return c;
}

/* One HB piece; returns the reply set. */
static uint32_t hbc(struct vmwkvm_call *c)
{
	memset(&R, 0xCC, sizeof(R));
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, c, &R), 0);
	if (c->hb_flags & VMWKVM_HB_LAST) {
		ck_assert_uint_eq(R.set, R_EBX);
		ck_assert_uint_eq(R.ebx & 0xFFFF, 0);
	} else {
		ck_assert_uint_eq(R.set, 0);
	}
	return R.set;
}

/* HB send in pieces of @piece bytes; returns the status (EBX >> 16). */
static uint32_t hb_send(const struct gch *g, const void *msg, size_t len, size_t piece)
{
	static uint8_t buf[70000];
	memcpy(buf, msg, len);
	for (size_t off = 0; off < len; off += piece) {
		size_t n = len - off < piece ? len - off : piece;
		struct vmwkvm_call c = hbcall(false, g, off, (uint32_t)n, len, buf + off);
		hbc(&c);
	}
	return R.ebx >> 16;
}

/* HB receive into @out in pieces; returns the status. */
static uint32_t hb_recv(const struct gch *g, uint8_t *out, size_t len, size_t piece)
{
	memset(out, 0xEE, len);
	for (size_t off = 0; off < len; off += piece) {
		size_t n = len - off < piece ? len - off : piece;
		struct vmwkvm_call c = hbcall(true, g, off, (uint32_t)n, len, out + off);
		hbc(&c);
		if (R.hb_data)
			ck_assert_ptr_eq(R.hb_data, out + off);
	}
	return R.ebx >> 16;
}

/* ---- handlers ---- */

static int h_record(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)out;
	(void)ctx;
	seen_calls++;
	size_t n = req->command_len < sizeof(seen_cmd) - 1 ? req->command_len : sizeof(seen_cmd) - 1;
	memcpy(seen_cmd, req->command, n);
	seen_cmd[n] = 0;
	ck_assert_uint_le(req->args_len, sizeof(seen_args) - 1);
	memcpy(seen_args, req->args, req->args_len);
	seen_args[req->args_len] = 0;
	seen_args_len = req->args_len;
	seen_msg_len = req->message_len;
	ck_assert_uint_eq(req->message[req->message_len], 0);
	return 0;
}

static int h_text(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	return vmwkvm_rpc_out_printf(out, "%s", (const char *)ctx);
}

static int h_fail_text(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	(void)ctx;
	vmwkvm_rpc_out_append(out, "No value found", 14);
	return -ENOENT;
}

static int h_fail_plain(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	(void)out;
	(void)ctx;
	return -ENOENT;
}

static void mk(const struct vmwkvm_rpc_opts *o)
{
	ck_assert_int_eq(vmwkvm_rpc_new(o, &rpc), 0);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "info-set", h_record, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "log", h_record, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "tools.set.version", h_record, NULL), 0);
}

static void setup(void)
{
	seen_calls = 0;
	seen_cmd[0] = 0;
	mk(NULL);
}

static void teardown(void)
{
	/* everything a test left behind is freed by a reset */
	ck_assert_int_ge(vmwkvm_rpc_reset(rpc), 0);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
	vmwkvm_rpc_free(rpc);
	rpc = NULL;
}

static const char INFO_SET[] = "info-set guestinfo.foo bar"; /* 26 bytes */

/* ---- the section 3.4 exchange ---- */

START_TEST(rpci_exchange_lb_exact)
{
	ck_assert_uint_eq(sizeof(INFO_SET) - 1, 26);
	/* 1 OPEN: EBX = 0xC9435052 */
	struct vmwkvm_call c = lbcall(VMWKVM_RPC_OPEN, 0xC9435052u, NULL);
	ck_assert_uint_eq(lbc(&c), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_ESI | R_EDI);
	ck_assert_uint_eq(R.edx, 0x00005658u); /* id 0 */
	struct gch g = {.id = 0, .ck = true, .hi = R.esi, .lo = R.edi};
	/* 2 SENDSIZE 26 */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(R.set, R_ECX);
	/* 3a: seven payload calls with the exact EBX values of the facts sheet */
	static const uint32_t w[7] = {0x6F666E69u /* "info" */, 0x7465732Du /* "-set" */,
				      0x65756720u /* " gue" */, 0x6E697473u /* "stin" */,
				      0x662E6F66u /* "fo.f" */, 0x62206F6Fu /* "oo b" */,
				      0x00007261u /* "ar" */};
	for (int i = 0; i < 7; i++) {
		uint32_t v = 0;
		for (int b = 0; b < 4 && i * 4 + b < 26; b++)
			v |= (uint32_t)(uint8_t)INFO_SET[i * 4 + b] << (8 * b);
		ck_assert_uint_eq(v, w[i]);
	}
	for (int i = 0; i < 7; i++) {
		ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, w[i], &g), 0x00010000u);
		ck_assert_uint_eq(R.set, R_ECX);
		ck_assert_int_eq(seen_calls, i == 6 ? 1 : 0); /* runs when the last byte arrives */
	}
	ck_assert_str_eq(seen_cmd, "info-set");
	ck_assert_str_eq(seen_args, "guestinfo.foo bar");
	ck_assert_uint_eq(seen_msg_len, 26);
	/* 4 RECVSIZE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.set, R_ECX | R_EDX | R_EBX);
	ck_assert_uint_eq(R.edx, 0x00015658u);
	ck_assert_uint_eq(R.ebx, 2);
	/* 5a RECVPAYLOAD x1 */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(R.edx, 0x00025658u);
	ck_assert_uint_eq(R.ebx, 0x00002031u);
	/* 6 RECVSTATUS */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX);
	/* 7 CLOSE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
}
END_TEST

static const size_t piece_sizes[] = {26, 1, 4, 7, 25};

START_TEST(rpci_exchange_hb)
{
	size_t piece = piece_sizes[_i];
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, piece), VMWKVM_RPC_STATUS_SUCCESS);
	ck_assert_uint_eq(R.ebx, 0x00010000u);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_cmd, "info-set");
	ck_assert_str_eq(seen_args, "guestinfo.foo bar");
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 2);
	uint8_t out[2];
	ck_assert_uint_eq(hb_recv(&g, out, 2, piece), VMWKVM_RPC_STATUS_SUCCESS);
	ck_assert_uint_eq(R.ebx, 0x00010000u);
	ck_assert_mem_eq(out, "1 ", 2);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
}
END_TEST

START_TEST(hb_long_reply_in_pieces)
{
	/* a 1000-byte reply fetched with REP INSB pieces of 333 bytes */
	static char text[1001];
	memset(text, 'x', 998);
	text[998] = 0;
	vmwkvm_rpc_register(rpc, "info-get", h_text, text);
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 22, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, "info-get guestinfo.foo", 22, 5), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 1000);
	static uint8_t out[1000];
	ck_assert_uint_eq(hb_recv(&g, out, 1000, 333), 1);
	ck_assert_mem_eq(out, "1 xxxx", 6);
	ck_assert_uint_eq(out[999], 'x');
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
}
END_TEST

START_TEST(no_cookie_channel_ignores_esi_edi)
{
	struct gch g = gopen(RPCI, false);
	ck_assert_uint_eq(R.edx >> 16, g.id);
	/* every call carries garbage ESI/EDI (iPXE) */
	send_lb(&g, "tools.set.version 12345", 23);
	ck_assert_str_eq(seen_cmd, "tools.set.version");
	ck_assert_str_eq(seen_args, "12345");
	char buf[8];
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 2);
	ck_assert_mem_eq(buf, "1 ", 2);
	/* HB on a cookie-less channel: cookie registers are not checked either */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 8), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
}
END_TEST

START_TEST(ipxe_passes_reply_id_back)
{
	/* iPXE: no cookies, RECVPAYLOAD and RECVSTATUS carry EBX = the RECVSIZE reply id (1),
	 * and it compares all 32 bits of ECX */
	struct gch g = gopen(RPCI, false);
	send_lb(&g, "info-set guestinfo.ipxe.x 1", 27);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	uint32_t id = R.edx >> 16;
	ck_assert_uint_eq(id, 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, id, &g), 0x00010000u);
	ck_assert_uint_eq(R.ebx, 0x2031);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, id, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
}
END_TEST

START_TEST(bad_cookie_refused_every_call)
{
	struct gch g = gopen(RPCI, true);
	struct gch bad = g;
	bad.lo ^= 1;
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &bad), 0);
	bad = g;
	bad.hi ^= 0x80000000u;
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &bad), 0);
	/* the good cookie still works, and a bad one mid-transfer changes nothing */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x6F666E69u, &bad), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &bad), 0);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 1);
	/* HB with a bad cookie fails at its last piece */
	ck_assert_uint_eq(hb_send(&bad, INFO_SET, 26, 10), 0);
	ck_assert_uint_eq(R.ebx, 0);
	ck_assert_int_eq(seen_calls, 0);
	/* HB cookie registers swapped (EDI/EBP of a receive used for a send) are refused */
	struct gch swapped = {.id = g.id, .ck = true, .hi = g.lo, .lo = g.hi};
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	if (g.hi != g.lo)
		ck_assert_uint_eq(hb_send(&swapped, INFO_SET, 26, 26), 0);
	/* the correct cookie then still completes */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 26), 1);
	ck_assert_int_eq(seen_calls, 1);
}
END_TEST

/* A piece with a bad cookie (another guest process on a cookie channel) must not disturb
 * the owner's HB transfer in progress, in either direction. */
START_TEST(hb_bad_cookie_piece_changes_nothing)
{
	struct gch g = gopen(RPCI, true);
	struct gch bad = g;
	bad.lo ^= 1;
	bad.hi ^= 1;
	static uint8_t msg[26], junk[26];
	memcpy(msg, INFO_SET, 26);
	memset(junk, 'X', sizeof(junk));
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	struct vmwkvm_call c = hbcall(false, &g, 0, 10, 26, msg);
	hbc(&c);
	/* intruder pieces: a middle one, then one that ends its "transfer" */
	c = hbcall(false, &bad, 10, 6, 26, junk);
	c.hb_flags = 0;
	hbc(&c);
	c = hbcall(false, &bad, 10, 16, 26, junk);
	hbc(&c);
	ck_assert_uint_eq(R.ebx >> 16, 0);
	/* the owner's transfer completes unharmed */
	c = hbcall(false, &g, 10, 16, 26, msg + 10);
	hbc(&c);
	ck_assert_uint_eq(R.ebx >> 16, 1);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_args, "guestinfo.foo bar");

	/* receive the reply "1 " in two pieces with an intruder between them */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 2);
	uint8_t out[2] = {0xEE, 0xEE};
	c = hbcall(true, &g, 0, 1, 2, out);
	hbc(&c);
	c = hbcall(true, &bad, 1, 1, 2, junk);
	hbc(&c);
	ck_assert_uint_eq(R.ebx >> 16, 0);
	ck_assert_ptr_null(R.hb_data);
	ck_assert_uint_eq(junk[0], 'X');
	c = hbcall(true, &g, 1, 1, 2, out + 1);
	hbc(&c);
	ck_assert_uint_eq(R.ebx >> 16, 1);
	ck_assert_mem_eq(out, "1 ", 2);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
}
END_TEST

START_TEST(bad_channel_id)
{
	struct gch g = gopen(RPCI, false);
	struct gch other = {.id = (uint16_t)(g.id + 1)};
	for (uint16_t sub = VMWKVM_RPC_SENDSIZE; sub <= VMWKVM_RPC_CLOSE; sub++)
		ck_assert_uint_eq(lb(sub, 1, &other), 0);
	other.id = 0xFFFF; /* beyond the table */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 1, &other), 0);
	ck_assert_uint_eq(hb_send(&other, "abc", 3, 3), 0);
	uint8_t out[3];
	ck_assert_uint_eq(hb_recv(&other, out, 3, 2), 0);
	ck_assert_ptr_null(R.hb_data); /* refused REP INSB pieces read zeroes */
	/* after CLOSE the id is dead */
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 1, &g), 0);
}
END_TEST

START_TEST(channel_limit_128)
{
	struct gch g[128];
	for (int i = 0; i < 128; i++) {
		g[i] = gopen(i % 2 ? TCLO : RPCI, i % 3 == 0);
		ck_assert_uint_eq(g[i].id, i);
	}
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 128);
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, RPCI | COOKIE, NULL), 0);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, RPCI, NULL), 0);
	/* closing one frees its id for the next OPEN */
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g[77]), 0x00010000u);
	struct gch n = gopen(RPCI, true);
	ck_assert_uint_eq(n.id, 77);
	ck_assert_uint_le(vk_rpc_allocated(rpc), vk_rpc_bound(rpc));
	ck_assert_int_eq(vmwkvm_rpc_reset(rpc), 128);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
}
END_TEST

START_TEST(channel_limit_configurable)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .max_channels = 3};
	mk(&o);
	for (int i = 0; i < 3; i++)
		gopen(RPCI, false);
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, RPCI, NULL), 0);
}
END_TEST

START_TEST(open_unknown_protocol)
{
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, 0x12345678u, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, RPCI | 0x20000000u, NULL), 0); /* undefined flag */
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
}
END_TEST

START_TEST(message_limit_64k)
{
	static char big[65537];
	memcpy(big, "log ", 4);
	memset(big + 4, 'a', sizeof(big) - 4);
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 65537, &g), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 0xFFFFFFFFu, &g), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 65536, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, big, 65536, 1024), 1);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_cmd, "log");
	ck_assert_uint_eq(seen_args_len, 65532);
	char buf[4];
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 2);
	/* the same message over LB: 16384 payload calls */
	send_lb(&g, big, 65536);
	ck_assert_int_eq(seen_calls, 2);
}
END_TEST

START_TEST(message_limit_configurable)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .max_message = 100};
	mk(&o);
	struct gch g = gopen(RPCI, false);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 101, &g), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 100, &g), 0x00810000u);
	/* an HB transfer longer than SENDSIZE announced is refused at its first piece */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 10, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, "log 0123456", 11, 11), 0);
	ck_assert_uint_eq(hb_send(&g, "log 012345", 10, 11), 1);
}
END_TEST

static int h_huge(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	(void)ctx;
	static char blob[200];
	memset(blob, 'z', sizeof(blob));
	ck_assert_int_eq(vmwkvm_rpc_out_append(out, blob, 63), -E2BIG); /* 2 + 63 > 64 */
	ck_assert_int_eq(vmwkvm_rpc_out_append(out, blob, 62), 0);
	ck_assert_int_eq(vmwkvm_rpc_out_append(out, blob, 1), -E2BIG);
	ck_assert_int_eq(vmwkvm_rpc_out_printf(out, "%d", 1), -E2BIG);
	return 0;
}

START_TEST(reply_bounded_by_max_message)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .max_message = 64};
	mk(&o);
	vmwkvm_rpc_register(rpc, "huge", h_huge, NULL);
	struct gch g = gopen(RPCI, false);
	send_lb(&g, "huge", 4);
	char buf[64];
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 64);
	ck_assert_mem_eq(buf, "1 zzz", 5);
}
END_TEST

START_TEST(checkpoint_during_lb_send)
{
	struct gch g = gopen(RPCI, true);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 0); /* nothing in flight */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x6F666E69u, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x7465732Du, &g), 0x00010000u);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x65756720u, &g), 0x00100000u); /* CPT, no SUCCESS */
	ck_assert_uint_eq(R.set, R_ECX);
	/* the partial send is gone: the guest must restart from SENDSIZE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x65756720u, &g), 0);
	send_lb(&g, INFO_SET, 26);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_args, "guestinfo.foo bar");
}
END_TEST

START_TEST(checkpoint_during_lb_receive)
{
	vmwkvm_rpc_register(rpc, "info-get", h_text, TXT("a value that is long"));
	struct gch g = gopen(RPCI, false);
	send_lb(&g, "info-get guestinfo.foo", 22);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 22);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00100000u);
	/* the message is still there: RECVSIZE restarts the fetch from byte 0 */
	char buf[32];
	size_t n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_uint_eq(n, 22);
	ck_assert_mem_eq(buf, "1 a value that is long", 22);
	/* a checkpoint between RECVPAYLOAD and RECVSTATUS fails RECVSTATUS with CPT */
	send_lb(&g, "info-get guestinfo.foo", 22);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	for (int i = 0; i < 6; i++)
		lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00100000u);
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 22);
}
END_TEST

START_TEST(checkpoint_during_hb)
{
	static uint8_t msg[26];
	memcpy(msg, INFO_SET, 26);
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	struct vmwkvm_call c = hbcall(false, &g, 0, 10, 26, msg);
	hbc(&c);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	c = hbcall(false, &g, 10, 10, 26, msg + 10);
	hbc(&c);
	c = hbcall(false, &g, 20, 6, 26, msg + 20);
	hbc(&c);
	ck_assert_uint_eq(R.ebx, 0x00100000u); /* CPT at the last piece */
	ck_assert_int_eq(seen_calls, 0);
	/* restart: SENDSIZE + HB */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 9), 1);
	ck_assert_int_eq(seen_calls, 1);
	/* receive side: checkpoint between RECVSIZE and the REP INSB */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	uint8_t out[2];
	ck_assert_uint_eq(hb_recv(&g, out, 2, 1), VMWKVM_RPC_STATUS_CPT);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(hb_recv(&g, out, 2, 1), 1);
	ck_assert_mem_eq(out, "1 ", 2);
}
END_TEST

/* ---- TCLO ---- */

static uint16_t tclo_chan;
static uint64_t tclo_seq;
static char tclo_data[128];
static int tclo_calls;

static void on_tclo(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx)
{
	(void)ctx;
	tclo_calls++;
	tclo_chan = channel;
	tclo_seq = seq;
	ck_assert_uint_lt(len, sizeof(tclo_data));
	memcpy(tclo_data, data, len + 1); /* includes the NUL */
}

START_TEST(tclo_queue_and_poll)
{
	tclo_calls = 0;
	ck_assert_int_eq(vmwkvm_rpc_set_tclo_handler(rpc, on_tclo, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, -1, "reset", 5, NULL), -ENOENT); /* no TCLO channel */
	struct gch r = gopen(RPCI, true); /* an RPCI channel is not a TCLO target */
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, r.id, "reset", 5, NULL), -ENOENT);
	struct vmwkvm_call c = lbcall(VMWKVM_RPC_OPEN, 0xCF4C4354u, NULL);
	ck_assert_uint_eq(lbc(&c), 0x00010000u);
	struct gch g = {.id = (uint16_t)(R.edx >> 16), .ck = true, .hi = R.esi, .lo = R.edi};
	uint16_t ids[4];
	ck_assert_int_eq(vmwkvm_rpc_tclo_channels(rpc, ids, 4), 1);
	ck_assert_uint_eq(ids[0], g.id);
	/* guest poll: empty send, then RECVSIZE with nothing waiting */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 0, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_int_eq(tclo_calls, 0);
	/* host queues two commands */
	uint64_t s1 = 0, s2 = 0;
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, -1, "reset", 5, &s1), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, &s2), 0);
	ck_assert_uint_gt(s1, 0);
	ck_assert_uint_gt(s2, s1);
	char buf[32] = {0};
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 5);
	ck_assert_mem_eq(buf, "reset", 5);
	/* the guest answers on the next send */
	send_lb(&g, "OK ATR toolbox", 14);
	ck_assert_int_eq(tclo_calls, 1);
	ck_assert_uint_eq(tclo_chan, g.id);
	ck_assert_uint_eq(tclo_seq, s1);
	ck_assert_str_eq(tclo_data, "OK ATR toolbox");
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 4);
	ck_assert_mem_eq(buf, "ping", 4);
	/* this answer goes over HB */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 3, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, "OK ", 3, 2), 1);
	ck_assert_int_eq(tclo_calls, 2);
	ck_assert_uint_eq(tclo_seq, s2);
	ck_assert_str_eq(tclo_data, "OK ");
	/* queue empty again */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u);
	/* bounds */
	for (unsigned i = 0; i < VMWKVM_RPC_DEFAULT_TCLO_QUEUE; i++)
		ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL), -ENOSPC);
	static char big[65537];
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, big, 65537, NULL), -E2BIG);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, big, 0, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, -2, "x", 1, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, 65536, "x", 1, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, 5000, "x", 1, NULL), -ENOENT);
	/* CLOSE frees the queue */
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL), -ENOENT);
	ck_assert_int_eq(vmwkvm_rpc_tclo_channels(rpc, NULL, 0), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &r), 0x00010000u);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
}
END_TEST

START_TEST(tclo_cancel)
{
	struct gch g = gopen(TCLO, true);
	uint64_t s[4];
	const char *cmds[4] = {"reset", "ping", "OS_Reboot", "OS_Halt"};
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, cmds[i], strlen(cmds[i]), &s[i]), 0);
	/* the guest is fetching the first one: it stays */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, s[0]), -EBUSY);
	/* the middle and the last of the queue go */
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, s[2]), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, s[3]), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, s[3]), -ENOENT);
	char buf[16];
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 0, &g), 0x00010000u); /* drop "reset" */
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 4);
	ck_assert_mem_eq(buf, "ping", 4);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u); /* nothing else */
	/* the tail pointer survived: a new command lands in the queue */
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, &s[0]), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "reset", 5, &s[1]), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, s[0]), 0);
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 5);
	ck_assert_mem_eq(buf, "reset", 5);
	struct gch r = gopen(RPCI, false);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, r.id, s[1]), -ENOENT);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, 4000, s[1]), -ENOENT);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, -1, s[1]), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(rpc, g.id, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_cancel(NULL, g.id, 1), -EINVAL);
}
END_TEST

START_TEST(tclo_oldest_channel_first)
{
	struct gch a = gopen(TCLO, false);
	struct gch b = gopen(TCLO, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &a), 0x00010000u);
	struct gch c = gopen(TCLO, false); /* reuses id 0, but is newer than b */
	ck_assert_uint_eq(c.id, a.id);
	uint16_t ids[2];
	ck_assert_int_eq(vmwkvm_rpc_tclo_channels(rpc, ids, 1), 2);
	ck_assert_uint_eq(ids[0], b.id);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, -1, "reset", 5, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &c), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &b), 0x00830000u);
}
END_TEST

START_TEST(tclo_guest_aborts_receive)
{
	struct gch g = gopen(TCLO, true);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "Set_Option broadcastIP 1", 24, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	/* the guest has no memory: it says so with EBX = 0 */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 0, &g), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 0, &g), 0); /* nothing to confirm */
}
END_TEST

/* ---- RPCI details ---- */

START_TEST(unknown_command_and_empty_message)
{
	struct gch g = gopen(RPCI, true);
	send_lb(&g, "foo bar", 7);
	char buf[64];
	size_t n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_uint_eq(n, 17);
	ck_assert_mem_eq(buf, "0 Unknown command", 17);
	/* SENDSIZE 0 on RPCI is an empty request: same answer, at once */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 0, &g), 0x00810000u);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_mem_eq(buf, "0 Unknown command", 17);
	/* a registered name must be the whole first word: "logx" is not "log" */
	send_lb(&g, "logx y", 6);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_mem_eq(buf, "0 Unknown command", 17);
	ck_assert_int_eq(seen_calls, 0);
}
END_TEST

START_TEST(trailing_space_and_no_argument)
{
	struct gch g = gopen(RPCI, true);
	char buf[8];
	send_lb(&g, "log ", 4);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_cmd, "log");
	ck_assert_uint_eq(seen_args_len, 0);
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 2);
	ck_assert_mem_eq(buf, "1 ", 2);
	send_lb(&g, "log", 3);
	ck_assert_int_eq(seen_calls, 2);
	ck_assert_uint_eq(seen_args_len, 0);
	send_lb(&g, "log  two spaces", 15);
	ck_assert_str_eq(seen_args, " two spaces");
}
END_TEST

START_TEST(handler_failure_replies)
{
	vmwkvm_rpc_register(rpc, "info-get", h_fail_text, NULL);
	vmwkvm_rpc_register(rpc, "nothing", h_fail_plain, NULL);
	struct gch g = gopen(RPCI, false);
	char buf[64];
	send_lb(&g, "info-get guestinfo.missing", 26);
	size_t n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_uint_eq(n, 16);
	ck_assert_mem_eq(buf, "0 No value found", 16);
	send_lb(&g, "nothing", 7);
	n = recv_lb(&g, buf, sizeof(buf));
	const char *t = vmwkvm_strerror(-ENOENT);
	ck_assert_uint_eq(n, 2 + strlen(t));
	ck_assert_mem_eq(buf, "0 ", 2);
	ck_assert_mem_eq(buf + 2, t, strlen(t));
}
END_TEST

START_TEST(prefix_handlers)
{
	vmwkvm_rpc_register(rpc, "tools.capability.", h_text, TXT("prefix"));
	vmwkvm_rpc_register(rpc, "tools.capability.hgfs.", h_text, TXT("longer"));
	vmwkvm_rpc_register(rpc, "tools.capability.exact", h_text, TXT("exact"));
	struct gch g = gopen(RPCI, true);
	char buf[32];
	size_t n;
	send_lb(&g, "tools.capability.hgfs_server toolbox 1", 38);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_uint_eq(n, 8);
	ck_assert_mem_eq(buf, "1 prefix", 8);
	send_lb(&g, "tools.capability.hgfs.x 1", 25);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_mem_eq(buf, "1 longer", 8);
	send_lb(&g, "tools.capability.exact 1", 24);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_uint_eq(n, 7);
	ck_assert_mem_eq(buf, "1 exact", 7);
	/* the prefix alone does not match the shorter word */
	send_lb(&g, "tools.capability", 16);
	n = recv_lb(&g, buf, sizeof(buf));
	ck_assert_mem_eq(buf, "0 Unknown command", 17);
}
END_TEST

START_TEST(register_rules)
{
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "log", h_record, NULL), -EEXIST);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "log", NULL, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "log", NULL, NULL), -ENOENT);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "", h_record, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, "a b", h_record, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, NULL, h_record, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_register(NULL, "x", h_record, NULL), -EINVAL);
	static char longname[300];
	memset(longname, 'n', 256);
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, longname, h_record, NULL), -EINVAL);
	longname[255] = 0;
	ck_assert_int_eq(vmwkvm_rpc_register(rpc, longname, h_record, NULL), 0);
	/* "log" is unknown now */
	struct gch g = gopen(RPCI, false);
	send_lb(&g, "log x", 5);
	ck_assert_int_eq(seen_calls, 0);
}
END_TEST

START_TEST(out_of_order_subcommands)
{
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 1, &g), 0);  /* no SENDSIZE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0);  /* nothing to receive */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0);
	ck_assert_uint_eq(lb(7, 0, &g), 0);                        /* unknown subcommand */
	ck_assert_uint_eq(lb(0xFFFF, 0, &g), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u); /* nothing waiting */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 5, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0);     /* mid-send */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x20676F6Cu, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x78u, &g), 0x00010000u);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_args, "x");
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 0x78u, &g), 0);   /* beyond the length */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0);       /* before RECVSIZE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0);       /* beyond the length */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0);        /* twice */
	/* HB pieces that do not start a transfer, or overshoot it */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	static uint8_t msg[26];
	memcpy(msg, INFO_SET, 26);
	struct vmwkvm_call c = hbcall(false, &g, 10, 16, 26, msg + 10);
	c.hb_flags = VMWKVM_HB_LAST; /* no FIRST ever seen */
	hbc(&c);
	ck_assert_uint_eq(R.ebx, 0);
	c = hbcall(false, &g, 0, 26, 26, msg);
	c.hb_offset = 3; /* a FIRST piece at the wrong offset */
	hbc(&c);
	ck_assert_uint_eq(R.ebx, 0);
	/* an HB receive with nothing to receive */
	uint8_t out[4];
	ck_assert_uint_eq(hb_recv(&g, out, 4, 4), 0);
	ck_assert_mem_eq(out, "\xEE\xEE\xEE\xEE", 4); /* untouched by the channel */
	ck_assert_ptr_null(R.hb_data);
	ck_assert_int_eq(seen_calls, 1);
}
END_TEST

START_TEST(hb_length_must_match)
{
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 25, 25), 0); /* shorter than announced */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 26), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	uint8_t out[8];
	ck_assert_uint_eq(hb_recv(&g, out, 3, 3), 0); /* longer than the reply */
	/* a refused receive needs a new RECVSIZE */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(hb_recv(&g, out, 2, 2), 1);
	/* HB by LB-partial mixing: after one RECVPAYLOAD an HB receive is refused */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 26), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(hb_recv(&g, out, 2, 2), 0);
}
END_TEST

START_TEST(hb_empty_piece_without_data)
{
	/* found by fuzz_rpc: a zero-byte piece with hb_data NULL must not reach memcpy */
	static uint8_t msg[26];
	memcpy(msg, INFO_SET, 26);
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	struct vmwkvm_call c = hbcall(false, &g, 0, 10, 26, msg);
	hbc(&c);
	c = hbcall(false, &g, 10, 0, 26, NULL);
	hbc(&c);
	c = hbcall(false, &g, 10, 16, 26, msg + 10);
	hbc(&c);
	ck_assert_uint_eq(R.ebx, 0x00010000u);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_str_eq(seen_args, "guestinfo.foo bar");
}
END_TEST

START_TEST(hb_not_advertised)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .no_hb = 1};
	mk(&o);
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00010000u);
	ck_assert_uint_eq(hb_send(&g, INFO_SET, 26, 26), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00010000u);
	for (int i = 0; i < 7; i++) {
		uint32_t v = 0;
		for (int b = 0; b < 4 && i * 4 + b < 26; b++)
			v |= (uint32_t)(uint8_t)INFO_SET[i * 4 + b] << (8 * b);
		ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, v, &g), 0x00010000u);
	}
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00030000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00010000u);
}
END_TEST

START_TEST(close_with_reply_queued)
{
	struct gch g = gopen(RPCI, true);
	send_lb(&g, INFO_SET, 26);
	ck_assert_uint_gt(vk_rpc_allocated(rpc), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
	/* also mid-send and mid-receive */
	g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, &g), 0x00010000u);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
}
END_TEST

START_TEST(reset_frees_everything)
{
	for (int i = 0; i < 10; i++) {
		struct gch g = gopen(i % 2 ? TCLO : RPCI, true);
		if (i % 2) {
			vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL);
		} else {
			send_lb(&g, INFO_SET, 26);
			ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 100, &g), 0x00810000u);
		}
	}
	ck_assert_uint_gt(vk_rpc_allocated(rpc), 0);
	ck_assert_int_eq(vmwkvm_rpc_reset(rpc), 10);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
	/* ids start again at 0 */
	struct gch g = gopen(RPCI, false);
	ck_assert_uint_eq(g.id, 0);
}
END_TEST

START_TEST(deterministic_cookies)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .cookie_seed = 42};
	mk(&o);
	struct gch a = gopen(RPCI, true);
	vmwkvm_rpc_free(rpc);
	mk(&o);
	struct gch b = gopen(RPCI, true);
	ck_assert_uint_eq(a.hi, b.hi);
	ck_assert_uint_eq(a.lo, b.lo);
	struct gch c = gopen(RPCI, true);
	ck_assert(c.hi != b.hi || c.lo != b.lo);
}
END_TEST

START_TEST(api_errors)
{
	struct vmwkvm_reply r;
	struct vmwkvm_call c = lbcall(VMWKVM_RPC_OPEN, RPCI, NULL);
	ck_assert_int_eq(vmwkvm_rpc_handle(NULL, &c, &r), -EINVAL);
	ck_assert_uint_eq(r.set, R_EAX);
	ck_assert_uint_eq(r.eax, 0xFFFFFFFFu);
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, NULL, &r), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, NULL), -EINVAL);
	c.command = 10; /* not MESSAGE */
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, &r), -EINVAL);
	ck_assert_uint_eq(r.set, R_EAX);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
	/* options */
	vmwkvm_rpc *x;
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .max_channels = 65537};
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_rpc_opts){.sz = sizeof(o), .max_message = 1};
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_rpc_opts){.sz = sizeof(o), .max_message = (16u << 20) + 1};
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_rpc_opts){.sz = sizeof(o), .max_tclo_queue = 4097};
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_rpc_opts){.sz = sizeof(o)};
	o.reserved[3] = 1;
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	o = (struct vmwkvm_rpc_opts){.sz = 4};
	ck_assert_int_eq(vmwkvm_rpc_new(&o, &x), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_new(NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_reset(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_tclo_channels(rpc, NULL, 1), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_set_tclo_handler(NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_rpc_out_append(NULL, "x", 1), -EINVAL);
	vmwkvm_rpc_free(NULL);
}
END_TEST

START_TEST(hb_by_hypercall_refused)
{
	struct gch g = gopen(RPCI, true);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 26, &g), 0x00810000u);
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_HYPERCALL;
	c.command = 0; /* HB command from EBX low16 */
	c.magic_ok = 1;
	c.rax = MAGIC;
	c.rbx = 0x00010000u;
	c.rcx = 26;
	c.rdx = (uint32_t)g.id << 16 | 0x0003u; /* HB | WRITE */
	c.hb_total = 26;
	memset(&R, 0xCC, sizeof(R));
	/* HB by hypercall (EDX low16 = HB | WRITE) would need guest-virtual memory access:
	 * the channel refuses it with status 0 in EBX bits 31:16 and changes nothing else */
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, &R), 0);
	ck_assert_uint_eq(R.set, R_EBX);
	ck_assert_uint_eq(R.ebx >> 16, 0);
}
END_TEST

/* ---- concurrency: one channel per thread, all at once ---- */

#define THREADS 4
#define ROUNDS 200

static struct vmwkvm_reply call1(uint16_t sub, uint32_t ebx, const struct gch *g)
{
	struct vmwkvm_reply rep;
	struct vmwkvm_call c = lbcall(sub, ebx, g);
	if (vmwkvm_rpc_handle(rpc, &c, &rep))
		rep.ecx = 0xDEADu;
	return rep;
}

/* A guest that behaves like ovt on CPT: restart the send from SENDSIZE, the receive from
 * RECVSIZE. Other threads' checkpoints hit its transfers at random points. */
static void *worker(void *arg)
{
	(void)arg;
	for (int r = 0; r < ROUNDS; r++) {
		struct vmwkvm_reply rep = call1(VMWKVM_RPC_OPEN, RPCI | COOKIE, NULL);
		if (rep.ecx != 0x00010000u)
			return (void *)1;
		struct gch g = {.id = (uint16_t)(rep.edx >> 16), .ck = true, .hi = rep.esi, .lo = rep.edi};
		for (;;) {
			if (call1(VMWKVM_RPC_SENDSIZE, 3, &g).ecx != 0x00810000u)
				return (void *)2;
			uint32_t st = call1(VMWKVM_RPC_SENDPAYLOAD, 0x00676F6Cu, &g).ecx; /* "log" */
			if (st == 0x00010000u)
				break;
			if (st != 0x00100000u)
				return (void *)3;
		}
		for (;;) {
			rep = call1(VMWKVM_RPC_RECVSIZE, 0, &g);
			if (rep.ecx != 0x00830000u || rep.ebx != 2)
				return (void *)4;
			rep = call1(VMWKVM_RPC_RECVPAYLOAD, 1, &g);
			if (rep.ecx == 0x00100000u)
				continue;
			if (rep.ecx != 0x00010000u || rep.ebx != 0x2031)
				return (void *)5;
			rep = call1(VMWKVM_RPC_RECVSTATUS, 1, &g);
			if (rep.ecx == 0x00100000u)
				continue;
			if (rep.ecx != 0x00010000u)
				return (void *)6;
			break;
		}
		if (call1(VMWKVM_RPC_CLOSE, 0, &g).ecx != 0x00010000u)
			return (void *)7;
		if (r % 8 == 0)
			vmwkvm_rpc_checkpoint(rpc);
	}
	return NULL;
}

static int h_count(const struct vmwkvm_rpci_request *req, vmwkvm_rpc_out *out, void *ctx)
{
	(void)req;
	(void)out;
	atomic_fetch_add((atomic_int *)ctx, 1);
	return 0;
}

/* THREADS threads run fn, each ROUNDS "log" requests counted by h_count: every request ran
 * exactly once (whatever checkpoints interrupted), and nothing is left behind. */
static void run_threads(void *(*fn)(void *))
{
	static atomic_int count;
	atomic_store(&count, 0);
	vmwkvm_rpc_register(rpc, "log", NULL, NULL);
	vmwkvm_rpc_register(rpc, "log", h_count, &count);
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, fn, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		void *ret;
		pthread_join(t[i], &ret);
		ck_assert_ptr_null(ret);
	}
	ck_assert_int_eq(atomic_load(&count), THREADS * ROUNDS);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), 0);
	ck_assert_uint_eq(vk_rpc_allocated(rpc), 0);
}

START_TEST(threads_share_one_table)
{
	run_threads(worker);
}
END_TEST

static void *worker_nocpt(void *arg)
{
	(void)arg;
	for (int r = 0; r < ROUNDS; r++) {
		struct vmwkvm_reply rep;
		struct vmwkvm_call c = lbcall(VMWKVM_RPC_OPEN, RPCI | COOKIE, NULL);
		if (vmwkvm_rpc_handle(rpc, &c, &rep) || rep.ecx != 0x00010000u)
			return (void *)1;
		struct gch g = {.id = (uint16_t)(rep.edx >> 16), .ck = true, .hi = rep.esi, .lo = rep.edi};
		c = lbcall(VMWKVM_RPC_SENDSIZE, 3, &g);
		if (vmwkvm_rpc_handle(rpc, &c, &rep) || rep.ecx != 0x00810000u)
			return (void *)2;
		c = lbcall(VMWKVM_RPC_SENDPAYLOAD, 0x00676F6Cu, &g);
		if (vmwkvm_rpc_handle(rpc, &c, &rep) || rep.ecx != 0x00010000u)
			return (void *)3;
		c = lbcall(VMWKVM_RPC_RECVSIZE, 0, &g);
		if (vmwkvm_rpc_handle(rpc, &c, &rep) || rep.ecx != 0x00830000u || rep.ebx != 2)
			return (void *)4;
		c = lbcall(VMWKVM_RPC_CLOSE, 0, &g); /* close with the reply still queued */
		if (vmwkvm_rpc_handle(rpc, &c, &rep) || rep.ecx != 0x00010000u)
			return (void *)7;
	}
	return NULL;
}

START_TEST(threads_exact)
{
	run_threads(worker_nocpt);
}
END_TEST


/* ---- review items of issue 14: each test failed before its fix ---- */

/* (a) A guest process that opens every channel and never closes them cannot keep the
 * Tools out for good: like VMware, the table closes channels that stay idle. The channel
 * idle longest goes first; a channel in use keeps its place. */
START_TEST(idle_channels_reclaimed)
{
	static struct gch hog[VMWKVM_RPC_DEFAULT_CHANNELS];
	for (unsigned i = 0; i < VMWKVM_RPC_DEFAULT_CHANNELS; i++)
		hog[i] = gopen(RPCI, true);
	/* within the idle timeout (default VMWKVM_RPC_DEFAULT_IDLE_MS) the table is full */
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, TCLO | COOKIE, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_set_idle_timeout(rpc, 1), 0);
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
	/* hog[0] is used again: the channel idle longest is now hog[1] */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &hog[0]), 0x00810000u);
	struct gch tools = gopen(TCLO, true);
	ck_assert_uint_eq(tools.id, hog[1].id);
	ck_assert_int_eq(vmwkvm_rpc_channel_count(rpc), (int)VMWKVM_RPC_DEFAULT_CHANNELS);
	/* the old owner's cookies no longer open the door; the new owner's do */
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 3, &hog[1]), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 0, &tools), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &hog[0]), 0x00810000u);
	/* 0 turns reclaiming off: the table stays full */
	ck_assert_int_eq(vmwkvm_rpc_set_idle_timeout(rpc, 0), 0);
	nanosleep(&ts, NULL);
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, RPCI, NULL), 0);
	ck_assert_int_eq(vmwkvm_rpc_set_idle_timeout(NULL, 1), -EINVAL);
}
END_TEST

/* (b) A Tools that sends its result without RECVSTATUS: the result belongs to the command
 * it fetched completely, and that command is not offered again. */
START_TEST(tclo_result_without_recvstatus)
{
	tclo_calls = 0;
	ck_assert_int_eq(vmwkvm_rpc_set_tclo_handler(rpc, on_tclo, NULL), 0);
	struct gch g = gopen(TCLO, true);
	uint64_t s1 = 0, s2 = 0;
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "reset", 5, &s1), 0);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, &s2), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 5);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(R.ebx, 0x65736572u); /* "rese" */
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(R.ebx, 0x74u);       /* "t" */
	send_lb(&g, "OK ATR toolbox", 14);      /* no RECVSTATUS before it */
	ck_assert_int_eq(tclo_calls, 1);
	ck_assert_uint_eq(tclo_seq, s1);
	char buf[16] = {0};
	ck_assert_uint_eq(recv_lb(&g, buf, sizeof(buf)), 4);
	ck_assert_mem_eq(buf, "ping", 4);
	send_lb(&g, "OK ", 3);
	ck_assert_int_eq(tclo_calls, 2);
	ck_assert_uint_eq(tclo_seq, s2);
	/* a command fetched only in part is offered again, whole */
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "Capabilities_Register", 21, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, 0, &g), 0x00810000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(R.ebx, 21);
}
END_TEST

/* (c) A guest that gives up on a message (EBX = 0) has dropped it, checkpoint or not. */
START_TEST(checkpoint_does_not_keep_an_aborted_message)
{
	struct gch g = gopen(TCLO, true);
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "Set_Option broadcastIP 1", 24, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 0, &g), 0x00010000u);
	ck_assert_uint_eq(R.set, R_ECX);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u); /* nothing waits */
	/* the same at RECVSTATUS */
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL), 0);
	char buf[8];
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00010000u);
	(void)buf;
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 0, &g), 0x00010000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00810000u);
	/* a guest that goes on after a checkpoint still gets CPT */
	ck_assert_int_eq(vmwkvm_rpc_tclo_queue(rpc, g.id, "ping", 4, NULL), 0);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
	ck_assert_int_eq(vmwkvm_rpc_checkpoint(rpc), 1);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, &g), 0x00100000u);
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSIZE, 0, &g), 0x00830000u);
}
END_TEST

/* (d) While a TCLO result is being handed to the VMM (callback running on one vCPU),
 * other vCPUs sending on the same channel cannot pile up messages beyond the bound. */
#define NEST_LEN 60000u
static struct gch nest_ch;
static int nest_depth, nest_max_depth;
static size_t nest_peak;
static uint32_t nest_refused;

static void nest_send(void)
{
	static uint8_t payload[NEST_LEN];
	memset(payload, 'x', sizeof(payload));
	struct vmwkvm_reply rep;
	struct vmwkvm_call c = lbcall(VMWKVM_RPC_SENDSIZE, NEST_LEN, &nest_ch);
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, &rep), 0);
	if ((rep.ecx >> 16 & VMWKVM_RPC_STATUS_SUCCESS) == 0) {
		nest_refused++;
		return;
	}
	c = hbcall(false, &nest_ch, 0, NEST_LEN, NEST_LEN, payload);
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, &rep), 0); /* completes: the callback runs */
}

static void on_tclo_nested(uint16_t channel, uint64_t seq, const char *data, size_t len, void *ctx)
{
	(void)channel;
	(void)seq;
	(void)data;
	(void)len;
	(void)ctx;
	nest_depth++;
	if (nest_depth > nest_max_depth)
		nest_max_depth = nest_depth;
	size_t a = vk_rpc_allocated(rpc);
	if (a > nest_peak)
		nest_peak = a;
	if (nest_depth < 8)
		nest_send(); /* "another vCPU" sends while this result is still being handled */
	nest_depth--;
}

START_TEST(tclo_results_in_flight_bounded)
{
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_rpc_opts o = {.sz = sizeof(o), .max_channels = 1, .max_tclo_queue = 1};
	mk(&o);
	ck_assert_int_eq(vmwkvm_rpc_set_tclo_handler(rpc, on_tclo_nested, NULL), 0);
	nest_ch = gopen(TCLO, true);
	nest_depth = nest_max_depth = 0;
	nest_peak = 0;
	nest_refused = 0;
	nest_send();
	ck_assert_uint_le(nest_peak, vk_rpc_bound(rpc));
	ck_assert_int_eq(nest_max_depth, 1);
	ck_assert_uint_eq(nest_refused, 1);
	/* once the result was handled the channel takes the next one */
	nest_send();
	ck_assert_int_eq(nest_max_depth, 1);
	ck_assert_uint_eq(nest_refused, 2);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("rpc");
	TCase *x = tcase_create("exchange");
	tcase_add_checked_fixture(x, setup, teardown);
	tcase_add_test(x, rpci_exchange_lb_exact);
	tcase_add_loop_test(x, rpci_exchange_hb, 0, sizeof(piece_sizes) / sizeof(piece_sizes[0]));
	tcase_add_test(x, hb_long_reply_in_pieces);
	tcase_add_test(x, no_cookie_channel_ignores_esi_edi);
	tcase_add_test(x, ipxe_passes_reply_id_back);
	tcase_add_test(x, bad_cookie_refused_every_call);
	tcase_add_test(x, hb_bad_cookie_piece_changes_nothing);
	tcase_add_test(x, bad_channel_id);
	tcase_add_test(x, open_unknown_protocol);
	tcase_add_test(x, out_of_order_subcommands);
	tcase_add_test(x, hb_length_must_match);
	tcase_add_test(x, hb_not_advertised);
	tcase_add_test(x, hb_empty_piece_without_data);
	tcase_add_test(x, hb_by_hypercall_refused);
	suite_add_tcase(s, x);

	TCase *b = tcase_create("bounds");
	tcase_add_checked_fixture(b, setup, teardown);
	tcase_add_test(b, channel_limit_128);
	tcase_add_test(b, channel_limit_configurable);
	tcase_add_test(b, message_limit_64k);
	tcase_add_test(b, message_limit_configurable);
	tcase_add_test(b, reply_bounded_by_max_message);
	tcase_add_test(b, close_with_reply_queued);
	tcase_add_test(b, reset_frees_everything);
	suite_add_tcase(s, b);

	TCase *c = tcase_create("checkpoint");
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_add_test(c, checkpoint_during_lb_send);
	tcase_add_test(c, checkpoint_during_lb_receive);
	tcase_add_test(c, checkpoint_during_hb);
	suite_add_tcase(s, c);

	TCase *t = tcase_create("tclo");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, tclo_queue_and_poll);
	tcase_add_test(t, tclo_oldest_channel_first);
	tcase_add_test(t, tclo_cancel);
	tcase_add_test(t, tclo_guest_aborts_receive);
	suite_add_tcase(s, t);

	TCase *v = tcase_create("review");
	tcase_add_checked_fixture(v, setup, teardown);
	tcase_add_test(v, idle_channels_reclaimed);
	tcase_add_test(v, tclo_result_without_recvstatus);
	tcase_add_test(v, checkpoint_does_not_keep_an_aborted_message);
	tcase_add_test(v, tclo_results_in_flight_bounded);
	suite_add_tcase(s, v);

	TCase *r = tcase_create("rpci");
	tcase_add_checked_fixture(r, setup, teardown);
	tcase_add_test(r, unknown_command_and_empty_message);
	tcase_add_test(r, trailing_space_and_no_argument);
	tcase_add_test(r, handler_failure_replies);
	tcase_add_test(r, prefix_handlers);
	tcase_add_test(r, register_rules);
	tcase_add_test(r, deterministic_cookies);
	tcase_add_test(r, api_errors);
	suite_add_tcase(s, r);

	TCase *m = tcase_create("threads");
	tcase_add_checked_fixture(m, setup, teardown);
	tcase_set_timeout(m, 60);
	tcase_add_test(m, threads_share_one_table);
	tcase_add_test(m, threads_exact);
	suite_add_tcase(s, m);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
