//! CSV as people really save it: the encoding and the delimiter read off the bytes, and the
//! email column found by its header (English or Russian) or by what it holds.
//!
//! Excel on a Russian Windows saves Windows-1251 with `;`; older Unix tools KOI8-R; Excel's
//! "Unicode text" UTF-16 with a BOM. The encoding is decided from a sample (a BOM, else valid
//! UTF-8, else which Cyrillic byte range the letters fall in), and the file is then read through
//! one transcoding reader, so memory stays flat however long it is.

use std::io::Read;

use encoding_rs::{Encoding, KOI8_R, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1251};

/// How much of a file is read to decide its encoding and delimiter.
pub const SAMPLE_BYTES: usize = 64 * 1024;

/// The delimiters sniffed, in order of preference on a tie.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Headers that name the email column, compared lowercased and without spaces, `-` and `_`.
const EMAIL_HEADERS: [&str; 11] = [
    "email",
    "emailaddress",
    "mail",
    "e-mail",
    "почта",
    "электроннаяпочта",
    "эл.почта",
    "адресэлектроннойпочты",
    "емейл",
    "имейл",
    "email(почта)",
];

/// The encoding a sample is in. A BOM decides; valid UTF-8 is UTF-8; otherwise the bytes are
/// Cyrillic in a single-byte encoding, and which one shows in where the lowercase letters fall:
/// Windows-1251 puts them at 0xE0–0xFF, KOI8-R at 0xC0–0xDF, and most letters in a text are
/// lowercase.
pub fn sniff_encoding(sample: &[u8]) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(sample) {
        return encoding;
    }
    if looks_like_utf16(sample) {
        return if sample.first() == Some(&0) {
            UTF_16BE
        } else {
            UTF_16LE
        };
    }
    match std::str::from_utf8(sample) {
        Ok(_) => return UTF_8,
        // A sample cut in the middle of a character is still UTF-8.
        Err(error) if error.error_len().is_none() => return UTF_8,
        Err(_) => {}
    }
    let high_lower = sample.iter().filter(|&&byte| byte >= 0xE0).count();
    let low_lower = sample
        .iter()
        .filter(|&&byte| (0xC0..0xE0).contains(&byte))
        .count();
    if low_lower > high_lower {
        KOI8_R
    } else {
        WINDOWS_1251
    }
}

/// UTF-16 without a BOM: every other byte of an ASCII-heavy text is zero.
fn looks_like_utf16(sample: &[u8]) -> bool {
    let pairs = sample.len() / 2;
    if pairs < 8 {
        return false;
    }
    let zero_even = sample.iter().step_by(2).filter(|&&byte| byte == 0).count();
    let zero_odd = sample
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|&&byte| byte == 0)
        .count();
    zero_even.max(zero_odd) * 10 >= pairs * 8 && zero_even.min(zero_odd) * 10 <= pairs
}

/// A reader of `input` as UTF-8, whatever `encoding` it is in (a BOM is dropped).
pub fn utf8_reader<R: Read>(input: R, encoding: &'static Encoding) -> impl Read {
    encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .bom_override(true)
        .build(input)
}

/// The delimiter of a CSV sample (as UTF-8): of `,` `;` tab `|`, the one that splits its first
/// lines into the same number of cells most often, more than one cell each; `,` when none does.
pub fn sniff_delimiter(sample: &str) -> u8 {
    let lines: Vec<&str> = sample
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(20)
        .collect();
    // A last line cut by the sample's end does not count.
    let lines = if lines.len() > 1 && !sample.ends_with('\n') {
        &lines[..lines.len() - 1]
    } else {
        &lines[..]
    };
    let mut best = (0usize, b',');
    for delimiter in DELIMITERS {
        let counts: Vec<usize> = lines
            .iter()
            .map(|line| cells_outside_quotes(line, delimiter))
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first < 2 {
            continue;
        }
        let agreeing = counts.iter().filter(|&&count| count == first).count();
        let score = agreeing * 1000 + first;
        if score > best.0 {
            best = (score, delimiter);
        }
    }
    best.1
}

/// How many cells `delimiter` splits a line into, ignoring delimiters inside quotes.
fn cells_outside_quotes(line: &str, delimiter: u8) -> usize {
    let mut quoted = false;
    let mut cells = 1;
    for byte in line.bytes() {
        match byte {
            b'"' => quoted = !quoted,
            byte if byte == delimiter && !quoted => cells += 1,
            _ => {}
        }
    }
    cells
}

/// The email column: the first header that names one, else the column whose sample cells
/// most often hold an `@` (at least half of them).
pub fn email_column(headers: &[String], sample_rows: &[Vec<String>]) -> Option<usize> {
    let normalized = |header: &str| -> String {
        header
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect()
    };
    if let Some(index) = headers.iter().position(|header| {
        let header = normalized(header);
        EMAIL_HEADERS
            .iter()
            .any(|known| normalized(known) == header)
    }) {
        return Some(index);
    }
    let columns = headers
        .len()
        .max(sample_rows.iter().map(Vec::len).max().unwrap_or(0));
    (0..columns)
        .map(|column| {
            let with_at = sample_rows
                .iter()
                .filter(|row| row.get(column).is_some_and(|cell| cell.contains('@')))
                .count();
            (with_at, column)
        })
        .filter(|(with_at, _)| *with_at > 0 && *with_at * 2 >= sample_rows.len())
        .max_by_key(|(with_at, column)| (*with_at, std::cmp::Reverse(*column)))
        .map(|(_, column)| column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSSIAN: &str = "имя;почта;город\nИван Петров;ivan@example.ru;Москва\nМария;maria@example.ru;Санкт-Петербург\n";

    fn encoded(text: &str, encoding: &'static Encoding) -> Vec<u8> {
        encoding.encode(text).0.into_owned()
    }

    fn read_back(bytes: &[u8]) -> String {
        let mut text = String::new();
        utf8_reader(
            bytes,
            sniff_encoding(&bytes[..bytes.len().min(SAMPLE_BYTES)]),
        )
        .read_to_string(&mut text)
        .unwrap();
        text
    }

    #[test]
    fn encodings_are_read_off_the_bytes() {
        assert_eq!(sniff_encoding(RUSSIAN.as_bytes()), UTF_8);
        assert_eq!(
            sniff_encoding(&encoded(RUSSIAN, WINDOWS_1251)),
            WINDOWS_1251
        );
        assert_eq!(sniff_encoding(&encoded(RUSSIAN, KOI8_R)), KOI8_R);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(RUSSIAN.as_bytes());
        assert_eq!(read_back(&bom), RUSSIAN);
        let mut utf16: Vec<u8> = vec![0xFF, 0xFE];
        utf16.extend(RUSSIAN.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(read_back(&utf16), RUSSIAN);
        let ascii_utf16: Vec<u8> = "email\na@b.ru\nc@d.ru\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(sniff_encoding(&ascii_utf16), UTF_16LE);
        for encoding in [WINDOWS_1251, KOI8_R] {
            assert_eq!(
                read_back(&encoded(RUSSIAN, encoding)),
                RUSSIAN,
                "{}",
                encoding.name()
            );
        }
        // A UTF-8 sample cut inside a character is still UTF-8.
        let cut = &RUSSIAN.as_bytes()[..RUSSIAN.len() - 4];
        assert!(std::str::from_utf8(cut).is_err());
        assert_eq!(sniff_encoding(cut), UTF_8);
    }

    #[test]
    fn delimiters_are_sniffed_outside_quotes() {
        assert_eq!(sniff_delimiter(RUSSIAN), b';');
        assert_eq!(
            sniff_delimiter("email,name\na@b.c,\"Smith; John\"\nd@e.f,Jane\n"),
            b','
        );
        assert_eq!(sniff_delimiter("email\tname\na@b.c\tA, B\n"), b'\t');
        assert_eq!(sniff_delimiter("email|name|x\na@b.c|n|1\n"), b'|');
        assert_eq!(sniff_delimiter("email\na@b.c\n"), b',');
    }

    #[test]
    fn the_email_column_is_found_by_header_or_content() {
        let headers = |names: &[&str]| {
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(email_column(&headers(&["Имя", "Эл. почта"]), &[]), Some(1));
        assert_eq!(email_column(&headers(&["name", "E-Mail"]), &[]), Some(1));
        assert_eq!(
            email_column(&headers(&["Email Address", "x"]), &[]),
            Some(0)
        );
        let rows = vec![
            headers(&["Ivan", "ivan@example.ru"]),
            headers(&["Maria", "maria@example.ru"]),
            headers(&["Bad", "no address"]),
        ];
        assert_eq!(email_column(&headers(&["col1", "col2"]), &rows), Some(1));
        assert_eq!(
            email_column(&headers(&["a", "b"]), &[headers(&["x", "y"])]),
            None
        );
    }
}
