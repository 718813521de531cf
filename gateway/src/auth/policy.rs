//! Which calls need a token, and which a role, from `[gateway.auth]`: methods
//! named `pkg.Service/Method` or `Service/Method`; a method in `roles` needs
//! that role, one in `public` needs nothing, every other needs a valid token.
//! A lookup takes the gRPC path as it is, with no allocation.

use std::collections::{HashMap, HashSet};

use super::{AuthError, Principal};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Anyone may call it.
    Public,
    /// A valid token.
    User,
    /// A valid token whose `roles` include this one.
    Role(&'a str),
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    public: HashSet<String>,
    roles: HashMap<String, String>,
}

impl Policy {
    pub fn new(auth: &meshwork_config::Auth) -> Self {
        let trim = |m: &String| m.trim_start_matches('/').to_owned();
        Policy {
            public: auth.public.iter().map(trim).collect(),
            roles: auth.roles.iter().map(|(m, r)| (trim(m), r.clone())).collect(),
        }
    }

    /// What the method at `path` (`/pkg.Service/Method`, leading slash
    /// optional) needs. A role rule wins over `public`.
    pub fn access(&self, path: &str) -> Access<'_> {
        let full = path.strip_prefix('/').unwrap_or(path);
        // `Service/Method` is the tail of `pkg.Service/Method`.
        let service_end = full.find('/').unwrap_or(full.len());
        let short = &full[full[..service_end].rfind('.').map_or(0, |dot| dot + 1)..];
        if let Some(role) = self.roles.get(full).or_else(|| self.roles.get(short)) {
            return Access::Role(role);
        }
        if self.public.contains(full) || self.public.contains(short) {
            return Access::Public;
        }
        Access::User
    }
}

/// Whether `principal` (None: no token was sent) may make a call that needs `access`.
pub fn authorize(access: Access<'_>, principal: Option<&Principal>) -> Result<(), AuthError> {
    match (access, principal) {
        (Access::Public, _) => Ok(()),
        (_, None) => Err(AuthError::Missing),
        (Access::User, Some(_)) => Ok(()),
        (Access::Role(role), Some(p)) if p.roles.iter().any(|r| r == role) => Ok(()),
        (Access::Role(role), Some(_)) => Err(AuthError::Forbidden(role.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(&meshwork_config::Auth {
            public: vec![
                "shop.users.v1.UserService/Login".into(),
                "CatalogService/ListProducts".into(),
            ],
            roles: [(
                "shop.payments.v1.PaymentService/Refund".to_string(),
                "admin".to_string(),
            )]
            .into_iter()
            .collect(),
            ..meshwork_config::Auth::default()
        })
    }

    #[test]
    fn full_and_short_names_match() {
        let p = policy();
        assert_eq!(p.access("/shop.users.v1.UserService/Login"), Access::Public);
        assert_eq!(p.access("shop.users.v1.UserService/Login"), Access::Public);
        assert_eq!(p.access("/shop.catalog.v1.CatalogService/ListProducts"), Access::Public);
        assert_eq!(p.access("/shop.users.v1.UserService/GetUser"), Access::User);
        assert_eq!(
            p.access("/shop.payments.v1.PaymentService/Refund"),
            Access::Role("admin")
        );
        assert_eq!(
            p.access("/other.v1.UserService/Login"),
            Access::User,
            "another package's service"
        );
        assert_eq!(p.access(""), Access::User);
        assert_eq!(p.access("/"), Access::User);
        assert_eq!(p.access("no-slash"), Access::User);
    }

    #[test]
    fn roles_and_tokens_are_required() {
        let ann = Principal {
            user_id: "ann".into(),
            roles: vec![],
            scopes: vec![],
        };
        let boss = Principal {
            roles: vec!["admin".into()],
            ..ann.clone()
        };
        assert_eq!(authorize(Access::Public, None), Ok(()));
        assert_eq!(authorize(Access::User, None), Err(AuthError::Missing));
        assert_eq!(authorize(Access::User, Some(&ann)), Ok(()));
        assert_eq!(authorize(Access::Role("admin"), None), Err(AuthError::Missing));
        assert_eq!(
            authorize(Access::Role("admin"), Some(&ann)),
            Err(AuthError::Forbidden("admin".into()))
        );
        assert_eq!(authorize(Access::Role("admin"), Some(&boss)), Ok(()));
    }
}
