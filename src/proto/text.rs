//! Text from the network on its way to a log line, stderr or a terminal: one set of escaping
//! rules, so that a peer can neither start a forged line, add `key=value` fields to one, nor send
//! escape sequences or bidirectional overrides to a terminal that shows it.

/// `s` with every control character escaped (`\n`, `\r`, `\t`, others as `\xNN`) and every
/// invisible or direction-changing format character as `\u{XXXX}`.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_printable(&mut out, s);
    out
}

/// Appends `s` to `out`, escaped as [`printable`] says.
pub fn push_printable(out: &mut String, s: &str) {
    for c in s.chars() {
        push_char(out, c);
    }
}

/// Bytes that should be text (a file name: Linux names are bytes), as text: valid UTF-8 as it
/// is, every other byte as `\xNN`. The result then goes through the rules above like any text.
pub fn from_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// A value for `key=value`: as it is when it has no whitespace, quote, `=` or
/// escaped character (and is not empty), else [`quoted`].
pub fn kv_quote(s: &str) -> String {
    let plain = !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '=') || escaped(c));
    if plain {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// `s` in double quotes, with `"` and `\` escaped by a backslash and the rest as [`printable`]:
/// whatever `s` holds, the value ends at the closing quote.
pub fn quoted(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_char(&mut out, c),
        }
    }
    out.push('"');
    out
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if escaped(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        c => out.push(c),
    }
}

/// Control characters, and the format characters that hide text or turn its direction (zero
/// widths, bidirectional marks, embeddings, overrides and isolates, the byte-order mark).
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_add_fields_or_lines() {
        assert_eq!(kv_quote("plain"), "plain");
        assert_eq!(kv_quote(""), "\"\"");
        assert_eq!(kv_quote("a b"), "\"a b\"");
        assert_eq!(kv_quote("x event=auth_grant"), "\"x event=auth_grant\"");
        assert_eq!(quoted("say \"hi\" event=x"), "\"say \\\"hi\\\" event=x\"");
        assert_eq!(quoted("back\\\" event=x"), "\"back\\\\\\\" event=x\"");
        assert_eq!(quoted("a\nb\x1b[31m"), "\"a\\nb\\x1b[31m\"");
        assert_eq!(printable("gif\u{202e}exe.txt"), "gif\\u{202e}exe.txt");
        assert_eq!(kv_quote("a\u{200b}b"), "\"a\\u{200b}b\"");
        // Whatever the text, the value ends at the only unescaped quote, at the end.
        for s in ["\"", "\\", "\\\"", "a\"b=c d", "\u{feff}"] {
            let q = quoted(s);
            let inner = &q[1..q.len() - 1];
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                assert_ne!(c, '"', "{q}");
                if c == '\\' {
                    chars.next();
                }
            }
        }
    }
}
