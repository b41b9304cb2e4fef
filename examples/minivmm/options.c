/*
 * vmwkvm-minivmm: command line parsing and guest layout. Pure: no KVM, no I/O.
 */
#include "options.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char mvm_usage[] =
	"Usage: vmwkvm-minivmm --guest FILE [options]\n"
	"Run a flat binary guest on KVM with the VMware backdoor answered by libvmwkvm.\n"
	"\n"
	"  --guest FILE             flat binary image to load (required)\n"
	"  --mode real|prot32       start in 16-bit real mode (default) or flat 32-bit protected mode\n"
	"  --load ADDR              guest-physical load address (default 0x1000)\n"
	"  --entry ADDR             entry point, linear (default: the load address)\n"
	"  --mem MiB                guest RAM at address 0 (default 16, at most 3072)\n"
	"  --vcpus N                vCPUs, 1..16 (default 1); all start at the entry, EDI = index\n"
	"  --guestinfo-dump FILE    write the guestinfo store as KEY=VALUE lines at exit\n"
	"  --guestinfo KEY=VALUE    preset guestinfo.KEY (repeatable)\n"
	"  --cpuid vmware|kvm       hypervisor CPUID leaves: VMware (default) or KVM's own\n"
	"  --vmware-policy LIST     per-VM VMware switches: backdoor,hypercall,nested\n"
	"  --l2-allow CMD,...       backdoor commands a nested (L2) guest may use (or \"none\")\n"
	"  --tools-cmd CMD          once the guest's Tools are up, send them CMD over TCLO and\n"
	"                           print the reply (repeatable, sent in order)\n"
	"  --timeout SECONDS        watchdog, 0 = none (default 60)\n"
	"  -v, --verbose            library log on stderr (twice: debug)\n"
	"  -h, --help               this text\n"
	"  --version                program and library versions\n"
	"\n"
	"Devices: console on port 0x3F8 (to stdout), exit device on port 0xF4 (the byte written\n"
	"becomes the exit status). Exit statuses of the VMM itself: 2 no /dev/kvm, 3 every vCPU\n"
	"halted, 64 usage, 66 bad image, 69 policy refused by the kernel, 70 VM error,\n"
	"74 dump not written, 124 watchdog. See vmwkvm-minivmm(1).\n";

/*
 * prot32 GDT: null, 0x08 code32 DPL0, 0x10 data32 DPL0, 0x18 code32 DPL3, 0x20 data32 DPL3:
 * flat 4 GiB, the layout SYSENTER/SYSEXIT expect with IA32_SYSENTER_CS = 0x08 (ring-3
 * CS = 0x1B, SS = 0x23). Accessed bits preset so the CPU never writes them.
 */
const uint64_t mvm_gdt[MVM_GDT_ENTRIES] = {
	0,
	0x00cf9b000000ffffull,
	0x00cf93000000ffffull,
	0x00cffb000000ffffull,
	0x00cff3000000ffffull,
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* Unsigned number: 0x... hexadecimal, otherwise decimal; the whole string must be used. */
static int parse_u64(const char *s, uint64_t *out)
{
	int base = 10;
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		if (!s[2])
			return -EINVAL;
	}
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || !end || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Next comma-separated item of *p (advances *p); returns its length, or -1 at the end. */
static long next_item(const char **p, const char **item)
{
	if (!*p)
		return -1;
	const char *s = *p;
	const char *c = strchr(s, ',');
	*item = s;
	if (c) {
		*p = c + 1;
		return c - s;
	}
	*p = NULL;
	return (long)strlen(s);
}

static int parse_policy(const char *v, struct mvm_options *o, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{"backdoor", MVM_POLICY_BACKDOOR},
		{"hypercall", MVM_POLICY_HYPERCALL},
		{"nested", MVM_POLICY_NESTED},
	};
	uint32_t flags = 0;
	const char *p = v, *item;
	long n;
	if (!*v)
		return fail(err, errlen, "--vmware-policy needs a list of backdoor, hypercall, nested");
	while ((n = next_item(&p, &item)) >= 0) {
		size_t i;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].name) == (size_t)n && !strncmp(item, names[i].name, (size_t)n))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return fail(err, errlen, "--vmware-policy: unknown switch '%.*s' (known: backdoor, hypercall, nested)",
				    (int)(n > 40 ? 40 : n), item);
		if (flags & names[i].bit)
			return fail(err, errlen, "--vmware-policy: '%s' given twice", names[i].name);
		flags |= names[i].bit;
	}
	if ((flags & MVM_POLICY_NESTED) && !(flags & MVM_POLICY_BACKDOOR))
		return fail(err, errlen, "--vmware-policy: 'nested' requires 'backdoor'");
	o->policy = flags;
	o->policy_set = true;
	return 0;
}

static int parse_l2_allow(const char *v, mvm_command_parser cmd_parser, struct mvm_options *o, char *err,
			  size_t errlen)
{
	o->n_l2_allow = 0;
	o->l2_allow_set = true;
	if (!strcmp(v, "none"))
		return 0;
	if (!*v)
		return fail(err, errlen, "--l2-allow needs a list of commands (names or numbers), or \"none\"");
	const char *p = v, *item;
	long n;
	while ((n = next_item(&p, &item)) >= 0) {
		char name[64];
		if (n == 0 || (size_t)n >= sizeof(name))
			return fail(err, errlen, "--l2-allow: empty or overlong command in '%.60s'", v);
		memcpy(name, item, (size_t)n);
		name[n] = '\0';
		int cmd = cmd_parser ? cmd_parser(name) : -ENOSYS;
		if (cmd < 0 || cmd > 0xFFFF)
			return fail(err, errlen, "--l2-allow: unknown backdoor command '%s'", name);
		if (o->n_l2_allow == MVM_MAX_L2_ALLOW)
			return fail(err, errlen, "--l2-allow: more than %d commands", MVM_MAX_L2_ALLOW);
		o->l2_allow[o->n_l2_allow++] = (uint16_t)cmd;
	}
	return 0;
}

static int parse_preset(const char *v, struct mvm_options *o, char *err, size_t errlen)
{
	const char *eq = strchr(v, '=');
	if (!eq || eq == v)
		return fail(err, errlen, "--guestinfo needs KEY=VALUE, got '%.60s'", v);
	const char *key = v;
	size_t key_len = (size_t)(eq - v);
	static const char prefix[] = "guestinfo.";
	if (key_len > sizeof(prefix) - 1 && !strncmp(key, prefix, sizeof(prefix) - 1)) {
		key += sizeof(prefix) - 1;
		key_len -= sizeof(prefix) - 1;
	}
	if (o->n_presets == MVM_MAX_PRESETS)
		return fail(err, errlen, "--guestinfo: more than %d presets", MVM_MAX_PRESETS);
	o->presets[o->n_presets].key = key;
	o->presets[o->n_presets].key_len = key_len;
	o->presets[o->n_presets].value = eq + 1;
	o->n_presets++;
	return 0;
}

int mvm_parse_args(int argc, const char *const argv[], mvm_command_parser cmd_parser, struct mvm_options *o,
		   char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	o->mode = MVM_MODE_REAL;
	o->load = MVM_DEFAULT_LOAD;
	o->mem_mib = MVM_DEFAULT_MEM_MIB;
	o->vcpus = 1;
	o->cpuid = MVM_CPUID_VMWARE;
	o->timeout = MVM_DEFAULT_TIMEOUT;
	if (err && errlen)
		err[0] = '\0';

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			o->help = true;
			return 0;
		}
		if (!strcmp(arg, "--version")) {
			o->version = true;
			return 0;
		}
		if (!strcmp(arg, "-v") || !strcmp(arg, "--verbose")) {
			o->verbose++;
			continue;
		}
		if (!strcmp(arg, "-vv")) {
			o->verbose += 2;
			continue;
		}
		if (strncmp(arg, "--", 2) != 0)
			return fail(err, errlen, "unexpected argument '%.60s'", arg);

		/* --name VALUE or --name=VALUE */
		char name[32];
		const char *val;
		const char *eq = strchr(arg, '=');
		size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (nlen >= sizeof(name))
			return fail(err, errlen, "unknown option '%.60s'", arg);
		memcpy(name, arg, nlen);
		name[nlen] = '\0';
		static const char *const known[] = {
			"--guest", "--mode", "--load", "--entry", "--mem", "--vcpus", "--guestinfo-dump",
			"--guestinfo", "--cpuid", "--vmware-policy", "--l2-allow", "--tools-cmd", "--timeout",
		};
		size_t k;
		for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (!strcmp(name, known[k]))
				break;
		if (k == sizeof(known) / sizeof(known[0]))
			return fail(err, errlen, "unknown option '%s'", name);
		if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail(err, errlen, "option '%s' needs a value", name);
			val = argv[++i];
		}

		uint64_t n;
		if (!strcmp(name, "--guest")) {
			if (!*val)
				return fail(err, errlen, "--guest needs a file name");
			o->guest = val;
		} else if (!strcmp(name, "--mode")) {
			if (!strcmp(val, "real"))
				o->mode = MVM_MODE_REAL;
			else if (!strcmp(val, "prot32"))
				o->mode = MVM_MODE_PROT32;
			else
				return fail(err, errlen, "--mode must be 'real' or 'prot32', not '%.40s'", val);
		} else if (!strcmp(name, "--load")) {
			if (parse_u64(val, &n) || n > 0xFFFFFFFFull)
				return fail(err, errlen, "--load: not a 32-bit address: '%.40s'", val);
			o->load = n;
		} else if (!strcmp(name, "--entry")) {
			if (parse_u64(val, &n) || n > 0xFFFFFFFFull)
				return fail(err, errlen, "--entry: not a 32-bit address: '%.40s'", val);
			o->entry = n;
			o->entry_set = true;
		} else if (!strcmp(name, "--mem")) {
			if (parse_u64(val, &n) || n < 1 || n > MVM_MAX_MEM_MIB)
				return fail(err, errlen, "--mem: MiB between 1 and %u, not '%.40s'", MVM_MAX_MEM_MIB, val);
			o->mem_mib = (uint32_t)n;
		} else if (!strcmp(name, "--vcpus")) {
			if (parse_u64(val, &n) || n < 1 || n > MVM_MAX_VCPUS)
				return fail(err, errlen, "--vcpus: between 1 and %d, not '%.40s'", MVM_MAX_VCPUS, val);
			o->vcpus = (unsigned)n;
		} else if (!strcmp(name, "--guestinfo-dump")) {
			if (!*val)
				return fail(err, errlen, "--guestinfo-dump needs a file name");
			o->dump = val;
		} else if (!strcmp(name, "--guestinfo")) {
			if (parse_preset(val, o, err, errlen))
				return -1;
		} else if (!strcmp(name, "--cpuid")) {
			if (!strcmp(val, "vmware"))
				o->cpuid = MVM_CPUID_VMWARE;
			else if (!strcmp(val, "kvm"))
				o->cpuid = MVM_CPUID_KVM;
			else
				return fail(err, errlen, "--cpuid must be 'vmware' or 'kvm', not '%.40s'", val);
		} else if (!strcmp(name, "--vmware-policy")) {
			if (parse_policy(val, o, err, errlen))
				return -1;
		} else if (!strcmp(name, "--l2-allow")) {
			if (parse_l2_allow(val, cmd_parser, o, err, errlen))
				return -1;
		} else if (!strcmp(name, "--tools-cmd")) {
			size_t len = strlen(val);
			if (len == 0 || len > MVM_MAX_TOOLS_CMD_LEN)
				return fail(err, errlen, "--tools-cmd: 1 to %d bytes, not %zu", MVM_MAX_TOOLS_CMD_LEN, len);
			if (o->n_tools_cmds == MVM_MAX_TOOLS_CMDS)
				return fail(err, errlen, "--tools-cmd: at most %d commands", MVM_MAX_TOOLS_CMDS);
			o->tools_cmds[o->n_tools_cmds++] = val;
		} else { /* --timeout */
			if (parse_u64(val, &n) || n > 86400)
				return fail(err, errlen, "--timeout: seconds between 0 and 86400, not '%.40s'", val);
			o->timeout = (unsigned)n;
		}
	}
	if (!o->guest)
		return fail(err, errlen, "--guest FILE is required");
	if (!o->entry_set)
		o->entry = o->load;
	return 0;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int mvm_layout(const struct mvm_options *o, uint64_t image_size, unsigned index, struct mvm_vcpu_start *st,
	       char *err, size_t errlen)
{
	uint64_t mem = (uint64_t)o->mem_mib << 20;
	if (image_size == 0)
		return fail(err, errlen, "the guest image is empty");
	if (o->vcpus < 1 || o->vcpus > MVM_MAX_VCPUS || index >= o->vcpus)
		return fail(err, errlen, "vCPU index %u out of range", index);
	if (o->load >= mem || image_size > mem - o->load)
		return fail(err, errlen, "the guest image (%llu bytes at 0x%llx) does not fit in %u MiB of RAM",
			    (unsigned long long)image_size, (unsigned long long)o->load, o->mem_mib);
	if (o->entry >= mem)
		return fail(err, errlen, "the entry point 0x%llx is outside RAM (%u MiB)", (unsigned long long)o->entry,
			    o->mem_mib);
	memset(st, 0, sizeof(*st));
	st->edi = index;
	st->esi = o->vcpus;
	if (o->mode == MVM_MODE_REAL) {
		if (o->entry >= 0x100000)
			return fail(err, errlen, "real mode: the entry point 0x%llx is above 1 MiB",
				    (unsigned long long)o->entry);
		uint64_t base = o->entry & 0xF0000;
		uint64_t lo = base + MVM_REAL_STACK_TOP - (uint64_t)MVM_REAL_STACK_SIZE * o->vcpus;
		uint64_t hi = base + 0x10000;
		if (overlap(o->load, image_size, lo, hi - lo))
			return fail(err, errlen,
				    "real mode: the image overlaps the vCPU stacks at 0x%llx-0x%llx (keep it below 0x%llx)",
				    (unsigned long long)lo, (unsigned long long)(hi - 1), (unsigned long long)lo);
		st->seg = (uint16_t)(base >> 4);
		st->ip = o->entry & 0xFFFF;
		st->sp = MVM_REAL_STACK_TOP - (uint64_t)MVM_REAL_STACK_SIZE * index;
		st->rflags = 0x2;
	} else {
		uint64_t gdt_len = sizeof(mvm_gdt);
		if (overlap(o->load, image_size, MVM_GDT_GPA, gdt_len))
			return fail(err, errlen, "prot32: the image overlaps the GDT at 0x%x-0x%llx", MVM_GDT_GPA,
				    (unsigned long long)(MVM_GDT_GPA + gdt_len - 1));
		uint64_t lo = mem - (uint64_t)MVM_PROT_STACK_SIZE * o->vcpus;
		if (mem < (uint64_t)MVM_PROT_STACK_SIZE * o->vcpus + MVM_GDT_GPA + gdt_len ||
		    overlap(o->load, image_size, lo, mem - lo))
			return fail(err, errlen, "prot32: the image overlaps the vCPU stacks at 0x%llx-0x%llx",
				    (unsigned long long)lo, (unsigned long long)(mem - 1));
		st->ip = o->entry;
		st->sp = mem - (uint64_t)MVM_PROT_STACK_SIZE * index;
		st->rflags = 0x3002; /* IOPL 3: ring-3 code may use the ports */
	}
	return 0;
}
