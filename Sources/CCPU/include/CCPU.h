#ifndef CCPU_H
#define CCPU_H
// What this CPU runs: the one detector of instruction-set features (cpuid, and whether the
// operating system saves the registers), asked by CKernels (which kernel table a rank may use)
// and CGemm (which bf16 engines and packing code may run). The choices themselves are made in
// Swift (Sources/Model/Compute.swift: InstructionSet.best, BF16Engine.fastest).
//
// Why a C target: Swift cannot run cpuid or xgetbv, and the answers must be the same for
// both C targets (a CPU that has AVX-512 for the kernels has it for the packing too).

#ifdef __cplusplus
extern "C" {
#endif
#pragma clang assume_nonnull begin

enum {
    /// AVX2 and FMA (Haswell, Zen and later), with the OS saving the ymm registers.
    BD_CPU_AVX2_FMA = 0,
    /// AVX-512 F, BW, DQ and VL (Skylake-X, Ice Lake, Zen 4 and later), with the OS saving the
    /// zmm and mask registers.
    BD_CPU_AVX512 = 1,
    /// AVX512-BF16 (`vdpbf16ps`; Cooper Lake, Sapphire Rapids and later Intel, Zen 4/5), with AVX-512.
    BD_CPU_AVX512_BF16 = 2,
    /// AMX-TILE and AMX-BF16 (`tdpbf16ps`; Sapphire Rapids and later Intel), with the OS's
    /// permission for this process to use the tile registers (asked of Linux once, on the first
    /// question).
    BD_CPU_AMX_BF16 = 3,
    BD_CPU_FEATURE_COUNT = 4,
};

/// 1 if this CPU, its operating system and this build run `feature` (0 for an unknown
/// feature). Computed once per feature; every thread gets the same answer.
int bd_cpu_has(int feature);

/// The CPU as this process sees it (cpuid; what a hypervisor or valgrind exposes): the vendor
/// string written to `vendor` ("AuthenticAMD", "GenuineIntel", or "" when unknown; 13 bytes
/// with the terminating zero) and the display family (e.g. 0x19 for AMD Zen 3/4, 6 for most
/// Intel cores).
void bd_cpu_vendor(char vendor[_Nonnull 13]);
int bd_cpu_family(void);

/// A spin-wait hint (x86 `pause`).
void bd_cpu_relax(void);

#pragma clang assume_nonnull end
#ifdef __cplusplus
}
#endif
#endif
