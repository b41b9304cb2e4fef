/**
 * @file vmwkvm/common.h
 * @brief Conventions shared by every libvmwkvm header: export macro, errors, logging, version.
 *
 * Error convention: every function that returns `int` returns 0 or a positive value on
 * success and a negative errno value (for example `-EINVAL`) on failure. Functions that
 * return a pointer return NULL on failure and set `errno`. The library never prints,
 * never exits and never aborts on bad input; it reports through the log callback
 * (vmwkvm_set_log()).
 *
 * Thread-safety: stated on each function. "Exit path" functions (decode, complete) are
 * safe to call concurrently for different vCPUs and take no global lock.
 */
#ifndef VMWKVM_COMMON_H
#define VMWKVM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <vmwkvm/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks a function exported from libvmwkvm.so (everything else is hidden). */
#if defined(VMWKVM_BUILDING) && defined(__GNUC__)
#define VMWKVM_API __attribute__((visibility("default")))
#else
#define VMWKVM_API
#endif

/** Severity of a log message. */
enum vmwkvm_log_level {
	VMWKVM_LOG_ERROR = 0, /**< an operation failed; the return value says how */
	VMWKVM_LOG_WARN = 1,  /**< something the VMM should know: a refused guest request, a fallback */
	VMWKVM_LOG_INFO = 2,  /**< one-time facts: dialect chosen, mechanism in force */
	VMWKVM_LOG_DEBUG = 3, /**< per-call detail; never emitted unless asked for */
};

/**
 * Log callback.
 * @param level severity (enum vmwkvm_log_level)
 * @param msg   NUL-terminated message without a trailing newline; valid only during the call
 * @param ctx   the pointer given to vmwkvm_set_log()
 */
typedef void (*vmwkvm_log_fn)(int level, const char *msg, void *ctx);

/**
 * Install the process-wide log callback.
 *
 * Messages above @p max_level are dropped before they are formatted. With @p fn NULL
 * (the default) the library stays silent.
 * @param fn        callback, or NULL for silence
 * @param ctx       passed back to @p fn
 * @param max_level most verbose level delivered (enum vmwkvm_log_level)
 * @return 0, or -EINVAL if @p max_level is not a valid level.
 * @par Thread-safety
 * Safe to call at any time; a message being delivered concurrently may still reach the
 * previous callback. Callbacks may be invoked from any thread that calls the library, and
 * possibly while the library holds one of its internal locks: a callback must not call
 * back into libvmwkvm (copy the message and return).
 */
VMWKVM_API int vmwkvm_set_log(vmwkvm_log_fn fn, void *ctx, int max_level);

/**
 * Run-time library version.
 * @return VMWKVM_VERSION_HEX of the library actually loaded (0xMMmmpp); never fails.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API uint32_t vmwkvm_version(void);

/**
 * Run-time library version as a string ("MAJOR.MINOR.PATCH").
 * @return a static string; never NULL.
 * @par Thread-safety
 * Safe.
 */
VMWKVM_API const char *vmwkvm_version_string(void);

/**
 * Describe a return value of this library.
 * @param err a negative errno returned by a libvmwkvm function (positive values are
 *            accepted too)
 * @return a static string describing the error in the context of this library; never NULL.
 * @par Thread-safety
 * Safe (does not use strerror()'s shared buffer).
 */
VMWKVM_API const char *vmwkvm_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* VMWKVM_COMMON_H */
