//! Compiles the .proto contracts with protox (a pure-Rust protobuf compiler), so that building tokumei
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "tokumei/ingest/v1/ingest.proto",
        "tokumei/spool/v1/spool.proto",
        "tokumei/policy/v1/policy.proto",
        "tokumei/release/v1/release.proto",
        "tokumei/analysis/v1/analysis.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    // The hospital-facing service decodes its requests through a codec that bounds their decoded size
    // (src/bounded.rs); the other services keep prost's codec. Each file is generated exactly once.
    let (ingest, rest): (Vec<_>, Vec<_>) = fds.file.into_iter().partition(|f| f.name() == protos[0]);
    let ingest = prost_types::FileDescriptorSet { file: ingest };
    let rest = prost_types::FileDescriptorSet { file: rest };
    configured()
        .codec_path("crate::bounded::BoundedCodec")
        .compile_fds(ingest)?;
    configured().compile_fds(rest)?;
    Ok(())
}

fn configured() -> tonic_prost_build::Builder {
    tonic_prost_build::configure()
        // The command line prints the policy service's answers as JSON (`--json`) exactly as they came: clients
        // hold no domain records of their own.
        .type_attribute(".tokumei.policy.v1", "#[derive(serde::Serialize)]")
        // These messages carry direct identifiers: their Debug is written by hand and redacts them.
        .skip_debug([
            "tokumei.ingest.v1.PatientRecord",
            "tokumei.ingest.v1.Insurance",
            "tokumei.ingest.v1.PatientRequest",
            // Passwords, codes and session tokens.
            "tokumei.policy.v1.LoginRequest",
            "tokumei.policy.v1.LoginResponse",
            "tokumei.policy.v1.EnrolRequest",
            "tokumei.policy.v1.EnrolResponse",
            "tokumei.policy.v1.ConfirmTotpRequest",
            "tokumei.policy.v1.ConfirmTotpResponse",
            "tokumei.policy.v1.AddUserResponse",
            // Linkage keys of an erasure, and the orders that carry them.
            "tokumei.policy.v1.EraseOperation",
            "tokumei.policy.v1.SignedCoreOrder",
            // One-time download tokens.
            "tokumei.release.v1.RequestDownloadResponse",
        ])
}
