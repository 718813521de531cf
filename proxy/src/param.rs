//! `Param`: how a layer reads what it needs from the target it is built for
//! (a connection's caller, a destination's address or identity) without
//! knowing the target's type, so layers never depend on each other
//! (linkerd2-proxy's pattern).

pub trait Param<T> {
    fn param(&self) -> T;
}
