//! Compiles the contracts with protox (a protobuf compiler in pure Rust, so no
//! `protoc` is needed on the machine) and generates tonic clients and servers.
//! The encoded descriptor set is kept too: reflection and routing read it.

use std::{env, fs, io, path::PathBuf};

const PROTOS: &[&str] = &[
    "google/api/http.proto",
    "google/api/annotations.proto",
    "shop/common/v1/money.proto",
    "shop/users/v1/users.proto",
    "shop/catalog/v1/catalog.proto",
    "shop/cart/v1/cart.proto",
    "shop/payments/v1/payments.proto",
    "meshwork/echo/v1/echo.proto",
];

fn main() -> io::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let mut compiler = protox::Compiler::new(["."]).map_err(io::Error::other)?;
    compiler.include_imports(true).include_source_info(true);
    for proto in PROTOS {
        compiler.open_file(proto).map_err(io::Error::other)?;
    }
    // Encoded by protox itself, which keeps the options' extensions
    // (`google.api.http`) and the comments (descriptions at the edge).
    fs::write(out_dir.join("descriptors.bin"), compiler.encode_file_descriptor_set())?;
    let descriptors = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)
}
