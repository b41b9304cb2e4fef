/*
 * The snapshot file of vmwkvm-snapshot-demo and vmwkvm-restore-demo: a 4096-byte header
 * followed by the guest's RAM image (RAM byte at GPA g is at file offset 4096 + g).
 *
 * The demo guests' pattern: every dword of a page at GPA p (p >= DEMO_DATA_GPA) holds
 * (p >> 12) << 8 | n, where n is a pass counter (the low 8 bits): whatever instant a
 * snapshot is taken at, (v >> 8) == (address >> 12) for every dword of the data area.
 */
#ifndef VMWKVM_DEMO_SNAPFILE_H
#define VMWKVM_DEMO_SNAPFILE_H

#include <stdint.h>

#define SNAP_MAGIC "VMWKSNP1"
#define SNAP_VERSION 1u
#define SNAP_DATA_OFFSET 4096ull

struct snap_header {
	char magic[8];      /* SNAP_MAGIC, not NUL-terminated */
	uint32_t version;   /* SNAP_VERSION */
	uint32_t page_size; /* 4096 */
	uint64_t ram_size;  /* bytes of RAM that follow the header */
	uint64_t data_gpa;  /* first byte of the pattern area */
	uint32_t nvcpu;     /* vCPUs that wrote it (information) */
	uint32_t reserved0;
	uint64_t taken_ns;  /* CLOCK_REALTIME when the protection was applied (information) */
	uint64_t reserved[4];
};

#endif
