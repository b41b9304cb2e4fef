/*
 * GuestRPC internals (lib/backdoor/rpc*.c). Not installed.
 * The channel structures shared by every GuestRPC file and the channel layer (rpc_chan.c),
 * which calls nothing else of GuestRPC. Above it: the LB and HB state machines
 * (rpc_lb.c, rpc_hb.c), the RPCI reply builder (rpc_rpci.c), the entry point
 * vmwkvm_rpc_handle() (rpc_handle.c) and the public object and TCLO queues (rpc.c).
 * Locking: rpc->lock guards every channel; RPCI handlers and TCLO results run after it is
 * dropped (struct rpc_work).
 */
#ifndef VMWKVM_LIB_BACKDOOR_RPC_CHAN_H
#define VMWKVM_LIB_BACKDOOR_RPC_CHAN_H

#include "core/internal.h"

#define RPC_MESSAGE_CMD 0x1Eu
#define RPC_HB_CMD_MESSAGE 0u
#define RPC_MAX_TCLO_QUEUE 4096u
#define RPC_HCALL_FLAG_HB 0x0001u /* EDX bit 0 of a hypercall: high bandwidth */

/* status << 16 for LB answers in ECX */
#define ST_OK VMWKVM_RPC_STATUS_SUCCESS
#define ST_FAIL 0u
#define ST_CPT VMWKVM_RPC_STATUS_CPT

enum send_state {
	SEND_IDLE = 0,
	SEND_COLLECTING = 1, /* SENDSIZE seen, payload being collected */
	SEND_BUSY = 2,       /* RPCI handler or TCLO result running outside the lock */
};

enum hb_state {
	HB_NONE = 0,
	HB_ACTIVE = 1,
	HB_FAILED = 2, /* remaining pieces are ignored; the last one answers hb_fail */
};

/* A host-to-guest message: a queued TCLO command or an RPCI reply. */
struct rpc_msg {
	struct rpc_msg *next;
	uint64_t seq;  /* TCLO command sequence number, 0 for RPCI replies */
	size_t len;
	size_t alloc;  /* bytes accounted for this node */
	char data[];   /* len bytes + NUL */
};

struct rpc_chan {
	uint32_t proto;
	bool cookies;
	uint32_t ck_hi, ck_lo;
	uint64_t open_seq;
	uint64_t gen;
	uint64_t used_ns; /* CLOCK_MONOTONIC of the last call the channel accepted */
	/* guest to host */
	uint8_t send_state;
	char *in;        /* in_len + 1 bytes */
	size_t in_len, in_got;
	/* host to guest */
	struct rpc_msg *out; /* message being offered / fetched */
	size_t out_off;
	bool recv_started;   /* RECVSIZE answered DORECV for @out */
	/* HB transfer in progress */
	uint8_t hb_state;
	uint8_t hb_dir;
	uint16_t hb_fail;
	/* a checkpoint interrupted the transfer in flight */
	bool cpt;
	/* TCLO */
	struct rpc_msg *q_head, *q_tail;
	unsigned q_len;
	uint64_t last_fetched_seq;
};

struct rpc_handler {
	char *name;
	size_t len;
	bool prefix; /* name ends in '.' */
	vmwkvm_rpci_handler_fn fn;
	void *ctx;
};

struct vmwkvm_rpc {
	pthread_mutex_t lock;
	uint32_t max_channels, max_message, max_tclo_queue;
	uint64_t idle_ns; /* a full table may close a channel idle this long; 0: never */
	bool hb;
	struct rpc_chan **chans;
	uint32_t nopen;
	uint64_t open_counter, seq_counter, gen_counter;
	uint64_t cookie_state;
	bool cookie_det;
	_Atomic size_t allocated; /* bytes of channels, messages, queue entries, reply builders */
	size_t table_bytes;
	struct rpc_handler *handlers;
	size_t nhandlers, handlers_cap;
	vmwkvm_tclo_result_fn tclo_fn;
	void *tclo_ctx;
};

struct vmwkvm_rpc_out {
	struct vmwkvm_rpc *rpc;
	struct rpc_msg *msg; /* data[0..1] reserved for the "1 "/"0 " prefix */
	size_t cap;          /* capacity of msg->data without the NUL */
	size_t limit;        /* max_message */
	bool oom;
};

/* Work that runs after the lock is dropped. */
struct rpc_work {
	int kind; /* 0 none, 1 RPCI handler, 2 TCLO result */
	uint16_t id;
	uint64_t gen;
	char *msg;
	size_t len;
	uint64_t seq;
	uint8_t cpl, origin;
	vmwkvm_rpci_handler_fn fn;
	void *ctx;
	vmwkvm_tclo_result_fn tclo_fn;
	void *tclo_ctx;
};

struct rpc_regs {
	uint32_t ebx, edx, esi, edi, ebp;
};

/* ---- accounting (the fuzzer and the unit tests check allocated <= bound) ---- */
size_t vk_rpc_allocated(const vmwkvm_rpc *rpc); /* bytes held by channels, messages, queues */
size_t vk_rpc_bound(const vmwkvm_rpc *rpc);     /* the most the configured bounds allow */
/* calloc(1, n) counted in rpc->allocated; NULL without memory */
void *vk_rpc_alloc(struct vmwkvm_rpc *rpc, size_t n);
void vk_rpc_release(struct vmwkvm_rpc *rpc, void *p, size_t n);
struct rpc_msg *vk_rpc_msg_new(struct vmwkvm_rpc *rpc, size_t len);
void vk_rpc_msg_free(struct vmwkvm_rpc *rpc, struct rpc_msg *m);

/* ---- cookies ---- */
uint64_t vk_rpc_cookie(struct vmwkvm_rpc *rpc);
bool vk_rpc_cookie_ok(const struct rpc_chan *c, uint32_t hi, uint32_t lo);

/* ---- the channel table (lock held) ---- */
struct rpc_chan *vk_rpc_chan_get(struct vmwkvm_rpc *rpc, uint32_t id);
void vk_rpc_chan_drop_out(struct vmwkvm_rpc *rpc, struct rpc_chan *c);
void vk_rpc_chan_drop_in(struct vmwkvm_rpc *rpc, struct rpc_chan *c);
/* A checkpoint interrupted the guest's send: the partial message is dropped. */
void vk_rpc_cpt_drop_send(struct vmwkvm_rpc *rpc, struct rpc_chan *c);
/* A checkpoint interrupted the guest's receive: it starts again at RECVSIZE. */
void vk_rpc_cpt_restart_recv(struct rpc_chan *c);
void vk_rpc_chan_free(struct vmwkvm_rpc *rpc, uint16_t id);
/* CLOCK_MONOTONIC in ns, for the channels' idle times. */
uint64_t vk_rpc_now_ns(void);

/* ---- RPCI handlers ---- */
/* Length of the command word of a message. */
size_t vk_rpc_command_word_len(const char *msg, size_t len);
/* Caller holds the lock. */
const struct rpc_handler *vk_rpc_find_handler(const struct vmwkvm_rpc *rpc, const char *word, size_t wlen);
/* A complete guest-to-host message: hand it to the work that runs after unlock. */
void vk_rpc_send_complete(struct vmwkvm_rpc *rpc, struct rpc_chan *c, uint16_t id, const struct vmwkvm_call *call,
			  struct rpc_work *w);

#endif
