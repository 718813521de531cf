//! Hash maps on the request path. Their keys come from configuration (gRPC
//! methods and services, workload names) and every call looks its path or
//! authority up in several of them, so the hash's speed matters while
//! flooding cannot (no caller adds keys). foldhash hashes these short
//! strings several times faster than std's SipHash.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
