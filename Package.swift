// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way:
//   bert-dist, bert-dist-dev -> Startup -> Training -> Options -> {Distributed, Model -> Storage, Data -> Storage} -> C boundary
// Model knows nothing of MPI; Distributed knows flat Float buffers, not BERT.
// The numeric and hashing code is compiled with optimisation even in debug builds: `swift test`
// (a debug build) trains real models, and unoptimised Swift loops are ~20x slower.
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "bert-dist",
    products: [
        .executable(name: "bert-dist", targets: ["bert-dist"]),
        .executable(name: "bert-dist-dev", targets: ["bert-dist-dev"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The thin C boundary: system libraries found with pkg-config ...
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CProtobuf", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev", "protobuf-c-compiler"])]),
        // ... the MPI handles Swift cannot import (see CShims.h) ...
        .target(name: "CShims", dependencies: ["CMPI"]),
        // ... and the C code protoc-c generates from proto/*.proto (committed; see proto/README.md).
        .target(name: "CProto", dependencies: ["CProtobuf"]),

        // What this CPU runs: the one instruction-set detector (cpuid, xgetbv, AMX permission).
        .target(name: "CCPU"),
        // The one definition of fp32 -> bf16 rounding, for the products and the gradient compression.
        .target(name: "CBF16", cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // The model's vector kernels, compiled per instruction set and chosen at run time (see CKernels.h).
        .target(name: "CKernels", dependencies: ["CCPU", "CBF16"],
                cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // bf16 matrix products with fp32 accumulation (AMX, AVX512-BF16, an exact software engine).
        .target(name: "CGemm", dependencies: ["CCPU", "CBF16"],
                cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // Tensors in flat arenas, BLAS kernels, BERT forward/backward, AdamW, safetensors.
        .target(name: "Model", dependencies: ["CBLAS", "CCPU", "CKernels", "CGemm", "Storage"], swiftSettings: optimized),
        // WordPiece tokenizer, AG News / JSONL readers, sampler, token cache, download.
        .target(name: "Data", dependencies: ["Storage"], swiftSettings: optimized),
        // Communicator (MPI, in-process group), gradient buckets, optimizer sharding.
        .target(name: "Distributed", dependencies: ["CShims", "CBF16"], swiftSettings: optimized),
        // Durable files: atomic writes, SHA-256, CRC32C, trainer_state.pb, TensorBoard events.
        .target(name: "Storage", dependencies: ["CProto"], swiftSettings: optimized),
        // Every command-line option, declared once (default and help) in its group: the values
        // Training reads as parsed.
        .target(name: "Options", dependencies: [
            "Model", "Data", "Distributed", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The training loop, the run's setup, checkpoints, resume, merge, eval, predict, reports.
        .target(name: "Training", dependencies: ["Model", "Data", "Distributed", "Storage", "Options"], swiftSettings: optimized),
        // What every executable does around its commands: the environment (read once), OpenBLAS at
        // start-up, MPI ranks started and stopped, errors as one line, launch/train's query.
        .target(name: "Startup", dependencies: [
            "Training", "Options", "Model", "Data", "Distributed", "Storage", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The shipped command line: the user's commands only.
        .executableTarget(name: "bert-dist", dependencies: [
            "Startup", "Training", "Options", "Model", "Data",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Development tools, not shipped: communication checks and timings, the fault-test soak,
        // the bench with probes, the tokenizer bench (benchmarks/README.md).
        .executableTarget(name: "bert-dist-dev", dependencies: [
            "Startup", "Training", "Options", "Model", "Data", "Distributed",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Helpers shared by the test targets (temporary folders, programs, tmpfs mounts).
        .target(name: "TestSupport", dependencies: ["Storage"], path: "Tests/TestSupport"),
        .testTarget(name: "CGemmTests", dependencies: ["CGemm", "CBF16"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "CCPU", "CBF16", "CGemm", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "DataTests", dependencies: ["Data", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "DistributedTests", dependencies: ["Distributed"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Options", "Model", "Data", "Distributed", "Storage", "TestSupport"]),
        // Damaged and hostile files (model folders, checkpoints, tokenizers, data) fed to the loaders in-process.
        .testTarget(name: "FuzzTests", dependencies: ["Training", "Options", "Model", "Data", "Storage", "TestSupport"], exclude: ["Fixtures"]),
        // Runs the built bert-dist binary (alone and under mpirun) as a user would, and bert-dist-dev
        // for the communication checks and the fault tests' soak; the cluster and Slurm tests run
        // them on the namespace cluster (Tests/Cluster/cluster.sh) and a local Slurm. Help/ holds
        // the committed `--help` of every command, Fixtures/ the AG News rows of the family tests.
        .testTarget(name: "EndToEndTests", dependencies: ["bert-dist", "bert-dist-dev", "Data", "Model", "Storage", "TestSupport"],
                    exclude: ["Help", "Fixtures"]),
    ]
)
