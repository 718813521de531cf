//! The Meshwork sidecar. Next to every app it runs three listeners:
//!
//! - **inbound** (mTLS, HTTP/2): peers' sidecars call here; the caller's
//!   SPIFFE ID is read from its certificate, the call is authorized against
//!   the mesh policy and forwarded to the app over plaintext HTTP/2.
//! - **outbound** (h2c on loopback): the app calls every peer through here;
//!   each call is routed by its gRPC service (or `:authority`) to the peer's
//!   inbound over shared mTLS HTTP/2, checking the peer's identity.
//! - **admin** (HTTP/1.1 on loopback): `/live`, `/ready`, `/metrics`.
//!
//! Each step of a request's way is one tower layer in its own module; the
//! stacks are composed in `inbound/stack.rs` and `outbound/stack.rs`.
//! Errors never escape as panics or bare HTTP errors: every failure becomes a
//! gRPC status the caller can read.

mod admin;
mod body;
mod connection;
mod error;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod gather;
mod grpc;
mod identity;
mod inbound;
mod keepalive;
mod map;
mod options;
mod outbound;
mod param;
mod pipe;
mod serve;
mod server;
mod shutdown;
mod sidecar;
mod telemetry;

pub use error::ProxyError;
pub use identity::IdentityError;
pub use options::{Settings, SidecarOptions};
/// Response extension: the attempts an outbound call took, when it was retried.
pub use outbound::Attempts;
pub use sidecar::{Listeners, bind, run, run_with_listeners};
