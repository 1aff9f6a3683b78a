/*
 * Preloaded into Debian 12's User-Mode Linux (6.1) by scripts/uml, so that
 * it boots on a host whose XSAVE area is larger than its own (AVX-512 or
 * AMX: the kernel's ptrace wants the whole area, whatever the caller's
 * buffer).
 *
 * UML 6.1 saves and restores each guest thread's floating-point state with
 * PTRACE_GETREGSET / PTRACE_SETREGSET (NT_X86_XSTATE) into a buffer of
 * sizeof(struct _xstate), 832 bytes: x87, SSE and AVX. Linux's
 * xstateregs_set refuses any size but the host's full one with EFAULT, and
 * UML panics at its first guest process ("ptrace set fp regs failed,
 * errno = 14"). Newer UML asks the host for the size (host_fp_size).
 *
 * This wraps ptrace(): for each buffer UML uses (one per guest thread, in
 * its task), it keeps a full-size copy beside it. A get fills the copy and
 * gives UML its part; a set merges UML's part into the copy and sets the
 * whole. The components past UML's part (AVX-512, PKRU, AMX) are thus saved
 * and restored per guest thread, as on a host where UML's size is the full
 * one. (A new task whose buffer once belonged to a task now gone starts
 * with that task's upper state: registers the ABI lets a call clobber, and
 * PKRU, which nothing in the guest changes. Copies are never freed: a few
 * KiB per task struct UML ever used.) Every other ptrace request goes
 * through untouched.
 *
 * Build: cc -shared -fPIC -O2 -o uml-xstate.so uml-xstate.c -ldl
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE 0x202
/* The XSAVE header: xstate_bv at 512, xcomp_bv at 520, 64 bytes in all. */
#define XSTATE_BV 512
#define XSAVE_HEADER_END 576
#define PROBE_SIZE (64 * 1024)
#define BUCKETS 4096

typedef long (*ptrace_fn)(enum __ptrace_request, ...);

struct copy {
	const void *key; /* UML's buffer */
	struct copy *next;
	int filled; /* buf holds a state read from the host */
	unsigned char buf[];
};

static ptrace_fn real_ptrace;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t full; /* the host's size; 0 until probed */
static struct copy *table[BUCKETS];

static long call_real(enum __ptrace_request req, pid_t pid, void *addr, void *data)
{
	if (!real_ptrace)
		real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	return real_ptrace(req, pid, addr, data);
}

/* The components that lie wholly within UML's first `len` bytes (asked of
 * CPUID once: in a virtual machine each CPUID is a trip to the hypervisor). */
static uint64_t within(size_t len)
{
	static size_t known_len;
	static uint64_t known;
	unsigned int a, b, c, d;
	uint64_t mask = 0x3; /* x87 and SSE: the legacy area */
	if (len == known_len)
		return known;
	if (len < XSAVE_HEADER_END)
		return 0;
	for (unsigned int i = 2; i < 63; i++) {
		if (!__get_cpuid_count(0xd, i, &a, &b, &c, &d) || a == 0)
			continue;
		if ((c & 1) == 0 /* a user component */ && (size_t)b + a <= len)
			mask |= 1ULL << i;
	}
	known_len = len;
	known = mask;
	return mask;
}

static uint64_t bv_of(const unsigned char *buf)
{
	uint64_t bv;
	memcpy(&bv, buf + XSTATE_BV, sizeof bv);
	return bv;
}

static void set_bv(unsigned char *buf, uint64_t bv)
{
	memcpy(buf + XSTATE_BV, &bv, sizeof bv);
}

static struct copy *copy_for(const void *key)
{
	size_t h = ((uintptr_t)key >> 4) % BUCKETS;
	for (struct copy *c = table[h]; c; c = c->next)
		if (c->key == key)
			return c;
	struct copy *c = calloc(1, sizeof *c + full);
	if (!c)
		return NULL;
	c->key = key;
	c->next = table[h];
	table[h] = c;
	return c;
}

static long get_full(pid_t pid, unsigned char *buf)
{
	struct iovec iov = { .iov_base = buf, .iov_len = full };
	return call_real(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov);
}

static long xstate(enum __ptrace_request req, pid_t pid, struct iovec *uml)
{
	if (!full) {
		unsigned char *probe = malloc(PROBE_SIZE);
		struct iovec iov = { .iov_base = probe, .iov_len = PROBE_SIZE };
		if (!probe)
			return call_real(req, pid, (void *)NT_X86_XSTATE, uml);
		long r = call_real(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov);
		free(probe);
		if (r < 0)
			return r;
		full = iov.iov_len;
	}
	size_t len = uml->iov_len;
	if (len >= full || len < XSAVE_HEADER_END)
		return call_real(req, pid, (void *)NT_X86_XSTATE, uml);
	uint64_t ours = within(len);
	struct copy *c = copy_for(uml->iov_base);
	if (!c) {
		errno = ENOMEM;
		return -1;
	}
	if (req == PTRACE_GETREGSET) {
		long r = get_full(pid, c->buf);
		if (r < 0)
			return r;
		c->filled = 1;
		memcpy(uml->iov_base, c->buf, len);
		/* UML's part says nothing of what it does not hold. */
		set_bv(uml->iov_base, bv_of(c->buf) & ours);
		return 0;
	}
	/* A set from a buffer never read here (UML's initial registers, a new
	 * task): the rest is the thread's state as it stands. */
	if (!c->filled) {
		if (get_full(pid, c->buf) < 0)
			return -1;
		c->filled = 1;
	}
	uint64_t rest = bv_of(c->buf) & ~ours;
	memcpy(c->buf, uml->iov_base, len);
	set_bv(c->buf, (bv_of(uml->iov_base) & ours) | rest);
	struct iovec iov = { .iov_base = c->buf, .iov_len = full };
	return call_real(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &iov);
}

long ptrace(enum __ptrace_request req, ...)
{
	va_list ap;
	va_start(ap, req);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);
	if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) &&
	    (uintptr_t)addr == NT_X86_XSTATE && data) {
		pthread_mutex_lock(&lock);
		int saved = errno;
		errno = 0;
		long r = xstate(req, pid, data);
		if (r >= 0)
			errno = saved;
		pthread_mutex_unlock(&lock);
		return r;
	}
	return call_real(req, pid, addr, data);
}
