/* Tools host component (vmwkvm/tools.h) driven by a model guest on the GuestRPC channel
 * table (LB calls through vmwkvm_rpc_handle): the RPCI commands open-vm-tools sends with
 * their exact answers, the TCLO command queue and its results, timeouts on an injected
 * clock, bounds, hostile guests (floods, no answer, oversize answers, stale answers),
 * state tracking and the change notification. */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#define MAGIC VMWKVM_BDOOR_MAGIC

static vmwkvm_rpc *rpc;
static vmwkvm_tools *tools;
static uint64_t fake_now = 1000000000ull;
static struct vmwkvm_reply R;

static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static void advance_ms(uint64_t ms)
{
	fake_now += ms * 1000000ull;
}

/* ---- model guest (LB only) ---- */

static uint32_t lb(uint16_t sub, uint32_t ebx, uint16_t id)
{
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_LB;
	c.direction = VMWKVM_DIR_IN;
	c.command = 0x1E;
	c.subcommand = sub;
	c.magic_ok = 1;
	c.cpl = 3;
	c.mode = VMWKVM_MODE_LONG64;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 4;
	c.port = VMWKVM_BDOOR_PORT;
	c.rax = MAGIC;
	c.rbx = ebx;
	c.rcx = (uint32_t)sub << 16 | 0x1Eu;
	c.rdx = (uint32_t)id << 16 | VMWKVM_BDOOR_PORT;
	memset(&R, 0, sizeof(R));
	ck_assert_int_eq(vmwkvm_rpc_handle(rpc, &c, &R), 0);
	return R.ecx >> 16;
}

static uint16_t gopen(uint32_t proto)
{
	ck_assert_uint_eq(lb(VMWKVM_RPC_OPEN, proto, 0), 1);
	return (uint16_t)(R.edx >> 16);
}

static void gclose(uint16_t id)
{
	ck_assert_uint_eq(lb(VMWKVM_RPC_CLOSE, 0, id), 1);
}

static void gsend(uint16_t id, const void *msg, size_t len)
{
	const uint8_t *p = msg;
	ck_assert_uint_eq(lb(VMWKVM_RPC_SENDSIZE, (uint32_t)len, id) & 1, 1);
	for (size_t off = 0; off < len; off += 4) {
		uint32_t v = 0;
		for (size_t i = 0; i < 4 && off + i < len; i++)
			v |= (uint32_t)p[off + i] << (8 * i);
		ck_assert_uint_eq(lb(VMWKVM_RPC_SENDPAYLOAD, v, id), 1);
	}
}

/* -1 when nothing waits */
static long grecv(uint16_t id, char *buf, size_t cap)
{
	uint32_t st = lb(VMWKVM_RPC_RECVSIZE, 0, id);
	ck_assert(st & 1);
	if (!(st & VMWKVM_RPC_STATUS_DORECV))
		return -1;
	size_t len = R.ebx;
	ck_assert_uint_lt(len, cap);
	for (size_t off = 0; off < len; off += 4) {
		ck_assert_uint_eq(lb(VMWKVM_RPC_RECVPAYLOAD, 1, id), 1);
		for (size_t i = 0; i < 4 && off + i < len; i++)
			buf[off + i] = (char)(R.ebx >> (8 * i));
	}
	buf[len] = '\0';
	ck_assert_uint_eq(lb(VMWKVM_RPC_RECVSTATUS, 1, id), 1);
	return (long)len;
}

static char rbuf[70000];

/* one RPCI exchange on a fresh channel; returns the reply (in rbuf) */
static const char *rpci(const void *msg, size_t len)
{
	uint16_t id = gopen(VMWKVM_RPC_PROTO_RPCI);
	gsend(id, msg, len);
	long n = grecv(id, rbuf, sizeof(rbuf));
	ck_assert_int_ge(n, 2);
	gclose(id);
	return rbuf;
}

#define RPCI_S(s) rpci((s), strlen(s))
#define RPCI_Z(s) rpci((s), strlen(s) + 1) /* as vmtoolsd sends: with the NUL */

/* one TCLO poll: send the last result (may be empty), fetch the next command */
static long tclo_turn(uint16_t id, const char *result, char *cmd, size_t cap)
{
	gsend(id, result, strlen(result));
	return grecv(id, cmd, cap);
}

/* ---- fixture ---- */

static struct vmwkvm_tools_opts base_opts(void)
{
	struct vmwkvm_tools_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.clock = fake_clock;
	return o;
}

static void mk(const struct vmwkvm_tools_opts *o, uint32_t tclo_queue)
{
	struct vmwkvm_rpc_opts ro;
	memset(&ro, 0, sizeof(ro));
	ro.sz = sizeof(ro);
	ro.max_tclo_queue = tclo_queue;
	ro.cookie_seed = 7;
	ck_assert_int_eq(vmwkvm_rpc_new(&ro, &rpc), 0);
	ck_assert_int_eq(vmwkvm_tools_new(rpc, o, &tools), 0);
}

static void setup(void)
{
	struct vmwkvm_tools_opts o = base_opts();
	mk(&o, 0);
}

static void teardown(void)
{
	vmwkvm_tools_free(tools);
	vmwkvm_rpc_free(rpc);
	tools = NULL;
	rpc = NULL;
}

static struct vmwkvm_tools_state state(void)
{
	struct vmwkvm_tools_state s;
	memset(&s, 0, sizeof(s));
	s.sz = sizeof(s);
	ck_assert_int_eq(vmwkvm_tools_get_state(tools, &s), 0);
	return s;
}

static uint64_t efd_read(void)
{
	uint64_t v = 0;
	ssize_t r = read(vmwkvm_tools_event_fd(tools), &v, sizeof(v));
	return r == sizeof(v) ? v : 0;
}

/* ---- results collected by callbacks ---- */

static int ncb;
static struct vmwkvm_tools_result last;
static char last_reply[70000];

static void on_res(vmwkvm_tools *t, const struct vmwkvm_tools_result *res, void *ctx)
{
	ck_assert_ptr_eq(t, tools);
	ck_assert_ptr_eq(ctx, &ncb);
	ncb++;
	last = *res;
	memcpy(last_reply, res->reply, res->reply_len);
	last_reply[res->reply_len] = '\0';
	last.reply = last_reply;
}

static uint64_t cmd(const char *c, uint32_t timeout_ms)
{
	uint64_t id = 0;
	ck_assert_int_eq(vmwkvm_tools_command(tools, -1, c, timeout_ms, on_res, &ncb, &id), 0);
	ck_assert_uint_gt(id, 0);
	return id;
}

/* ================================================================ RPCI */

START_TEST(version_and_state)
{
	efd_read();
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.version_set, 0);
	ck_assert_uint_eq(s.last_answer_age_ns, UINT64_MAX);
	ck_assert_int_eq(s.state_change, -1);
	ck_assert_str_eq(RPCI_Z("tools.set.versiontype 12352 4"), "1 ");
	s = state();
	ck_assert_uint_eq(s.version, 12352);
	ck_assert_uint_eq(s.version_type, 4);
	ck_assert_uint_eq(s.version_set, 1);
	ck_assert_uint_eq(s.changes, VMWKVM_TOOLS_CHANGED_VERSION);
	ck_assert_uint_eq(state().changes, 0); /* cleared by the read */
	ck_assert_uint_ge(efd_read(), 1);
	ck_assert_uint_eq(efd_read(), 0);
	ck_assert_str_eq(RPCI_Z("tools.set.version 2147483647"), "1 ");
	s = state();
	ck_assert_uint_eq(s.version, 2147483647u);
	ck_assert_uint_eq(s.version_type, 4); /* kept */
	ck_assert_str_eq(RPCI_Z("tools.set.version abc"), "0 Invalid version");
	ck_assert_str_eq(RPCI_Z("tools.set.version 99999999999"), "0 Invalid version");
	ck_assert_str_eq(RPCI_Z("tools.set.versiontype 1"), "0 Invalid version");
	ck_assert_uint_eq(state().version, 2147483647u);
}
END_TEST

START_TEST(capabilities)
{
	ck_assert_str_eq(RPCI_S("tools.capability.statechange "), "1 ");
	ck_assert_str_eq(RPCI_Z("tools.capability.guest_conf_directory /etc/vmware-tools"), "1 ");
	ck_assert_str_eq(RPCI_Z("tools.capability.features 0=1 1=1 2=0"), "1 ");
	ck_assert_str_eq(RPCI_S("tools.capability.statechange "), "1 "); /* again: no new entry */
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.caps, 3);
	ck_assert(s.changes & VMWKVM_TOOLS_CHANGED_CAPS);
	char name[64], value[64];
	ck_assert_int_eq(vmwkvm_tools_capability(tools, 0, name, sizeof(name), value, sizeof(value)), 0);
	ck_assert_str_eq(name, "statechange");
	ck_assert_str_eq(value, "");
	ck_assert_int_eq(vmwkvm_tools_capability(tools, 2, name, sizeof(name), value, sizeof(value)), 0);
	ck_assert_str_eq(name, "features");
	ck_assert_str_eq(value, "0=1 1=1 2=0");
	ck_assert_int_eq(vmwkvm_tools_capability(tools, 3, name, sizeof(name), value, sizeof(value)), -ENOENT);
	ck_assert_int_eq(vmwkvm_tools_capability_get(tools, "guest_conf_directory", value, sizeof(value)), 17);
	ck_assert_str_eq(value, "/etc/vmware-tools");
	char small[5];
	ck_assert_int_eq(vmwkvm_tools_capability_get(tools, "guest_conf_directory", small, sizeof(small)), 17);
	ck_assert_str_eq(small, "/etc");
	ck_assert_int_eq(vmwkvm_tools_capability_get(tools, "nope", value, sizeof(value)), -ENOENT);
}
END_TEST

START_TEST(loop_log_statechange)
{
	ck_assert_str_eq(RPCI_Z("vmx.capability.unified_loop toolbox"), "1 ");
	ck_assert_str_eq(RPCI_Z("log toolbox: Version: 12.2.0.41219 (build-21223074)"), "1 ");
	ck_assert_str_eq(RPCI_Z("tools.os.statechange.status 0 1"), "1 ");
	ck_assert_str_eq(RPCI_Z("tools.os.statechange.status x"), "0 Invalid arguments");
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.unified_loop, 1);
	ck_assert_str_eq(s.app, "toolbox");
	ck_assert_uint_eq(s.logs, 1);
	ck_assert_str_eq(s.last_log, "toolbox: Version: 12.2.0.41219 (build-21223074)");
	ck_assert_int_eq(s.state_change_ok, 0);
	ck_assert_int_eq(s.state_change, 1);
	ck_assert_uint_eq(s.changes, VMWKVM_TOOLS_CHANGED_STATE | VMWKVM_TOOLS_CHANGED_LOG);
	/* control characters do not reach the state text */
	ck_assert_str_eq(RPCI_S("log a\x1b[2Jb\nc"), "1 ");
	ck_assert_str_eq(state().last_log, "a?[2Jb?c");
}
END_TEST

START_TEST(guest_info)
{
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  1 vm"), "1 ");
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  4 build-21223074"), "1 ");
	static const char bin[] = "SetGuestInfo  10 \0\0\0\x03\0\0\0\x01";
	ck_assert_str_eq(rpci(bin, sizeof(bin) - 1), "1 ");
	ck_assert_str_eq(RPCI_Z("SetGuestDiskInfo {\"version\":\"1\"}"), "1 ");
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  0 x"), "0 Invalid key");
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  32 x"), "0 Invalid key");
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  x"), "0 Invalid key");
	char buf[64];
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 1, buf, sizeof(buf)), 2);
	ck_assert_mem_eq(buf, "vm", 2);
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 4, NULL, 0), 14);
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 10, buf, sizeof(buf)), 8); /* binary kept whole */
	ck_assert_mem_eq(buf, "\0\0\0\x03\0\0\0\x01", 8);
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, VMWKVM_TOOLS_GUESTINFO_DISKS, buf, sizeof(buf)), 15);
	ck_assert_mem_eq(buf, "{\"version\":\"1\"}", 15);
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 5, buf, sizeof(buf)), -ENOENT);
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 32, buf, sizeof(buf)), -EINVAL);
	ck_assert_uint_eq(state().guestinfo, 4);
	/* an oversize value is truncated, not refused */
	size_t n = VMWKVM_TOOLS_MAX_GUESTINFO + 100;
	char *m = malloc(n + 20);
	int h = sprintf(m, "SetGuestInfo  7 ");
	memset(m + h, 'u', n);
	ck_assert_str_eq(rpci(m, (size_t)h + n), "1 ");
	ck_assert_int_eq(vmwkvm_tools_guest_info(tools, 7, NULL, 0), (int)VMWKVM_TOOLS_MAX_GUESTINFO);
	free(m);
}
END_TEST

START_TEST(info_store)
{
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k"), "0 No value found");
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k v"), "1 ");
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k"), "1 v");
	ck_assert_str_eq(RPCI_Z("info-set guestinfo.k with spaces"), "1 "); /* vmtoolsd: NUL dropped */
	ck_assert_str_eq(RPCI_Z("info-get guestinfo.k"), "1 with spaces");
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k "), "1 "); /* empty value */
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k"), "1 ");
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k"), "0 Two and exactly two arguments expected");
	ck_assert_str_eq(RPCI_S("info-set foo v"), "0 Invalid key");
	ck_assert_str_eq(RPCI_S("info-set guestinfo. v"), "0 Invalid key");
	ck_assert_str_eq(RPCI_S("info-get foo"), "0 No value found");
	/* 60000 bytes in, 60000 out */
	static char big[60100];
	int h = sprintf(big, "info-set guestinfo.big ");
	for (int i = 0; i < 60000; i++)
		big[h + i] = (char)('a' + i % 26);
	ck_assert_str_eq(rpci(big, (size_t)h + 60000), "1 ");
	rpci("info-get guestinfo.big", 22);
	ck_assert_uint_eq(strlen(rbuf), 60002);
	ck_assert_mem_eq(rbuf + 2, big + h, 60000);
	char v[8];
	ck_assert_int_eq(vmwkvm_tools_info_get(tools, "guestinfo.big", v, sizeof(v)), 60000);
	ck_assert_mem_eq(v, "abcdefgh", 8);
	/* host side */
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "guestinfo.host", "hv", 2), 0);
	ck_assert_str_eq(RPCI_S("info-get guestinfo.host"), "1 hv");
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "guestinfo.host", NULL, 0), 0);
	ck_assert_str_eq(RPCI_S("info-get guestinfo.host"), "0 No value found");
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "guestinfo.host", NULL, 0), -ENOENT);
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "other.key", "x", 1), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "guestinfo.a b", "x", 1), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_info_set(tools, "guestinfo.x", "x", VMWKVM_RPC_MAX_MESSAGE), -E2BIG);
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.keys, 2);
	ck_assert(s.changes & VMWKVM_TOOLS_CHANGED_STORE);
}
END_TEST

START_TEST(unknown_stays_unknown)
{
	ck_assert_str_eq(RPCI_S("no.such.command x"), "0 Unknown command");
	ck_assert_str_eq(RPCI_S("tools.set.versionX 1"), "0 Unknown command");
}
END_TEST

START_TEST(new_free_errors)
{
	vmwkvm_tools *t = NULL;
	ck_assert_int_eq(vmwkvm_tools_new(NULL, NULL, &t), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_new(rpc, NULL, NULL), -EINVAL);
	/* already attached: its names are taken, nothing changes */
	ck_assert_int_eq(vmwkvm_tools_new(rpc, NULL, &t), -EEXIST);
	ck_assert_str_eq(RPCI_Z("tools.set.version 5"), "1 ");
	ck_assert_uint_eq(state().version, 5);
	struct vmwkvm_tools_opts o = base_opts();
	o.reserved[1] = 1;
	vmwkvm_tools_free(tools);
	tools = NULL;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &t), -EINVAL);
	o = base_opts();
	o.max_pending = 4;
	o.max_per_channel = 5;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &t), -EINVAL);
	o = base_opts();
	o.max_reply = 65537;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &t), -EINVAL);
	/* after free the names are free again and unknown to the channel */
	ck_assert_str_eq(RPCI_Z("tools.set.version 5"), "0 Unknown command");
	ck_assert_int_eq(vmwkvm_tools_new(rpc, NULL, &tools), 0);
	ck_assert_int_eq(vmwkvm_tools_command(NULL, -1, "ping", 0, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_command(tools, -1, "", 0, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_command(tools, -1, "ping", 0, NULL, NULL, NULL), -ENOENT);
	ck_assert_int_eq(vmwkvm_tools_command(tools, 70000, "ping", 0, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_process(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_event_fd(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_cancel(tools, 12345), -ENOENT);
	vmwkvm_tools_free(NULL);
}
END_TEST

START_TEST(getmhz)
{
	vmwkvm_tools_free(tools);
	struct vmwkvm_tools_opts o = base_opts();
	o.cpu_mhz = 2345;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &tools), 0);
	vmwkvm_backdoor *bd;
	ck_assert_int_eq(vmwkvm_backdoor_new(NULL, &bd), 0);
	ck_assert_int_eq(vmwkvm_tools_bind_backdoor(tools, bd), 0);
	struct vmwkvm_call c;
	memset(&c, 0, sizeof(c));
	c.transport = VMWKVM_TRANSPORT_LB;
	c.direction = VMWKVM_DIR_IN;
	c.command = VMWKVM_BDOOR_CMD_GETMHZ;
	c.magic_ok = 1;
	c.cpl = 3;
	c.origin = VMWKVM_ORIGIN_L1;
	c.io_size = 4;
	c.port = VMWKVM_BDOOR_PORT;
	c.rax = MAGIC;
	c.rcx = VMWKVM_BDOOR_CMD_GETMHZ;
	ck_assert_int_eq(vmwkvm_backdoor_handle(bd, &c, &R), VMWKVM_BACKDOOR_ANSWERED);
	ck_assert_uint_eq(R.eax, 2345);
	ck_assert_uint_eq(R.ebx, MAGIC);
	ck_assert_int_eq(vmwkvm_tools_bind_backdoor(NULL, bd), -EINVAL);
	vmwkvm_backdoor_free(bd);
}
END_TEST

/* ================================================================ TCLO */

START_TEST(command_roundtrip)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[256];
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), -1); /* nothing queued */
	uint64_t id = cmd("reset", 0);
	ck_assert_int_eq(state().pending, 1);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 5);
	ck_assert_str_eq(buf, "reset");
	ck_assert_int_eq(ncb, 0);
	advance_ms(7);
	efd_read();
	ck_assert_int_eq(tclo_turn(t, "OK ATR toolbox", buf, sizeof(buf)), -1);
	ck_assert_int_eq(ncb, 1);
	ck_assert_uint_eq(last.id, id);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_OK);
	ck_assert_str_eq(last.reply, "ATR toolbox");
	ck_assert_uint_eq(last.channel, t);
	ck_assert_uint_eq(last.elapsed_ns, 7000000ull);
	ck_assert_uint_ge(efd_read(), 1);
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.pending, 0);
	ck_assert_uint_eq(s.answers, 1);
	ck_assert_uint_eq(s.running, 1);
	ck_assert_uint_eq(s.last_answer_age_ns, 0);
	ck_assert_uint_eq(s.changes, VMWKVM_TOOLS_CHANGED_COMMAND | VMWKVM_TOOLS_CHANGED_RUNNING);
	/* ERROR, bare OK, something else */
	cmd("No_Such_Command", 0);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 15);
	tclo_turn(t, "ERROR Unknown Command", buf, sizeof(buf));
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_ERROR);
	ck_assert_str_eq(last.reply, "Unknown Command");
	cmd("ping", 0);
	tclo_turn(t, "", buf, sizeof(buf));
	tclo_turn(t, "OK", buf, sizeof(buf));
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_OK);
	ck_assert_str_eq(last.reply, "");
	cmd("ping", 0);
	tclo_turn(t, "", buf, sizeof(buf));
	tclo_turn(t, "OKAY", buf, sizeof(buf));
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_BADREPLY);
	ck_assert_str_eq(last.reply, "OKAY");
	ck_assert_int_eq(ncb, 4);
}
END_TEST

START_TEST(command_polled)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	uint64_t id;
	ck_assert_int_eq(vmwkvm_tools_command(tools, t, "Capabilities_Register", 0, NULL, NULL, &id), 0);
	struct vmwkvm_tools_result r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	ck_assert_int_eq(vmwkvm_tools_command_result(tools, id, &r), -EAGAIN);
	ck_assert_uint_eq(r.status, VMWKVM_TOOLS_PENDING);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 21);
	tclo_turn(t, "OK ", buf, sizeof(buf));
	ck_assert_int_eq(vmwkvm_tools_command_result(tools, id, &r), 0);
	ck_assert_uint_eq(r.status, VMWKVM_TOOLS_OK);
	ck_assert_str_eq(r.reply, "");
	ck_assert_int_eq(vmwkvm_tools_command_result(tools, id, &r), -ENOENT); /* handed out once */
	/* a command with callback is not polled */
	uint64_t id2 = cmd("ping", 0);
	ck_assert_int_eq(vmwkvm_tools_command_result(tools, id2, &r), -ENOENT);
}
END_TEST

START_TEST(timeouts)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	ck_assert_int_eq(vmwkvm_tools_process(tools), INT32_MAX);
	uint64_t id = cmd("Time_Synchronize 0", 100);
	ck_assert_int_eq(vmwkvm_tools_process(tools), 100);
	advance_ms(60);
	ck_assert_int_eq(vmwkvm_tools_process(tools), 40);
	ck_assert_int_eq(ncb, 0);
	/* the guest fetched it but never answers */
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 18);
	advance_ms(40);
	int next = vmwkvm_tools_process(tools);
	ck_assert_int_eq(ncb, 1);
	ck_assert_uint_eq(last.id, id);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_TIMEOUT);
	ck_assert_uint_eq(last.elapsed_ns, 100000000ull);
	ck_assert_int_eq(next, INT32_MAX);
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.timeouts, 1);
	ck_assert_uint_eq(s.pending, 0);
	/* its late answer is dropped, not matched to anything */
	tclo_turn(t, "OK late", buf, sizeof(buf));
	ck_assert_int_eq(ncb, 1);
	ck_assert_uint_eq(state().dropped, 1);
	/* default timeout */
	cmd("ping", 0);
	ck_assert_int_eq(vmwkvm_tools_process(tools), (int)VMWKVM_TOOLS_DEFAULT_TIMEOUT_MS);
	/* cancel */
	uint64_t id3 = cmd("ping", 0);
	ck_assert_int_eq(vmwkvm_tools_cancel(tools, id3), 0);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_CANCELLED);
	ck_assert_int_eq(vmwkvm_tools_cancel(tools, id3), -ENOENT);
}
END_TEST

/* A command that timed out, or was cancelled, before the guest fetched it never reaches
 * the guest: a late "OS_Reboot" would be worse than none. One being fetched is delivered. */
START_TEST(expired_commands_withdrawn)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	cmd("OS_Reboot", 100);
	uint64_t id2 = cmd("OS_Halt", 0);
	advance_ms(100);
	vmwkvm_tools_process(tools);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_TIMEOUT);
	ck_assert_int_eq(vmwkvm_tools_cancel(tools, id2), 0);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), -1); /* nothing waits */
	/* fetched, then timed out: it was delivered, its late answer is dropped */
	cmd("ping", 100);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 4);
	advance_ms(100);
	vmwkvm_tools_process(tools);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_TIMEOUT);
	ck_assert_int_eq(tclo_turn(t, "OK ", buf, sizeof(buf)), -1);
	ck_assert_uint_eq(state().dropped, 1);
}
END_TEST

START_TEST(channel_close_cancels)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	cmd("ping", 0);
	gclose(t);
	ck_assert_int_eq(ncb, 0);
	vmwkvm_tools_process(tools);
	ck_assert_int_eq(ncb, 1);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_CANCELLED);
	ck_assert_int_eq(vmwkvm_tools_command(tools, t, "ping", 0, NULL, NULL, NULL), -ENOENT);
}
END_TEST

static int nnotify;
static uint32_t notify_bits;
static void on_notify(vmwkvm_tools *t, uint32_t what, void *ctx)
{
	ck_assert_ptr_eq(t, tools);
	ck_assert_ptr_eq(ctx, &nnotify);
	nnotify++;
	notify_bits |= what;
}

START_TEST(heartbeat_running)
{
	vmwkvm_tools_free(tools);
	struct vmwkvm_tools_opts o = base_opts();
	o.heartbeat_ms = 1000;
	o.notify = on_notify;
	o.notify_ctx = &nnotify;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &tools), 0);
	char buf[64];
	/* no TCLO channel: nothing to ping */
	ck_assert_int_eq(vmwkvm_tools_process(tools), INT32_MAX);
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	vmwkvm_tools_process(tools); /* queues the first ping */
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "ping");
	ck_assert_int_eq(nnotify, 0);
	tclo_turn(t, "OK ", buf, sizeof(buf));
	ck_assert_int_eq(nnotify, 1);
	ck_assert_uint_eq(notify_bits, VMWKVM_TOOLS_CHANGED_RUNNING); /* internal pings are not COMMAND */
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.running, 1);
	ck_assert_uint_eq(s.pending, 0);
	/* the next ping is due 1000 ms after the answer */
	ck_assert_int_eq(vmwkvm_tools_process(tools), 1000);
	advance_ms(1000);
	vmwkvm_tools_process(tools);
	ck_assert_int_eq(tclo_turn(t, "", buf, sizeof(buf)), 4);
	/* Tools stop answering: not running after 3 x heartbeat */
	advance_ms(3001);
	notify_bits = 0;
	vmwkvm_tools_process(tools);
	ck_assert_uint_eq(notify_bits, VMWKVM_TOOLS_CHANGED_RUNNING);
	s = state();
	ck_assert_uint_eq(s.running, 0);
	ck_assert_uint_eq(s.last_answer_age_ns, 4001000000ull);
	/* it answers again: running; then Tools close their channel: stopped at once */
	tclo_turn(t, "OK ", buf, sizeof(buf));
	ck_assert_uint_eq(state().running, 1);
	gclose(t);
	notify_bits = 0;
	vmwkvm_tools_process(tools);
	ck_assert_uint_eq(notify_bits, VMWKVM_TOOLS_CHANGED_RUNNING);
	ck_assert_uint_eq(state().running, 0);
}
END_TEST

/* ================================================================ bounds, hostile guests */

START_TEST(bounds_commands)
{
	vmwkvm_tools_free(tools);
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_tools_opts o = base_opts();
	o.max_pending = 3;
	o.max_per_channel = 2;
	mk(&o, 4);
	uint16_t a = gopen(VMWKVM_RPC_PROTO_TCLO), b = gopen(VMWKVM_RPC_PROTO_TCLO);
	uint64_t id;
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, "ping", 0, NULL, NULL, &id), 0);
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, "ping", 0, NULL, NULL, NULL), 0);
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, "ping", 0, NULL, NULL, NULL), -ENOSPC); /* per channel */
	ck_assert_int_eq(vmwkvm_tools_command(tools, b, "ping", 0, NULL, NULL, NULL), 0);
	ck_assert_int_eq(vmwkvm_tools_command(tools, b, "ping", 0, NULL, NULL, NULL), -ENOSPC); /* per VM */
	/* a finished, unread result still counts */
	char buf[16];
	tclo_turn(a, "", buf, sizeof(buf));
	tclo_turn(a, "OK ", buf, sizeof(buf));
	ck_assert_int_eq(vmwkvm_tools_command(tools, b, "ping", 0, NULL, NULL, NULL), -ENOSPC);
	struct vmwkvm_tools_result r;
	memset(&r, 0, sizeof(r));
	r.sz = sizeof(r);
	ck_assert_int_eq(vmwkvm_tools_command_result(tools, id, &r), 0);
	ck_assert_int_eq(vmwkvm_tools_command(tools, b, "ping", 0, NULL, NULL, NULL), 0);
	/* oversize command */
	char *big = malloc(VMWKVM_RPC_MAX_MESSAGE + 2);
	memset(big, 'x', VMWKVM_RPC_MAX_MESSAGE + 1);
	big[VMWKVM_RPC_MAX_MESSAGE + 1] = '\0';
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, big, 0, NULL, NULL, NULL), -E2BIG);
	free(big);
}
END_TEST

START_TEST(bounds_channel_queue)
{
	vmwkvm_tools_free(tools);
	vmwkvm_rpc_free(rpc);
	struct vmwkvm_tools_opts o = base_opts();
	mk(&o, 1); /* the channel table holds one command per channel */
	uint16_t a = gopen(VMWKVM_RPC_PROTO_TCLO);
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, "ping", 0, NULL, NULL, NULL), 0);
	ck_assert_int_eq(vmwkvm_tools_command(tools, a, "ping", 0, NULL, NULL, NULL), -ENOSPC);
	ck_assert_uint_eq(state().pending, 1); /* the refused one left nothing behind */
}
END_TEST

START_TEST(hostile_flood_and_oversize)
{
	vmwkvm_tools_free(tools);
	struct vmwkvm_tools_opts o = base_opts();
	o.max_reply = 16;
	o.max_keys = 8;
	o.max_store_bytes = 100;
	o.max_caps = 4;
	ck_assert_int_eq(vmwkvm_tools_new(rpc, &o, &tools), 0);
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	/* a flood of results nobody asked for: counted and dropped */
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(tclo_turn(t, "OK unsolicited", buf, sizeof(buf)), -1);
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.dropped, 1000);
	ck_assert_uint_eq(s.answers, 0);
	ck_assert_uint_eq(s.pending, 0);
	/* an oversize answer is truncated to max_reply */
	cmd("ping", 0);
	tclo_turn(t, "", buf, sizeof(buf));
	static char huge[60000];
	memcpy(huge, "OK ", 3);
	memset(huge + 3, 'z', sizeof(huge) - 4);
	gsend(t, huge, sizeof(huge) - 1);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_OK);
	ck_assert_uint_eq(last.reply_len, 16);
	ck_assert_uint_eq(last.truncated, 1);
	ck_assert_str_eq(last.reply, "zzzzzzzzzzzzzzzz");
	/* the same answer sent twice matches once */
	gsend(t, "OK again", 8);
	ck_assert_int_eq(ncb, 1);
	ck_assert_uint_eq(state().dropped, 1001);
	/* guestinfo keys and bytes */
	char m[64];
	for (int i = 0; i < 8; i++) {
		snprintf(m, sizeof(m), "info-set guestinfo.k%d v", i);
		ck_assert_str_eq(RPCI_S(m), "1 ");
	}
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k8 v"), "0 Too many keys");
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k0 replaced"), "1 "); /* replacing is fine */
	static char vbig[200];
	int h = sprintf(vbig, "info-set guestinfo.k1 ");
	memset(vbig + h, 'b', 120);
	ck_assert_str_eq(rpci(vbig, (size_t)h + 120), "0 Value too long");
	static char kbig[VMWKVM_TOOLS_MAX_VALUE + 40];
	h = sprintf(kbig, "info-set guestinfo.");
	memset(kbig + h, 'k', VMWKVM_TOOLS_MAX_VALUE);
	kbig[h + VMWKVM_TOOLS_MAX_VALUE] = ' ';
	kbig[h + VMWKVM_TOOLS_MAX_VALUE + 1] = 'v';
	ck_assert_str_eq(rpci(kbig, (size_t)h + VMWKVM_TOOLS_MAX_VALUE + 2), "0 Key is too long");
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k1"), "1 v"); /* unchanged */
	ck_assert_uint_eq(state().keys, 8);
	/* capabilities */
	for (int i = 0; i < 4; i++) {
		snprintf(m, sizeof(m), "tools.capability.c%d 1", i);
		ck_assert_str_eq(RPCI_S(m), "1 ");
	}
	ck_assert_str_eq(RPCI_S("tools.capability.c4 1"), "0 Too many capabilities");
	ck_assert_str_eq(RPCI_S("tools.capability.c3 2"), "1 ");
	ck_assert_uint_eq(state().caps, 4);
	/* a capability name or value over the bound */
	static char cbig[VMWKVM_TOOLS_MAX_VALUE + 40];
	h = sprintf(cbig, "tools.capability.");
	memset(cbig + h, 'n', VMWKVM_TOOLS_MAX_VALUE);
	ck_assert_str_eq(rpci(cbig, (size_t)h + VMWKVM_TOOLS_MAX_VALUE), "0 Invalid capability");
}
END_TEST

START_TEST(hostile_never_answers)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	/* a guest that fetches every command and never answers: each one times out, the
	 * VMM's pending count never exceeds the bound */
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 8; i++)
			cmd("ping", 10);
		ck_assert_int_eq(vmwkvm_tools_command(tools, t, "ping", 10, on_res, &ncb, NULL), -ENOSPC);
		for (int i = 0; i < 8; i++)
			ck_assert_int_eq(grecv(t, buf, sizeof(buf)), 4);
		advance_ms(10);
		vmwkvm_tools_process(tools);
		ck_assert_uint_eq(state().pending, 0);
	}
	ck_assert_int_eq(ncb, 400);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_TIMEOUT);
	ck_assert_uint_eq(state().timeouts, 400);
}
END_TEST

START_TEST(vm_reset)
{
	uint16_t t = gopen(VMWKVM_RPC_PROTO_TCLO);
	char buf[64];
	cmd("ping", 0);
	tclo_turn(t, "", buf, sizeof(buf));
	tclo_turn(t, "OK ", buf, sizeof(buf));
	ck_assert_str_eq(RPCI_Z("tools.set.versiontype 12352 4"), "1 ");
	ck_assert_str_eq(RPCI_S("tools.capability.statechange "), "1 ");
	ck_assert_str_eq(RPCI_Z("SetGuestInfo  1 vm"), "1 ");
	ck_assert_str_eq(RPCI_Z("vmx.capability.unified_loop toolbox"), "1 ");
	ck_assert_str_eq(RPCI_S("info-set guestinfo.k v"), "1 ");
	uint64_t id = cmd("Capabilities_Register", 0);
	ck_assert_int_eq(ncb, 1);
	ck_assert_int_eq(vmwkvm_tools_reset(tools, 2), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_reset(NULL, 0), -EINVAL);
	ck_assert_int_eq(vmwkvm_tools_reset(tools, 0), 0);
	ck_assert_int_eq(ncb, 2);
	ck_assert_uint_eq(last.id, id);
	ck_assert_uint_eq(last.status, VMWKVM_TOOLS_CANCELLED);
	struct vmwkvm_tools_state s = state();
	ck_assert_uint_eq(s.version_set, 0);
	ck_assert_uint_eq(s.version, 0);
	ck_assert_uint_eq(s.caps, 0);
	ck_assert_uint_eq(s.guestinfo, 0);
	ck_assert_uint_eq(s.unified_loop, 0);
	ck_assert_str_eq(s.app, "");
	ck_assert_uint_eq(s.running, 0);
	ck_assert_uint_eq(s.pending, 0);
	ck_assert_uint_eq(s.answers, 1); /* counters keep counting */
	ck_assert_uint_eq(s.keys, 1);    /* the store survives a plain reset */
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k"), "1 v");
	ck_assert_int_eq(vmwkvm_tools_reset(tools, VMWKVM_TOOLS_RESET_STORE), 0);
	ck_assert_str_eq(RPCI_S("info-get guestinfo.k"), "0 No value found");
	ck_assert_uint_eq(state().keys, 0);
	/* Tools come back */
	ck_assert_str_eq(RPCI_Z("tools.set.versiontype 12353 4"), "1 ");
	ck_assert_uint_eq(state().version, 12353);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("tools");
	TCase *tc = tcase_create("rpci");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, version_and_state);
	tcase_add_test(tc, capabilities);
	tcase_add_test(tc, loop_log_statechange);
	tcase_add_test(tc, guest_info);
	tcase_add_test(tc, info_store);
	tcase_add_test(tc, unknown_stays_unknown);
	tcase_add_test(tc, new_free_errors);
	tcase_add_test(tc, getmhz);
	suite_add_tcase(s, tc);
	tc = tcase_create("tclo");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, command_roundtrip);
	tcase_add_test(tc, command_polled);
	tcase_add_test(tc, timeouts);
	tcase_add_test(tc, expired_commands_withdrawn);
	tcase_add_test(tc, channel_close_cancels);
	tcase_add_test(tc, heartbeat_running);
	tcase_add_test(tc, vm_reset);
	suite_add_tcase(s, tc);
	tc = tcase_create("bounds");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, bounds_commands);
	tcase_add_test(tc, bounds_channel_queue);
	tcase_add_test(tc, hostile_flood_and_oversize);
	tcase_add_test(tc, hostile_never_answers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
