// swift-tools-version: 6.1
// metricsd — a single-binary time-series metrics daemon that speaks the InfluxDB line protocol.
//
// Dependencies flow one way: LineProtocol ← Rollups ← Export ← metricsd.
// Fuzzers (FuzzTesting/) and benchmarks (Benchmarks/) are separate packages so they never slow the normal build.
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "metricsd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "metricsd", targets: ["metricsd"]),
        .library(name: "LineProtocol", targets: ["LineProtocol"]),
        .library(name: "Rollups", targets: ["Rollups"]),
        .library(name: "Export", targets: ["Export"]),
        .library(name: "Query", targets: ["Query"]),
        .library(name: "InfluxQL", targets: ["InfluxQL"]),
        .library(name: "Ingest", targets: ["Ingest"]),
        .library(name: "ClickHouse", targets: ["ClickHouse"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // Wire formats, no I/O: line-protocol decoder and encoder.
        .target(name: "LineProtocol", exclude: ["README.md"], swiftSettings: strictSettings),
        // InfluxQL: tokens → AST → plan → rows read from any `CellSource` (no I/O of its own, no HTTP, no NIO).
        .target(
            name: "InfluxQL", dependencies: ["LineProtocol", "Rollups", "CRE2"], exclude: ["README.md"],
            swiftSettings: strictSettings),
        // Event analytics: funnels, retention cohorts, experiments over an in-memory event index.
        .target(name: "Query", dependencies: ["LineProtocol"], exclude: ["README.md"], swiftSettings: strictSettings),
        // The pages under /ui/, compiled in (no bundle files to ship, nothing fetched when viewed).
        .target(name: "UI", exclude: ["README.md"], swiftSettings: strictSettings),
        // What each HTTP route accepts, no I/O: form decoding, times, durations, validated parameters (fuzzed).
        .target(
            name: "API", dependencies: ["LineProtocol", "Rollups", "InfluxQL", "Query"], exclude: ["README.md"],
            swiftSettings: strictSettings),
        // RE2 (Debian's libre2) behind a C function or three: linear-time regex matching in Go's syntax, as InfluxDB.
        .target(name: "CRE2", linkerSettings: [.linkedLibrary("re2")]),
        // Aggregation, no I/O: mergeable per-bucket aggregates and sketches.
        .target(name: "Rollups", dependencies: ["LineProtocol"], exclude: ["README.md"], swiftSettings: strictSettings),
        // Where closed rollups go.
        .target(
            name: "Export",
            dependencies: [
                "Rollups", "LineProtocol", "CSQLite", "CCurl", "CZlib", "CDeflate",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Ingest",
            dependencies: [
                "LineProtocol", "Rollups", "Export", "Query", .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            exclude: ["README.md"],
            swiftSettings: strictSettings
        ),
        // Events in ClickHouse: the table, the forwarder from the events outbox, fleet-wide analytics as SQL.
        .target(
            name: "ClickHouse",
            dependencies: ["Export", "Query", "LineProtocol", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: strictSettings
        ),
        // System libraries: SQLite (the rollup store), zlib and libdeflate (gzip bodies), libcurl.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .executableTarget(
            name: "metricsd",
            dependencies: [
                "LineProtocol", "Rollups", "Export", "Ingest", "Query", "InfluxQL", "API", "CZlib", "ClickHouse", "UI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            exclude: ["README.md"],
            // MemberImportVisibility is left off here only: Foundation and Glibc both vend `timespec`, and with the
            // feature on the executable would have to import Dispatch's C module by name.
            swiftSettings: [
                .enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("InternalImportsByDefault"),
            ]
        ),
        // What the test suites share (seeded generators, temporary directories, free ports).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strictSettings),
        .testTarget(
            name: "LineProtocolTests",
            dependencies: ["LineProtocol", "TestSupport"],
            exclude: ["Fixtures"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "RollupsTests", dependencies: ["Rollups", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "QueryTests", dependencies: ["Query", "LineProtocol", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "InfluxQLTests", dependencies: ["InfluxQL", "Rollups", "Export", "LineProtocol"],
            exclude: ["Fixtures"], swiftSettings: strictSettings),
        .testTarget(
            name: "APITests", dependencies: ["API", "InfluxQL", "Query", "Rollups"], swiftSettings: strictSettings),
        .testTarget(
            name: "ExportTests",
            dependencies: [
                "Export", "Rollups", "LineProtocol", "TestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"], swiftSettings: strictSettings),
        .testTarget(
            name: "IngestTests", dependencies: ["Ingest", "Export", "Rollups", "LineProtocol"],
            swiftSettings: strictSettings),
        .testTarget(
            name: "ClickHouseTests",
            dependencies: [
                "ClickHouse", "Query", "Export", "TestSupport", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings),
        .testTarget(
            name: "metricsdTests",
            dependencies: [
                "LineProtocol", "Export", "API", "metricsd", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["influx_clients.py", "fake_influx.py"],
            swiftSettings: strictSettings
        ),
    ]
)

// Fuzzers and benchmarks stay out of the normal build: `make fuzz` and `make bench` set these variables and build
// into their own scratch folders.
if Context.environment["METRICSD_FUZZ"] != nil {
    package.targets.append(
        .executableTarget(
            name: "FuzzLineProtocol",
            dependencies: ["LineProtocol"],
            path: "FuzzTesting/Sources/FuzzLineProtocol"
        )
    )
    package.targets.append(
        .executableTarget(name: "FuzzInfluxQL", dependencies: ["InfluxQL"], path: "FuzzTesting/Sources/FuzzInfluxQL")
    )
    package.targets.append(
        .executableTarget(name: "FuzzEvents", dependencies: ["LineProtocol"], path: "FuzzTesting/Sources/FuzzEvents")
    )
    package.targets.append(
        .executableTarget(
            name: "FuzzHTTPParameters", dependencies: ["API", "InfluxQL", "Query"],
            path: "FuzzTesting/Sources/FuzzHTTPParameters")
    )
    // The daemon's Configuration.swift (a symbolic link), with the TOML library it uses.
    package.targets.append(
        .executableTarget(
            name: "FuzzConfig", dependencies: ["API", .product(name: "TOMLKit", package: "TOMLKit")],
            path: "FuzzTesting/Sources/FuzzConfig")
    )
}
if Context.environment["METRICSD_BENCH"] != nil {
    package.targets.append(
        .executableTarget(
            name: "ParseBench",
            dependencies: ["LineProtocol", "Rollups"],
            path: "Benchmarks/ParseBench"
        )
    )
    package.targets.append(
        .executableTarget(
            name: "StorageBench",
            dependencies: ["Export", "Rollups"],
            path: "Benchmarks/StorageBench"
        )
    )
}
