//! Who may act: a session cookie and a form token, both derived from the access token.
//!
//! Signing in with the token sets `dd_session` (HttpOnly, `SameSite=Strict`) to an HMAC of a
//! fixed label under the token; every action form carries `csrf`, another HMAC under the token,
//! which a page of another site can neither read nor compute. A POST must carry both, and its
//! `Origin`, when the browser sends one, must be this dashboard's.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "dd_session";

/// The derived values, or nothing when the dashboard is read-only.
pub(crate) struct Auth {
    keys: Option<(String, String)>,
}

fn derive(token: &str, label: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(label.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; unreachable, and then nobody can act.
        Err(_) => String::new(),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    pub(crate) fn new(token: Option<&str>) -> Self {
        Auth {
            keys: token.map(|t| {
                (
                    derive(t, "dispatcher-dashboard session"),
                    derive(t, "dispatcher-dashboard form"),
                )
            }),
        }
    }

    /// Whether actions exist at all.
    pub(crate) fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// The cookie value for a correct token.
    pub(crate) fn sign_in(&self, token: &str) -> Option<&str> {
        let (session, _) = self.keys.as_ref()?;
        same(&derive(token, "dispatcher-dashboard session"), session).then_some(session.as_str())
    }

    /// Whether this `Cookie` header holds a valid session.
    pub(crate) fn signed_in(&self, cookie_header: Option<&str>) -> bool {
        let Some((session, _)) = &self.keys else {
            return false;
        };
        cookie_header.is_some_and(|h| {
            h.split(';').any(|kv| {
                kv.trim()
                    .strip_prefix(COOKIE)
                    .and_then(|v| v.strip_prefix('='))
                    .is_some_and(|v| same(v, session))
            })
        })
    }

    /// The form token of a signed-in page.
    pub(crate) fn form_token(&self) -> &str {
        self.keys.as_ref().map(|(_, f)| f.as_str()).unwrap_or("")
    }

    /// Whether a posted form token is right.
    pub(crate) fn form_ok(&self, posted: &str) -> bool {
        self.keys.as_ref().is_some_and(|(_, f)| same(posted, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_form_tokens_come_from_the_token_only() {
        let a = Auth::new(Some("0123456789abcdef-secret"));
        assert!(a.enabled());
        assert!(a.sign_in("wrong").is_none());
        let cookie = a.sign_in("0123456789abcdef-secret").unwrap().to_owned();
        assert!(a.signed_in(Some(&format!("x=1; {COOKIE}={cookie}"))));
        assert!(!a.signed_in(Some(&format!("{COOKIE}={cookie}x"))));
        assert!(!a.signed_in(None));
        assert!(a.form_ok(a.form_token()));
        assert!(!a.form_ok(""));
        assert_ne!(a.form_token(), cookie);
        let ro = Auth::new(None);
        assert!(!ro.enabled() && ro.sign_in("").is_none() && !ro.form_ok(""));
    }
}
