//! Compiles `proto/keygate/v1/*.proto` with the pure-Rust `protox` compiler, so a
//! fresh machine needs no `protoc`, and writes the descriptor set beside the
//! generated code for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds migrations/ at compile time; a changed file
    // must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let mut protos = Vec::new();
    for entry in std::fs::read_dir("proto/keygate/v1")? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "proto")
        {
            protos.push(path);
        }
    }
    protos.sort();

    let descriptors = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("keygate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps: deterministic output, and no hashing on the hot path.
        .btree_map(".")
        // Messages that carry a token get a hand-written, redacting Debug.
        .skip_debug([
            "keygate.v1.AuthorizeRequest",
            "keygate.v1.CreateKeyResponse",
            "keygate.v1.RotateKeyResponse",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
