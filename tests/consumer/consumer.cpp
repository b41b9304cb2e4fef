// A VMM-like consumer of the installed libvmwkvm, in C++: the public headers must be usable as-is.
#include <cstdio>
#include <string>

#include <vmwkvm/vmwkvm.h>

int main()
{
	const std::string v = vmwkvm_version_string();
	if (v != VMWKVM_VERSION_STRING) {
		std::fprintf(stderr, "consumer.cpp: library %s, headers %s\n", v.c_str(), VMWKVM_VERSION_STRING);
		return 1;
	}
	if (vmwkvm_version() != static_cast<uint32_t>(VMWKVM_VERSION_HEX)) {
		std::fprintf(stderr, "consumer.cpp: version number mismatch\n");
		return 1;
	}
	std::printf("consumer.cpp: libvmwkvm %s (%s)\n", v.c_str(), vmwkvm_dialect_name(VMWKVM_DIALECT_RUSIN_V2));
	return 0;
}
