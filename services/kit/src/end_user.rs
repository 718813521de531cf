//! The end user a call is made for, and the one rule every service applies to
//! it: a user reaches only their own data.
//!
//! The gateway verifies the user's token and sends the user id in
//! [`END_USER_HEADER`] (always overwriting what a client sent); inbound sidecars
//! let only mesh identities in, so the header can be trusted here. A call
//! without the header comes from a mesh workload acting on its own authority
//! (cart reading a user while adding to their cart, the back office refunding
//! an order): the mesh's allow rules govern those, and the call proceeds.

pub use meshwork_config::END_USER_HEADER;
use tonic::{Request, Status, metadata::MetadataMap};

/// The end user `request` is made for, if any (and if the header is readable).
pub fn end_user<T>(request: &Request<T>) -> Option<&str> {
    end_user_in(request.metadata())
}

/// [`end_user`] from a request's metadata (for handlers that took the request apart).
pub fn end_user_in(metadata: &MetadataMap) -> Option<&str> {
    metadata.get(END_USER_HEADER).and_then(|v| v.to_str().ok())
}

/// Lets the call proceed if it is made for no end user or for `owner_id`;
/// otherwise PERMISSION_DENIED "user <a> may not <what> of user <b>".
pub fn require_user<T>(request: &Request<T>, owner_id: &str, what: &str) -> Result<(), Status> {
    require_user_in(request.metadata(), owner_id, what)
}

/// [`require_user`] from a request's metadata.
pub fn require_user_in(metadata: &MetadataMap, owner_id: &str, what: &str) -> Result<(), Status> {
    let Some(value) = metadata.get(END_USER_HEADER) else {
        return Ok(());
    };
    // A header that is there but unreadable denies rather than falling back to
    // the workload's own authority.
    match value.to_str() {
        Ok(user) if user == owner_id => Ok(()),
        Ok(user) => Err(Status::permission_denied(format!(
            "user {user} may not {what} of user {owner_id}"
        ))),
        Err(_) => Err(Status::permission_denied(format!(
            "the {END_USER_HEADER} header is not readable text, so no user may {what} of user {owner_id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, metadata::MetadataValue};

    use super::*;

    fn for_user(user: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(END_USER_HEADER, user.parse().expect("ascii"));
        request
    }

    #[test]
    fn a_user_reaches_their_own_data_only() {
        let ann = for_user("ann");
        assert_eq!(end_user(&ann), Some("ann"));
        assert!(require_user(&ann, "ann", "read the cart").is_ok());
        let denied = require_user(&ann, "bob", "read the cart").expect_err("not ann's");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.message(), "user ann may not read the cart of user bob");
        let empty = require_user(&for_user(""), "bob", "read the cart").expect_err("empty user");
        assert_eq!(empty.message(), "user  may not read the cart of user bob");
    }

    #[test]
    fn a_workload_acts_on_its_own_authority() {
        let request = Request::new(());
        assert_eq!(end_user(&request), None);
        assert!(require_user(&request, "bob", "read the cart").is_ok());
    }

    #[test]
    fn an_unreadable_header_denies() {
        let mut request = Request::new(());
        let value = MetadataValue::try_from(&b"caf\xc3\xa9"[..]).expect("opaque bytes are a valid value");
        request.metadata_mut().insert(END_USER_HEADER, value);
        assert_eq!(end_user(&request), None);
        let denied = require_user(&request, "bob", "read the orders").expect_err("unreadable");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("not readable"), "{}", denied.message());
    }
}
