//! The load generator: gRPC clients over a few multiplexed HTTP/2
//! connections, a closed loop (fixed concurrency, for throughput), an open
//! loop (fixed rate, for latency without coordinated omission), and holders
//! of idle connections and streams (for memory). The loops repeat any
//! [`Caller`]'s call.

mod caller;
mod client;
mod closed;
mod idle;
mod open;
mod recorder;

pub use caller::{Caller, Failure};
pub use client::{Client, channel, connect_many, echo_calls, probe, request};
pub use closed::closed_loop;
pub use idle::{hold_connections, hold_streams};
pub use open::{open_loop, open_loop_paired};
pub use recorder::{Latency, LoadResult};
