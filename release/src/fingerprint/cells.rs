//! The tables the fingerprint works on: [`Cells`] (anything a leaked file can be read into, looked up by
//! column name, never by position) and [`Sheet`], the column-major text table a recipient's copy is marked
//! in before it is written as CSV and Parquet.

use rand::Rng;
use rand::seq::SliceRandom;

use super::FingerprintError;

/// Read access to a table of text cells by column *name*: a leaked file may have its columns reordered,
/// some dropped, and its rows shuffled or subset, so nothing may depend on column or row positions.
pub trait Cells {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Index of the column called `name`, if the table has it (the first one if the name repeats).
    fn column_index(&self, name: &str) -> Option<usize>;
    /// Text of a cell (`col` from [`Cells::column_index`], `row` < [`Cells::rows`]).
    fn cell(&self, row: usize, col: usize) -> &str;
}

impl Cells for tokumei_deid::table::Table {
    fn rows(&self) -> usize {
        tokumei_deid::table::Table::rows(self)
    }

    fn column_index(&self, name: &str) -> Option<usize> {
        self.index_of(name).ok()
    }

    fn cell(&self, row: usize, col: usize) -> &str {
        self.columns()[col].value(row)
    }
}

/// A table of text cells, column-major: `columns[c][r]` is row `r` of the column named `header[c]`. The form
/// a recipient's copy is marked in (cells are rewritten in place, reusing their allocations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sheet {
    /// Column names.
    pub header: Vec<String>,
    /// One vector of cells per column, all of the same length.
    pub columns: Vec<Vec<String>>,
}

impl Sheet {
    /// A sheet from its columns; every column must have a name and all the same number of rows.
    pub fn new(header: Vec<String>, columns: Vec<Vec<String>>) -> Result<Sheet, FingerprintError> {
        let sheet = Sheet { header, columns };
        sheet.check()?;
        Ok(sheet)
    }

    /// A sheet from rows of cells (convenient for tests and small inputs).
    pub fn from_rows<H: AsRef<str>, S: AsRef<str>>(header: &[H], rows: &[Vec<S>]) -> Result<Sheet, FingerprintError> {
        let mut columns: Vec<Vec<String>> = header.iter().map(|_| Vec::with_capacity(rows.len())).collect();
        for (i, row) in rows.iter().enumerate() {
            if row.len() != header.len() {
                return Err(FingerprintError::Sheet(format!(
                    "row {} has {} cells, expected {}",
                    i + 1,
                    row.len(),
                    header.len()
                )));
            }
            for (column, cell) in columns.iter_mut().zip(row) {
                column.push(cell.as_ref().to_string());
            }
        }
        Sheet::new(header.iter().map(|h| h.as_ref().to_string()).collect(), columns)
    }

    /// A sheet holding a copy of any [`Cells`] with the given column names (in that order; missing columns
    /// are skipped).
    pub fn from_cells<C: Cells + ?Sized, S: AsRef<str>>(cells: &C, names: &[S]) -> Sheet {
        let mut sheet = Sheet::default();
        for name in names {
            if let Some(c) = cells.column_index(name.as_ref()) {
                sheet.header.push(name.as_ref().to_string());
                sheet
                    .columns
                    .push((0..cells.rows()).map(|r| cells.cell(r, c).to_string()).collect());
            }
        }
        sheet
    }

    /// Whether the shape is consistent (one column per name, equal lengths); the fields are public, so the
    /// marker checks before it writes.
    pub fn check(&self) -> Result<(), FingerprintError> {
        if self.header.len() != self.columns.len() {
            return Err(FingerprintError::Sheet(format!(
                "{} column names for {} columns",
                self.header.len(),
                self.columns.len()
            )));
        }
        let rows = self.rows();
        if let Some((name, column)) = self.header.iter().zip(&self.columns).find(|(_, c)| c.len() != rows) {
            return Err(FingerprintError::Sheet(format!(
                "column {name:?} has {} rows, expected {rows}",
                column.len()
            )));
        }
        Ok(())
    }

    /// Number of rows (of the first column).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.header.len()
    }

    /// Number of cells (rows × columns): the base of the cell budget.
    pub fn cells(&self) -> usize {
        self.rows() * self.width()
    }

    /// Index of the column called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The cells of the column called `name`.
    pub fn column(&self, name: &str) -> Option<&[String]> {
        self.index_of(name).map(|c| self.columns[c].as_slice())
    }

    /// One row's cells, in column order.
    pub fn row(&self, row: usize) -> Vec<&str> {
        self.columns
            .iter()
            .map(|c| c.get(row).map_or("", String::as_str))
            .collect()
    }

    /// A new sheet with the given rows, in the given order (indices may repeat; out-of-range ones are
    /// skipped). What a leaker keeping a sample of rows produces.
    pub fn subset(&self, rows: &[usize]) -> Sheet {
        let n = self.rows();
        Sheet {
            header: self.header.clone(),
            columns: self
                .columns
                .iter()
                .map(|c| rows.iter().filter(|&&r| r < n).map(|&r| c[r].clone()).collect())
                .collect(),
        }
    }

    /// Removes the column called `name`; whether it was there.
    pub fn drop_column(&mut self, name: &str) -> bool {
        match self.index_of(name) {
            Some(c) => {
                self.header.remove(c);
                self.columns.remove(c);
                true
            }
            None => false,
        }
    }

    /// Keeps only the named columns, in the given order (unknown and repeated names are skipped).
    pub fn select_columns<S: AsRef<str>>(&mut self, names: &[S]) {
        let mut header = Vec::with_capacity(names.len());
        let mut columns = Vec::with_capacity(names.len());
        let mut taken = vec![false; self.header.len()];
        for name in names {
            if let Some(c) = self.index_of(name.as_ref()).filter(|&c| !taken[c]) {
                taken[c] = true;
                header.push(self.header[c].clone());
                columns.push(std::mem::take(&mut self.columns[c]));
            }
        }
        self.header = header;
        self.columns = columns;
    }

    /// Permutes the rows uniformly at random (the same permutation in every column).
    pub fn shuffle<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.shuffle(rng);
        for column in &mut self.columns {
            let mut old = std::mem::take(column);
            *column = order.iter().map(|&r| std::mem::take(&mut old[r])).collect();
        }
    }

    /// Permutes the columns uniformly at random.
    pub fn shuffle_columns<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let mut names = self.header.clone();
        names.shuffle(rng);
        self.select_columns(&names);
    }
}

impl Cells for Sheet {
    fn rows(&self) -> usize {
        Sheet::rows(self)
    }

    fn column_index(&self, name: &str) -> Option<usize> {
        self.index_of(name)
    }

    fn cell(&self, row: usize, col: usize) -> &str {
        self.columns
            .get(col)
            .and_then(|c| c.get(row))
            .map_or("", String::as_str)
    }
}
