//! What the ledger keeps of an operator's SQL query: its shape (tables, columns, operators) with every literal
//! replaced by `?`, and the SHA-256 of the whole text — a query naming a linkage key or a value would otherwise put
//! it in the ledger.

/// `query` with its string and numeric literals replaced by `?` (quoted identifiers kept): what the ledger
/// records of an operator's query, so that it shows what was looked at without holding the values asked for.
pub fn redacted(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    let mut prev_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A string literal, with '' as an escaped quote inside.
                while let Some(d) = chars.next() {
                    if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push('?');
                prev_word = false;
            }
            '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '"' {
                        break;
                    }
                }
                prev_word = true;
            }
            d if d.is_ascii_digit() && !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.' || *n == '_')
                {
                    chars.next();
                }
                out.push('?');
                prev_word = false;
            }
            other => {
                out.push(other);
                prev_word = other.is_alphanumeric() || other == '_';
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn literals_leave_the_ledger_and_the_shape_stays() {
        assert_eq!(
            redacted("SELECT count(*) AS n FROM opt_outs WHERE linkage_key = 'c23afe84ed66' AND x > 42"),
            "SELECT count(*) AS n FROM opt_outs WHERE linkage_key = ? AND x > ?"
        );
        assert_eq!(
            redacted("SELECT 'it''s', 3.5e2, col2 FROM t2"),
            "SELECT ?, ?, col2 FROM t2"
        );
        assert_eq!(
            redacted(r#"SELECT "Weird 42" FROM patients"#),
            r#"SELECT "Weird 42" FROM patients"#
        );
        assert_eq!(
            redacted("WHERE name = '山田"),
            "WHERE name = ?",
            "an unterminated literal is still hidden"
        );
    }
}
