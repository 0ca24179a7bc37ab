//! Compiles the .proto contracts with protox (a pure-Rust protobuf compiler), so that building tokumei
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["tokumei/ingest/v1/ingest.proto", "tokumei/spool/v1/spool.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        // These messages carry direct identifiers: their Debug is written by hand and redacts them.
        .skip_debug([
            "tokumei.ingest.v1.PatientRecord",
            "tokumei.ingest.v1.Insurance",
            "tokumei.ingest.v1.PatientRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
