//! A workspace's state in the core zone, in its own directory: the numbers of its patients (the checks' evidence
//! names patients by number), the researchers' uploads, the results kept for output requests, the outputs released
//! (the history differencing is checked against) and the recent queries (what the monitoring compares). Every file
//! is written whole and renamed into place, so a crash leaves the previous version, never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::output_check::differencing::MAX_PATIENT_NUMBER;
use crate::output_check::{Output, PatientId};

use super::WorkspaceError;

/// Most recent queries kept for the monitoring.
pub const QUERIES_KEPT: usize = 500;

/// The dense numbers of a workspace's patients, by workspace pseudonym: stable for the workspace's life, so that an
/// output's evidence can be compared with every earlier one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PatientNumbers {
    numbers: BTreeMap<String, u32>,
}

impl PatientNumbers {
    /// The number of `pseudonym`, given the next free one if it has none.
    pub fn number(&mut self, pseudonym: &str) -> Result<PatientId, WorkspaceError> {
        if let Some(n) = self.numbers.get(pseudonym) {
            return Ok(PatientId(*n));
        }
        let next = u32::try_from(self.numbers.len()).unwrap_or(u32::MAX);
        if next >= MAX_PATIENT_NUMBER {
            return Err(WorkspaceError::TooLarge(
                "the workspace numbers more patients than its index takes".into(),
            ));
        }
        self.numbers.insert(pseudonym.to_owned(), next);
        Ok(PatientId(next))
    }

    /// How many patients are numbered.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }
}

/// A result kept in the workspace: what the researcher saw and the evidence the checks read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResult {
    /// The number of the order that computed it.
    pub number: u64,
    /// Who computed it.
    pub user: String,
    /// The analysis (`crosstab`, `linear`...).
    pub kind: String,
    /// The analysis as asked, its query included: what an output checker reads beside the result (a value crafted
    /// in the query shows there, not in the result).
    #[serde(default)]
    pub spec: serde_json::Value,
    /// The result as the researcher saw it.
    pub result: serde_json::Value,
    /// Its outputs as the checks see them (one per curve of a grouped survival analysis).
    pub outputs: Vec<Output>,
    /// Whether it has left the workspace.
    pub released: bool,
}

/// One query as the monitoring keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRecord {
    /// The order's number.
    pub number: u64,
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// Who.
    pub user: String,
    /// Its shape.
    pub shape: String,
    /// The patients its result is about (numbers).
    pub patients: Vec<u32>,
}

/// One released result's evidence, as the differencing history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    /// The result's number.
    pub number: u64,
    /// Its outputs.
    pub outputs: Vec<Output>,
}

/// A workspace's directory.
#[derive(Debug, Clone)]
pub struct WorkspaceState {
    dir: PathBuf,
}

impl WorkspaceState {
    /// Opens (creating if needed, readable by the core's user only) the workspace at `dir`.
    pub fn open(dir: &Path) -> Result<WorkspaceState, WorkspaceError> {
        for sub in ["", "uploads", "results"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
        }
        Ok(WorkspaceState { dir: dir.to_owned() })
    }

    /// The patients' numbers.
    pub fn numbers(&self) -> Result<PatientNumbers, WorkspaceError> {
        Ok(read_json(&self.dir.join("numbers.json"))?.unwrap_or_default())
    }

    /// Saves the patients' numbers.
    pub fn save_numbers(&self, numbers: &PatientNumbers) -> Result<(), WorkspaceError> {
        write_json(&self.dir.join("numbers.json"), numbers)
    }

    /// The uploads, by name, as CSV.
    pub fn uploads(&self) -> Result<Vec<(String, String)>, WorkspaceError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("uploads")).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "csv") {
                out.push((name.to_owned(), std::fs::read_to_string(&path).map_err(io)?));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Keeps an upload (replacing one of the same name).
    pub fn save_upload(&self, name: &str, csv: &str) -> Result<(), WorkspaceError> {
        write_bytes(&self.dir.join("uploads").join(format!("{name}.csv")), csv.as_bytes())
    }

    /// A kept result.
    pub fn result(&self, number: u64) -> Result<StoredResult, WorkspaceError> {
        read_json(&self.result_path(number))?.ok_or(WorkspaceError::UnknownResult(number))
    }

    /// Keeps a result.
    pub fn save_result(&self, result: &StoredResult) -> Result<(), WorkspaceError> {
        write_json(&self.result_path(result.number), result)
    }

    fn result_path(&self, number: u64) -> PathBuf {
        self.dir.join("results").join(format!("{number}.json"))
    }

    /// The outputs released, oldest first.
    pub fn released(&self) -> Result<Vec<Released>, WorkspaceError> {
        Ok(read_json(&self.dir.join("released.json"))?.unwrap_or_default())
    }

    /// Adds a released result to the history.
    pub fn save_released(&self, released: &[Released]) -> Result<(), WorkspaceError> {
        write_json(&self.dir.join("released.json"), &released)
    }

    /// The recent queries, oldest first.
    pub fn queries(&self) -> Result<Vec<QueryRecord>, WorkspaceError> {
        Ok(read_json(&self.dir.join("queries.json"))?.unwrap_or_default())
    }

    /// Keeps the recent queries (the last [`QUERIES_KEPT`]).
    pub fn save_queries(&self, queries: &[QueryRecord]) -> Result<(), WorkspaceError> {
        let from = queries.len().saturating_sub(QUERIES_KEPT);
        write_json(&self.dir.join("queries.json"), &queries[from..])
    }
}

fn io(e: std::io::Error) -> WorkspaceError {
    WorkspaceError::State(e.kind().to_string())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, WorkspaceError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| WorkspaceError::State("a workspace file is not readable".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), WorkspaceError> {
    let bytes =
        serde_json::to_vec(value).map_err(|_| WorkspaceError::State("a workspace file could not be written".into()))?;
    write_bytes(path, &bytes)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), WorkspaceError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
