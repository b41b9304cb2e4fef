/*
 * walk_tools.c: the host side of VMware Tools. Attach the Tools component to the VM's
 * GuestRPC channel table, fit its eventfd and timeouts into the VMM's poll loop, queue a
 * TCLO command and read the Tools state. The documentation shows the parts marked setup,
 * loop, command and state.
 *
 * There is no guest here: a few lines play the guest's Tools by feeding decoded calls to
 * vmwkvm_rpc_handle() as a vCPU's backdoor exits would (open a TCLO channel, poll, answer
 * "ping", report a version). Needs no /dev/kvm. Exit status 0 when every step behaved as
 * documented, 1 otherwise.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

static int fail(const char *what, int err)
{
	fprintf(stderr, "walk_tools: %s: %s\n", what, vmwkvm_strerror(err));
	return 1;
}

/* ---- the stand-in guest: one LB MESSAGE call, as a vCPU exit would bring it ---- */
static uint32_t guest_call(vmwkvm_rpc *rpc, uint16_t sub, uint32_t ebx, uint16_t id, struct vmwkvm_reply *r)
{
	struct vmwkvm_call c = {
		.transport = VMWKVM_TRANSPORT_LB, .direction = VMWKVM_DIR_IN, .command = 0x1E,
		.subcommand = sub, .magic_ok = 1, .cpl = 3, .mode = VMWKVM_MODE_LONG64,
		.origin = VMWKVM_ORIGIN_L1, .io_size = 4, .port = VMWKVM_BDOOR_PORT,
		.rax = VMWKVM_BDOOR_MAGIC, .rbx = ebx, .rcx = (uint32_t)sub << 16 | 0x1Eu,
		.rdx = (uint32_t)id << 16 | VMWKVM_BDOOR_PORT,
	};
	vmwkvm_rpc_handle(rpc, &c, r);
	return r->ecx >> 16;
}

static void guest_send(vmwkvm_rpc *rpc, uint16_t id, const char *msg)
{
	struct vmwkvm_reply r;
	size_t len = strlen(msg);
	guest_call(rpc, VMWKVM_RPC_SENDSIZE, (uint32_t)len, id, &r);
	for (size_t off = 0; off < len; off += 4) {
		uint32_t v = 0;
		for (size_t i = 0; i < 4 && off + i < len; i++)
			v |= (uint32_t)(uint8_t)msg[off + i] << (8 * i);
		guest_call(rpc, VMWKVM_RPC_SENDPAYLOAD, v, id, &r);
	}
}

/* fetch a waiting message (reply or TCLO command) into buf; returns its length or -1 */
static long guest_recv(vmwkvm_rpc *rpc, uint16_t id, char *buf, size_t cap)
{
	struct vmwkvm_reply r;
	if (!(guest_call(rpc, VMWKVM_RPC_RECVSIZE, 0, id, &r) & VMWKVM_RPC_STATUS_DORECV))
		return -1;
	size_t len = r.ebx < cap - 1 ? r.ebx : cap - 1;
	for (size_t off = 0; off < r.ebx; off += 4) {
		guest_call(rpc, VMWKVM_RPC_RECVPAYLOAD, 1, id, &r);
		for (size_t i = 0; i < 4 && off + i < len; i++)
			buf[off + i] = (char)(r.ebx >> (8 * i));
	}
	buf[len] = '\0';
	guest_call(rpc, VMWKVM_RPC_RECVSTATUS, 1, id, &r);
	return (long)len;
}

static uint16_t guest_open(vmwkvm_rpc *rpc, uint32_t proto)
{
	struct vmwkvm_reply r;
	guest_call(rpc, VMWKVM_RPC_OPEN, proto, 0, &r);
	return (uint16_t)(r.edx >> 16);
}

/* what Tools do after "Capabilities_Register": report their version (with the NUL they send) */
static void guest_rpci(vmwkvm_rpc *rpc, const char *msg)
{
	char reply[64];
	struct vmwkvm_reply r;
	uint16_t id = guest_open(rpc, VMWKVM_RPC_PROTO_RPCI);
	guest_send(rpc, id, msg);
	guest_recv(rpc, id, reply, sizeof(reply));
	guest_call(rpc, VMWKVM_RPC_CLOSE, 0, id, &r);
}

/* one turn of the guest's TCLO loop: poll with an empty result, answer what it fetched */
static void guest_tools_step(vmwkvm_rpc *rpc, uint16_t tclo)
{
	char cmd[128];
	guest_send(rpc, tclo, "");
	if (guest_recv(rpc, tclo, cmd, sizeof(cmd)) >= 0)
		guest_send(rpc, tclo, strcmp(cmd, "ping") == 0 ? "OK " : "ERROR Unknown Command");
}

//! [command]
static void on_result(vmwkvm_tools *tools, const struct vmwkvm_tools_result *res, void *ctx)
{
	(void)tools;
	int *done = ctx;
	static const char *status[] = {"pending", "OK", "ERROR", "bad reply", "timeout", "cancelled"};
	printf("command %llu: %s \"%.*s\"\n", (unsigned long long)res->id,
	       res->status < 6 ? status[res->status] : "?", (int)res->reply_len, res->reply);
	*done = 1;
}
//! [command]

int main(void)
{
	//! [setup]
	vmwkvm_rpc *rpc;
	vmwkvm_backdoor *bd;
	vmwkvm_tools *tools;
	struct vmwkvm_tools_opts topts = {
		.sz = sizeof(topts),
		.cpu_mhz = 2400,        /* GETMHZ: vmware-toolbox-cmd stat speed */
		.heartbeat_ms = 10000,  /* "ping" Tools when they have been quiet for 10 s */
	};
	int r = vmwkvm_rpc_new(NULL, &rpc);
	if (r == 0)
		r = vmwkvm_backdoor_new(NULL, &bd);
	if (r == 0)
		r = vmwkvm_backdoor_enable_all_builtins(bd);
	if (r == 0)
		r = vmwkvm_backdoor_set_rpc(bd, rpc);
	if (r == 0)
		r = vmwkvm_tools_new(rpc, &topts, &tools); /* registers the RPCI handlers Tools use */
	if (r == 0)
		r = vmwkvm_tools_bind_backdoor(tools, bd);
	if (r < 0)
		return fail("set-up", r);
	/* the VMM may publish values for the guest's `vmware-rpctool "info-get guestinfo.x"` */
	vmwkvm_tools_info_set(tools, "guestinfo.greeting", "hello", 5);
	//! [setup]

	/* the guest's Tools start: a TCLO channel, polled with empty results */
	uint16_t tclo = guest_open(rpc, VMWKVM_RPC_PROTO_TCLO);

	//! [loop]
	int done = 0;
	uint64_t id;
	r = vmwkvm_tools_command(tools, -1, "ping", 5000, on_result, &done, &id);
	if (r < 0)
		return fail("vmwkvm_tools_command", r);
	struct pollfd pfd = {.fd = vmwkvm_tools_event_fd(tools), .events = POLLIN};
	for (int round = 0; !done && round < 10; round++) {
		int timeout_ms = vmwkvm_tools_process(tools); /* timeouts, heartbeat */
		/* ... the VMM's own fds (vCPU threads, sockets) would be in this poll too ... */
		if (poll(&pfd, 1, timeout_ms < 10 ? timeout_ms : 10) > 0) {
			uint64_t n;
			if (read(pfd.fd, &n, sizeof(n)) == sizeof(n))
				printf("Tools state changed\n");
		}
		guest_tools_step(rpc, tclo); /* stand-in: the guest runs */
	}
	//! [loop]
	if (!done)
		return fail("no answer to ping", -ETIMEDOUT);

	guest_rpci(rpc, "tools.set.versiontype 12352 4");

	//! [state]
	struct vmwkvm_tools_state st = {.sz = sizeof(st)};
	vmwkvm_tools_get_state(tools, &st);
	printf("Tools version %u (type %u), %s, last answer %.1f ms ago, %u capabilities\n", st.version,
	       st.version_type, st.running ? "running" : "not running", st.last_answer_age_ns / 1e6, st.caps);
	//! [state]
	int ok = st.version == 12352 && st.version_type == 4 && st.running;

	vmwkvm_tools_free(tools);
	vmwkvm_backdoor_free(bd);
	vmwkvm_rpc_free(rpc);
	return ok ? 0 : 1;
}
