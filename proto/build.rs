//! Compiles the contracts with protox (a protobuf compiler in pure Rust, so no
//! `protoc` is needed on the machine) and generates tonic clients and servers.
//! The encoded descriptor set is kept too: reflection and routing read it.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

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

    let descriptors = protox::compile(PROTOS, ["."]).map_err(io::Error::other)?;
    fs::write(out_dir.join("descriptors.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)
}
