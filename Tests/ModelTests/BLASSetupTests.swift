import Testing
@testable import Model

/// Which OpenBLAS kernel set start-up asks for (BLASSetup.preferredCoreType), the note on a
/// narrower one the user set, and that the kernels in use pass the self-test.
@Suite struct BLASSetupTests {
    typealias CPU = BLASSetup.CPU

    @Test func zen4GetsTheMeasuredHaswellKernels() {
        let zen4 = CPU(vendor: "AuthenticAMD", family: 0x19, vectorLevel: 3)
        #expect(BLASSetup.preferredCoreType(detected: "Cooperlake", cpu: zen4) == "Haswell")
        #expect(BLASSetup.preferredCoreType(detected: "Prescott", cpu: zen4) == "Haswell")
        #expect(BLASSetup.preferredCoreType(detected: "Haswell", cpu: zen4) == nil)
        // Zen 3 (no AVX-512): OpenBLAS's own Zen choice stands.
        #expect(BLASSetup.preferredCoreType(detected: "Zen", cpu: CPU(vendor: "AuthenticAMD", family: 0x19, vectorLevel: 2)) == nil)
    }

    @Test func weakerThanTheCPUGetsTheWidestKernels() {
        let intelAVX512 = CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 3)
        #expect(BLASSetup.preferredCoreType(detected: "Prescott", cpu: intelAVX512) == "SkylakeX")
        #expect(BLASSetup.preferredCoreType(detected: "Haswell", cpu: intelAVX512) == "SkylakeX")
        #expect(BLASSetup.preferredCoreType(detected: "SkylakeX", cpu: intelAVX512) == nil)
        #expect(BLASSetup.preferredCoreType(detected: "SapphireRapids", cpu: intelAVX512) == nil)
        let avx2 = CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 2)
        #expect(BLASSetup.preferredCoreType(detected: "Prescott", cpu: avx2) == "Haswell")
        #expect(BLASSetup.preferredCoreType(detected: "Haswell", cpu: avx2) == nil)
        // A name we do not know is left alone, and so is a CPU without AVX2.
        #expect(BLASSetup.preferredCoreType(detected: "SomethingNew", cpu: avx2) == nil)
        #expect(BLASSetup.preferredCoreType(detected: "Prescott", cpu: CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 0)) == nil)
    }

    /// A user's OPENBLAS_CORETYPE stands, with a note when it is narrower than the kernels
    /// bert-dist would choose; never on Zen 4 for Haswell (bert-dist's own choice there).
    @Test func aNarrowerUserChoiceGetsANote() {
        let zen4 = CPU(vendor: "AuthenticAMD", family: 0x19, vectorLevel: 3)
        let zen5 = CPU(vendor: "AuthenticAMD", family: 0x1A, vectorLevel: 3)
        let intelAVX512 = CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 3)
        let avx2 = CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 2)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Haswell", cpu: zen4) == nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "SkylakeX", cpu: zen4) == nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Prescott", cpu: zen4)?.contains("OPENBLAS_CORETYPE=Prescott in the environment selects OpenBLAS's SSE kernels on a CPU that runs AVX2 ones") == true)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Haswell", cpu: zen5)?.contains("selects OpenBLAS's AVX2 kernels on a CPU that runs AVX-512 ones") == true)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "haswell", cpu: intelAVX512) != nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Cooperlake", cpu: zen5) == nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Haswell", cpu: avx2) == nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Sandybridge", cpu: avx2)?.contains("AVX kernels on a CPU that runs AVX2 ones") == true)
        // A name we do not know, and a CPU without AVX2, get no note.
        #expect(BLASSetup.narrowCoreTypeNote(requested: "SomethingNew", cpu: zen5) == nil)
        #expect(BLASSetup.narrowCoreTypeNote(requested: "Prescott", cpu: CPU(vendor: "GenuineIntel", family: 6, vectorLevel: 1)) == nil)
    }

    @Test func kernelsInUsePassTheSelfTest() throws {
        try BLASSetup.selfTest()
    }
}
