/*
 * Helpers shared by the parts of vmwkvm-bench-memfault (bench_memfault.c: fault round trip
 * and protection; bench_snapshot.c: lazy snapshot throughput and the writer's rate).
 */
#ifndef VMWKVM_BENCH_MEMFAULT_H
#define VMWKVM_BENCH_MEMFAULT_H

#include <vmwkvm/vmwkvm.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG 4096ul
#define GPA_DATA 0x100000ul

extern unsigned opt_mib;

double now_ns(void);
double median(double *v, unsigned n);
_Noreturn void die(const char *what, int err);
/* Private anonymous memory; thp false: 4 KiB pages (MADV_NOHUGEPAGE), true: MADV_HUGEPAGE. */
uint8_t *anon_mem(size_t len, bool populate, bool thp);
/* A dispatcher with one region and one WRITE handler range over [buf, buf+len) at GPA_DATA. */
vmwkvm_memfault *lib_start(uint8_t *buf, size_t len, vmwkvm_mf_handler fn, void *ctx, bool protect, bool service);

/* Lazy snapshot benchmarks (bench_snapshot.c). */
struct snap_cfg {
	unsigned threads;     /* saver threads (the calling thread is one of them) */
	unsigned batch_pages; /* pages per saver batch: one unprotect call each */
	unsigned runs;        /* repetitions (medians are printed) */
	bool thp;             /* also run with THP-backed RAM */
	bool fork_ref;        /* also run the fork() reference (the kernel copies before write) */
	bool pin_writer;      /* the writer and the fault service share one CPU */
	bool own_copy;        /* savers copy with the bench's streaming copy, not vmwkvm_memfault_save() */
};
/* Runs and prints the detail lines; the summary lines (`name base_.. lib_.. ratio=..`) go to
 * summary. Returns 0, or -EIO if a snapshot differed from memory. */
int bench_snapshot_all(const struct snap_cfg *cfg, char *summary, size_t summary_len);

#endif
