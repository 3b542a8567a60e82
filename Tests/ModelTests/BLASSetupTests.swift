import Testing
@testable import Model

/// Which OpenBLAS kernel set start-up asks for (BLASSetup.preferredCoreType), and that the
/// kernels in use pass the self-test.
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

    @Test func kernelsInUsePassTheSelfTest() throws {
        try BLASSetup.selfTest()
    }
}
