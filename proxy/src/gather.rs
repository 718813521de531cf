//! Keeping the data frames of a body read ahead (a request kept for replay,
//! a response held for its trailers) as one `Bytes`. The usual unary
//! message comes in one frame, which is kept as it came (no copy); only a
//! second frame makes a joined buffer.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct Gathered {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl Gathered {
    pub fn push(&mut self, chunk: Bytes) {
        // Clients often end a body with an empty DATA frame (END_STREAM):
        // it must not make a joined copy of the one frame that came before.
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        match (&self.first, &mut self.joined) {
            (None, _) => self.first = Some(chunk),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(self.len);
                joined.extend_from_slice(first);
                joined.extend_from_slice(&chunk);
                self.joined = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&chunk),
        }
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// What was gathered; `None` if no data came.
    pub fn into_bytes(self) -> Option<Bytes> {
        self.joined.map(BytesMut::freeze).or(self.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_is_kept_and_more_are_joined_without_empty_ones() {
        let one = Bytes::from_static(b"abc");
        let mut g = Gathered::default();
        g.push(one.clone());
        let kept = g.into_bytes().expect("data");
        assert_eq!(kept.as_ptr(), one.as_ptr(), "a single frame is not copied");

        let mut g = Gathered::default();
        g.push(one.clone());
        g.push(Bytes::new());
        let kept = g.into_bytes().expect("data");
        assert_eq!(kept.as_ptr(), one.as_ptr(), "an empty frame after it does not copy it");

        let mut g = Gathered::default();
        for part in [&b"ab"[..], b"", b"cd", b"e"] {
            g.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(g.len(), 5);
        assert_eq!(g.into_bytes(), Some(Bytes::from_static(b"abcde")));
        assert_eq!(Gathered::default().into_bytes(), None);
    }
}
