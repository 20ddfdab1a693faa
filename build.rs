//! Compiles the proto contract with protox (a pure-Rust protobuf compiler, so a machine with only
//! the Rust toolchain builds the project) and generates the tonic services. The encoded
//! descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/celeritas/v1/tasks.proto",
    "proto/celeritas/v1/workers.proto",
    "proto/celeritas/v1/inspect.proto",
    "proto/celeritas/v1/schedules.proto",
    "proto/celeritas/v1/files.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("celeritas_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The RPC `WorkerService.Connect` would clash with the generated `connect` constructor;
        // clients build their channels themselves.
        .build_transport(false)
        // Maps as BTreeMaps: they go on the wire in key order, so the same aggregate always
        // encodes (and reaches a client's JSON) the same way.
        .btree_map(".")
        // Undecodable messages answer INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::grpc::WireCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
