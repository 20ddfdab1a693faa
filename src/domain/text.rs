//! Text from outside, checked against what every store can hold.
//!
//! Postgres refuses a NUL character in `text` and `jsonb` columns (and a lone UTF-16 surrogate
//! escape in `jsonb`); SQLite takes both. A value that one store refuses in the middle of a
//! batch would fail the batch, so each such value is stopped where it enters: input a client
//! or worker chose is refused with its field named, and foreign text that nobody chose (an SMTP
//! reply, an exception message, a hostname) is made storable instead.

use std::borrow::Cow;

use super::ValidationError;

/// The most characters of a refused value that an error message quotes.
const QUOTED_CHARACTERS: usize = 64;

/// Refuses text over `max_bytes`.
pub fn check_length(field: &str, text: &str, max_bytes: usize) -> Result<(), ValidationError> {
    if text.len() > max_bytes {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} bytes, more than the limit of {max_bytes} bytes",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses text over `max_bytes` or with a NUL character.
pub fn check_text(field: &str, text: &str, max_bytes: usize) -> Result<(), ValidationError> {
    check_length(field, text, max_bytes)?;
    if text.contains('\0') {
        return Err(ValidationError::new(
            field,
            "contains a NUL character (\\u0000), which the store cannot hold",
        ));
    }
    Ok(())
}

/// Foreign text made storable: NUL and the other control characters but tab, line feed and
/// carriage return become U+FFFD, and text over `max_bytes` is cut at a character boundary,
/// ending in "…".
pub fn sanitize(text: &str, max_bytes: usize) -> Cow<'_, str> {
    let clean = |c: char| !c.is_control() || matches!(c, '\t' | '\n' | '\r');
    if text.len() <= max_bytes && text.chars().all(clean) {
        return Cow::Borrowed(text);
    }
    const ELLIPSIS: char = '…';
    let budget = max_bytes.saturating_sub(ELLIPSIS.len_utf8());
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        let c = if clean(c) {
            c
        } else {
            char::REPLACEMENT_CHARACTER
        };
        if text.len() > max_bytes && out.len() + c.len_utf8() > budget {
            out.push(ELLIPSIS);
            return Cow::Owned(out);
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// The start of a value, quoted for an error message: a refused value of any length never
/// makes a long answer.
pub fn quoted(text: &str) -> String {
    if text.chars().count() <= QUOTED_CHARACTERS {
        return format!("{text:?}");
    }
    let start: String = text.chars().take(QUOTED_CHARACTERS).collect();
    format!("{start:?}… ({} bytes)", text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nul_and_length_naming_the_field() {
        let error = check_text("hello.hostname", "a\0b", 100).unwrap_err();
        assert_eq!(error.field, "hello.hostname");
        assert!(error.message.contains("NUL"), "{error}");
        let error = check_text("reason", "abcd", 3).unwrap_err();
        assert!(error.message.contains("limit of 3 bytes"), "{error}");
        check_text("reason", "fine\ttext\n", 100).unwrap();
    }

    #[test]
    fn sanitize_replaces_controls_and_cuts_at_a_character_boundary() {
        assert!(matches!(sanitize("250 ok", 100), Cow::Borrowed(_)));
        assert_eq!(
            sanitize("550 no\0such\x07user\r\n", 100),
            "550 no\u{fffd}such\u{fffd}user\r\n"
        );
        let cut = sanitize("ééééé", 7);
        assert!(cut.len() <= 7, "{cut}");
        assert_eq!(cut, "éé…");
    }

    #[test]
    fn quoted_keeps_error_messages_short() {
        assert_eq!(quoted("abc"), "\"abc\"");
        let long = "x".repeat(100_000);
        let quoted = quoted(&long);
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.ends_with("(100000 bytes)"), "{quoted}");
    }
}
