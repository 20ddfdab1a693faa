//! Who an address belongs to, by list: disposable mail providers and role accounts.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use crate::config::ValidationSettings;
use crate::domain::ValidationError;

/// The disposable domains of the `mailchecker` crate (its list of throwaway providers, kept up
/// to date upstream), read into a set once per process.
fn builtin_disposable() -> &'static HashSet<&'static str> {
    static DOMAINS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    DOMAINS.get_or_init(|| mailchecker::blacklist().into_iter().collect())
}

/// The lists a worker checks addresses against.
#[derive(Debug, Clone)]
pub struct Lists {
    disposable_extra: Arc<HashSet<String>>,
    role_accounts: Arc<HashSet<String>>,
}

impl Lists {
    /// The built-in disposable list, plus the domains in `disposable_domains_file` (one a line,
    /// `#` comments), and the configured role accounts.
    pub fn load(settings: &ValidationSettings) -> Result<Self, ValidationError> {
        let mut extra = HashSet::new();
        if let Some(path) = &settings.disposable_domains_file {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ValidationError::new(
                    "validation.disposable_domains_file",
                    format!("{}: {error}", path.display()),
                )
            })?;
            for line in text.lines() {
                let domain = line.split('#').next().unwrap_or("").trim();
                if !domain.is_empty() {
                    extra.insert(domain.to_lowercase());
                }
            }
        }
        Ok(Self {
            disposable_extra: Arc::new(extra),
            role_accounts: Arc::new(
                settings
                    .role_accounts
                    .iter()
                    .map(|role| role.to_lowercase())
                    .collect(),
            ),
        })
    }

    /// Whether the domain, or a domain it is under, is a disposable provider's.
    pub fn is_disposable(&self, ascii_domain: &str) -> bool {
        let mut rest = ascii_domain;
        loop {
            if builtin_disposable().contains(rest) || self.disposable_extra.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if parent.contains('.') => rest = parent,
                _ => return false,
            }
        }
    }

    /// Whether the local part names a role (`info`, `admin`…) rather than a person; a `+tag`
    /// is ignored.
    pub fn is_role(&self, local: &str) -> bool {
        let local = local.split('+').next().unwrap_or(local).to_lowercase();
        self.role_accounts.contains(&local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposable_domains_and_their_subdomains_are_known_and_extendable() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "# ours\nthrowaway.example # a test\n").unwrap();
        let settings = ValidationSettings {
            disposable_domains_file: Some(file.path().to_owned()),
            ..ValidationSettings::default()
        };
        let lists = Lists::load(&settings).unwrap();
        assert!(lists.is_disposable("mailinator.com"));
        assert!(lists.is_disposable("sub.mailinator.com"));
        assert!(lists.is_disposable("throwaway.example"));
        assert!(!lists.is_disposable("gmail.com"));
        assert!(!lists.is_disposable("example.com"));
        assert!(lists.is_role("Info"));
        assert!(lists.is_role("noreply+x"));
        assert!(!lists.is_role("ivan"));
    }
}
