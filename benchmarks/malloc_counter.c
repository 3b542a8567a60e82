// Counts heap allocations and memory mappings of a process, for checking that a training step
// allocates nothing after warm-up. benchmarks/check_allocations.sh builds and preloads it:
//
//   cc -O2 -shared -fPIC -o /tmp/malloc_counter.so benchmarks/malloc_counter.c -ldl
//   LD_PRELOAD=/tmp/malloc_counter.so bert-dist bench ...
//
// `bert-dist bench` looks the counters up (dlsym) and, when they are there, reports the
// allocations of each timed step. With BERT_DIST_ALLOCATION_BACKTRACES=1 it also prints to
// stderr a backtrace of every allocation of the last timed step (symbolise the bert-dist(+0x...)
// offsets with addr2line -f -C -e .build/release/bert-dist). Every malloc-family call is
// forwarded to glibc's own implementation (__libc_*); mmap to the next definition (glibc's).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_long allocations;
static atomic_long mappings;
static atomic_int tracing;
static __thread int inside_trace;

long bert_dist_heap_allocations(void) { return atomic_load(&allocations); }
long bert_dist_memory_mappings(void) { return atomic_load(&mappings); }
void bert_dist_allocation_backtraces(int on) {
    static int wanted = -1;
    if (wanted < 0) { const char *v = getenv("BERT_DIST_ALLOCATION_BACKTRACES"); wanted = v && v[0] == '1'; }
    atomic_store(&tracing, on && wanted);
}

static void counted(void) {
    atomic_fetch_add(&allocations, 1);
    if (atomic_load(&tracing) && !inside_trace) {
        inside_trace = 1;   // backtrace() may allocate on its first call
        void *frames[16];
        int count = backtrace(frames, 16);
        backtrace_symbols_fd(frames, count, 2);
        (void)!write(2, "----\n", 5);
        inside_trace = 0;
    }
}

void *malloc(size_t size) { counted(); return __libc_malloc(size); }
void *calloc(size_t count, size_t size) { counted(); return __libc_calloc(count, size); }
void *realloc(void *pointer, size_t size) { counted(); return __libc_realloc(pointer, size); }
void *memalign(size_t alignment, size_t size) { counted(); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { counted(); return __libc_memalign(alignment, size); }
int posix_memalign(void **out, size_t alignment, size_t size) {
    counted();
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer) return 12;   // ENOMEM
    *out = pointer;
    return 0;
}
void free(void *pointer) { __libc_free(pointer); }

void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    static void *(*next)(void *, size_t, int, int, int, off_t);
    if (!next) next = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    if (flags & MAP_ANONYMOUS) atomic_fetch_add(&mappings, 1);
    return next(address, length, protection, flags, fd, offset);
}
