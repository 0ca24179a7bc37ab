//! Reading delimited text into a [`Table`], in parallel blocks.
//!
//! Reading and dictionary-encoding dominated a whole `tokumei anonymize` run (issue 22), so the
//! text is read in blocks of [`BLOCK`] bytes, each block is cut at line ends into one part per
//! core, and every part is split and interned on its own core into a *local* dictionary keyed by
//! byte slices of the block (no allocation per cell, UTF-8 checked once per distinct value). The
//! parts are then merged in order into the table's dictionaries, which gives exactly the codes,
//! first-seen order and first rows a sequential reader gives. Memory stays at about one block.
//!
//! Splitting at line ends is only right where a line end always ends a record: the fast path takes
//! blocks without a quote and without a lone carriage return (`\n` or `\r\n` line ends). From the
//! first block that has either, the rest is read sequentially by the `csv` crate, with the same
//! checks. The header is always read by the `csv` crate. Both paths skip empty lines, as the `csv`
//! crate does.

use std::io::Read;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::table::{Column, Table};

/// Bytes read per block, at most; the first block is [`FIRST_BLOCK`] and each next one twice the
/// last, so a small file never costs a large buffer.
const BLOCK: usize = 8 << 20;
const FIRST_BLOCK: usize = 1 << 20;

/// Parts smaller than this are not worth a thread.
const MIN_PART: usize = 256 << 10;

/// Reads delimited text with a header line.
pub(crate) fn read<R: Read>(reader: R, delimiter: u8) -> Result<Table> {
    let mut input = Blocks::new(reader)?;
    let (names, data_start) = loop {
        match header(&input.buf, delimiter, input.eof)? {
            Some(found) => break found,
            None => input.grow()?,
        }
    };
    let mut columns: Vec<Column> = names.iter().map(Column::new).collect();
    if columns.is_empty() {
        return Err(Error::Input("no header line".into()));
    }
    let mut at = Position {
        rows: 0,
        line: 1 + memchr::memchr_iter(b'\n', &input.buf[..data_start]).count(),
    };
    input.buf.drain(..data_start);
    loop {
        let Some(end) = input.records_end() else {
            input.grow()?;
            continue;
        };
        let body = &input.buf[..end];
        let Some(crlf) = line_ends(body) else {
            read_sequential(input.rest(), delimiter, &mut columns, at)?;
            break;
        };
        at = read_block(body, crlf, delimiter, &mut columns, at)?;
        if !input.next(end)? {
            break;
        }
    }
    Table::from_columns(columns)
}

/// The input, a block at a time: the first block is [`FIRST_BLOCK`] and each next one twice the
/// last, up to [`BLOCK`].
struct Blocks<R> {
    reader: R,
    buf: Vec<u8>,
    block: usize,
    eof: bool,
}

impl<R: Read> Blocks<R> {
    fn new(mut reader: R) -> Result<Self> {
        let mut buf = Vec::new();
        let eof = fill(&mut reader, &mut buf, FIRST_BLOCK)?;
        Ok(Self {
            reader,
            buf,
            block: FIRST_BLOCK,
            eof,
        })
    }

    /// Reads another block onto the end (a record longer than what is held).
    fn grow(&mut self) -> Result<()> {
        let target = self.buf.len() + self.block;
        self.eof = fill(&mut self.reader, &mut self.buf, target)?;
        Ok(())
    }

    /// The end of the last whole record held: everything at the end of the input, else the
    /// last line end (None if there is none yet).
    fn records_end(&self) -> Option<usize> {
        if self.eof {
            Some(self.buf.len())
        } else {
            memchr::memrchr(b'\n', &self.buf).map(|i| i + 1)
        }
    }

    /// Drops the first `end` bytes (read) and reads the next block; false at the end.
    fn next(&mut self, end: usize) -> Result<bool> {
        self.buf.drain(..end);
        if self.eof {
            return Ok(false);
        }
        self.block = (2 * self.block).min(BLOCK);
        self.eof = fill(&mut self.reader, &mut self.buf, self.block)?;
        Ok(true)
    }

    /// What is held and what follows, as one reader. It starts with an empty line, which the
    /// csv crate skips, so that a byte-order mark at the start of the held text stays data: the
    /// csv crate drops one only at the very start of its input, as a whole-file reader would.
    fn rest(self) -> impl Read {
        let mut held = Vec::with_capacity(self.buf.len() + 1);
        held.push(b'\n');
        held.extend_from_slice(&self.buf);
        std::io::Cursor::new(held).chain(self.reader)
    }
}

/// Whether records in `body` may be cut at line ends: Some(false) for `\n` endings, Some(true)
/// for `\r\n`; None if `body` has a quote or a lone `\r` (a line end of the csv crate too), which
/// only the csv crate reads right.
fn line_ends(body: &[u8]) -> Option<bool> {
    if memchr::memchr(b'"', body).is_some() {
        return None;
    }
    let mut crlf = false;
    for i in memchr::memchr_iter(b'\r', body) {
        if body.get(i + 1) != Some(&b'\n') {
            return None;
        }
        crlf = true;
    }
    Some(crlf)
}

/// Where the next record starts: data rows read so far and its 1-based line.
#[derive(Debug, Clone, Copy)]
struct Position {
    rows: usize,
    line: usize,
}

/// Reads until `buf` holds `target` bytes or the input ends; true at the end. Only what is read is
/// written, so a small input never touches a block's worth of memory.
fn fill<R: Read>(reader: &mut R, buf: &mut Vec<u8>, target: usize) -> Result<bool> {
    let want = target.saturating_sub(buf.len());
    let got = reader.take(want as u64).read_to_end(buf)?;
    Ok(got < want)
}

/// The header's names and the offset of the first data record, or None if `buf` does not yet hold
/// the whole header (and more input follows).
fn header(buf: &[u8], delimiter: u8, eof: bool) -> Result<Option<(Vec<String>, usize)>> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_reader(buf);
    let mut record = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut record)? {
        return if eof {
            Err(Error::Input("no header line".into()))
        } else {
            Ok(None)
        };
    }
    let end = rdr.position().byte() as usize;
    // A record that reaches the end of what is held may go on (a quoted field, a longer line).
    if !eof && end >= buf.len() {
        return Ok(None);
    }
    let names = record
        .iter()
        .enumerate()
        .map(|(i, name)| {
            String::from_utf8(name.to_vec())
                .map_err(|_| Error::Input(format!("header field {} is not valid UTF-8", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((names, end)))
}

/// One part's columns: a dictionary of byte slices of the block, in first-seen order.
struct Part<'b> {
    columns: Vec<LocalColumn<'b>>,
    rows: usize,
    lines: usize,
}

/// One column of a part: its distinct values as slices of the block, in first-seen order, the
/// part-relative row where each first appears, and every row's local code.
#[derive(Default)]
struct LocalColumn<'b> {
    /// Values of at most 15 bytes, keyed by their bytes packed into two words (most values are
    /// short codes and labels: no slice hashing, no byte comparison).
    short: FastMap<(u64, u64), u32>,
    /// Longer values.
    long: FastMap<&'b [u8], u32>,
    dict: Vec<&'b [u8]>,
    first_row: Vec<u32>,
    codes: Vec<u32>,
}

/// The bytes of a value of at most 15 bytes and its length, as two words (unique per value).
#[inline]
fn pack_short(value: &[u8]) -> (u64, u64) {
    let mut words = [0u8; 16];
    words[..value.len()].copy_from_slice(value);
    words[15] = value.len() as u8;
    let (lo, hi) = words.split_at(8);
    let word = |b: &[u8]| b.iter().rev().fold(0u64, |w, &x| (w << 8) | u64::from(x));
    (word(lo), word(hi))
}

impl<'b> LocalColumn<'b> {
    #[inline]
    fn push(&mut self, value: &'b [u8], row: usize) {
        let next = self.dict.len() as u32;
        let code = if value.len() <= 15 {
            *self.short.entry(pack_short(value)).or_insert(next)
        } else {
            *self.long.entry(value).or_insert(next)
        };
        if code == next {
            self.dict.push(value);
            self.first_row.push(row as u32);
        }
        self.codes.push(code);
    }
}

/// A record with the wrong number of fields: its line (0-based) and record (1-based) in its part.
struct BadRecord {
    line: usize,
    record: usize,
    found: usize,
}

/// Splits a quote-free block with `\n` (or, `crlf`, `\r\n`) line ends into parts at line ends, reads them in parallel and merges
/// them in order.
fn read_block(body: &[u8], crlf: bool, delimiter: u8, columns: &mut [Column], at: Position) -> Result<Position> {
    // Two parts per thread balance uneven parts; merging a part costs only its distinct values.
    let parts = split_at_lines(body, 2 * rayon::current_num_threads().max(1));
    let width = columns.len();
    let read: Vec<std::result::Result<Part<'_>, BadRecord>> = parts
        .par_iter()
        .map(|part| read_part(part, crlf, delimiter, width))
        .collect();
    let mut at = at;
    for part in read {
        let part = part.map_err(|bad| {
            Error::Input(format!(
                "line {} (data record {}): a record of {} fields, expected {width} (as in the header)",
                at.line + bad.line,
                at.rows + bad.record,
                bad.found
            ))
        })?;
        for (column, local) in columns.iter_mut().zip(part.columns) {
            merge(column, local, at.rows)?;
        }
        at.rows += part.rows;
        at.line += part.lines;
    }
    Ok(at)
}

/// About `n` slices of `body` of similar size, each ending at a line end (or at the end of `body`).
fn split_at_lines(body: &[u8], n: usize) -> Vec<&[u8]> {
    let n = n.min(body.len() / MIN_PART).max(1);
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..n {
        let target = (body.len() * i / n).max(start);
        let Some(nl) = memchr::memchr(b'\n', &body[target..]) else {
            break;
        };
        let end = target + nl + 1;
        parts.push(&body[start..end]);
        start = end;
    }
    if start < body.len() {
        parts.push(&body[start..]);
    }
    parts
}

/// Splits one part into records and fields and interns every field into local dictionaries
/// (`crlf`: lines end in `\r\n`, whose `\r` is no data).
fn read_part(part: &[u8], crlf: bool, delimiter: u8, width: usize) -> std::result::Result<Part<'_>, BadRecord> {
    let mut columns: Vec<LocalColumn<'_>> = (0..width).map(|_| LocalColumn::default()).collect();
    let (mut rows, mut lines) = (0usize, 0usize);
    for line in part.split(|&b| b == b'\n') {
        lines += 1;
        let line = if crlf {
            line.strip_suffix(b"\r").unwrap_or(line)
        } else {
            line
        };
        if line.is_empty() {
            continue;
        }
        let mut found = 0;
        for field in line.split(|&b| b == delimiter) {
            if let Some(column) = columns.get_mut(found) {
                column.push(field, rows);
            }
            found += 1;
        }
        if found != width {
            return Err(BadRecord {
                line: lines - 1,
                record: rows + 1,
                found,
            });
        }
        rows += 1;
    }
    // `split` yields one (empty) piece after a final line end, which is no line.
    if part.last() == Some(&b'\n') {
        lines -= 1;
    }
    Ok(Part { columns, rows, lines })
}

/// Appends a part's column to the table's, mapping its local codes to the table's dictionary.
fn merge(column: &mut Column, local: LocalColumn<'_>, rows_before: usize) -> Result<()> {
    let mut to_global = Vec::with_capacity(local.dict.len());
    for (value, &first) in local.dict.iter().zip(&local.first_row) {
        let row = rows_before + first as usize;
        let text = std::str::from_utf8(value).map_err(|_| not_utf8(column.name(), row))?;
        to_global.push(column.intern(text, row));
    }
    column.extend_codes(local.codes.iter().map(|&c| to_global[c as usize]));
    Ok(())
}

/// The error for a value that is not UTF-8: the column and the 0-based data `row`, never the bytes.
fn not_utf8(column: &str, row: usize) -> Error {
    Error::Input(format!("column {column:?}, data row {}: not valid UTF-8", row + 1))
}

/// Reads the rest of the input with the csv crate (quoted fields, `\r` line ends), one record at a
/// time, with the same checks as the fast path.
fn read_sequential(rest: impl Read, delimiter: u8, columns: &mut [Column], at: Position) -> Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(rest);
    let width = columns.len();
    let mut record = csv::ByteRecord::new();
    let mut row = at.rows;
    while rdr.read_byte_record(&mut record)? {
        if record.len() != width {
            // Lines are not counted here: the csv crate's record positions stand before skipped
            // empty lines and a previous record's `\n` of `\r\n`.
            return Err(Error::Input(format!(
                "data record {}: a record of {} fields, expected {width} (as in the header)",
                row + 1,
                record.len()
            )));
        }
        for (column, field) in columns.iter_mut().zip(record.iter()) {
            let text = std::str::from_utf8(field).map_err(|_| not_utf8(column.name(), row))?;
            column.push(text);
        }
        row += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The csv crate's reading of the same text, the reference this reader must equal.
    fn reference(text: &[u8], delimiter: u8) -> Result<Table> {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .from_reader(text);
        let mut columns: Vec<Column> = rdr.headers()?.iter().map(Column::new).collect();
        let mut record = csv::StringRecord::new();
        while rdr.read_record(&mut record)? {
            for (c, v) in columns.iter_mut().zip(record.iter()) {
                c.push(v);
            }
        }
        Table::from_columns(columns)
    }

    fn assert_same(a: &Table, b: &Table) {
        assert_eq!(a.rows(), b.rows());
        assert_eq!(a.names(), b.names());
        for (x, y) in a.columns().iter().zip(b.columns()) {
            assert_eq!(x.dict(), y.dict(), "column {}", x.name());
            assert_eq!(x.codes(), y.codes(), "column {}", x.name());
            for code in 0..x.dict().len() as u32 {
                assert_eq!(x.first_row(code), y.first_row(code));
            }
        }
    }

    /// Deterministic pseudo-random text: fields from a small alphabet (so values repeat across
    /// parts), sometimes empty lines, sometimes quoted fields or CRLF from some row on.
    fn text(seed: u64, rows: usize, quotes_from: Option<usize>, crlf: bool) -> Vec<u8> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as usize
        };
        let mut out = b"age;sex;\"dx;code\"\n".to_vec();
        for r in 0..rows {
            if next() % 50 == 0 {
                out.push(b'\n');
            }
            let age = format!("{}", 20 + next() % 60);
            let sex = ["M", "F", "", "X"][next() % 4];
            let dx = match quotes_from {
                Some(q) if r >= q && next() % 3 == 0 => "\"E1;1\"".to_string(),
                _ => ["I10", "E11", "J45", "日本"][next() % 4].to_string(),
            };
            out.extend_from_slice(format!("{age};{sex};{dx}").as_bytes());
            out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        out
    }

    #[test]
    fn equals_the_csv_crate_on_plain_quoted_and_crlf_text() {
        for (rows, quotes_from, crlf) in [
            (0, None, false),
            (1, None, false),
            (5_000, None, false),
            (200_000, None, false),
            (200_000, Some(150_000), false),
            (20_000, Some(0), false),
            (20_000, None, true),
        ] {
            let t = text(rows as u64 + 7, rows, quotes_from, crlf);
            let ours = read(t.as_slice(), b';').unwrap();
            assert_same(&ours, &reference(&t, b';').unwrap());
            // Without a final line end, and read through a reader that returns few bytes at a time.
            let trimmed = t.strip_suffix(b"\n").unwrap_or(&t);
            let slow = std::io::BufReader::with_capacity(7, trimmed);
            assert_same(&read(slow, b';').unwrap(), &reference(trimmed, b';').unwrap());
        }
    }

    #[test]
    fn a_large_block_is_read_in_parts_that_agree() {
        // More than one block and more than one part per block.
        let t = text(3, 1_000_000, None, false);
        assert!(t.len() > BLOCK);
        assert_same(&read(t.as_slice(), b';').unwrap(), &reference(&t, b';').unwrap());
    }

    #[test]
    fn wrong_field_counts_name_the_line_not_the_values() {
        let mut t = text(5, 300_000, None, false);
        t.extend_from_slice(b"41;SECRET\n");
        let lines = t.iter().filter(|&&b| b == b'\n').count();
        let e = read(t.as_slice(), b';').unwrap_err().to_string();
        assert!(e.contains(&format!("line {lines} (data record 300001)")), "{e}");
        assert!(e.contains("2 fields, expected 3"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        // CRLF line ends and empty lines before the bad record, on the fast path.
        let e = read(&b"a;b\r\n1;2\r\n\r\n\n1;2;TOPSECRET\r\n"[..], b';')
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 5 (data record 2)") && e.contains("3 fields, expected 2"),
            "{e}"
        );
        // The same on the sequential path (a quote), which names the data record.
        let e = read(&b"a;b\r\n\"x\";y\r\n\r\n\n1;2;TOPSECRET\r\n"[..], b';')
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data record 2:") && e.contains("3 fields, expected 2"),
            "{e}"
        );
        assert!(!e.contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn invalid_utf8_names_the_column_and_row_not_the_bytes() {
        let e = read(&b"a;b\n1;2\n3;\xff\xfe\n"[..], b';').unwrap_err().to_string();
        assert!(e.contains("column \"b\", data row 2: not valid UTF-8"), "{e}");
        let e = read(&b"a;b\n\"1\";2\n3;\xff\xfe\n"[..], b';').unwrap_err().to_string();
        assert!(e.contains("column \"b\", data row 2: not valid UTF-8"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_read_as_the_csv_crate_reads_it() {
        let mut t = b"\xEF\xBB\xBF".to_vec();
        t.extend_from_slice(&text(9, 1_000, None, false));
        let ours = read(t.as_slice(), b';').unwrap();
        assert_same(&ours, &reference(&t, b';').unwrap());
        assert_eq!(ours.names()[0], "age");
    }

    #[test]
    fn a_byte_order_mark_where_the_sequential_reader_takes_over_stays_data() {
        let t = "id,name\n\u{FEFF}7,\"Smith, J\"\n".as_bytes();
        let ours = read(t, b',').unwrap();
        assert_same(&ours, &reference(t, b',').unwrap());
        assert_eq!(ours.columns()[0].dict(), ["\u{FEFF}7"]);
    }

    #[test]
    fn a_header_that_reaches_past_the_first_block_is_read_whole() {
        // The first block ends right after the `\n` inside the quoted header field.
        let mut t = vec![b'\n'; FIRST_BLOCK - 5];
        t.extend_from_slice(b"a,\"b\nc\"\n1,2\n");
        assert_eq!(t[FIRST_BLOCK - 1], b'\n');
        let ours = read(t.as_slice(), b',').unwrap();
        assert_same(&ours, &reference(&t, b',').unwrap());
        assert_eq!(ours.names(), ["a", "b\nc"]);
        // A header longer than a block.
        let long: String = (0..200_000).map(|i| format!("c{i};")).collect();
        let t = format!("{}z\n{}1\n", long, "0;".repeat(200_000));
        assert_same(
            &read(t.as_bytes(), b';').unwrap(),
            &reference(t.as_bytes(), b';').unwrap(),
        );
    }

    #[test]
    fn lone_carriage_returns_and_late_quotes_are_read_as_the_csv_crate_reads_them() {
        for t in [
            &b"a;b\r1;2\r3;4\r"[..],
            &b"a;b\n1;2\r3;4\n5;6"[..],
            &b"a;b\r\n1;2\r\n3;4\r"[..],
        ] {
            assert_same(&read(t, b';').unwrap(), &reference(t, b';').unwrap());
        }
        // CRLF blocks on the fast path, then a quote in a later block.
        let mut t = text(11, 400_000, None, true);
        t.extend_from_slice(b"33;\"F\";\"E\r\n11\"\r\n44;M;I10\r\n");
        assert!(t.len() > 2 * FIRST_BLOCK);
        assert_same(&read(t.as_slice(), b';').unwrap(), &reference(&t, b';').unwrap());
    }

    #[test]
    fn short_values_pack_to_distinct_keys() {
        let values: [&[u8]; 7] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"12345678", b"123456789abcdef"];
        let keys: std::collections::HashSet<_> = values.iter().map(|v| pack_short(v)).collect();
        assert_eq!(keys.len(), values.len());
    }

    #[test]
    fn no_header_is_refused() {
        assert!(read(&b""[..], b',').unwrap_err().to_string().contains("no header line"));
    }
}
