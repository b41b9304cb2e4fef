/* Dialects of the proposed VMware uAPI: numbers, overrides, mainline collision tables. */
#include "core/internal.h"
#include "core/proposed_defaults.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t num_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmwkvm_proposed_numbers env_numbers;  /* build defaults + VMWKVM_PROPOSED */
static struct vmwkvm_proposed_numbers api_numbers;  /* vmwkvm_proposed_set() */
static bool api_numbers_set;
static atomic_int default_dialect = VMWKVM_DIALECT_AUTO - 1; /* sentinel: not chosen by the API */
static int env_dialect = VMWKVM_DIALECT_AUTO;

static void build_defaults(struct vmwkvm_proposed_numbers *n)
{
	memset(n, 0, sizeof(*n));
	n->sz = sizeof(*n);
	n->rusin_cap_backdoor = VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT;
	n->rusin_cap_hypercall = VMWKVM_PROPOSED_RUSIN_CAP_HYPERCALL_DEFAULT;
	n->rusin_cap_nested = VMWKVM_PROPOSED_RUSIN_CAP_NESTED_DEFAULT;
	n->rusin_exit_vmware = VMWKVM_PROPOSED_RUSIN_EXIT_VMWARE_DEFAULT;
	n->single_cap = VMWKVM_PROPOSED_SINGLE_CAP_DEFAULT;
	n->single_exit = VMWKVM_PROPOSED_SINGLE_EXIT_DEFAULT;
}

/* Parse "key=value,key=value" into n; unknown keys and bad values are logged and skipped. */
static void parse_proposed(const char *spec, struct vmwkvm_proposed_numbers *n)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
		{ "rusin.cap_backdoor", offsetof(struct vmwkvm_proposed_numbers, rusin_cap_backdoor) },
		{ "rusin.cap_hypercall", offsetof(struct vmwkvm_proposed_numbers, rusin_cap_hypercall) },
		{ "rusin.cap_nested", offsetof(struct vmwkvm_proposed_numbers, rusin_cap_nested) },
		{ "rusin.exit", offsetof(struct vmwkvm_proposed_numbers, rusin_exit_vmware) },
		{ "single.cap", offsetof(struct vmwkvm_proposed_numbers, single_cap) },
		{ "single.exit", offsetof(struct vmwkvm_proposed_numbers, single_exit) },
	};
	char buf[512];
	size_t len = strlen(spec);
	if (len >= sizeof(buf)) {
		vk_warn("VMWKVM_PROPOSED is longer than %zu bytes; ignored", sizeof(buf) - 1);
		return;
	}
	memcpy(buf, spec, len + 1);
	char *save = NULL;
	for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			vk_warn("VMWKVM_PROPOSED: '%s' is not key=value; ignored", tok);
			continue;
		}
		*eq = '\0';
		char *end = NULL;
		errno = 0;
		unsigned long v = strtoul(eq + 1, &end, 0);
		if (errno || !end || *end || end == eq + 1 || v > UINT32_MAX) {
			vk_warn("VMWKVM_PROPOSED: bad number for %s; ignored", tok);
			continue;
		}
		size_t i;
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			if (strcmp(keys[i].key, tok) == 0) {
				uint32_t val = (uint32_t)v;
				memcpy((char *)n + keys[i].off, &val, sizeof(val));
				break;
			}
		}
		if (i == sizeof(keys) / sizeof(keys[0]))
			vk_warn("VMWKVM_PROPOSED: unknown key %s; ignored", tok);
	}
}

static void env_init(void)
{
	build_defaults(&env_numbers);
	const char *spec = getenv("VMWKVM_PROPOSED");
	if (spec && *spec)
		parse_proposed(spec, &env_numbers);
	int d = vmwkvm_dialect_from_name(VMWKVM_DEFAULT_DIALECT_NAME);
	env_dialect = d == -EINVAL ? VMWKVM_DIALECT_AUTO : d;
	const char *ds = getenv("VMWKVM_DIALECT");
	if (ds && *ds) {
		d = vmwkvm_dialect_from_name(ds);
		if (d == -EINVAL)
			vk_warn("VMWKVM_DIALECT=%s is not a dialect (auto, none, rusin-v2, single-cap); ignored", ds);
		else
			env_dialect = d;
	}
}

void vk_proposed_snapshot(struct vmwkvm_proposed_numbers *out)
{
	pthread_once(&env_once, env_init);
	pthread_mutex_lock(&num_lock);
	*out = api_numbers_set ? api_numbers : env_numbers;
	pthread_mutex_unlock(&num_lock);
}

int vmwkvm_proposed_get(struct vmwkvm_proposed_numbers *out)
{
	if (!out || out->sz < sizeof(size_t))
		return -EINVAL;
	struct vmwkvm_proposed_numbers n;
	vk_proposed_snapshot(&n);
	size_t sz = out->sz < sizeof(n) ? out->sz : sizeof(n);
	memcpy((char *)out + sizeof(size_t), (char *)&n + sizeof(size_t), sz - sizeof(size_t));
	return 0;
}

int vmwkvm_proposed_set(const struct vmwkvm_proposed_numbers *nums)
{
	pthread_once(&env_once, env_init);
	if (nums) {
		if (!VK_OPTS_VALID(nums, struct vmwkvm_proposed_numbers))
			return -EINVAL;
		struct vmwkvm_proposed_numbers n;
		memset(&n, 0, sizeof(n));
		size_t sz = nums->sz < sizeof(n) ? nums->sz : sizeof(n);
		memcpy(&n, nums, sz);
		n.sz = sizeof(n);
		for (size_t i = 0; i < sizeof(n.reserved) / sizeof(n.reserved[0]); i++)
			if (n.reserved[i])
				return -EINVAL;
		pthread_mutex_lock(&num_lock);
		api_numbers = n;
		api_numbers_set = true;
		pthread_mutex_unlock(&num_lock);
	} else {
		pthread_mutex_lock(&num_lock);
		api_numbers_set = false;
		pthread_mutex_unlock(&num_lock);
	}
	return 0;
}

int vmwkvm_dialect_set_default(int dialect)
{
	if (dialect < VMWKVM_DIALECT_AUTO || dialect > VMWKVM_DIALECT_SINGLE_CAP)
		return -EINVAL;
	atomic_store(&default_dialect, dialect);
	return 0;
}

int vmwkvm_dialect_get_default(void)
{
	pthread_once(&env_once, env_init);
	int d = atomic_load(&default_dialect);
	return d < VMWKVM_DIALECT_AUTO ? env_dialect : d;
}

int vk_dialect_default_resolved_name(void)
{
	return vmwkvm_dialect_get_default();
}

const char *vmwkvm_dialect_name(int dialect)
{
	switch (dialect) {
	case VMWKVM_DIALECT_AUTO: return "auto";
	case VMWKVM_DIALECT_NONE: return "none";
	case VMWKVM_DIALECT_RUSIN_V2: return "rusin-v2";
	case VMWKVM_DIALECT_SINGLE_CAP: return "single-cap";
	default: return "invalid";
	}
}

int vmwkvm_dialect_from_name(const char *name)
{
	if (!name)
		return -EINVAL;
	if (strcasecmp(name, "auto") == 0)
		return VMWKVM_DIALECT_AUTO;
	if (strcasecmp(name, "none") == 0 || strcasecmp(name, "mainline") == 0)
		return VMWKVM_DIALECT_NONE;
	if (strcasecmp(name, "rusin-v2") == 0)
		return VMWKVM_DIALECT_RUSIN_V2;
	if (strcasecmp(name, "single-cap") == 0)
		return VMWKVM_DIALECT_SINGLE_CAP;
	return -EINVAL;
}

/* Mainline numbers the proposals collided with (kvm-uapi-notes.md section 2). */
const char *vmwkvm_mainline_cap_name(uint32_t cap)
{
	switch (cap) {
	case 231: return "KVM_CAP_USER_MEMORY2";
	case 232: return "KVM_CAP_MEMORY_FAULT_INFO";
	case 233: return "KVM_CAP_MEMORY_ATTRIBUTES";
	case 234: return "KVM_CAP_GUEST_MEMFD";
	case 235: return "KVM_CAP_VM_TYPES";
	case 236: return "KVM_CAP_PRE_FAULT_MEMORY";
	case 237: return "KVM_CAP_X86_APIC_BUS_CYCLES_NS";
	case 238: return "KVM_CAP_X86_GUEST_MODE";
	case 239: return "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS";
	case 240: return "KVM_CAP_ARM_EL2";
	case 241: return "KVM_CAP_ARM_EL2_E2H0";
	case 242: return "KVM_CAP_RISCV_MP_STATE_RESET";
	case 243: return "KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED";
	case 244: return "KVM_CAP_GUEST_MEMFD_FLAGS";
	case 245: return "KVM_CAP_ARM_SEA_TO_USER";
	case 246: return "KVM_CAP_S390_USER_OPEREXEC";
	default:
		/* every number up to 230 was assigned by 6.7 */
		return cap >= 1 && cap <= 230 ? "an older mainline capability" : NULL;
	}
}

const char *vmwkvm_mainline_exit_name(uint32_t exit_reason)
{
	switch (exit_reason) {
	case 38: return "KVM_EXIT_LOONGARCH_IOCSR";
	case 39: return "KVM_EXIT_MEMORY_FAULT";
	case 40: return "KVM_EXIT_TDX";
	case 41: return "KVM_EXIT_ARM_SEA";
	default:
		return exit_reason <= 37 ? "an older mainline exit reason" : NULL;
	}
}
