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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        // Wire formats, no I/O: line-protocol decoder and encoder.
        .target(name: "LineProtocol", swiftSettings: strictSettings),
        // Aggregation, no I/O: mergeable per-bucket aggregates and sketches.
        .target(name: "Rollups", dependencies: ["LineProtocol"], swiftSettings: strictSettings),
        // Where closed rollups go.
        .target(name: "Export", dependencies: ["Rollups", "LineProtocol"], swiftSettings: strictSettings),
        .executableTarget(
            name: "metricsd",
            dependencies: [
                "LineProtocol", "Rollups", "Export",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "LineProtocolTests",
            dependencies: ["LineProtocol"],
            resources: [.copy("Fixtures")],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "RollupsTests", dependencies: ["Rollups"], swiftSettings: strictSettings),
        .testTarget(
            name: "metricsdTests",
            dependencies: ["LineProtocol"],
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
}
if Context.environment["METRICSD_BENCH"] != nil {
    package.targets.append(
        .executableTarget(
            name: "ParseBench",
            dependencies: ["LineProtocol"],
            path: "Benchmarks/ParseBench"
        )
    )
}
