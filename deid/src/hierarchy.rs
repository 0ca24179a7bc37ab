//! Generalisation hierarchies: the ARX CSV format, validation, and the integer lookup tables the
//! search needs.
//!
//! A hierarchy has one line per leaf value: `value;level1;level2;...;*`. Level `L` of a value is
//! the `L`-th cell. Labels are integer-coded per level once, so the search only ever maps `u32`
//! codes through tables (`leaf → level L` and `level a → level b`), never strings.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, HierarchyProblem, Result};

/// One level of a hierarchy: the distinct labels and, for each leaf, which label it maps to.
#[derive(Debug, Clone)]
pub struct Level {
    /// Distinct labels at this level, in order of first appearance in the hierarchy.
    labels: Vec<String>,
    /// For each leaf (line), the code of its label at this level.
    of_leaf: Vec<u32>,
    /// For each label, the number of hierarchy lines (leaves) it covers; the numerator of the
    /// "share" used by the Loss metric.
    lines: Vec<u32>,
}

impl Level {
    /// Distinct labels at this level.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    /// Label code of each leaf at this level.
    pub fn of_leaf(&self) -> &[u32] {
        &self.of_leaf
    }
    /// Number of leaves covered by each label (the Loss metric's share numerator).
    pub fn lines(&self) -> &[u32] {
        &self.lines
    }
}

/// A validated, integer-coded generalisation hierarchy for one attribute.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    source: String,
    leaf_index: HashMap<String, u32>,
    levels: Vec<Level>,
}

impl Hierarchy {
    /// Builds a hierarchy from numbered rows (`(line, cells)`), refusing ragged rows, duplicate
    /// leaves and values with two parents. `source` names the origin for error messages.
    pub fn from_rows(source: &str, rows: Vec<(usize, Vec<String>)>) -> Result<Self> {
        let err = |line: usize, problem: HierarchyProblem| Error::Hierarchy {
            source_name: source.to_string(),
            line,
            problem,
        };
        let Some((first_line, first)) = rows.first() else {
            return Err(err(1, HierarchyProblem::Empty));
        };
        let width = first.len();
        if width == 0 {
            return Err(err(*first_line, HierarchyProblem::Empty));
        }
        let mut label_maps: Vec<HashMap<&str, u32>> = vec![HashMap::new(); width];
        let mut levels: Vec<Level> = (0..width)
            .map(|_| Level {
                labels: Vec::new(),
                of_leaf: Vec::with_capacity(rows.len()),
                lines: Vec::new(),
            })
            .collect();
        // parent[L]: label code at level L -> (label code at L+1, line where first seen)
        let mut parent: Vec<HashMap<u32, (u32, usize)>> = vec![HashMap::new(); width];
        let mut leaf_lines: HashMap<&str, usize> = HashMap::new();
        for (line, cells) in &rows {
            if cells.len() != width {
                return Err(err(
                    *line,
                    HierarchyProblem::Ragged {
                        expected: width,
                        found: cells.len(),
                    },
                ));
            }
            if let Some(first_line) = leaf_lines.insert(cells[0].as_str(), *line) {
                return Err(err(
                    *line,
                    HierarchyProblem::DuplicateValue {
                        value: cells[0].clone(),
                        first_line,
                    },
                ));
            }
            let mut codes = Vec::with_capacity(width);
            for (l, cell) in cells.iter().enumerate() {
                let level = &mut levels[l];
                let code = *label_maps[l].entry(cell.as_str()).or_insert_with(|| {
                    level.labels.push(cell.clone());
                    level.lines.push(0);
                    (level.labels.len() - 1) as u32
                });
                level.lines[code as usize] += 1;
                level.of_leaf.push(code);
                codes.push(code);
            }
            for l in 0..width.saturating_sub(1) {
                let (me, up) = (codes[l], codes[l + 1]);
                match parent[l].get(&me) {
                    Some(&(p, first_line)) if p != up => {
                        return Err(err(
                            *line,
                            HierarchyProblem::TwoParents {
                                value: cells[l].clone(),
                                level: l,
                                first_parent: levels[l + 1].labels[p as usize].clone(),
                                second_parent: cells[l + 1].clone(),
                                first_line,
                            },
                        ));
                    }
                    Some(_) => {}
                    None => {
                        parent[l].insert(me, (up, *line));
                    }
                }
            }
        }
        let leaf_index = levels[0]
            .labels
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), i as u32))
            .collect();
        Ok(Self {
            source: source.to_string(),
            leaf_index,
            levels,
        })
    }

    /// Parses ARX's CSV hierarchy format from text. Blank lines are ignored; line numbers in
    /// errors are those of the text.
    pub fn parse_arx_csv(source: &str, text: &str, delimiter: u8) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record?;
            let line = record.position().map_or(rows.len() + 1, |p| p.line() as usize);
            if record.len() == 1 && record[0].trim().is_empty() {
                continue;
            }
            rows.push((line, record.iter().map(str::to_string).collect()));
        }
        Self::from_rows(source, rows)
    }

    /// Reads an ARX CSV hierarchy file (the only I/O in this module).
    pub fn read_arx_csv(path: &Path, delimiter: u8) -> Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse_arx_csv(&path.display().to_string(), &text, delimiter)
    }

    /// Serialises back to ARX CSV, e.g. to export a generated hierarchy for review.
    pub fn to_arx_csv(&self, delimiter: u8) -> String {
        let d = delimiter as char;
        let mut out = String::new();
        for leaf in 0..self.domain_size() {
            for (l, level) in self.levels.iter().enumerate() {
                if l > 0 {
                    out.push(d);
                }
                out.push_str(&level.labels[level.of_leaf[leaf] as usize]);
            }
            out.push('\n');
        }
        out
    }

    /// Where the hierarchy came from (file name or generator), for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Number of levels including the leaf level; the highest level is `height() - 1`.
    pub fn height(&self) -> usize {
        self.levels.len()
    }
    /// Domain size `m`: the number of lines (leaves), as ARX's Loss defines it.
    pub fn domain_size(&self) -> usize {
        self.levels[0].labels.len()
    }
    /// Leaf code of a data value, if the hierarchy covers it.
    pub fn leaf_code(&self, value: &str) -> Option<u32> {
        self.leaf_index.get(value).copied()
    }
    /// Level `l` (0 = leaves).
    pub fn level(&self, l: usize) -> &Level {
        &self.levels[l]
    }
    /// Label text of code `code` at level `l`.
    pub fn label(&self, l: usize, code: u32) -> &str {
        &self.levels[l].labels[code as usize]
    }
    /// Table mapping codes at level `from` to codes at level `to` (`from <= to`). Well defined
    /// because validation refused values with two parents.
    pub fn map_between(&self, from: usize, to: usize) -> Vec<u32> {
        let src = &self.levels[from];
        let dst = &self.levels[to];
        let mut out = vec![0u32; src.labels.len()];
        for leaf in 0..self.domain_size() {
            out[src.of_leaf[leaf] as usize] = dst.of_leaf[leaf];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_codes_levels() {
        let h = Hierarchy::parse_arx_csv("t", "1;0-4;*\n2;0-4;*\n5;5-9;*\n", b';').unwrap();
        assert_eq!(h.height(), 3);
        assert_eq!(h.domain_size(), 3);
        assert_eq!(h.level(1).lines(), &[2, 1]);
        assert_eq!(h.map_between(1, 2), vec![0, 0]);
        assert_eq!(h.label(1, h.level(1).of_leaf()[2]), "5-9");
    }
}
