//! The Meshwork gateway: the mesh's edge. One port speaks REST/JSON
//! (transcoded from each method's `google.api.http` rule in the contract
//! registry), gRPC-Web and gRPC, over HTTP/1.1 and HTTP/2. It verifies the
//! end user's token, sends the verified user into the mesh, and reaches the
//! services through its own sidecar's outbound port (mTLS, deadlines, safe
//! retries, balancing and tracing all happen there).

pub mod auth;
#[doc(hidden)]
pub mod fuzzing;
