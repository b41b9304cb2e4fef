/*
 * vmwkvm-minivmm: command line and guest layout (pure functions, no KVM; unit-tested by
 * tests/integration/test_minivmm_options.c).
 */
#ifndef MINIVMM_OPTIONS_H
#define MINIVMM_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses of vmwkvm-minivmm itself (a guest's own status, 0..255, comes from
 * port 0xF4 and may take any value, including these: stderr tells them apart). */
#define MVM_EXIT_NO_KVM 2       /* /dev/kvm absent or not usable */
#define MVM_EXIT_ALL_HALTED 3   /* every vCPU executed HLT, nothing was written to port 0xF4 */
#define MVM_EXIT_USAGE 64       /* bad command line */
#define MVM_EXIT_NOINPUT 66     /* guest image unreadable, empty, or does not fit */
#define MVM_EXIT_UNAVAILABLE 69 /* --vmware-policy: this kernel cannot do it */
#define MVM_EXIT_VM_ERROR 70    /* shutdown (triple fault), KVM internal error, failed entry, ioctl failure */
#define MVM_EXIT_IOERR 74       /* --guestinfo-dump could not be written */
#define MVM_EXIT_TIMEOUT 124    /* the watchdog (--timeout) expired */

#define MVM_MAX_VCPUS 16
#define MVM_MAX_MEM_MIB 3072u
#define MVM_DEFAULT_MEM_MIB 16u
#define MVM_DEFAULT_LOAD 0x1000u
#define MVM_DEFAULT_TIMEOUT 60u
#define MVM_MAX_L2_ALLOW 64
#define MVM_MAX_PRESETS 64
#define MVM_MAX_TOOLS_CMDS 32
#define MVM_MAX_TOOLS_CMD_LEN 4096

/* Real mode: stack tops, per vCPU, in the entry's 64 KiB segment. */
#define MVM_REAL_STACK_TOP 0xFFF0u
#define MVM_REAL_STACK_SIZE 0x400u
/* prot32: stacks at the top of RAM, per vCPU. */
#define MVM_PROT_STACK_SIZE 0x10000u
/* prot32: the GDT the VMM writes (and the area the image must not overlap). */
#define MVM_GDT_GPA 0x500u
#define MVM_GDT_ENTRIES 5u
#define MVM_SEL_CODE0 0x08u
#define MVM_SEL_DATA0 0x10u

enum mvm_mode { MVM_MODE_REAL = 0, MVM_MODE_PROT32 = 1 };
enum mvm_cpuid { MVM_CPUID_VMWARE = 0, MVM_CPUID_KVM = 1 };

/* --vmware-policy flags (translated to the library's policy flags by the VMM). */
#define MVM_POLICY_BACKDOOR (1u << 0)
#define MVM_POLICY_HYPERCALL (1u << 1)
#define MVM_POLICY_NESTED (1u << 2)

struct mvm_preset {
	const char *key;   /* points into argv: KEY of --guestinfo KEY=VALUE (without "guestinfo.") */
	size_t key_len;
	const char *value; /* NUL-terminated, points into argv */
};

struct mvm_options {
	const char *guest;        /* --guest FILE (required) */
	int mode;                 /* enum mvm_mode */
	uint64_t load;            /* --load ADDR (guest-physical) */
	uint64_t entry;           /* --entry ADDR (linear); defaults to load */
	bool entry_set;
	uint32_t mem_mib;         /* --mem MiB */
	unsigned vcpus;           /* --vcpus N */
	const char *dump;         /* --guestinfo-dump FILE, or NULL */
	int cpuid;                /* enum mvm_cpuid */
	uint32_t policy;          /* MVM_POLICY_* */
	bool policy_set;          /* --vmware-policy was given */
	uint16_t l2_allow[MVM_MAX_L2_ALLOW]; /* --l2-allow commands */
	size_t n_l2_allow;
	bool l2_allow_set;        /* --l2-allow was given (an empty list is not accepted) */
	unsigned timeout;         /* --timeout SECONDS, 0 = no watchdog */
	int verbose;              /* -v count: library log level */
	struct mvm_preset presets[MVM_MAX_PRESETS]; /* --guestinfo KEY=VALUE */
	size_t n_presets;
	const char *tools_cmds[MVM_MAX_TOOLS_CMDS]; /* --tools-cmd CMD, in order (point into argv) */
	size_t n_tools_cmds;
	bool help;                /* --help */
	bool version;             /* --version */
};

/* Converts a command name or number for --l2-allow; returns 0..65535 or a negative errno.
 * The VMM passes the library's vmwkvm_backdoor_command_from_name(). */
typedef int (*mvm_command_parser)(const char *name);

/*
 * Parse argv (argv[0] is the program name). On error returns -1 with a one-line message
 * (no program name, no newline) in err. --help and --version stop the parse early and
 * return 0 with o->help / o->version set.
 */
int mvm_parse_args(int argc, const char *const argv[], mvm_command_parser cmd_parser, struct mvm_options *o,
		   char *err, size_t errlen);

/* Initial state of one vCPU, as the VMM will load it. */
struct mvm_vcpu_start {
	uint16_t seg;     /* real mode: CS = DS = ES = FS = GS = SS (prot32: unused) */
	uint64_t ip;      /* IP (offset in seg) or EIP */
	uint64_t sp;      /* SP (offset in seg) or ESP */
	uint32_t edi;     /* vCPU index */
	uint32_t esi;     /* vCPU count */
	uint64_t rflags;  /* 0x2 real mode; 0x3002 (IOPL 3) prot32 */
};

/*
 * Check that an image of image_size bytes fits the options (RAM size, the prot32 GDT, the
 * stacks) and compute the start state of vCPU index. Returns 0, or -1 with a message.
 */
int mvm_layout(const struct mvm_options *o, uint64_t image_size, unsigned index, struct mvm_vcpu_start *st,
	       char *err, size_t errlen);

/* The prot32 GDT (MVM_GDT_ENTRIES descriptors) the VMM writes at MVM_GDT_GPA. */
extern const uint64_t mvm_gdt[MVM_GDT_ENTRIES];

/* Usage text for --help. */
extern const char mvm_usage[];

#endif
