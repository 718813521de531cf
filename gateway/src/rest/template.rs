//! `google.api.http` path templates: parsing them from the contracts and
//! matching request paths against them.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;   Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;   Verb = ":" LITERAL ;
//! ```
//!
//! Written here because no maintained Rust crate parses this grammar (grpc-gateway's
//! `runtime/pattern.go` and Envoy's `path_matcher` are Go and C++). A single-segment
//! variable is percent-decoded in full; a multi-segment one keeps `%2F`, as the
//! googleapis rules say.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: the rest of the path (zero or more segments); only last.
    Rest,
}

/// A variable: the field it sets and the segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dotted proto field path, `product_id` or `sub.name`.
    pub field_path: String,
    start: usize,
    end: usize,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// Why a template in a contract cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template '{template}': {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

/// Longest path (in bytes) and most segments a request may have: matching is
/// linear in both, and nothing legitimate comes close.
const MAX_PATH_BYTES: usize = 8 * 1024;
const MAX_SEGMENTS: usize = 64;

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let fail = |reason| TemplateError {
            template: text.to_string(),
            reason,
        };
        let body = text.strip_prefix('/').ok_or_else(|| fail("must start with '/'"))?;
        // The verb is after the last ':' that is outside any variable.
        let (body, verb) = split_verb(body);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}', '*'])) {
            return Err(fail("the verb after ':' must be a literal"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = body;
        while !rest.is_empty() || segments.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| fail("a '{' is not closed"))?;
                let inner = &after[..close];
                if inner.contains('{') {
                    return Err(fail("a variable must not hold another variable"));
                }
                let (field_path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if !is_field_path(field_path) {
                    return Err(fail("a variable must name a field path such as 'product_id' or 'a.b'"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(segment(part).ok_or_else(|| fail("a segment is empty or holds '{'"))?);
                }
                variables.push(Variable {
                    field_path: field_path.to_string(),
                    start,
                    end: segments.len(),
                });
                rest = &after[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                segments.push(segment(&rest[..end]).ok_or_else(|| fail("a segment is empty or holds '{'"))?);
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some("") => return Err(fail("must not end with '/'")),
                Some(after) => rest = after,
                None if rest.is_empty() => break,
                None => return Err(fail("a variable must be a whole segment")),
            }
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(fail("'**' must be the last segment"));
        }
        Ok(PathTemplate {
            text: text.to_string(),
            segments,
            variables,
            verb: verb.map(str::to_string),
        })
    }

    /// The fields bound by the path, in template order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.variables.iter()
    }

    /// How specific the template is, so that `/v1/products:batchGet` wins
    /// over `/v1/{name=**}` when both match: literals first, then a verb,
    /// then fewer wildcards.
    pub fn specificity(&self) -> (usize, bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let wildcards = self.segments.len() - literals;
        (literals, self.verb.is_some(), usize::MAX - wildcards)
    }

    /// The variables' values when `path` (without the query) matches,
    /// percent-decoded. `None` when it does not match, or is not a path at
    /// all (bad percent-encoding, or longer than any route).
    pub fn matches(&self, path: &str) -> Option<Vec<(&str, String)>> {
        if path.len() > MAX_PATH_BYTES {
            return None;
        }
        let mut body = path.strip_prefix('/')?;
        if let Some(verb) = &self.verb {
            let (rest, found) = body.rsplit_once(':')?;
            if found != verb {
                return None;
            }
            body = rest;
        }
        let parts: Vec<&str> = body.split('/').take(MAX_SEGMENTS + 1).collect();
        if parts.len() > MAX_SEGMENTS {
            return None;
        }
        let rest_at = match self.segments.last() {
            Some(Segment::Rest) => Some(self.segments.len() - 1),
            _ => None,
        };
        match rest_at {
            Some(i) if parts.len() < i => return None,
            None if parts.len() != self.segments.len() => return None,
            _ => {}
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal != part => return None,
                Segment::One if part.is_empty() => return None,
                _ => {}
            }
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let end = if rest_at.is_some_and(|i| variable.end > i) {
                parts.len()
            } else {
                variable.end
            };
            let covered = parts.get(variable.start..end)?;
            let value = if covered.len() == 1 && end - variable.start == 1 && rest_at.is_none_or(|i| variable.start < i)
            {
                decode(covered[0], false)?
            } else {
                let decoded: Option<Vec<String>> = covered.iter().map(|p| decode(p, true)).collect();
                decoded?.join("/")
            };
            values.push((variable.field_path.as_str(), value));
        }
        Some(values)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `a/{b=c:d}/e:verb` into the path and the verb, ignoring ':'
/// inside braces.
fn split_verb(body: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut colon = None;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    }
}

fn segment(part: &str) -> Option<Segment> {
    match part {
        "" => None,
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        literal if literal.contains(['{', '}', '=']) => None,
        literal => Some(Segment::Literal(literal.to_string())),
    }
}

fn is_field_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').all(|ident| {
            ident.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Percent-decodes one segment; with `keep_slash`, `%2F` stays encoded.
/// `None` for an incomplete escape or bytes that are not UTF-8.
fn decode(part: &str, keep_slash: bool) -> Option<String> {
    if !part.contains('%') {
        return Some(part.to_string());
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if keep_slash && value == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(value);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        let t = PathTemplate::parse(template).expect("template parses");
        t.matches(path)
            .map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn vars(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn literals_and_single_variables() {
        assert_eq!(matched("/v1/products", "/v1/products"), vars(&[]));
        assert_eq!(matched("/v1/products", "/v1/products/x"), None);
        assert_eq!(
            matched("/v1/products/{product_id}", "/v1/products/p-1"),
            vars(&[("product_id", "p-1")])
        );
        assert_eq!(matched("/v1/products/{product_id}", "/v1/products/"), None);
        assert_eq!(
            matched(
                "/v1/users/{user_id}/cart/items/{product_id}",
                "/v1/users/me/cart/items/a%20b"
            ),
            vars(&[("user_id", "me"), ("product_id", "a b")])
        );
    }

    #[test]
    fn verbs() {
        assert_eq!(
            matched("/v1/users/{user_id}/cart:checkout", "/v1/users/u1/cart:checkout"),
            vars(&[("user_id", "u1")])
        );
        assert_eq!(matched("/v1/users/{user_id}/cart:checkout", "/v1/users/u1/cart"), None);
        assert_eq!(matched("/v1/products:batchGet", "/v1/products:batchGet"), vars(&[]));
        assert_eq!(matched("/v1/products:batchGet", "/v1/products:watch"), None);
    }

    #[test]
    fn wildcards_and_multi_segment_variables() {
        assert_eq!(
            matched("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b%2F2"),
            vars(&[("name", "shelves/s1/books/b%2F2")])
        );
        assert_eq!(matched("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books"), None);
        assert_eq!(
            matched("/v1/files/{path=**}", "/v1/files/a/b/c"),
            vars(&[("path", "a/b/c")])
        );
        assert_eq!(matched("/v1/files/{path=**}", "/v1/files"), vars(&[("path", "")]));
        assert_eq!(matched("/v1/*/items", "/v1/anything/items"), vars(&[]));
        assert_eq!(matched("/v1/**", "/v1/a/b"), vars(&[]));
        assert_eq!(
            matched("/v1/{a.b}/x:do", "/v1/one/x:do"),
            vars(&[("a.b", "one")]),
            "nested field paths"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (template, reason) in [
            ("v1/x", "must start with '/'"),
            ("/v1/{id", "a '{' is not closed"),
            ("/v1/{1id}", "a variable must name a field path"),
            ("/v1/**/x", "'**' must be the last segment"),
            ("/v1/x/", "must not end with '/'"),
            ("/v1/a{id}", "a segment is empty or holds '{'"),
            ("/v1/x:", "the verb after ':' must be a literal"),
            ("/v1/{a={b}}", "a variable must not hold another variable"),
        ] {
            let error = PathTemplate::parse(template).expect_err(template).to_string();
            assert!(error.contains(reason), "{template}: {error}");
        }
    }

    #[test]
    fn paths_that_are_not_paths_do_not_match() {
        assert_eq!(matched("/v1/{id}", "/v1/%zz"), None);
        assert_eq!(matched("/v1/{id}", "/v1/%ff"), None, "not UTF-8");
        assert_eq!(matched("/v1/{id}", "v1/x"), None);
        let long = format!("/v1/{}", "a/".repeat(100));
        assert_eq!(matched("/v1/**", &long), None);
    }

    #[test]
    fn specificity_prefers_literals() {
        let batch = PathTemplate::parse("/v1/products:batchGet").unwrap();
        let any = PathTemplate::parse("/v1/{name=**}").unwrap();
        assert!(batch.specificity() > any.specificity());
    }
}
