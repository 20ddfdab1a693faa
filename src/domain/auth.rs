//! Who is calling: API tokens and their roles, and the caller a request is served for.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ValidationError;
use super::file::hex_digest;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Submit tasks; get and stream tasks; upload files.
    Submit,
    /// Get, stream and list tasks, read records, files and schedules, inspect.
    Read,
    /// Cancel, purge, requeue, fail; manage schedules; controls (closing idle connections).
    Operate,
    /// Hold a worker stream (and download the files its tasks read).
    Worker,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in the order they are listed.
    pub const ALL: [Role; 5] = [
        Role::Submit,
        Role::Read,
        Role::Operate,
        Role::Worker,
        Role::Admin,
    ];

    /// The role's name, as configuration and `celeritas tokens` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    format!(
                        "{} is not a role; the roles are {}",
                        super::quoted(text),
                        Role::ALL.map(Role::as_str).join(", ")
                    ),
                )
            })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// Every role: a caller on a coordinator that requires no tokens.
    pub fn all() -> Self {
        Role::ALL.into_iter().collect()
    }

    /// Parses role names, at least one; `field` names the list.
    pub fn parse_all<S: AsRef<str>>(field: &str, names: &[S]) -> Result<Self, ValidationError> {
        if names.is_empty() {
            return Err(ValidationError::new(
                field,
                format!(
                    "name at least one role ({})",
                    Role::ALL.map(Role::as_str).join(", ")
                ),
            ));
        }
        names
            .iter()
            .enumerate()
            .map(|(index, name)| Role::parse(&format!("{field}[{index}]"), name.as_ref()))
            .collect()
    }

    /// Whether `role` is in the set (`admin` holds them all).
    pub fn has(self, role: Role) -> bool {
        self.0 & (role.bit() | Role::Admin.bit()) != 0
    }

    /// Whether any of `roles` is in the set.
    pub fn has_any(self, roles: &[Role]) -> bool {
        roles.iter().any(|role| self.has(*role))
    }

    /// The roles, in order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.0 & role.bit() != 0)
    }

    /// The names, comma separated.
    pub fn names(self) -> String {
        self.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Self {
        Roles(roles.into_iter().fold(0, |bits, role| bits | role.bit()))
    }
}

/// A token's name, such as `django-web`: 1 to 64 letters, digits, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenName(String);

impl TokenName {
    /// Parses a token name; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        super::names::parse_name(field, text, 64, &['_', '-', '.'], "token name").map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The longest token a request may present, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;

/// What every token celeritas makes starts with, so scanners can recognise a leaked one.
pub const TOKEN_PREFIX: &str = "celeritas_";

/// A token as a caller presents it. Never printed: `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("TokenSecret(…)")
    }
}

impl TokenSecret {
    /// A new random token: the prefix and 256 bits, base64url.
    pub fn generate() -> Self {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        Self(format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A token as presented: visible ASCII, at most `MAX_TOKEN_BYTES`; `field` names it.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::new(field, "the token is empty"));
        }
        if text.len() > MAX_TOKEN_BYTES {
            return Err(ValidationError::new(
                field,
                format!("a token is at most {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(ValidationError::new(
                field,
                "a token is visible ASCII, without spaces",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The token itself, to send or to show once when it is made.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored instead of the token.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// A token's SHA-256: what configuration and the store keep. Tokens are 256 random bits, so a
/// plain digest cannot be reversed by guessing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "TokenDigest({}…)", &self.to_hex()[..8])
    }
}

impl TokenDigest {
    /// Parses 64 hex digits; `field` names them.
    pub fn from_hex(field: &str, text: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(field, "a token's SHA-256 is 64 hex digits");
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(bytes))
    }

    /// The digest from stored bytes; `None` unless there are 32.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex_digest(&self.0)
    }

    /// Compares in constant time: how long it takes says nothing about how much matched.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A token a coordinator accepts: from the configuration or the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedToken {
    /// Its name.
    pub name: TokenName,
    /// What it may do.
    pub roles: Roles,
    /// Its digest.
    pub digest: TokenDigest,
}

/// Finds the token whose digest is `presented`'s, comparing with every one in constant time, so
/// the time taken says neither which nor whether one matched.
pub fn find_token<'a>(
    accepted: &'a [AcceptedToken],
    presented: &TokenSecret,
) -> Option<&'a AcceptedToken> {
    let digest = presented.digest();
    accepted
        .iter()
        .fold(None, |found, token| match token.digest.matches(&digest) {
            true => Some(token),
            false => found,
        })
}

/// Who a request is served for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token presented, by name, if any.
    pub token: Option<TokenName>,
    /// The name in the client certificate presented, if any.
    pub certificate: Option<String>,
    /// What the caller may do.
    pub roles: Roles,
}

impl Caller {
    /// A caller on a coordinator that requires no tokens: every role.
    pub fn anonymous(certificate: Option<String>) -> Self {
        Self {
            token: None,
            certificate,
            roles: Roles::all(),
        }
    }

    /// The name a worker is known by: its certificate's, else its token's.
    pub fn identity(&self) -> Option<&str> {
        self.certificate
            .as_deref()
            .or(self.token.as_ref().map(TokenName::as_str))
    }

    /// The credential a worker id is bound to: `certificate:NAME`, `token:NAME` or none.
    pub fn credential(&self) -> Option<String> {
        match (&self.certificate, &self.token) {
            (Some(name), _) => Some(format!("certificate:{name}")),
            (None, Some(token)) => Some(format!("token:{token}")),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_holds_every_role_and_others_only_their_own() {
        let admin: Roles = [Role::Admin].into_iter().collect();
        assert!(Role::ALL.iter().all(|role| admin.has(*role)));
        let submit: Roles = [Role::Submit].into_iter().collect();
        assert!(submit.has(Role::Submit));
        assert!(!submit.has(Role::Read));
        assert!(!submit.has(Role::Admin));
        assert_eq!(
            Roles::parse_all("roles", &["read", "operate"])
                .unwrap()
                .names(),
            "read,operate"
        );
    }

    #[test]
    fn bad_role_names_and_digests_are_named() {
        let error = Roles::parse_all("roles", &["read", "root"]).unwrap_err();
        assert_eq!(error.field, "roles[1]");
        assert!(
            error
                .message
                .contains("submit, read, operate, worker, admin")
        );
        assert_eq!(
            Roles::parse_all::<&str>("roles", &[]).unwrap_err().field,
            "roles"
        );
        assert!(TokenDigest::from_hex("sha256", "abc").is_err());
        assert!(TokenDigest::from_hex("sha256", &"g".repeat(64)).is_err());
        assert!(TokenDigest::from_hex("sha256", &"é".repeat(32)).is_err());
    }

    #[test]
    fn a_generated_token_is_found_by_its_digest_and_no_other() {
        let token = TokenSecret::generate();
        assert!(token.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + 43);
        let digest = TokenDigest::from_hex("sha256", &token.digest().to_hex()).unwrap();
        let accepted = vec![
            AcceptedToken {
                name: TokenName::parse("name", "other").unwrap(),
                roles: Roles::all(),
                digest: TokenSecret::generate().digest(),
            },
            AcceptedToken {
                name: TokenName::parse("name", "mine").unwrap(),
                roles: Roles::all(),
                digest,
            },
        ];
        assert_eq!(find_token(&accepted, &token).unwrap().name.as_str(), "mine");
        assert!(find_token(&accepted, &TokenSecret::generate()).is_none());
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn presented_tokens_are_bounded_visible_ascii() {
        assert!(TokenSecret::parse("authorization", "").is_err());
        assert!(TokenSecret::parse("authorization", "a b").is_err());
        assert!(TokenSecret::parse("authorization", &"a".repeat(257)).is_err());
        assert!(TokenSecret::parse("authorization", "celeritas_abc").is_ok());
    }
}
