//! Mapping a SPIFFE ID back to a workload name in our trust domain.

/// `name` for `spiffe://<trust_domain>/service/<name>`; `None` for any other
/// trust domain or path shape.
pub fn workload_of<'a>(spiffe_id: &'a str, trust_domain: &str) -> Option<&'a str> {
    let name = spiffe_id
        .strip_prefix("spiffe://")?
        .strip_prefix(trust_domain)?
        .strip_prefix("/service/")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_our_trust_domain() {
        assert_eq!(
            workload_of("spiffe://mesh.local/service/cart", "mesh.local"),
            Some("cart")
        );
    }

    #[test]
    fn refuses_everything_else() {
        for id in [
            "spiffe://other.local/service/cart",
            "spiffe://mesh.local.evil/service/cart",
            "spiffe://mesh.local/service/",
            "spiffe://mesh.local/service/a/b",
            "spiffe://mesh.local/ns/cart",
            "spiffe://mesh.localservice/cart",
            "https://mesh.local/service/cart",
            "",
        ] {
            assert_eq!(workload_of(id, "mesh.local"), None, "{id}");
        }
    }
}
