/* A VMM-like consumer of the installed libvmwkvm, in C. */
#include <stdio.h>
#include <string.h>

#include <vmwkvm/vmwkvm.h>

int main(void)
{
	const char *v = vmwkvm_version_string();
	if (strcmp(v, VMWKVM_VERSION_STRING) != 0) {
		fprintf(stderr, "consumer.c: library %s, headers %s\n", v, VMWKVM_VERSION_STRING);
		return 1;
	}
	if (vmwkvm_version() != VMWKVM_VERSION_HEX || !VMWKVM_CHECK_VERSION(0, 1, 0)) {
		fprintf(stderr, "consumer.c: version number mismatch\n");
		return 1;
	}
	printf("consumer.c: libvmwkvm %s (%s)\n", v, vmwkvm_strerror(-22));
	return 0;
}
