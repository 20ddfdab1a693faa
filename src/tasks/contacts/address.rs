//! An address as mail servers accept it (RFC 5321's `Mailbox`, with RFC 6531's UTF-8 local
//! parts), normalised: trimmed, the domain through UTS-46 (looked up as punycode, shown in
//! Unicode, lowercased).
//!
//! Written by hand because what the crates offer checks RFC 5322's header syntax (comments,
//! folding, obsolete forms) or a regex, neither of which is what an SMTP server takes in
//! `RCPT TO`; the grammar is small and the IDNA part is the `idna` crate's.

/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_BYTES: usize = 64;
/// The longest address that fits a `RCPT TO` path (RFC 5321 §4.5.3.1.3, less the brackets).
const MAX_ADDRESS_BYTES: usize = 254;

/// A parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The local part as written (case is the receiving server's business).
    pub local: String,
    /// The domain as DNS knows it: lowercase, punycode for international labels.
    pub ascii_domain: String,
    /// The domain as people read it: lowercase Unicode.
    pub domain: String,
}

impl Address {
    /// The address as people read it, the key it is known by.
    pub fn normalized(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// The address as it goes to DNS and SMTP.
    pub fn ascii(&self) -> String {
        format!("{}@{}", self.local, self.ascii_domain)
    }
}

/// Why an address does not parse: a machine-readable reason and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// `empty`, `no_at_sign`, `local_part`, `local_part_too_long`, `domain`, `domain_literal`,
    /// `too_long`.
    pub reason: &'static str,
    /// For people.
    pub detail: String,
}

fn error(reason: &'static str, detail: impl Into<String>) -> SyntaxError {
    SyntaxError {
        reason,
        detail: detail.into(),
    }
}

/// Parses an address as typed into a spreadsheet: surrounding whitespace and a `mailto:` are
/// dropped; anything else must be a mailbox.
pub fn parse(text: &str) -> Result<Address, SyntaxError> {
    let text = text.trim();
    let text = text
        .strip_prefix("mailto:")
        .or_else(|| text.strip_prefix("MAILTO:"))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(error("empty", "no address"));
    }
    let Some(at) = text.rfind('@') else {
        return Err(error("no_at_sign", "has no @"));
    };
    let (local, domain) = (&text[..at], &text[at + 1..]);
    check_local(local)?;
    if domain.starts_with('[') {
        return Err(error(
            "domain_literal",
            "an address literal such as [192.0.2.1] names no domain",
        ));
    }
    let (ascii_domain, domain) = normalize_domain(domain)?;
    let address = Address {
        local: local.to_owned(),
        ascii_domain,
        domain,
    };
    if address.ascii().len() > MAX_ADDRESS_BYTES {
        return Err(error(
            "too_long",
            format!("longer than {MAX_ADDRESS_BYTES} bytes"),
        ));
    }
    Ok(address)
}

/// RFC 5321's `Local-part`: a dot-string of atoms, or a quoted string.
fn check_local(local: &str) -> Result<(), SyntaxError> {
    if local.is_empty() {
        return Err(error("local_part", "nothing before the @"));
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err(error(
            "local_part_too_long",
            format!("the part before the @ is longer than {MAX_LOCAL_BYTES} bytes"),
        ));
    }
    if let Some(inner) = local.strip_prefix('"') {
        return check_quoted(inner);
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(error(
                "local_part",
                "a dot at the start or the end, or two dots in a row, before the @",
            ));
        }
        if let Some(bad) = atom.chars().find(|&c| !is_atext(c)) {
            return Err(error(
                "local_part",
                format!("{bad:?} is not allowed unquoted before the @"),
            ));
        }
    }
    Ok(())
}

/// The rest of a quoted local part after its opening quote: printable characters, with `\`
/// escaping the next one, up to a closing quote that ends it.
fn check_quoted(inner: &str) -> Result<(), SyntaxError> {
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(())
                } else {
                    Err(error("local_part", "text after the closing quote"))
                };
            }
            '\\' => match chars.next() {
                Some(escaped) if (' '..='~').contains(&escaped) => {}
                _ => return Err(error("local_part", "a backslash escapes nothing printable")),
            },
            c if (' '..='~').contains(&c) || !c.is_ascii() && !c.is_control() => {}
            other => {
                return Err(error(
                    "local_part",
                    format!("{other:?} is not allowed in a quoted local part"),
                ));
            }
        }
    }
    Err(error("local_part", "a quote is not closed"))
}

/// RFC 5322's `atext`, with the UTF-8 RFC 6531 allows.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || !c.is_ascii() && !c.is_control()
}

/// The domain in DNS's form and in people's, or why it is no domain a mailbox can be at.
fn normalize_domain(domain: &str) -> Result<(String, String), SyntaxError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(error("domain", "nothing after the @"));
    }
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| error("domain", format!("{domain:?} is not a valid domain name")))?;
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(error(
            "domain",
            format!("{domain:?} has no dot: no public domain"),
        ));
    }
    if labels
        .iter()
        .any(|label| label.is_empty() || label.len() > 63)
        || ascii.len() > 253
    {
        return Err(error(
            "domain",
            format!("{domain:?} has an empty or overlong label"),
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(error(
            "domain",
            format!("{domain:?} ends in a number, not a top-level domain"),
        ));
    }
    let (unicode, _) = idna::domain_to_unicode(&ascii);
    Ok((ascii, unicode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_their_domains_normalised() {
        let address = parse("  Ivan.Petrov@ПРИМЕР.рф \n").unwrap();
        assert_eq!(address.local, "Ivan.Petrov");
        assert_eq!(address.domain, "пример.рф");
        assert_eq!(address.ascii_domain, "xn--e1afmkfd.xn--p1ai");
        assert_eq!(address.normalized(), "Ivan.Petrov@пример.рф");
        assert_eq!(
            parse("mailto:user@Example.COM.").unwrap().ascii(),
            "user@example.com"
        );
    }

    #[test]
    fn what_servers_accept_parses() {
        for accepted in [
            "a@example.org",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "\"john smith\"@example.org",
            "\"a\\\"b\"@example.org",
            "пользователь@пример.рф",
            "user@xn--e1afmkfd.xn--p1ai",
        ] {
            parse(accepted).unwrap_or_else(|error| panic!("{accepted:?}: {error:?}"));
        }
    }

    #[test]
    fn what_they_refuse_is_named() {
        for (refused, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("plainaddress", "no_at_sign"),
            ("@example.org", "local_part"),
            (".a@example.org", "local_part"),
            ("a..b@example.org", "local_part"),
            ("a b@example.org", "local_part"),
            ("a,b@example.org", "local_part"),
            ("\"unclosed@example.org", "local_part"),
            ("a@", "domain"),
            ("a@localhost", "domain"),
            ("a@exa mple.org", "domain"),
            ("a@-example.org", "domain"),
            ("a@example..org", "domain"),
            ("a@192.168.0.1", "domain"),
            ("a@[192.168.0.1]", "domain_literal"),
            ("a@example_underscore.org", "domain"),
        ] {
            let error = parse(refused).unwrap_err();
            assert_eq!(error.reason, reason, "{refused:?}: {error:?}");
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert_eq!(
            parse(&long_local).unwrap_err().reason,
            "local_part_too_long"
        );
        let long = format!(
            "{}@{}.example.org",
            "a".repeat(60),
            vec!["b".repeat(60); 3].join(".")
        );
        assert_eq!(parse(&long).unwrap_err().reason, "too_long");
    }
}
