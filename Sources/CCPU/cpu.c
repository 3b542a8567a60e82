// The detector of CCPU.h: cpuid for what the CPU has, xgetbv for what the OS saves, and for
// AMX Linux's per-process permission.
#include <string.h>
#include "include/CCPU.h"
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__)
enum { EAX = 0, EBX = 1, ECX = 2, EDX = 3 };

/// Bit `bit` of register `reg` of cpuid leaf `leaf`, subleaf `subleaf` (0 if the leaf is absent).
static int cpuid_bit(unsigned leaf, unsigned subleaf, int reg, int bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, subleaf, &r[EAX], &r[EBX], &r[ECX], &r[EDX])) return 0;
    return (r[reg] >> bit) & 1;
}

/// The register state the OS saves on a context switch (XCR0), 0 without OSXSAVE: without it the
/// instructions fault even where cpuid lists them.
static unsigned os_saved_state(void) {
    if (!cpuid_bit(1, 0, ECX, 27)) return 0;   // OSXSAVE
    unsigned low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return low;
}

static int os_saves_ymm(void) {
    return cpuid_bit(1, 0, ECX, 28) && (os_saved_state() & 0x6) == 0x6;     // AVX; SSE and AVX state
}

static int os_saves_zmm(void) {
    return os_saves_ymm() && (os_saved_state() & 0xe0) == 0xe0;             // opmask, ZMM0-15 upper, ZMM16-31
}

static int avx512(void) {
    return os_saves_zmm()
        && cpuid_bit(7, 0, EBX, 16) && cpuid_bit(7, 0, EBX, 17)     // AVX512F, AVX512DQ
        && cpuid_bit(7, 0, EBX, 30) && cpuid_bit(7, 0, EBX, 31);    // AVX512BW, AVX512VL
}

/// Linux (>= 5.16) hands out the 8 KB tile state per process on request.
static int amx_permitted(void) {
#if defined(__linux__)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

static int detect(int feature) {
    switch (feature) {
    case BD_CPU_AVX2_FMA:
        return os_saves_ymm() && cpuid_bit(7, 0, EBX, 5) && cpuid_bit(1, 0, ECX, 12);   // AVX2, FMA
    case BD_CPU_AVX512:
        return avx512();
    case BD_CPU_AVX512_BF16:
        return avx512() && cpuid_bit(7, 1, EAX, 5);                                      // AVX512_BF16
    case BD_CPU_AMX_BF16:
        return cpuid_bit(7, 0, EDX, 24) && cpuid_bit(7, 0, EDX, 22)                      // AMX-TILE, AMX-BF16
            && os_saves_zmm() && amx_permitted();
    default:
        return 0;
    }
}
#endif

int bd_cpu_has(int feature) {
    static _Atomic int known[BD_CPU_FEATURE_COUNT] = {-1, -1, -1, -1};   // every thread computes the same answer
    if (feature < 0 || feature >= BD_CPU_FEATURE_COUNT) return 0;
    if (known[feature] < 0) {
#if defined(__x86_64__)
        known[feature] = detect(feature);
#else
        known[feature] = 0;
#endif
    }
    return known[feature];
}

void bd_cpu_vendor(char vendor[13]) {
    memset(vendor, 0, 13);
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
    }
#endif
}

int bd_cpu_family(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned family = (a >> 8) & 0xf;
    return (int)(family == 0xf ? family + ((a >> 20) & 0xff) : family);
#else
    return 0;
#endif
}

void bd_cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}
